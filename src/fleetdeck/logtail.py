"""Reading attempt logs from disk for views: the last line, or new lines as they come.

Agents may print megabytes a second; the full log stays on disk and views read
only what they show: a bounded tail, in chunks, never the whole file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetdeck.redact import Redactor

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


def overwritten(line: str, redact: Callable[[str], str] | None = None) -> str:
    """`line` as a terminal leaves it: each carriage return sends the cursor back to
    the start, and what follows writes over what was there (progress bars), instead
    of every state of the line run together. Escape sequences are cleaned away.

    `"10%\r20%\r100% done"` reads `100% done`; `"downloading\rok"` reads
    `okwnloading`, as on screen; a trailing `\r` (CRLF line ends) changes nothing.
    Each part is masked with `redact` before it is written over: what is left of a
    secret partly written over is masked all the same.
    """
    if "\r" not in line:
        return redact(clean(line)) if redact else clean(line)
    shown = ""
    for part in line.split("\r"):
        part = redact(clean(part)) if redact else clean(part)
        shown = part + shown[len(part) :]
    return shown


def _tail(path: str, window: int) -> tuple[bytes, int] | None:
    """The last `window` bytes of the file at `path` and where they start in it;
    None for a missing or unreadable file."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - window)
            handle.seek(start)
            return handle.read(window), start
    except OSError:
        return None


def last_line(path: str, *, window: int = 4096, redact: Redactor | None = None) -> str:
    """The last non-empty line of the file at `path` (reads at most `window` bytes),
    with the secrets of `redact` masked."""
    read = _tail(path, window)
    if read is None:
        return ""
    tail, start = read
    lines = tail.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        # \r-separated progress updates: the last one is what a terminal would show.
        text = clean(lines[index].decode("utf-8", errors="replace").rsplit("\r", 1)[-1]).strip()
        if not text:
            continue
        if not redact:
            return text
        if index == 0 and start > 0:
            # The window cut this line, maybe through a secret whose end no mask
            # would match: mask the whole ones, then drop what could be left of one.
            return "…" + redact.text(text)[redact.longest - 1 :].lstrip()
        return redact.text(text)
    return ""


def last_lines(
    path: str, count: int = 5, *, window: int = 8192, redact: Redactor | None = None
) -> list[str]:
    """The last `count` non-empty lines of the file at `path` (reading at most
    `window` bytes from its end), cleaned, with the secrets of `redact` masked;
    [] for a missing or unreadable file."""
    read = _tail(path, window)
    if read is None:
        return []
    tail, start = read
    lines = tail.splitlines()
    if start > 0 and lines:
        # The window cut the first line, maybe through a secret no mask would match.
        lines.pop(0)
    shown: list[str] = []
    for raw in reversed(lines):
        # \r-separated progress updates: the last one is what a terminal would show.
        text = clean(raw.decode("utf-8", errors="replace").rsplit("\r", 1)[-1]).rstrip()
        if text.strip():
            shown.append(redact.text(text) if redact else text)
            if len(shown) == count:
                break
    shown.reverse()
    return shown


class LogFollower:
    """Follows a growing log: `read()` returns the complete new lines since last time.

    It starts `backlog` bytes before the end, so opening a huge log shows its tail
    at once, and reads at most `chunk` bytes per call, so a flood of output is
    taken in bounded bites.
    """

    def __init__(
        self,
        path: str,
        *,
        backlog: int = 64 * 1024,
        chunk: int = 256 * 1024,
        redact: Redactor | None = None,
    ) -> None:
        """Lines come out with the secrets of `redact` masked (after escape sequences
        are cleaned away, so a secret broken up by them is masked as it is seen)."""
        self.path = path
        self._redact = redact
        self._backlog = backlog
        self._chunk = chunk
        self._offset: int | None = None
        self._partial = b""
        self._cut_first_line = False
        self.skipped = 0  # bytes before the backlog, never shown

    def read(self) -> list[str]:
        """New complete lines (cleaned, and as a terminal shows them: see
        `overwritten`); an unfinished last line waits for its end."""
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
        redact = self._redact.text if self._redact else None
        return [overwritten(line.decode("utf-8", errors="replace"), redact) for line in lines]
