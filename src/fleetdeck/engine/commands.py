"""The operator's commands, as transitions of the core.

Each takes the core and the command's argument, changes the task table through
the core's own transitions (so they are journaled like everything else), and
raises CommandError with a sentence for the operator when it cannot be done.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetdeck.addition import extend_fleet
from fleetdeck.config import ConfigError
from fleetdeck.engine import adding, ends
from fleetdeck.engine.core import CommandError, Core
from fleetdeck.model import EventKind, Outcome, Stage, TaskState
from fleetdeck.policy import make_policy, parse_policy
from fleetdeck.stages import FIRST_STAGE, STAGES


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
    core.limits.release()  # agents held for a refused key try again
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


# The outcomes of a CI attempt after which its task may rerun CI alone (the
# agent's commit stands; a cancel is the operator's own and says nothing of it).
_CI_FAILURES = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.LOST})


def retry_stages(core: Core, node: int) -> tuple[Stage, ...]:
    """The stages a retry of task `node` may start from: its first stage, and
    CI as well when the task failed in CI (a flaky test reruns alone on the
    agent's existing output)."""
    task = core.tasks[node]
    last = task.current_attempt
    if (
        task.state is TaskState.FAILED
        and last is not None
        and last.stage is Stage.CI
        and last.outcome in _CI_FAILURES
        and ends.agent_output(task) is not None
    ):
        return (FIRST_STAGE, Stage.CI)
    return (FIRST_STAGE,)


def retry(core: Core, task_id: str, stage: str | None = None) -> None:
    """Run a failed or cancelled task again (a blocked root: the tasks blocking it).

    `stage` "ci" reruns CI alone on the agent's output, for a task whose CI
    failed (see `retry_stages`); None or "agent" runs the agent and what follows."""
    node = core.node(task_id)
    task = core.tasks[node]
    core.limits.release()  # an agent held for a refused key: the operator says try again
    try:
        wanted = FIRST_STAGE if stage is None else Stage(stage)
    except ValueError:
        raise CommandError(
            f"cannot retry '{task_id}' from stage '{stage}': the stages are {', '.join(STAGES)}"
        ) from None
    if wanted is not FIRST_STAGE:
        if wanted not in retry_stages(core, node):
            raise CommandError(
                f"cannot rerun {wanted} alone for '{task_id}': only a task that failed "
                f"in {wanted} can (it is {task.state}); retry it from the agent"
            )
        ends.requeue(core, node, wanted)
    elif task.state in (TaskState.FAILED, TaskState.CANCELLED):
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
    # Less load: a policy that admits by the load may launch now.
    core.effects.schedule_soon()


def add(
    core: Core,
    tables: object,
    *,
    estimate: Callable[[str], float] | None = None,
    source: str = "add",
) -> list[str]:
    """Add tasks (`[[tasks]]` tables, as in the config) to the running fleet.

    They are validated like the config, against the fleet as it is now (with the
    tasks added before): a bad one is refused with the config's message
    (CommandError), and nothing changes. `estimate` weighs each task by id on the
    critical path (None: as the core's other tasks were, 1 each when unknown).
    Returns the ids added."""
    if core.stopping:
        raise CommandError("cannot add tasks: the run is stopping")
    try:
        fleet = extend_fleet(core.fleet, tables, source=source)
    except ConfigError as exc:
        raise CommandError(exc.render()) from None
    weights = list(core.estimates)
    default = sum(weights) / len(weights) if weights else 1.0
    for spec in fleet.tasks[len(weights) :]:
        weights.append(default if estimate is None else estimate(spec.id))
    core.estimates = weights
    nodes = adding.grow(core, fleet, weights)
    adding.place(core, nodes)
    return [core.tasks[node].id for node in nodes]
