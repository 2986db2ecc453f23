"""Telling the operator when something needs them: `[fleet] notify` (a command of
theirs) and `notify_url` (a Slack-compatible JSON post, with httpx).

A `Notifier` hears the run's events (subscribed through the client, on the
engine's loop) of every run (in a terminal or in the background) and sends a
message when something needs the operator (`fleetdeck.alerts`: a task failed
and what it blocked, an agent throttled or over budget, a merge conflict, a
landing waiting on local changes) or the run ends. Messages
are rate-limited: the first goes at once, and what comes within
`notify_interval` seconds after it is gathered into one message sent when the
interval is over ("3 tasks failed: a, b, c"), so a burst of failures is one
message. A notification that fails (a command not found, a server down) is said
on stderr once and never stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fleetdeck.alerts import ENDED, alert_of, summary
from fleetdeck.model import Event

if TYPE_CHECKING:
    from fleetdeck.config import Fleet

# How long a notification command or post may take.
SEND_SECONDS = 10.0


class Notifier:
    """Sends the notifications of one fleet's run."""

    def __init__(
        self,
        fleet_name: str,
        *,
        command: Sequence[str] = (),
        url: str | None = None,
        interval: float = 10.0,
    ) -> None:
        self.fleet_name = fleet_name
        self.command = tuple(command)
        self.url = url
        self.interval = interval
        self._gathered: dict[str, list[str]] = {}  # alerts not sent yet, by kind
        self._last_sent = -float("inf")
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._complained: set[str] = set()
        self.sent: list[str] = []  # what went out (for tests and the log)

    @classmethod
    def of(cls, fleet: Fleet) -> Notifier | None:
        """The fleet's notifier, or None when it asks for none."""
        settings = fleet.config.fleet
        if not settings.notify and settings.notify_url is None:
            return None
        return cls(
            fleet.name,
            command=settings.notify,
            url=settings.notify_url,
            interval=settings.notify_interval,
        )

    def __call__(self, event: Event) -> None:
        """Hear one event (on the engine's loop)."""
        alert = alert_of(event)
        if alert is None:
            return
        self._gathered.setdefault(alert.kind, []).append(alert.name)
        self._due()

    def _due(self) -> None:
        if self._flush is not None:
            return  # gathered into the message already due
        loop = asyncio.get_running_loop()
        wait = self._last_sent + self.interval - time.monotonic()
        if ENDED in self._gathered:
            wait = 0.0
        # Even when due now, sent at the loop's next turn: the events published
        # with this one (the tasks a failure blocks) join the same message.
        self._flush = loop.call_later(max(wait, 0.0), self._send_now)

    def _send_now(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        gathered, self._gathered = self._gathered, {}
        text = summary(gathered)
        if not text:
            return
        message = f"fleetdeck {self.fleet_name}: {text}"
        self._last_sent = time.monotonic()
        self.sent.append(message)
        task = asyncio.get_running_loop().create_task(self._send(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, message: str) -> None:
        if self.command:
            argv = [word.replace("{message}", message) for word in self.command]
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    await asyncio.wait_for(process.wait(), SEND_SECONDS)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            except OSError as exc:
                self._complain("notify", f"{argv[0]}: {exc.strerror or exc}")
        if self.url is not None:
            import httpx

            try:
                async with httpx.AsyncClient(timeout=SEND_SECONDS) as client:
                    response = await client.post(self.url, json={"text": message})
                    response.raise_for_status()
            except httpx.HTTPError as exc:
                self._complain("notify_url", f"{self.url}: {exc}")

    def _complain(self, what: str, why: str) -> None:
        if what in self._complained:
            return
        self._complained.add(what)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"fleetdeck: {what} failed: {why}\n")

    async def close(self) -> None:
        """Send what is still gathered, and wait for what is being sent."""
        if self._gathered:
            self._send_now()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=SEND_SECONDS)
