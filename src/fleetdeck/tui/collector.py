"""Python's full garbage collections, moved to moments when no key is waiting.

Refcounting frees almost everything the TUI drops, but Textual's rendering
leaves reference cycles behind (a `Strip` keeps itself in its own divide
cache), so some garbage waits for a collection of the oldest generation.
Left to Python, those full collections came every 5-15 s while keys were
pressed, at whatever moment, and each held the event loop for 20-50 ms (at
10,000 tasks under the benchmark's flood of output, though the start-up
objects are frozen): a key pressed meanwhile waited for it. Here Python
still collects the young generations itself (a few ms), and a full
collection, when one is due, runs just after the app has answered a key
(the next one rarely comes that soon), or when the keyboard is left alone;
and at least every `MOST` seconds whatever happens, so memory stays bounded
however busy the keyboard.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

# A full collection at most this often (seconds) ...
EVERY = 10.0
# ... once no key or mouse event came for this long (the app has answered the
# last one by then: keys take 10-30 ms to reach the screen) ...
QUIET = 0.1
# ... and at least this often, however busy the keyboard.
MOST = 60.0
# Gen-1 collections between automatic full ones: far more than come between
# two of ours, so that Python's own never come first.
_FULL_THRESHOLD = 1_000_000


class IdleCollector:
    """Full collections when the operator is idle.

    `tick()` it from a timer, and `QUIET` seconds after each key.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        self._clock = clock
        self._collect = collect
        self._thresholds: tuple[int, int, int] | None = None
        self._last_input = self._last_full = clock()

    def start(self) -> None:
        """Take full collections over from Python (young ones stay automatic)."""
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle, _ = self._thresholds
            gc.set_threshold(young, middle, _FULL_THRESHOLD)
        self._last_input = self._last_full = self._clock()

    def stop(self) -> None:
        """Give Python its own thresholds back."""
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def input_seen(self) -> None:
        """A key or mouse event came in: the operator is there."""
        self._last_input = self._clock()

    def tick(self) -> bool:
        """Collect the oldest generation if it is time; whether it did."""
        now = self._clock()
        since = now - self._last_full
        quiet = now - self._last_input >= QUIET
        if not ((quiet and since >= EVERY) or since >= MOST):
            return False
        self._collect()
        self._last_full = self._clock()
        return True
