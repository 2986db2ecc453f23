"""Reading attempt logs from disk for views: the last line, or new lines as they come.

Agents may print megabytes a second; the full log stays on disk and views read
only what they show: a bounded tail, in chunks, never the whole file.
"""

from __future__ import annotations

import os
import re

# CSI and OSC escape sequences, and other control characters but tab.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves
    r"|\x1b\][^\x07\x1b]*(\x07|\x1b\\)"  # OSC: titles, hyperlinks
    r"|\x1b."  # other two-byte escapes
    r"|[\x00-\x08\x0b-\x1f\x7f]"  # control characters but tab and newline
)


def clean(line: str) -> str:
    """`line` without terminal escape sequences or control characters."""
    return _ESCAPES.sub("", line)


def last_line(path: str, *, window: int = 4096) -> str:
    """The last non-empty line of the file at `path` (reads at most `window` bytes)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - window))
            tail = handle.read(window)
    except OSError:
        return ""
    for raw in reversed(tail.splitlines()):
        # \r-separated progress updates: the last one is what a terminal would show.
        text = clean(raw.decode("utf-8", errors="replace").rsplit("\r", 1)[-1]).strip()
        if text:
            return text
    return ""


class LogFollower:
    """Follows a growing log: `read()` returns the complete new lines since last time.

    It starts `backlog` bytes before the end, so opening a huge log shows its tail
    at once, and reads at most `chunk` bytes per call, so a flood of output is
    taken in bounded bites.
    """

    def __init__(self, path: str, *, backlog: int = 64 * 1024, chunk: int = 256 * 1024) -> None:
        self.path = path
        self._backlog = backlog
        self._chunk = chunk
        self._offset: int | None = None
        self._partial = b""
        self._cut_first_line = False
        self.skipped = 0  # bytes before the backlog, never shown

    def read(self) -> list[str]:
        """New complete lines (cleaned); an unfinished last line waits for its end."""
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if self._offset is None:
                    self._offset = self.skipped = max(0, size - self._backlog)
                    # Starting mid-file, the first line read is most likely cut.
                    self._cut_first_line = self._offset > 0
                if size < self._offset:  # truncated: start again
                    self._offset, self._partial = 0, b""
                handle.seek(self._offset)
                data = handle.read(self._chunk)
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if self._cut_first_line and lines:
            lines.pop(0)
            self._cut_first_line = False
        return [clean(line.decode("utf-8", errors="replace").rstrip("\r")) for line in lines]
