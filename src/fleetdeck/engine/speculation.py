"""Speculation: dependents started on an upstream's agent output, and preempted.

Transitions of the core for a policy that `speculates` (pipelined): when a
task's agent stage succeeds and a later stage (CI) follows, its dependents no
longer wait for it (it is *released*): they may start on its agent output
before its CI passed. When a released task then fails a later stage (or is
lost there, or gives up, or is cancelled), everything downstream of it that
started is *preempted*: an attempt running is stopped (its outcome
`preempted`: not a failure, no retry spent), a task queued or done is put back
to pending, and each waits for its upstream again. Each task put back is a
compound failure; the work it threw away is rework (fleetdeck.metrics).

A task that lands on a `[repo]` releases nothing early: its dependents' worktrees
would have to be stacked on its unlanded branch, which the landing code does
not build; they wait for it to land as under any other policy.

Pure, like the rest of the core: the simulator speculates and preempts exactly
as a real run does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetdeck.engine import ends
from fleetdeck.model import Cause, EventKind, Outcome, Stage, TaskState

if TYPE_CHECKING:
    from fleetdeck.engine.core import Core

# A dependent in one of these states has not started on its upstream: nothing to preempt.
_NOT_STARTED = frozenset(
    {TaskState.PENDING, TaskState.BLOCKED, TaskState.FAILED, TaskState.CANCELLED}
)


def can_release(core: Core, node: int) -> bool:
    """True when task `node`'s dependents may start on its agent output now."""
    stages = core.pipelines[node]
    return len(stages) > 1 and Stage.MERGE not in stages and node not in core.released


def release(core: Core, node: int) -> None:
    """Task `node`'s agent stage succeeded under a speculating policy: its
    dependents stop waiting for it (those with nothing else to wait for are ready)."""
    if not can_release(core, node):
        return
    mark_released(core, node)
    task_id = core.tasks[node].id
    tasks = core.tasks
    for child in core.dag.dependents[node]:
        if core.waiting_on[child] == 0 and tasks[child].state is TaskState.PENDING:
            core.make_ready(child, reason=f"'{task_id}' agent done (speculative)")


def mark_released(core: Core, node: int) -> None:
    """Count task `node` as released (its dependents' wait for it is over)."""
    core.released.add(node)
    for child in core.dag.dependents[node]:
        core.waiting_on[child] -= 1


def preempt(core: Core, node: int, why: str) -> None:
    """Task `node`'s agent output is void (`why`): every task downstream that
    started on it is preempted and waits for it again."""
    if node not in core.released:
        return
    core.released.discard(node)
    upstream = core.tasks[node].id
    reason = f"preempted: '{upstream}' {why}"
    affected = core.dag.descendants(node)
    for child in affected:
        task = core.tasks[child]
        if task.state in _NOT_STARTED:
            continue
        core.released.discard(child)
        running = core.running_for(child)
        if running is not None:
            # Put back when its process has ended (`ended`): never two at once.
            running.details = {**(running.details or {}), "reason": reason}
            core.stop_attempt(running, Outcome.PREEMPTED)
            continue
        if task.state is TaskState.SUCCEEDED:
            core.unfinished += 1
        else:
            ends.unqueue(core, child)
            core.leave_flight(task)
        _put_back(core, child, reason)
    for child in affected:
        core.waiting_on[child] = waiting_for(core, child)
    for child in affected:
        task = core.tasks[child]
        if task.state is TaskState.PENDING and core.waiting_on[child] == 0:
            core.make_ready(child)
    if core.dirty is not None:
        core.dirty.update(affected)


def ended(core: Core, node: int, reason: str | None) -> None:
    """A preempted attempt's process has ended: its task waits for its upstream
    again (blocked, if that upstream has given up meanwhile). `reason`: why it
    was preempted."""
    task = core.tasks[node]
    core.leave_flight(task)
    _put_back(core, node, reason or "preempted")
    core.waiting_on[node] = waiting_for(core, node)
    blocker = core.blocker_of(node)
    if blocker is not None:
        _block(core, node, blocker)
    elif core.waiting_on[node] == 0:
        core.make_ready(node)


def waiting_for(core: Core, node: int) -> int:
    """How many of task `node`'s dependencies it still waits for."""
    tasks = core.tasks
    released = core.released
    return sum(
        1
        for dep in core.dag.deps[node]
        if tasks[dep].state is not TaskState.SUCCEEDED and dep not in released
    )


def _put_back(core: Core, node: int, reason: str) -> None:
    task = core.tasks[node]
    task.state = TaskState.PENDING
    task.finished_at = None
    task.retry_at = None
    task.output_attempt = None
    core.emit(
        EventKind.TASK_REQUEUED,
        task.id,
        state=TaskState.PENDING,
        reason=reason,
        cause=Cause.PREEMPTED,
    )


def _block(core: Core, node: int, blocker: str) -> None:
    """Block task `node` and what waits on it downstream (its upstream gave up
    while its preempted attempt was ending)."""
    at = core.clock.now()
    failed = core.tasks[core.node(blocker)].state in (TaskState.FAILED, TaskState.BLOCKED)
    for child in (node, *core.dag.descendants(node)):
        task = core.tasks[child]
        if task.state not in (TaskState.PENDING, TaskState.READY):
            continue
        core.ready.remove(child)
        task.state = TaskState.BLOCKED
        task.blocked_by = blocker
        task.attention_since = at if failed else None
        core.unfinished -= 1
        core.emit(EventKind.TASK_BLOCKED, task.id, blocked_by=blocker)
