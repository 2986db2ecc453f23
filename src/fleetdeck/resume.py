"""Resuming a run from the journal: what each task's state was, and what still holds.

The journal is the source of truth. Replaying a run's events task by task gives
each task's state when the supervisor stopped (crashed, or was interrupted), its
retry budget spent so far and its attempts; the attempts table says which
attempts never ended. Comparing the config the run was recorded with to the one
given now says which tasks changed.

What is kept, like `make`: a task that succeeded stays done if its definition
(prompt, agent, runner, dependencies, and the commands, environment and workdir
of its agent and runner) is unchanged *and* every dependency stayed done; else it
runs again, and so does everything downstream of it, since its inputs may differ.
Failed and cancelled tasks stay so unless their definition changed (then they
get a fresh start); blocked tasks are worked out again from their dependencies.

Running the fleet again after a run that finished does not resume it: it starts
a new run that carries over (`plan_carry_over`) every success that still holds,
by the same rule, and runs everything else (failed, cancelled and blocked tasks
included) afresh. A carried-over task's output stays where the attempt that
produced it left it, in the directory of the run that ran it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetdeck.fold import QUEUED_EVENTS, next_state
from fleetdeck.model import Attempt, Cause, Event, EventKind, Outcome, Stage, TaskState

if TYPE_CHECKING:  # the journal's row types only: resuming is pure, the journal is not
    from fleetdeck.config import Fleet
    from fleetdeck.journal import AttemptRecordRow, RunRecord

# The good agent attempts of a run, by task and attempt number (see outputs_of).
Outputs = Mapping[tuple[str, int], Attempt]

# How many task names a run_resumed event lists per kind of change.
LISTED_NAMES = 20


def task_fingerprints(config: Mapping[str, Any]) -> dict[str, str]:
    """Per task id, a text that changes whenever what the task does may change.

    `config` is the validated config as the journal stores it (parsed JSON).
    Retries, timeout and priority are left out: they change how a task is run,
    not what it produces.
    """
    agents = config.get("agents", {})
    runners = config.get("runners", {})

    def worker(spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if spec is None:
            return None
        return {key: spec.get(key) for key in ("command", "env", "workdir")}

    prints: dict[str, str] = {}
    for task in config.get("tasks", ()):
        shape = {
            "prompt": task.get("prompt"),
            "depends_on": sorted(task.get("depends_on") or ()),
            "agent": task.get("agent"),
            "ci": task.get("ci"),
            "agent_spec": worker(agents.get(task.get("agent"))),
            "ci_spec": worker(runners.get(task.get("ci"))) if task.get("ci") else None,
        }
        prints[task["id"]] = json.dumps(shape, sort_keys=True, default=str)
    return prints


@dataclass(slots=True)
class TaskReplay:
    """One task as the journal left it."""

    state: TaskState = TaskState.PENDING
    failures: int = 0
    lost: int = 0
    finished_at: float | None = None
    attention_since: float | None = None
    # The operator has seen it (task_acknowledged): it needs no attention.
    acknowledged: bool = False
    # When it last joined a later stage's queue (ci_queued, merge_queued).
    queued_at: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    # Carried over from an earlier run (task_reused): the run whose attempt
    # produced the success, and that agent attempt's number.
    reused_from: int | None = None
    reused_attempt: int | None = None
    # The agent attempt whose output file is the task's output, once succeeded.
    output: Attempt | None = None
    # Why it waits in the merge train (a merge_queued event's reason: the user's
    # checkout of the target has local changes), and since when.
    waiting_for: str | None = None
    waiting_since: float | None = None
    # Rerouted (task_rerouted): the agent it runs on now, and those it left.
    agent: str | None = None
    left_agents: list[str] = field(default_factory=list)
    # Why it failed (task_failed's reason): what an optional task's dependents read.
    failed_reason: str | None = None


@dataclass(slots=True)
class ResumePlan:
    """What a resumed run starts from."""

    run_id: int
    tasks: dict[str, TaskReplay]
    # Attempts that never ended (no outcome): reattach, use their status, or lose them.
    unfinished: list[Attempt]
    changed: list[str]
    added: list[str]
    removed: list[str]
    # Succeeded before, but runs again because something upstream runs again.
    invalidated: list[str]
    events: list[Event]
    # A new run that carries over the successes of the finished run `run_id`
    # (plan_carry_over), rather than run `run_id` taken up again.
    carried_over: bool = False
    # Agents paused by their provider's limit (a `paused` event with `agent` and
    # `delay`): until when, seconds since the epoch (see `throttles`).
    throttled: dict[str, float] = field(default_factory=dict)
    # What API attempts used, in order: (task, agent, the attempt's `usage`), so
    # that budgets spent before the restart stay spent (see `usage_of`).
    usage: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


def attempts_of(rows: Iterable[AttemptRecordRow], run_dir: str) -> Iterable[Attempt]:
    """The attempts of the journal's `rows` of one run, whose directory is `run_dir`."""
    for row in rows:
        yield Attempt(
            attempt_id=row.attempt_id,
            task=row.task,
            stage=Stage(row.stage),
            number=row.number,
            worker=row.worker,
            host=row.host,
            run_dir=run_dir,
            queued_at=row.queued_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            pid=row.pid,
            pid_started=row.pid_started,
            outcome=None if row.outcome is None else Outcome(row.outcome),
            exit_code=row.exit_code,
            error=row.error,
        )


