"""The journal's events folded into task states: the one reading of the history.

The core decides each transition and tells it as an event; this module reads
those events back. Resuming a run (fleetdeck.resume), the report
(fleetdeck.metrics) and the simulator's report all fold events through
`next_state`, so a state means the same thing everywhere, and a test checks
that folding a run's events gives the core's own table.
"""

from __future__ import annotations

from fleetdeck.model import Event, EventKind, TaskState
from fleetdeck.stages import STAGES

# The state each stage's queued event puts its task in (ci_queued -> ci_queued...).
_QUEUED_BY_EVENT = {
    definition.queued_event: definition.queued
    for definition in STAGES.values()
    if definition.queued_event is not None
}
# The events that put a task in a later stage's queue.
QUEUED_EVENTS = frozenset(_QUEUED_BY_EVENT)
_RUNNING_BY_STAGE = {str(stage): definition.running for stage, definition in STAGES.items()}
_ENDED = {
    EventKind.TASK_SUCCEEDED: TaskState.SUCCEEDED,
    # Done in an earlier run, carried over as done into this one.
    EventKind.TASK_REUSED: TaskState.SUCCEEDED,
    EventKind.TASK_FAILED: TaskState.FAILED,
    EventKind.TASK_CANCELLED: TaskState.CANCELLED,
    EventKind.TASK_BLOCKED: TaskState.BLOCKED,
}


def next_state(state: TaskState, event: Event) -> TaskState:
    """The state of a task after `event` (one of its own), from `state`."""
    kind = event.kind
    if kind is EventKind.TASK_READY:
        return TaskState.READY
    if kind is EventKind.ATTEMPT_STARTED:
        return _RUNNING_BY_STAGE.get(str(event.data.get("stage")), TaskState.RUNNING)
    if kind is EventKind.RETRY_SCHEDULED:
        return TaskState.RETRY_WAIT
    if kind is EventKind.TASK_REQUEUED:
        return TaskState(event.data.get("state", TaskState.PENDING))
    ended = _ENDED.get(kind)
    if ended is not None:
        return ended
    queued = _QUEUED_BY_EVENT.get(kind)
    if queued is not None:
        return queued
    return state


def folds_state(kind: EventKind) -> bool:
    """True when events of `kind` can change a task's state."""
    return kind in _FOLDED


_FOLDED = frozenset(
    {
        EventKind.TASK_READY,
        EventKind.ATTEMPT_STARTED,
        EventKind.RETRY_SCHEDULED,
        EventKind.TASK_REQUEUED,
        *_ENDED,
        *_QUEUED_BY_EVENT,
    }
)
