"""How a task ends, and what that does downstream: success, giving up, retrying.

Transitions of the core (functions of the core and their input, like the
operator's commands): a success makes dependents ready; a failure or cancel
blocks everything downstream while siblings go on; an operator retry puts a
task back with a fresh retry budget and unblocks what it blocked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetdeck.engine.reroute import missing_text
from fleetdeck.model import Attempt, Cause, EventKind, Outcome, Stage, TaskRun, TaskState
from fleetdeck.stages import FIRST_STAGE, STAGES, worker_of

if TYPE_CHECKING:
    from fleetdeck.engine.core import Core

# Looked up once: an enum member costs a metaclass lookup each time on Python
# 3.11 (see engine/core.py), and a success names these for each dependent.
_SUCCEEDED = TaskState.SUCCEEDED
_PENDING = TaskState.PENDING
_TASK_SUCCEEDED = EventKind.TASK_SUCCEEDED


def succeed(core: Core, node: int, at: float) -> None:
    """The task is done (at `at`, the end of its last attempt): its dependents
    may be launched at once (their processes start only once the journal
    holds this success: see `Effects.start`)."""
    task = core.tasks[node]
    if task.state is _SUCCEEDED:
        # Counted once only: a second count would leave the run waiting forever.
        return
    task.state = _SUCCEEDED
    task.finished_at = at
    core.leave_flight(task)
    if core.telling:  # the details are built only for someone to hear them
        first = task.first_started_at
        duration = 0.0 if first is None else at - first  # 0.0 is a time (virtual clocks)
        data = {"attempts": task.agent_attempts, "duration": round(duration, 3)}
        core.tell(_TASK_SUCCEEDED, task.id, node, data)
    if core.dirty is not None:  # (None while no view looks: no call at all)
        core.touch(node, dependents=True)  # what the dependents wait for changed too
    core.unfinished -= 1
    if core.released and node in core.released:
        # Its dependents stopped waiting for it when its agent stage succeeded
        # (those that speculate on it: engine/speculation.py).
        from fleetdeck.engine import speculation  # (it builds on this module)

        speculation.landed(core, node)
        core.effects.schedule_soon()
        return
    waiting_on = core.waiting_on
    for child in core.dag.dependents[node]:
        waiting_on[child] -= 1
        if waiting_on[child] == 0 and core.tasks[child].state is _PENDING:
            core.make_ready(child)
    core.effects.schedule_soon()


def unqueue(core: Core, node: int) -> None:
    """Take a task out of every queue and forget its retry timer."""
    core.ready.remove(node)
    if node in core.retry_lane:
        core.retry_lane.remove(node)
    timer = core.retry_timers.pop(node, None)
    if timer is not None:
        timer.cancel()
    core.queued_since.pop(node, None)
    core.landing_after.discard(node)
    for stage in core.pipelines[node][1:]:
        worker_name = worker_of(core.specs[node], stage)
        queue = core.stage_queues.get((stage, worker_name or ""))
        if queue is not None and node in queue:
            queue.remove(node)


def give_up(core: Core, node: int, state: TaskState, *, reason: str) -> None:
    """End a task as failed or cancelled, and block everything downstream."""
    task = core.tasks[node]
    if core.released and node in core.released:
        from fleetdeck.engine import speculation  # (it builds on this module)

        speculation.preempt(core, node, "gave up" if state is TaskState.FAILED else str(state))
    at = core.clock.now()
    task.state = state
    task.finished_at = at
    # A deliberate cancel is the operator's own decision: nothing to attend to.
    task.attention_since = at if state is TaskState.FAILED else None
    task.retry_at = None
    core.leave_flight(task)
    core.unfinished -= 1
    kind = EventKind.TASK_FAILED if state is TaskState.FAILED else EventKind.TASK_CANCELLED
    core.tell(kind, task.id, node, {"attempts": task.agent_attempts, "reason": reason})
    if state is TaskState.FAILED and core.specs[node].optional:
        # Optional: its dependents run without it, told what is missing and why.
        core.missing[node] = missing_text(task.id, reason)
        for child in core.dag.dependents[node]:
            core.waiting_on[child] -= 1
            if core.waiting_on[child] == 0 and core.tasks[child].state is _PENDING:
                core.make_ready(child)
        core.effects.schedule_soon()
        return
    for child in core.dag.descendants(node):
        blocked = core.tasks[child]
        if blocked.state in (TaskState.PENDING, TaskState.READY):
            core.ready.remove(child)
            blocked.state = TaskState.BLOCKED
            blocked.blocked_by = task.id
            # Blocked by a failure needs the operator; by their own cancel, not.
            blocked.attention_since = at if state is TaskState.FAILED else None
            core.unfinished -= 1
            core.tell(EventKind.TASK_BLOCKED, blocked.id, child, {"blocked_by": task.id})


def requeue(core: Core, node: int, stage: Stage | None = None) -> None:
    """Run a failed or cancelled task again with a fresh retry budget; its
    blocked dependents return to pending unless another failure blocks them.

    `stage` a later stage of its pipeline (CI): the task goes straight into that
    stage's queue, on the output of its last agent attempt (which must have
    succeeded: see `agent_output`), and is in flight again."""
    task = core.tasks[node]
    task.failures = 0
    task.lost = 0
    task.finished_at = None
    core.missing.pop(node, None)
    task.attention_since = None
    if stage is not None and stage is not FIRST_STAGE:
        _requeue_into(core, node, stage)
        _unblock_downstream(core, node)
        return
    blocker = core.blocker_of(node)
    if blocker is not None:
        # A cancelled blocked task, retried while what blocked it still fails.
        task.state = TaskState.BLOCKED
        task.blocked_by = blocker
        if core.needs_attention_as_blocked(node):
            task.attention_since = core.clock.now()
        core.emit(EventKind.TASK_BLOCKED, task.id, blocked_by=blocker)
        return
    core.unfinished += 1
    ready = core.waiting_on[node] == 0
    task.state = TaskState.READY if ready else TaskState.PENDING
    core.emit(
        EventKind.TASK_REQUEUED,
        task.id,
        state=task.state,
        stage=FIRST_STAGE,
        reason="operator retry",
        cause=Cause.OPERATOR,
    )
    if ready:
        core.make_ready(node)
    _unblock_downstream(core, node)


def _unblock_downstream(core: Core, node: int) -> None:
    """Task `node` runs again: what it blocked returns to pending, unless
    another failure still blocks it."""
    task = core.tasks[node]
    for child in core.dag.descendants(node):
        blocked = core.tasks[child]
        if blocked.state is not TaskState.BLOCKED:
            continue
        blocker = core.blocker_of(child)
        if blocker is None:
            blocked.state = TaskState.PENDING
            blocked.blocked_by = None
            blocked.attention_since = None
            core.unfinished += 1
            core.emit(
                EventKind.TASK_REQUEUED,
                blocked.id,
                state=TaskState.PENDING,
                reason=f"'{task.id}' retried",
                cause=Cause.UPSTREAM,
            )
        elif blocker != blocked.blocked_by:
            blocked.blocked_by = blocker
            core.emit(EventKind.TASK_BLOCKED, blocked.id, blocked_by=blocker)


def agent_output(task: TaskRun) -> Attempt | None:
    """The agent attempt a later stage of `task` would work on: its last agent
    attempt, if that one succeeded (None: there is no output to work on)."""
    for attempt in reversed(task.attempts):
        if attempt.stage is FIRST_STAGE:
            return attempt if attempt.outcome is Outcome.OK else None
    return None


def _requeue_into(core: Core, node: int, stage: Stage) -> None:
    """Put an ended task straight into the queue of `stage`, in flight again.

    Its dependencies all succeeded (it ran), so nothing blocks it, and nothing
    downstream starts before it succeeds."""
    task = core.tasks[node]
    output = agent_output(task)
    assert output is not None and stage in core.pipelines[node]
    task.output_attempt = output
    core.unfinished += 1
    core.enter_flight(task)
    definition = STAGES[stage]
    worker_name = worker_of(core.specs[node], stage)
    assert worker_name is not None and definition.queued_event is not None
    task.state = definition.queued
    core.emit(
        EventKind.TASK_REQUEUED,
        task.id,
        state=task.state,
        stage=stage,
        reason=f"operator retry ({stage} only)",
        cause=Cause.OPERATOR,
    )
    queue = core.stage_queues[(stage, worker_name)]
    queue.append(node)
    core.queued_since[node] = core.clock.now()
    data = {definition.worker_kind: worker_name, "position": len(queue)}
    core.tell(definition.queued_event, task.id, node, data)
    if core.dirty is not None:
        core.touch(node)


def fail_stranded(
    core: Core, usable: Callable[[Stage, str], bool], why: Callable[[Stage, str], str]
) -> None:
    """Fail waiting tasks one of whose stages has no host left to run on.

    `usable(stage, worker)` is False when every host of that worker failed
    for good, and `why(stage, worker)` then says what became of them."""
    for node, task in enumerate(core.tasks):
        if task.state.is_terminal or core.running_for(node) is not None:
            continue
        spec = core.specs[node]
        stranded = [
            (stage, name)
            for stage in core.pipelines[node]
            if (name := worker_of(spec, stage)) is not None and not usable(stage, name)
        ]
        if not stranded:
            continue
        stage, name = stranded[0]
        unqueue(core, node)
        kind = STAGES[stage].worker_kind
        give_up(
            core,
            node,
            TaskState.FAILED,
            reason=f"no usable host for {kind} '{name}' ({why(stage, name)})",
        )
