"""An engine's run in this process, from start to end, and the signals that stop it.

One place for what the TUI and the headless view both need of the run they
show: `RunLifecycle` starts `Engine.run()` on the view's event loop, installs
the stop signals and tells the view when and how the run ended (it implements
`fleetdeck.client.RunHandle`). Views never start or await the engine themselves.

Signals: the terminal going away (SIGHUP) and a polite kill (SIGTERM) stop the
run cleanly: no new launches, the attempts in flight stopped with their grace
period. Where SIGINT is ours (headless: in the TUI, Ctrl-C is a key), the first
one stops cleanly the same way and says so, and a second one hurries: SIGKILL at
once, still to every process of each attempt's tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from fleetdeck.engine import Engine, RunResult


class RunLifecycle:
    """One engine's run: started on the running loop, stopped by signals, its end told.

    `interrupt`: SIGINT stops the run too (first cleanly, then in a hurry);
    `until_settled`: the run ends by itself once every task has ended (otherwise
    only a stop ends it).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        interrupt: bool = False,
        until_settled: bool = True,
        err: TextIO | None = None,
    ) -> None:
        self.engine = engine
        self._interrupt = interrupt
        self._until_settled = until_settled
        self._err = err
        self._task: asyncio.Task[RunResult] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The signals handled, and the Python handler each had before.
        self._signals: list[tuple[int, Any]] = []
        self._on_finish: Callable[[], None] | None = None
        self._on_stop_signal: Callable[[], None] | None = None
        self._interrupts = 0
        self.stopped_from_outside = False

    # --- what a view reads ------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run has ended (or its engine failed)."""
        return self._task is not None and self._task.done()

    @property
    def result(self) -> RunResult | None:
        """How the run ended, once it has (None if its engine failed)."""
        task = self._task
        if task is None or not task.done() or task.cancelled() or task.exception():
            return None
        return task.result()

    @property
    def failure(self) -> BaseException | None:
        """What stopped the engine, if it failed rather than ended (None too when
        its run was cancelled: `finished` with no `result`)."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @property
    def exit_code(self) -> int | None:
        """The process's exit code once the run has ended: the run's, or 1 if its
        engine failed; None while it runs."""
        if not self.finished:
            return None
        result = self.result
        return 1 if result is None else result.exit_code

    # --- starting and ending ----------------------------------------------------------

    def start(
        self,
        *,
        on_finish: Callable[[], None] | None = None,
        on_stop_signal: Callable[[], None] | None = None,
    ) -> None:
        """Start the run on the running event loop and install the stop signals;
        `on_finish` is called once the run has ended, `on_stop_signal` after each
        stop signal (once the run was asked to stop)."""
        if self._task is not None:
            raise RuntimeError("the run has already started")
        self._on_finish = on_finish
        self._on_stop_signal = on_stop_signal
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self.engine.run(until_settled=self._until_settled))
        self._task.add_done_callback(self._finished)
        self._install_signals()

    async def wait(self) -> RunResult:
        """Wait for the run's end (raises what stopped its engine, if it failed)."""
        if self._task is None:
            raise RuntimeError("the run has not started")
        # Shielded: a view that stops waiting (its own task cancelled) leaves the
        # run to close(), which stops it properly.
        return await asyncio.shield(self._task)

    async def close(self) -> None:
        """Leave no work behind: stop what still runs at once (whole process trees)
        and wait for it; then take the signal handlers away."""
        task = self._task
        try:
            if task is not None and not task.done():
                self.engine.request_stop(hurry=True)
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.shield(task)
        finally:
            self._remove_signals()

    def _finished(self, task: asyncio.Task[RunResult]) -> None:
        if self._on_finish is not None:
            self._on_finish()

    # --- signals ----------------------------------------------------------------------

    def _install_signals(self) -> None:
        assert self._loop is not None
        handlers: list[tuple[int, Callable[[], None]]] = [
            # The terminal went away, or someone asked us politely to stop.
            (signal.SIGHUP, self._stop_from_outside),
            (signal.SIGTERM, self._stop_from_outside),
        ]
        if self._interrupt:
            handlers.append((signal.SIGINT, self._interrupted))
        for signum, handler in handlers:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                # Not on every platform, nor off the main thread.
                before = signal.getsignal(signum)
                self._loop.add_signal_handler(signum, handler)
                self._signals.append((signum, before))

    def _remove_signals(self) -> None:
        loop, self._loop = self._loop, None
        signals, self._signals = self._signals, []
        if loop is None or loop.is_closed():
            return
        for signum, before in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signum)
                # The loop leaves the default behind; what was there before (asyncio.run's
                # own Ctrl-C handling, say) is what should come back.
                if before is not None:
                    signal.signal(signum, before)

    def _stop_from_outside(self) -> None:
        # No one may be there to answer a question: stop at once, cleanly.
        self.stopped_from_outside = True
        self.engine.request_stop()
        if self._on_stop_signal is not None:
            self._on_stop_signal()

    def _interrupted(self) -> None:
        """Ctrl-C stops cleanly; a second Ctrl-C kills at once (still the whole trees)."""
        self._interrupts += 1
        if self._interrupts == 1:
            running = self.engine.snapshot().running
            err = self._err or sys.stderr
            with contextlib.suppress(OSError, ValueError):
                err.write(
                    f"fleetdeck: interrupted: stopping {len(running)} attempt(s) "
                    f"(grace {self.engine.grace:g}s; Ctrl-C again to kill at once)\n"
                )
            self._stop_from_outside()
        else:
            self.stopped_from_outside = True
            self.engine.request_stop(hurry=True)
            if self._on_stop_signal is not None:
                self._on_stop_signal()
