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

On a `[repo]` (the Zuul model): a task that lands is released when its agent
stage succeeds too, but only to a dependent that has it as its one dependency
(`speculates_on`): that dependent's worktree is made on the upstream's branch
(`stacked_on`, for the workspace), and a dependent with several dependencies
waits for them to land, as under any other policy. A dependent done with its
CI joins the merge train only once every dependency of its landed (`held`,
then `landed`): the train tests it on the target's tip, which holds them.

Pure, like the rest of the core: the simulator speculates and preempts exactly
as a real run does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleetdeck.engine import ends
from fleetdeck.model import Cause, EventKind, Outcome, Stage, TaskState
from fleetdeck.stages import worker_of

if TYPE_CHECKING:
    from fleetdeck.engine.core import Core

# A dependent in one of these states has not started on its upstream: nothing to preempt.
_NOT_STARTED = frozenset(
    {TaskState.PENDING, TaskState.BLOCKED, TaskState.FAILED, TaskState.CANCELLED}
)


def can_release(core: Core, node: int) -> bool:
    """True when task `node`'s dependents may start on its agent output now."""
    return len(core.pipelines[node]) > 1 and node not in core.released


def speculates_on(core: Core, dep: int, child: int) -> bool:
    """True when task `child` may start on released task `dep`'s agent output:
    always, unless `dep` lands on a `[repo]` and `child` has other
    dependencies (one worktree is stacked on one unlanded branch, never a
    merge of several)."""
    return Stage.MERGE not in core.pipelines[dep] or len(core.dag.deps[child]) == 1


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
    """Count task `node` as released (its speculating dependents' wait for it is over)."""
    core.released.add(node)
    for child in core.dag.dependents[node]:
        if speculates_on(core, node, child):
            core.waiting_on[child] -= 1


def landed(core: Core, node: int) -> None:
    """Released task `node` succeeded (landed): the dependents that did not
    speculate on it stop waiting for it now, and those waiting to join the
    merge train behind it join it once nothing else they need is unlanded."""
    core.released.discard(node)
    tasks = core.tasks
    for child in core.dag.dependents[node]:
        if not speculates_on(core, node, child):
            core.waiting_on[child] -= 1
            if core.waiting_on[child] == 0 and tasks[child].state is TaskState.PENDING:
                core.make_ready(child)
        elif child in core.landing_after and _upstream_unlanded(core, child) is None:
            core.landing_after.discard(child)
            _join_train(core, child)


def held(core: Core, node: int, at: float) -> bool:
    """Task `node` is done with the stages before its merge: True (and it waits,
    told as `merge_queued` with `after`) when a dependency of its has not
    landed yet; False when it may join the merge train now."""
    upstream = _upstream_unlanded(core, node)
    if upstream is None:
        return False
    task = core.tasks[node]
    task.state = TaskState.MERGE_QUEUED
    core.landing_after.add(node)
    core.queued_since[node] = at
    worker = worker_of(core.specs[node], Stage.MERGE)
    core.tell(EventKind.MERGE_QUEUED, task.id, node, {"train": worker, "after": upstream})
    return True


def stacked_on(core: Core, node: int) -> str | None:
    """The dependency whose unlanded branch task `node`'s worktree is made on
    (a released task that lands), or None: its worktree starts at the target's tip."""
    tasks = core.tasks
    for dep in core.dag.deps[node]:
        if (
            dep in core.released
            and tasks[dep].state is not TaskState.SUCCEEDED
            and Stage.MERGE in core.pipelines[dep]
        ):
            return tasks[dep].id
    return None


def _upstream_unlanded(core: Core, node: int) -> str | None:
    """A dependency of task `node` that has not succeeded (landed, or passed
    its CI), if any: nothing lands before what it depends on."""
    tasks = core.tasks
    for dep in core.dag.deps[node]:
        if tasks[dep].state is not TaskState.SUCCEEDED:
            return tasks[dep].id
    return None


def _join_train(core: Core, node: int) -> None:
    """A task held behind its upstream joins the merge train's queue now."""
    task = core.tasks[node]
    worker = worker_of(core.specs[node], Stage.MERGE)
    assert worker is not None
    queue = core.stage_queues[(Stage.MERGE, worker)]
    queue.append(node)
    core.queued_since[node] = core.clock.now()
    core.tell(EventKind.MERGE_QUEUED, task.id, node, {"train": worker, "position": len(queue)})
    if core.dirty is not None:
        core.dirty.add(node)


def hold_taken_up(core: Core) -> None:
    """A run taken up: tasks it finds in the merge train whose upstream has not
    landed leave the train's queue and wait for it again (`held`)."""
    for (stage, _worker), queue in core.stage_queues.items():
        if stage is not Stage.MERGE:
            continue
        for node in list(queue):
            if _upstream_unlanded(core, node) is not None:
                queue.remove(node)
                core.landing_after.add(node)


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
        if tasks[dep].state is not TaskState.SUCCEEDED
        and (dep not in released or not speculates_on(core, dep, node))
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
