"""Group commit: the journal committed once per turn of the loop, then told.

Events and attempt rows are recorded in the journal as they happen and
committed together: at once when a launch waits for its commit (its process
must not start before its row and its dependencies' successes are durable),
else within EVENT_COMMIT_DELAY with whatever comes meanwhile. Only committed
events are published to views, so no view is ever told what the journal does
not hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fleetdeck.journal import Journal, JournalError
from fleetdeck.model import Event

# Events that nothing waits for are committed (and told) within this long, with
# whatever comes meanwhile: a run of short tasks then commits once per task, not
# twice. A launch never waits for it: it asks for its commit at once.
EVENT_COMMIT_DELAY = 0.005


class GroupCommit:
    """Commits the journal for one engine, and tells the events committed."""

    def __init__(
        self,
        journal: Journal,
        *,
        publish: Callable[[list[Event]], None],
        before_commit: Callable[[], None],
        on_error: Callable[[JournalError], None],
    ) -> None:
        """`before_commit` runs first in each commit (the engine's pending launch
        decision: its launches join this commit); `on_error` hears a failed
        commit (what was not committed is kept and tried again)."""
        self._journal = journal
        self._publish = publish
        self._before_commit = before_commit
        self._on_error = on_error
        self._loop: asyncio.AbstractEventLoop | None = None
        # Events waiting for the commit, then published.
        self._unpublished: list[Event] = []
        # Resolved once what is recorded now is committed: launches wait on it
        # before their process starts (one future per batch, shared).
        self._next_commit: asyncio.Future[None] | None = None
        # The commit to come, if one is scheduled, and whether it comes at once.
        self._handle: asyncio.Handle | None = None
        self._urgent = False

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit on `loop` from now on (nothing is committed before)."""
        self._loop = loop

    def add(self, event: Event) -> None:
        """An event was appended to the journal: tell it after the next commit."""
        self._unpublished.append(event)
        if self._handle is None:
            self.request(urgent=False)

    def request(self, *, urgent: bool = True) -> None:
        """Commit soon: in this turn of the loop when something waits for it (a
        launch), else within EVENT_COMMIT_DELAY, with whatever comes meanwhile."""
        if self._loop is None:
            return
        handle = self._handle
        if handle is not None:
            if self._urgent or not urgent:
                return
            handle.cancel()
        self._urgent = urgent
        if urgent:
            self._handle = self._loop.call_soon(self._flush)
        else:
            self._handle = self._loop.call_later(EVENT_COMMIT_DELAY, self._flush)

    async def durable(self, recorded: int) -> None:
        """Return once the first `recorded` rows are committed (raises JournalError)."""
        if self._journal.committed >= recorded:
            return
        assert self._loop is not None
        if self._next_commit is None:
            self._next_commit = self._loop.create_future()
        waiters = self._next_commit
        self.request()
        await waiters

    def drain(self) -> None:
        """Commit and publish what is left (raises JournalError)."""
        while self._waiting():
            self._commit()

    def _flush(self) -> None:
        self._handle = None
        if self._loop is None:
            return
        self._before_commit()
        if self._handle is not None:
            # Asked for by the launches just decided and their events: this commit is it.
            self._handle.cancel()
            self._handle = None
        if not self._waiting():
            return
        try:
            self._commit()
        except JournalError as error:
            self._on_error(error)

    def _waiting(self) -> bool:
        """True when something is waiting for a commit."""
        return bool(self._unpublished or self._journal.pending or self._next_commit is not None)

    def _commit(self) -> None:
        """Commit what was recorded; then tell the listeners and release the launches
        waiting for it. Raises JournalError (the launches get it too)."""
        events, self._unpublished = self._unpublished, []
        waiters, self._next_commit = self._next_commit, None
        try:
            self._journal.commit()
        except JournalError as error:
            _release(waiters, error)
            self._unpublished = events + self._unpublished
            raise
        _release(waiters, None)
        self._publish(events)


def _release(waiters: asyncio.Future[None] | None, error: JournalError | None) -> None:
    """Wake whoever waits for a commit: done, or failed with `error`."""
    if waiters is None or waiters.done():
        return
    if error is None:
        waiters.set_result(None)
    else:
        waiters.set_exception(error)
