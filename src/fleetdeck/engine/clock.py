"""Time for the core: `now()` and `call_later()`, from a real loop or made up.

The core never reads the time or sets a timer by itself: it asks its `Clock`. The
engine gives it a loop-backed one (wall time, asyncio timers: `LoopClock` in
the shell); the simulator and the
pure tests give it a `VirtualClock`, whose time moves only when told to, so a run
of hours is simulated in milliseconds and a test never sleeps.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any, Protocol


class Timer(Protocol):
    """A callback set for later; `cancel()` makes sure it never runs."""

    def cancel(self) -> None:
        """Forget the callback (a no-op once it ran)."""


class Clock(Protocol):
    """Where the core gets the time and its timers."""

    def now(self) -> float:
        """Seconds since the epoch (events carry it as their UTC timestamp)."""

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        """Run `callback(*args)` once, `delay` seconds from now."""


class _VirtualTimer:
    # Only whether it was cancelled: what it runs, and when, is in the heap's
    # entry (one object less to build per timer; a simulation sets two a task).
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


# The timer of every `call_soon` callback: never cancelled, since nobody holds it.
_UNCANCELLABLE = _VirtualTimer()

# A timer in the heap: (due at, order set, its handle, callback, args). Due times
# tie often (one instant, many events): the order breaks the tie, and nothing
# after it is ever compared.
_Entry = tuple[float, int, _VirtualTimer, Callable[..., None], tuple[Any, ...]]


class VirtualClock:
    """Time that moves only when `advance()` or `run()` moves it.

    Timers due at the same instant run in the order they were set, so a
    simulation with a seed is reproducible to the event.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._timers: list[_Entry] = []
        self._order = itertools.count()

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        """Set a timer `delay` virtual seconds from now (negative delays mean now)."""
        timer = _VirtualTimer()
        at = self._now + delay if delay > 0.0 else self._now
        heapq.heappush(self._timers, (at, next(self._order), timer, callback, args))
        return timer

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        """`call_later(0.0, ...)` for a callback nobody will cancel: no handle
        to build (the simulator asks for a launch decision at most instants)."""
        heapq.heappush(self._timers, (self._now, next(self._order), _UNCANCELLABLE, callback, args))

    @property
    def pending(self) -> int:
        """Timers set and not yet run (cancelled ones included until they come due)."""
        return len(self._timers)

    def next_at(self) -> float | None:
        """When the next live timer is due, or None when there is none."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def step(self) -> bool:
        """Move time to the next timer and run it; False when there is none."""
        at = self.next_at()
        if at is None:
            return False
        _at, _order, _timer, callback, args = heapq.heappop(self._timers)
        self._now = max(self._now, at)
        callback(*args)
        return True

    def advance(self, seconds: float) -> None:
        """Run every timer due within `seconds`, then stand at now + seconds."""
        until = self._now + seconds
        while (at := self.next_at()) is not None and at <= until:
            self.step()
        self._now = max(self._now, until)

    def run(self, *, limit: int = 100_000_000) -> int:
        """Run timers until none is left (or `limit` ran); returns how many ran."""
        # `step()` unrolled: a simulation runs two timers a task, and this loop
        # is most of what the clock costs it. The same order, the same times.
        timers = self._timers
        pop = heapq.heappop
        ran = 0
        while ran < limit and timers:
            at, _order, timer, callback, args = pop(timers)
            if timer.cancelled:
                continue
            if at > self._now:
                self._now = at
            callback(*args)
            ran += 1
        return ran
