"""Learning of process exits through pidfds, many of them watched as one.

A pidfd becomes readable when its process exits. Watching each one with the
event loop's `add_reader` costs about 12 us of Python per process (a Handle, the
selector's key map, a transport check) for a registration that lives a few
milliseconds when tasks are short. A `PidfdWatch` keeps the pidfds in an epoll
set of its own, which costs a C call of about a microsecond each way, and the
loop watches that one descriptor: when it is readable, the processes that exited
are told, each through its callback.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable


class PidfdWatch:
    """Pidfds to watch on one event loop, each with what to call when it is readable.

    A callback is called again, at the loop's next turn, for as long as its pidfd
    is watched and readable (level-triggered, like `add_reader`): `forget` it once
    the process is reaped.
    """

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}

    def watch(self, pidfd: int, callback: Callable[[], None]) -> None:
        """Call `callback` when `pidfd` is readable (its process has exited)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._move_to(loop)
        assert self._epoll is not None
        self._epoll.register(pidfd, select.EPOLLIN)
        self._callbacks[pidfd] = callback

    def forget(self, pidfd: int) -> None:
        """Stop watching `pidfd` (before closing it)."""
        if self._callbacks.pop(pidfd, None) is not None and self._epoll is not None:
            self._epoll.unregister(pidfd)

    def close(self) -> None:
        """Stop watching everything; the pidfds themselves stay open."""
        self._callbacks.clear()
        if self._epoll is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
        self._epoll = None
        self._loop = None

    def __len__(self) -> int:
        return len(self._callbacks)

    def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        # An executor used by two `asyncio.run`s one after the other (as tests
        # do) starts over on the second; what the first watched ended with it.
        if self._callbacks and self._loop is not None and not self._loop.is_closed():
            raise RuntimeError("a PidfdWatch cannot serve two running event loops")
        self.close()
        self._epoll = select.epoll()
        self._loop = loop
        loop.add_reader(self._epoll.fileno(), self._ready)

    def _ready(self) -> None:
        assert self._epoll is not None
        for pidfd, _events in self._epoll.poll(0):
            callback = self._callbacks.get(pidfd)
            if callback is not None:
                callback()
