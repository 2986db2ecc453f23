"""Small pieces of rendering shared by the panes: state glyphs, bars, sparklines.

Every state has a glyph as well as a colour, so the screen reads the same with
NO_COLOR set or on a monochrome terminal.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from fleetdeck.model import TaskState

# Geometric shapes and arrows that every monospace font has, one cell wide
# (no emoji: some terminals draw those two cells wide and break the columns).
STATE_GLYPHS: dict[TaskState, str] = {
    TaskState.PENDING: "○",
    TaskState.READY: "◌",
    TaskState.RUNNING: "▶",
    TaskState.CI_QUEUED: "◐",
    TaskState.CI_RUNNING: "◉",
    TaskState.MERGE_QUEUED: "◑",
    TaskState.MERGING: "⇡",
    TaskState.RETRY_WAIT: "↻",
    TaskState.SUCCEEDED: "✓",
    TaskState.FAILED: "✗",
    TaskState.BLOCKED: "⊘",
    TaskState.CANCELLED: "⊖",
}

STATE_STYLES: dict[TaskState, str] = {
    TaskState.PENDING: "dim",
    TaskState.READY: "",
    TaskState.RUNNING: "bold green",
    TaskState.CI_QUEUED: "yellow",
    TaskState.CI_RUNNING: "bold cyan",
    TaskState.MERGE_QUEUED: "yellow",
    TaskState.MERGING: "bold blue",
    TaskState.RETRY_WAIT: "magenta",
    TaskState.SUCCEEDED: "green",
    TaskState.FAILED: "bold red",
    TaskState.BLOCKED: "red",
    TaskState.CANCELLED: "dim red",
}

_SPARKS = "▁▂▃▄▅▆▇█"


SHORT_NAMES: dict[TaskState, str] = {
    TaskState.PENDING: "pending",
    TaskState.READY: "ready",
    TaskState.RUNNING: "running",
    TaskState.CI_QUEUED: "ci queue",
    TaskState.CI_RUNNING: "ci run",
    TaskState.MERGE_QUEUED: "to merge",
    TaskState.MERGING: "landing",
    TaskState.RETRY_WAIT: "retry",
    TaskState.SUCCEEDED: "done",
    TaskState.FAILED: "failed",
    TaskState.BLOCKED: "blocked",
    TaskState.CANCELLED: "cancelled",
}


def state_text(state: TaskState, *, short: bool = False) -> Text:
    """`▶ running`, coloured; `short` keeps it to 11 cells (`⊖ cancelled`)."""
    name = SHORT_NAMES[state] if short else state.value.replace("_", " ")
    return Text(f"{STATE_GLYPHS[state]} {name}", style=STATE_STYLES[state])


def sparkline(values: Sequence[float], width: int, *, ceiling: float | None = None) -> str:
    """The last `width` values as block characters, scaled to `ceiling` (or the max)."""
    shown = list(values)[-width:]
    if not shown:
        return ""
    top = ceiling if ceiling else max(shown)
    if top <= 0:
        return _SPARKS[0] * len(shown)
    last = len(_SPARKS) - 1
    return "".join(_SPARKS[min(last, round(value / top * last))] for value in shown)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar `width` cells wide, filled to `fraction` (eighths of a cell)."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part and full < width else ""
    return ("█" * full + partial).ljust(width, "░")


def clock(seconds: float) -> str:
    """`0:07`, `12:34`, `1:02:03` for an elapsed time."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def size(num_bytes: int | None) -> str:
    """`512K`, `38M`, `1.2G`."""
    if num_bytes is None:
        return "-"
    value = float(num_bytes)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if value >= 10 or unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"


def cut(text: str | Text, width: int, style: str = "") -> Text:
    """`text` in at most `width` cells, with an ellipsis when cut."""
    line = text.copy() if isinstance(text, Text) else Text(text, style=style)
    line.truncate(width, overflow="ellipsis")
    return line


def short_seconds(seconds: float | None) -> str:
    """`0.4s`, `12s`, `4m`, `2h` for tight spaces."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"