def replay(
    events: Sequence[Event],
    rows: Sequence[AttemptRecordRow],
    run_dir: str,
    earlier: Mapping[int, Outputs] | None = None,
) -> dict[str, TaskReplay]:
    """Each task's state at the end of `events`, with its attempts from `rows`.

    `earlier`: the outputs of the runs whose successes the run carried over,
    by run id (see `reused_runs` and `outputs_of`)."""
    tasks: dict[str, TaskReplay] = {}
    for attempt in attempts_of(rows, run_dir):
        tasks.setdefault(attempt.task, TaskReplay()).attempts.append(attempt)
    for event in events:
        if event.task is None:
            continue
        task = tasks.setdefault(event.task, TaskReplay())
        kind = event.kind
        task.state = next_state(task.state, event)
        if kind in QUEUED_EVENTS:
            task.queued_at = event.ts
        if kind is EventKind.MERGE_QUEUED and event.data.get("reason"):
            task.waiting_for = str(event.data["reason"])
            task.waiting_since = task.waiting_since or event.ts
        elif (kind is EventKind.ATTEMPT_FINISHED and event.data.get("outcome") != Outcome.WAIT) or (
            kind is EventKind.TASK_REQUEUED
        ):
            task.waiting_for = task.waiting_since = None  # what it waited for is over
        if kind is EventKind.ATTEMPT_FINISHED:
            if event.data.get("outcome") == Outcome.LOST:
                task.lost += 1
        elif kind is EventKind.RETRY_SCHEDULED:
            task.failures += 1
        elif kind is EventKind.TASK_SUCCEEDED:
            task.finished_at = event.ts
            task.reused_from = task.reused_attempt = None
        elif kind is EventKind.TASK_REUSED:
            task.finished_at = event.ts
            task.reused_from = event.data.get("reused_from")
            task.reused_attempt = event.data.get("attempt")
        elif kind in (EventKind.TASK_FAILED, EventKind.TASK_CANCELLED):
            task.finished_at = task.attention_since = event.ts
            task.acknowledged = False
            if kind is EventKind.TASK_FAILED:
                task.failed_reason = event.data.get("reason")
        elif kind is EventKind.TASK_REROUTED:
            # A fresh retry budget on the new agent, as the core gave it.
            task.agent = event.data.get("to")
            task.left_agents.append(str(event.data.get("from")))
            task.failures = task.lost = 0
        elif kind is EventKind.TASK_ACKNOWLEDGED:
            task.acknowledged = True
        elif kind is EventKind.TASK_REQUEUED:
            task.finished_at = task.attention_since = None
            task.acknowledged = False
            task.reused_from = task.reused_attempt = None
            if requeued_by_operator(event):
                task.failures = task.lost = 0
    for task_id, task in tasks.items():
        if task.state is TaskState.SUCCEEDED:
            task.output = _output_of(task_id, task, earlier or {})
    return tasks


