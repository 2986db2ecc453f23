"""Small text helpers shared by the engine's messages and the views."""

from __future__ import annotations


def format_seconds(seconds: float | None) -> str:
    """`0.42s`, `12.3s`, `4m05s`, `2h03m`; `-` for nothing."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def plural(count: int, word: str) -> str:
    """`1 retry`, `2 retries`, `3 tasks`."""
    if count == 1:
        return f"1 {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}s"
