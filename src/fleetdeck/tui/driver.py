"""Textual's Linux driver, made to outlive its terminal.

When the terminal goes away (the SSH connection drops, tmux is killed), writes to
it fail with EIO. Textual's output thread dies on the first such error, its
bounded queue fills up, and the next write blocks the event loop for good: the
app hangs while stopping, and the engine, which runs on that loop, never gets
to stop the attempts in flight (seen with 50 attempts in flight and SIGHUP).
Here writes to a terminal that is gone are dropped instead, so the app goes on
stopping the work cleanly, as a SIGHUP asks.
"""

from __future__ import annotations

from typing import IO, Any

from textual.drivers.linux_driver import LinuxDriver


class _LenientStream:
    """A text stream whose writes are dropped once one has failed (terminal gone)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):  # EIO, EPIPE; ValueError: closed
                self.gone = True
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self.gone = True

    def __getattr__(self, name: str) -> Any:
        # fileno(), isatty(), encoding...: as the stream has them.
        return getattr(self._stream, name)


class TerminalSafeDriver(LinuxDriver):
    """LinuxDriver whose output survives the terminal going away."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._file is not None:
            self._file = _LenientStream(self._file)  # type: ignore[assignment]