def _output_of(task_id: str, task: TaskReplay, earlier: Mapping[int, Outputs]) -> Attempt | None:
    """The agent attempt whose output is the succeeded task's: its last good one
    in this run, or the one of the run it was carried over from."""
    if task.reused_from is not None:
        if task.reused_attempt is None:
            return None
        return earlier.get(task.reused_from, {}).get((task_id, task.reused_attempt))
    outputs = [a for a in task.attempts if a.stage is Stage.AGENT and a.outcome is Outcome.OK]
    return outputs[-1] if outputs else None


def outputs_of(rows: Iterable[AttemptRecordRow], run_dir: str) -> Outputs:
    """The good agent attempts among one run's `rows` (whose directory is
    `run_dir`), by task and attempt number: where its tasks' outputs are."""
    return {
        (attempt.task, attempt.number): attempt
        for attempt in attempts_of(rows, run_dir)
        if attempt.stage is Stage.AGENT and attempt.outcome is Outcome.OK
    }


def reused_runs(events: Iterable[Event]) -> set[int]:
    """The earlier runs whose successes a run carried over (their attempts hold
    those tasks' outputs)."""
    return {
        int(event.data["reused_from"])
        for event in events
        if event.kind is EventKind.TASK_REUSED and event.data.get("reused_from") is not None
    }


def throttles(events: Iterable[Event]) -> dict[str, float]:
    """Until when each agent was paused by its provider's limit, by the run's
    `paused` events that say so (`agent`, `delay`: seconds from the event).

    A `paused` event with an agent and no `delay` is a budget spent, not a
    throttle; journals written before throttles
    were journaled have none of these, and nothing is paused."""
    until: dict[str, float] = {}
    for event in events:
        if event.kind is not EventKind.PAUSED:
            continue
        agent, delay = event.data.get("agent"), event.data.get("delay")
        if isinstance(agent, str) and isinstance(delay, int | float):
            until[agent] = max(until.get(agent, 0.0), event.ts + float(delay))
    return until


def usage_of(
    events: Iterable[Event], tasks: Mapping[str, TaskReplay]
) -> list[tuple[str, str, dict[str, Any]]]:
    """Each agent attempt's `usage` (from its attempt_finished), with its task
    and the agent it ran on (the attempt's row says which: a fallback's, maybe)."""
    used: list[tuple[str, str, dict[str, Any]]] = []
    for event in events:
        usage = event.data.get("usage")
        if event.kind is not EventKind.ATTEMPT_FINISHED or not isinstance(usage, dict):
            continue
        replayed = tasks.get(event.task or "")
        number = event.data.get("attempt")
        agent = next(
            (
                a.worker
                for a in (replayed.attempts if replayed is not None else ())
                if a.stage is Stage.AGENT and a.number == number
            ),
            None,
        )
        if event.task is not None and agent is not None:
            used.append((event.task, agent, usage))
    return used


def requeued_by_operator(event: Event) -> bool:
    """True for a task_requeued event of an operator retry (a fresh retry budget).

    The event's `cause` says so; journals written before it existed said it
    only in words, in `reason`."""
    cause = event.data.get("cause")
    if cause is not None:
        return bool(cause == Cause.OPERATOR)
    return event.data.get("reason") == "operator retry"


