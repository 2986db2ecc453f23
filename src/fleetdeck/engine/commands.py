"""The operator's commands, as transitions of the core.

Each takes the core and the command's argument, changes the task table through
the core's own transitions (so they are journaled like everything else), and
raises CommandError with a sentence for the operator when it cannot be done.
"""

from __future__ import annotations

from fleetdeck.engine import ends
from fleetdeck.engine.core import CommandError, Core
from fleetdeck.model import EventKind, Outcome, TaskState
from fleetdeck.policy import make_policy, parse_policy


def set_policy(core: Core, name: str) -> None:
    """Switch policy for the next launch decision; never touches work in flight."""
    try:
        policy = parse_policy(name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if policy == core.policy.name:
        return
    previous = core.policy.name
    core.policy = make_policy(policy, core.fleet.config.policy_params(policy))
    core.emit(EventKind.POLICY_CHANGED, None, policy=policy, previous=previous)
    core.effects.schedule_soon()


def pause(core: Core) -> None:
    """Hold back new agent attempts (work in flight, later stages included, goes on)."""
    if not core.paused:
        core.paused = True
        core.emit(EventKind.PAUSED, None)


def resume(core: Core) -> None:
    """Let launches start again."""
    if core.paused:
        core.paused = False
        core.emit(EventKind.RESUMED, None)
        core.effects.schedule_soon()


def cancel(core: Core, task_id: str) -> None:
    """Cancel a task: stop its attempt (the whole process tree) and block its
    dependents. A blocked task is cancelled too: the operator decided it will not
    run, so it leaves the attention queue."""
    node = core.node(task_id)
    task = core.tasks[node]
    if task.state is TaskState.BLOCKED:
        task.state = TaskState.CANCELLED
        task.attention_since = None
        # Its blocked dependents now have a cancelled dependency: like any task
        # blocked by a cancel, they need no attention (unless a failure blocks them too).
        for child in core.dag.dependents[node]:
            blocked = core.tasks[child]
            if blocked.state is TaskState.BLOCKED and not any(
                core.tasks[dep].state is TaskState.FAILED for dep in core.dag.deps[child]
            ):
                blocked.attention_since = None
        core.touch(node, dependents=True)
        core.emit(
            EventKind.TASK_CANCELLED,
            task.id,
            attempts=task.agent_attempts,
            reason=f"cancelled by the operator (blocked by '{task.blocked_by}')",
        )
        return
    if task.state.is_terminal:
        raise CommandError(f"cannot cancel '{task_id}': it is already {task.state}")
    running = core.running_for(node)
    if running is not None:
        core.stop_attempt(running, Outcome.CANCELLED)
        return
    ends.unqueue(core, node)
    ends.give_up(core, node, TaskState.CANCELLED, reason="cancelled by the operator")
    core.effects.schedule_soon()


def retry(core: Core, task_id: str) -> None:
    """Run a failed or cancelled task again (a blocked root: the tasks blocking it)."""
    node = core.node(task_id)
    task = core.tasks[node]
    if task.state in (TaskState.FAILED, TaskState.CANCELLED):
        ends.requeue(core, node)
    elif task.state is TaskState.BLOCKED:
        roots = [
            dep
            for dep in core.dag.deps[node]
            if core.tasks[dep].state in (TaskState.FAILED, TaskState.CANCELLED)
        ]
        if not roots:
            raise CommandError(
                f"cannot retry '{task_id}': it is blocked by '{task.blocked_by}', "
                f"which is not one of its own dependencies; retry '{task.blocked_by}'"
            )
        for dep in roots:
            ends.requeue(core, dep)
    else:
        raise CommandError(
            f"cannot retry '{task_id}': it is {task.state}; only failed, cancelled "
            "or blocked tasks can be retried"
        )
    core.effects.schedule_soon()


def acknowledge(core: Core, task_id: str) -> None:
    """The operator has seen a task that needs attention: it leaves the attention
    queue (and the cognitive load) without being retried or cancelled."""
    node = core.node(task_id)
    task = core.tasks[node]
    if not core.needs_attention(node):
        raise CommandError(f"'{task_id}' does not need attention (it is {task.state})")
    task.attention_since = None
    core.emit(EventKind.TASK_ACKNOWLEDGED, task.id)
