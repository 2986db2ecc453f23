"""Which events need the operator, and the words that tell them (pure).

Shared by the notifications (`notify.Notifier`: `[fleet] notify`, `notify_url`)
and the screens that ring (the TUI, in-process or attached), so every way of
being told hears the same things: a task failed, tasks blocked behind it, an
agent throttled by its provider (until when), an agent's budget spent, a merge
conflict, a landing waiting on a checked-out target with local changes, and
the run's end. An event's `data` may hold enums (in-process) or their strings
(over the control socket): both read the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetdeck.model import Event, EventKind

# The kinds of alert, in the order a gathered message tells them.
FAILED = "failed"
BLOCKED = "blocked"
THROTTLED = "throttled"
BUDGET = "budget"
CONFLICT = "conflict"
WAITING = "waiting"
ENDED = "ended"
ORDER = (FAILED, BLOCKED, THROTTLED, BUDGET, CONFLICT, WAITING, ENDED)


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing the operator should hear of: its kind and what it names (a
    task, an agent with when it resumes, or how the run ended)."""

    kind: str
    name: str


def alert_of(event: Event) -> Alert | None:
    """The alert an event is, or None for an event nobody needs to hear of."""
    kind, data = event.kind, event.data
    if kind is EventKind.TASK_FAILED and event.task is not None:
        return Alert(FAILED, event.task)
    if kind is EventKind.TASK_BLOCKED and event.task is not None:
        return Alert(BLOCKED, event.task)
    if kind is EventKind.PAUSED and data.get("agent") is not None:
        agent = str(data["agent"])
        if data.get("attention") is not None:
            return Alert(BUDGET, str(data["attention"]))
        if data.get("until") is not None:
            return Alert(THROTTLED, f"{agent} until {data['until']}")
        return None
    if kind is EventKind.ATTEMPT_FINISHED and event.task is not None:
        outcome = str(data.get("outcome"))
        if outcome == "conflict":
            return Alert(CONFLICT, event.task)
        if outcome == "wait":
            return Alert(WAITING, event.task)
        return None
    if kind is EventKind.RUN_FINISHED:
        status = data.get("status", "finished")
        return Alert(ENDED, f"run {status} (exit {data.get('exit_code')})")
    return None


def _tasks(count: int) -> str:
    return f"{count} task{'s' if count > 1 else ''}"


def summary(alerts: dict[str, list[str]]) -> str:
    """The words for what was gathered, kind by kind ("2 tasks failed: a, b;
    agent throttled: claude until ..."); empty when nothing was."""
    parts = []
    for kind in ORDER:
        names = list(dict.fromkeys(alerts.get(kind) or []))  # once each, in order
        if not names:
            continue
        listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        if kind == FAILED:
            parts.append(f"{_tasks(len(names))} failed: {listed}")
        elif kind == BLOCKED:
            parts.append(f"{_tasks(len(names))} blocked")
        elif kind == THROTTLED:
            parts.append(f"agent throttled: {listed}")
        elif kind == BUDGET:
            parts.append("; ".join(names[:5]))
        elif kind == CONFLICT:
            parts.append(f"merge conflict: {listed}")
        elif kind == WAITING:
            parts.append(f"waiting to land (local changes in the target): {listed}")
        else:
            parts.append(names[-1])
    return "; ".join(parts)