def plan_resume(
    fleet: Fleet,
    run: RunRecord,
    events: Sequence[Event],
    rows: Sequence[AttemptRecordRow],
    *,
    new_config: Mapping[str, Any],
    run_dir: str,
    earlier: Mapping[int, Outputs] | None = None,
) -> ResumePlan:
    """Work out where run `run` left off, against the config given now.

    `earlier`: the outputs of the runs `run` carried successes over from, by
    run id (see `reused_runs` and `outputs_of`)."""
    tasks = replay(events, rows, run_dir, earlier)
    try:
        old_config = json.loads(run.config_json)
    except ValueError:
        old_config = {}
    old_prints = task_fingerprints(old_config)
    new_prints = task_fingerprints(new_config)
    ids = fleet.dag.ids
    added = [task for task in ids if task not in old_prints]
    changed = [task for task in ids if task in old_prints and old_prints[task] != new_prints[task]]
    removed = [task for task in old_prints if task not in fleet.dag.index]
    unfinished = [
        attempt
        for replayed in tasks.values()
        for attempt in replayed.attempts
        if attempt.outcome is None
    ]
    # Done stays done only when the task and everything upstream of it are unchanged.
    renewed = set(changed)
    invalidated: list[str] = []
    still_done: set[int] = set()
    for node in fleet.dag.topo:
        task_id = ids[node]
        replayed = tasks.get(task_id)
        if replayed is None or task_id in renewed:
            continue
        if replayed.state is TaskState.SUCCEEDED:
            if all(dep in still_done for dep in fleet.dag.deps[node]):
                still_done.add(node)
            else:
                invalidated.append(task_id)
    for task_id in [*changed, *invalidated]:
        # A fresh start, but the attempt numbers go on: the log files of the
        # earlier attempts stay where they are. (A changed task the run never
        # got to has nothing to start afresh.)
        if (replayed := tasks.get(task_id)) is not None:
            tasks[task_id] = TaskReplay(attempts=replayed.attempts)
    return ResumePlan(
        run_id=run.run_id,
        tasks=tasks,
        unfinished=unfinished,
        changed=changed,
        added=added,
        removed=removed,
        invalidated=invalidated,
        events=list(events),
        throttled=throttles(events),
        usage=usage_of(events, tasks),
    )


def plan_carry_over(
    fleet: Fleet,
    run: RunRecord,
    events: Sequence[Event],
    rows: Sequence[AttemptRecordRow],
    *,
    new_config: Mapping[str, Any],
    run_dir: str,
    earlier: Mapping[int, Outputs] | None = None,
) -> ResumePlan:
    """What a new run keeps of the finished run `run`: each success that holds.

    A success holds, as on resume, when the task and everything upstream of it
    are unchanged. Everything else runs again from the start in the new run:
    failed, cancelled and blocked tasks too (a failure may have been fixed
    outside the config), so the plan keeps only the successes, and no attempt.
    """
    plan = plan_resume(
        fleet, run, events, rows, new_config=new_config, run_dir=run_dir, earlier=earlier
    )
    plan.tasks = {
        task_id: TaskReplay(
            state=TaskState.SUCCEEDED,
            finished_at=replayed.finished_at,
            # The run that ran it: the one carried from, or the one before that.
            reused_from=run.run_id if replayed.reused_from is None else replayed.reused_from,
            output=replayed.output,
        )
        for task_id, replayed in plan.tasks.items()
        if replayed.state is TaskState.SUCCEEDED and task_id in fleet.dag.index
    }
    plan.unfinished = []
    plan.events = []
    # A new run: a provider's limit that still holds shows again at the first request.
    plan.throttled = {}
    plan.usage = []  # budgets are per run
    plan.carried_over = True
    return plan


def carries_over(run: RunRecord) -> bool:
    """True when `fleetdeck run` starts a new run that carries over the successes
    of `run` (a finished run), False when it takes `run` up again."""
    return run.status == "finished"


def listed(names: Sequence[str]) -> list[str]:
    """At most LISTED_NAMES names, and a count of the rest, for an event."""
    if len(names) <= LISTED_NAMES:
        return list(names)
    return [*names[:LISTED_NAMES], f"... {len(names) - LISTED_NAMES} more"]


class ResumeError(Exception):
    """The state directory holds a run that this config cannot take up."""


def choose_run(latest: RunRecord | None, fleet_name: str, state_dir: str) -> RunRecord | None:
    """The run `fleetdeck run` should take up again or carry over from, or None
    for a new run from scratch.

    Only the latest run is a candidate. One that did not finish (the supervisor
    was killed, or interrupted) is taken up again. A finished run is never
    resumed: running again starts a new run that carries over its successes
    (see `carries_over`), if it ran the same fleet. Raises ResumeError when an
    unfinished run belongs to another fleet.
    """
    if latest is None:
        return None
    if carries_over(latest):
        return latest if latest.fleet == fleet_name else None
    if latest.fleet != fleet_name:
        raise ResumeError(
            f"{state_dir} holds the unfinished run {latest.run_id} of fleet "
            f"'{latest.fleet}', not '{fleet_name}': use --fresh to start a new run "
            "(the old one stays in the journal), or another --state-dir"
        )
    return latest
