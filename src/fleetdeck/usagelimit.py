"""When a CLI agent's usage limit resets, read from what the agent printed (pure).

A CLI agent (Claude Code, Codex, Gemini CLI...) that hits its provider's usage
limit prints a message and stops, or waits. The agent's `usage_limit.pattern`
says which output means that; this module finds the reset time the message
gives, in the forms these tools print:

- a delay: "try again in 4 minutes", "retry in 30s", "in 1 hour", "in 2h 30m"
- a time of day: "resets at 3pm", "resets 3:30 PM (UTC)", "reset at 15:00";
  local time unless it says UTC; a time already past today is tomorrow's
- a Unix time after a bar, as Claude Code printed it: "usage limit reached|1767690000"

and otherwise falls back to `resume_after`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_AMOUNT = r"\d+(?:\.\d+)?\s*(?:seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b"
# "in 4 minutes", "in 1 hour and 30 minutes", "in 2h 30m", "in 1h, 5m"
_DELAY = re.compile(rf"\bin\s+({_AMOUNT}(?:(?:\s*,\s*|\s+and\s+|\s*){_AMOUNT})*)", re.IGNORECASE)
_DELAY_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smh])", re.IGNORECASE)
_CLOCK = re.compile(
    r"\b(?:resets?|until|after)\s+(?:at\s+)?(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?"
    r"(?:\s*\(?\s*(UTC|GMT)\b)?",
    re.IGNORECASE,
)
_EPOCH = re.compile(r"\|\s*(\d{10})\b")


def matching_line(pattern: str, text: str) -> str | None:
    """The last line of `text` that matches `pattern` (case-insensitive), if any."""
    compiled = re.compile(pattern, re.IGNORECASE)
    for line in reversed(text.splitlines()):
        if compiled.search(line):
            return line.strip()
    return None


def reset_delay(text: str, now: datetime) -> float | None:
    """Seconds from `now` (aware) until the reset `text` gives; None if it gives none."""
    epoch = _EPOCH.search(text)
    if epoch:
        return max(0.0, int(epoch.group(1)) - now.timestamp())
    delay = _DELAY.search(text)
    if delay:
        return sum(
            float(amount) * _UNITS[unit.lower()]
            for amount, unit in _DELAY_PART.findall(delay.group(1))
        )
    clock = _CLOCK.search(text)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2) or 0)
        meridiem = (clock.group(3) or "").lower().replace(".", "")
        if meridiem == "pm" and hour < 12:
            hour += 12
        elif meridiem == "am" and hour == 12:
            hour = 0
        if hour > 23 or minute > 59 or (not meridiem and clock.group(2) is None):
            return None  # "resets 5" is not a time
        zone = UTC if clock.group(4) else now.astimezone().tzinfo
        local_now = now.astimezone(zone)
        at = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if at <= local_now:
            at += timedelta(days=1)
        return (at - local_now).total_seconds()
    return None


def throttle_details(
    pattern: str, resume_after: float, text: str, now: datetime
) -> dict[str, object] | None:
    """What a throttled attempt_finished says when `text` (the attempt's output)
    matches `pattern`: `retry_after` and the line that said so; None otherwise."""
    line = matching_line(pattern, text)
    if line is None:
        return None
    delay = reset_delay(line, now)
    if delay is None:
        # The time is often on the line after the match ("... limit reached.\nResets 3pm").
        delay = reset_delay(text[text.rfind(line) :], now)
    return {
        "retry_after": round(resume_after if delay is None else max(1.0, delay), 3),
        "reason": f"usage limit: {line[:200]}",
    }
