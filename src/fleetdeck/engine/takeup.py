"""Taking up an unfinished run: the core rebuilt from the journal's plan.

`fleetdeck.resume` folds the journal into each task's last state (a
`ResumePlan`); the shell looks for the attempts the last supervisor left
unfinished (their processes may still run). This module puts the two into the
core: tasks that succeeded stay done, tasks in flight carry on (a due retry at
once, later stages back in their queue), attempts found running are
reattached, those that ended on their own are taken at their recorded status,
and those gone without one are `lost` and run again without spending a retry.

A new run after a finished one starts from `carry_over` instead: the successes
that still hold are journaled as reused (their outputs stay in the earlier
run's directory) and everything else starts afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fleetdeck.engine import reroute, speculation
from fleetdeck.engine.core import Core, Running
from fleetdeck.model import Attempt, Cause, EventKind, Outcome, Stage, TaskState
from fleetdeck.resume import ResumePlan, listed
from fleetdeck.stages import STAGES, worker_of, workers

# What the shell found of an unfinished attempt: its process still running, the
# exit status it recorded, or nothing.
Found = Literal["running"] | int | None


def take_up(
    core: Core,
    plan: ResumePlan,
    found: Sequence[tuple[Attempt, Found]],
    counts: dict[str, int],
) -> list[Running]:
    """Rebuild every task's state from `plan` and carry on from there.

    `counts` (reattached, recovered, lost) go in the run_resumed event. Returns
    the attempts to supervise again (their processes still run)."""
    renewed = {*plan.changed, *plan.invalidated}
    done = sum(
        1
        for task_id, replayed in plan.tasks.items()
        if replayed.state is TaskState.SUCCEEDED and task_id in core.dag.index
    )
    core.emit(
        EventKind.RUN_RESUMED,
        None,
        fleet=core.fleet.name,
        policy=core.policy.name,
        tasks=len(core.tasks),
        run_id=core.run_id,
        done=done,
        to_go=len(core.tasks) - done,
        reattached=counts.get("reattached", 0),
        recovered=counts.get("recovered", 0),
        lost=counts.get("lost", 0),
        **_config_changes(plan),
    )
    unfinished = {attempt.task for attempt, _ in found}
    for node, task in enumerate(core.tasks):
        replayed = plan.tasks.get(task.id)
        if replayed is None:
            continue
        task.attempts = tuple(replayed.attempts)
        task.agent_attempts = max(
            (a.number for a in replayed.attempts if a.stage is Stage.AGENT), default=0
        )
        task.failures = replayed.failures
        task.lost = replayed.lost
        # Rerouted before the restart: it stays on its fallback agent.
        reroute.take_up(core, node, replayed.agent, replayed.left_agents)
        outputs = [
            a for a in replayed.attempts if a.stage is Stage.AGENT and a.outcome is Outcome.OK
        ]
        state = replayed.state
        if state is TaskState.SUCCEEDED:
            # Its own last good attempt, or the one of the run it was carried from.
            task.output_attempt = replayed.output
            task.state = state
            task.finished_at = replayed.finished_at
            core.unfinished -= 1
            for child in core.dag.dependents[node]:
                core.waiting_on[child] -= 1
        elif state in (TaskState.FAILED, TaskState.CANCELLED):
            task.state = state
            task.finished_at = replayed.finished_at
            task.attention_since = (
                (replayed.attention_since or core.clock.now())
                if state is TaskState.FAILED and not replayed.acknowledged
                else None
            )
            core.unfinished -= 1
            if state is TaskState.FAILED and core.specs[node].optional:
                reroute.take_up_missing(core, node, replayed.failed_reason)
        elif (stage := _queued_stage(state)) is not None and outputs:
            task.output_attempt = outputs[-1]
            if task.id in unfinished:
                # Launched (its row journaled) but killed before it started:
                # decided below, once its attempt is found again or not.
                continue
            core.enter_flight(task)
            task.state = state
            worker_name = worker_of(core.specs[node], stage)
            assert worker_name is not None
            core.stage_queues[(stage, worker_name)].append(node)
            # Its wait goes on from when it joined (the journal's queued event;
            # journals before that kept it on the agent attempt's row).
            queued_at = replayed.queued_at
            if queued_at is None:
                queued_at = task.output_attempt.queued_at
            core.queued_since[node] = core.clock.now() if queued_at is None else queued_at
            if state is TaskState.MERGE_QUEUED and replayed.waiting_for is not None:
                # Still waiting for the user's checkout of the target: the
                # attention queue says so from the start, as it did before.
                task.waiting_for = replayed.waiting_for
                task.attention_since = replayed.waiting_since or core.clock.now()
        elif state in (
            TaskState.RETRY_WAIT,
            TaskState.RUNNING,
            TaskState.CI_RUNNING,
            TaskState.MERGING,
        ):
            if task.id in unfinished:
                continue  # decided below, once its attempt is found again or not
            # Interrupted (its attempt was stopped) or waiting to retry: due now.
            core.enter_flight(task)
            core.to_retry_lane(node, "resumed")
        # pending, ready and blocked tasks are worked out below, in DAG order.
    _take_up_speculation(core, plan)
    speculation.hold_taken_up(core)
    _take_up_window(core, plan)
    for task_id in plan.changed:
        core.emit(
            EventKind.TASK_REQUEUED,
            task_id,
            state=TaskState.PENDING,
            reason="definition changed",
            cause=Cause.DEFINITION,
        )
    for task_id in plan.invalidated:
        core.emit(
            EventKind.TASK_REQUEUED,
            task_id,
            state=TaskState.PENDING,
            reason="an upstream task runs again",
            cause=Cause.UPSTREAM,
        )
    for task_id, agent, usage in plan.usage:
        # What the run spent before the restart: budgets spent stay spent.
        if agent in core.fleet.config.agents:
            core.limits.spend(agent, usage, core.dag.index.get(task_id))
    now = core.clock.now()
    for agent, until in plan.throttled.items():
        # Paused by its provider's limit before the restart: held until the reset.
        if agent in core.fleet.config.agents and until > now:
            core.limits.pause_until(agent, until)
    reattach = _take_up_attempts(core, found, renewed)
    for node in core.dag.topo:
        task = core.tasks[node]
        if task.state not in (TaskState.PENDING, TaskState.READY, TaskState.BLOCKED):
            continue
        if task.state is TaskState.READY and task.in_flight:
            continue  # already in the retry lane
        blocker = core.blocker_of(node)
        if blocker is not None:
            was = task.state is TaskState.BLOCKED and task.blocked_by == blocker
            task.state = TaskState.BLOCKED
            task.blocked_by = blocker
            failed = core.tasks[core.node(blocker)].state is TaskState.FAILED
            replayed = plan.tasks.get(task.id)
            acknowledged = replayed is not None and replayed.acknowledged
            task.attention_since = (
                (task.attention_since or core.clock.now()) if failed and not acknowledged else None
            )
            core.unfinished -= 1
            if not was:
                core.emit(EventKind.TASK_BLOCKED, task.id, blocked_by=blocker)
            continue
        task.state = TaskState.PENDING
        task.blocked_by = None
        if core.waiting_on[node] == 0:
            core.make_ready(node)
    if core.dirty is not None:
        # Many tasks changed here without an event of their own: every view is stale.
        core.dirty.update(range(len(core.tasks)))
    return reattach


def _take_up_speculation(core: Core, plan: ResumePlan) -> None:
    """Tasks whose dependents started on their agent output (pipelined) before
    the run stopped are released again, so a dependent in flight is preempted if
    its upstream's CI fails after all: a task waiting for or running CI whose
    dependents have moved on, or any such task while the policy speculates."""
    for node, task in enumerate(core.tasks):
        replayed = plan.tasks.get(task.id)
        if replayed is None or replayed.state not in _CI_STATES:
            continue
        if not speculation.can_release(core, node):
            continue
        started = any(
            (child_plan := plan.tasks.get(core.tasks[child].id)) is not None
            and child_plan.state not in (TaskState.PENDING, TaskState.BLOCKED)
            for child in core.dag.dependents[node]
        )
        if started or core.speculates:
            speculation.mark_released(core, node)


_CI_STATES = frozenset(
    {TaskState.CI_QUEUED, TaskState.CI_RUNNING, TaskState.MERGE_QUEUED, TaskState.MERGING}
)


def _take_up_window(core: Core, plan: ResumePlan) -> None:
    """An adaptive run taken up under adaptive goes on with the window it had
    (its last `window_changed`), not the configured start."""
    resume_window = getattr(core.policy, "resume_window", None)
    if resume_window is None:
        return
    policy: object = None
    window: object = None
    for event in plan.events:
        if event.kind in (EventKind.RUN_STARTED, EventKind.RUN_RESUMED, EventKind.POLICY_CHANGED):
            if event.data.get("policy") != policy:
                policy, window = event.data.get("policy"), None  # a new policy: its own window
        elif event.kind is EventKind.WINDOW_CHANGED:
            window = event.data.get("window")
    if policy == core.policy.name and isinstance(window, int):
        resume_window(window)


def carry_over(core: Core, plan: ResumePlan) -> None:
    """Start a new run that keeps the successes of the finished run `plan.run_id`
    that still hold (`fleetdeck.resume.plan_carry_over`).

    Each is journaled at the start as task_reused, naming the run whose attempt
    produced it; its dependents find its output there. The rest start as in a
    new run: those without a dependency left to wait for are ready."""
    reused = [
        node
        for node in core.dag.topo
        if (replayed := plan.tasks.get(core.tasks[node].id)) is not None
        and replayed.state is TaskState.SUCCEEDED
    ]
    details: dict[str, object] = {
        "fleet": core.fleet.name,
        "policy": core.policy.name,
        "tasks": len(core.tasks),
        "run_id": core.run_id,
        "previous_run": plan.run_id,
        "reused": len(reused),
    }
    if len(reused) == len(core.tasks):
        details["reason"] = f"nothing changed since run {plan.run_id}"
    core.emit(EventKind.RUN_STARTED, None, **details, **_config_changes(plan))
    for node in reused:
        task = core.tasks[node]
        replayed = plan.tasks[task.id]
        task.state = TaskState.SUCCEEDED
        task.output_attempt = replayed.output
        task.finished_at = core.clock.now()
        core.unfinished -= 1
        for child in core.dag.dependents[node]:
            core.waiting_on[child] -= 1
        core.emit(
            EventKind.TASK_REUSED,
            task.id,
            reused_from=replayed.reused_from,
            attempt=None if replayed.output is None else replayed.output.number,
        )
    for node, waiting in enumerate(core.waiting_on):
        if waiting == 0 and core.tasks[node].state is TaskState.PENDING:
            core.make_ready(node)
    if core.dirty is not None:
        core.dirty.update(range(len(core.tasks)))


def _config_changes(plan: ResumePlan) -> dict[str, list[str]]:
    """The config's changes for the run's first event, only those there are: an
    unchanged config says nothing."""
    return {
        key: listed(names)
        for key, names in (
            ("changed", plan.changed),
            ("added", plan.added),
            ("removed", plan.removed),
            ("rerun", plan.invalidated),
        )
        if names
    }


def _queued_stage(state: TaskState) -> Stage | None:
    for definition in STAGES.values():
        if definition.queued_event is not None and state is definition.queued:
            return definition.stage
    return None


def _take_up_attempts(
    core: Core, found: Sequence[tuple[Attempt, Found]], renewed: set[str]
) -> list[Running]:
    """Carry on with each attempt found (or not) again."""
    reattach: list[Running] = []
    for attempt, result in found:
        node = core.dag.index.get(attempt.task)
        if node is None or attempt.task in renewed:
            reason = "task removed" if node is None else "definition changed"
            close_old_attempt(core, attempt, Outcome.CANCELLED, None, reason)
            continue
        task = core.tasks[node]
        core.enter_flight(task)
        # In flight again, whatever comes next (not pending: that would launch it).
        task.state = STAGES[attempt.stage].running
        core.capacity.take(attempt.stage, attempt.worker, attempt.host)
        timeout: float | None = None
        if result == "running":
            spec = core.specs[node]
            timeout = spec.timeout
            if timeout is None:
                timeout = workers(core.fleet.config, attempt.stage)[attempt.worker].timeout
        running = Running(node=node, attempt=attempt, timeout=timeout)
        core.running[attempt.attempt_id] = running
        if result == "running":
            reattach.append(running)
        elif isinstance(result, int):
            # Ended while no supervisor watched: its recorded status counts.
            core.attempt_ended(running, Outcome.OK if result == 0 else Outcome.FAILED, result)
        else:
            attempt.error = attempt.error or "the attempt vanished with the supervisor"
            core.attempt_ended(running, Outcome.LOST, None)
    return reattach


def close_old_attempt(
    core: Core, attempt: Attempt, outcome: Outcome, exit_code: int | None, reason: str
) -> None:
    """End an attempt of the last supervisor that this run will not carry on."""
    attempt.finished_at = core.clock.now()
    attempt.outcome = outcome
    attempt.exit_code = exit_code
    core.effects.record(attempt)
    core.emit(
        EventKind.ATTEMPT_FINISHED,
        attempt.task,
        stage=attempt.stage,
        attempt=attempt.number,
        outcome=outcome,
        exit_code=exit_code,
        duration=round(attempt.duration or 0.0, 3),
        reason=reason,
    )
