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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleetdeck.model import Attempt, Cause, Event, EventKind, Outcome, Stage, TaskState

if TYPE_CHECKING:  # the journal's row types only: resuming is pure, the journal is not
    from fleetdeck.config import Fleet
    from fleetdeck.journal import AttemptRecordRow, RunRecord

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
    attempts: list[Attempt] = field(default_factory=list)


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


def replay(
    events: Sequence[Event], rows: Sequence[AttemptRecordRow], run_dir: str
) -> dict[str, TaskReplay]:
    """Each task's state at the end of `events`, with its attempts from `rows`."""
    tasks: dict[str, TaskReplay] = {}
    for row in rows:
        attempt = Attempt(
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
        tasks.setdefault(row.task, TaskReplay()).attempts.append(attempt)
    for event in events:
        if event.task is None:
            continue
        task = tasks.setdefault(event.task, TaskReplay())
        kind = event.kind
        if kind is EventKind.TASK_READY:
            task.state = TaskState.READY
        elif kind is EventKind.ATTEMPT_STARTED:
            agent = event.data.get("stage") == Stage.AGENT
            task.state = TaskState.RUNNING if agent else TaskState.CI_RUNNING
        elif kind is EventKind.ATTEMPT_FINISHED:
            if event.data.get("outcome") == Outcome.LOST:
                task.lost += 1
        elif kind is EventKind.CI_QUEUED:
            task.state = TaskState.CI_QUEUED
        elif kind is EventKind.RETRY_SCHEDULED:
            task.state = TaskState.RETRY_WAIT
            task.failures += 1
        elif kind is EventKind.TASK_SUCCEEDED:
            task.state = TaskState.SUCCEEDED
            task.finished_at = event.ts
        elif kind in (EventKind.TASK_FAILED, EventKind.TASK_CANCELLED):
            task.state = TaskState.FAILED if kind is EventKind.TASK_FAILED else TaskState.CANCELLED
            task.finished_at = task.attention_since = event.ts
            task.acknowledged = False
        elif kind is EventKind.TASK_ACKNOWLEDGED:
            task.acknowledged = True
        elif kind is EventKind.TASK_BLOCKED:
            task.state = TaskState.BLOCKED
        elif kind is EventKind.TASK_REQUEUED:
            task.state = TaskState(event.data.get("state", TaskState.PENDING))
            task.finished_at = task.attention_since = None
            task.acknowledged = False
            if requeued_by_operator(event):
                task.failures = task.lost = 0
    return tasks


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
) -> ResumePlan:
    """Work out where run `run` left off, against the config given now."""
    tasks = replay(events, rows, run_dir)
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
    )


def listed(names: Sequence[str]) -> list[str]:
    """At most LISTED_NAMES names, and a count of the rest, for an event."""
    if len(names) <= LISTED_NAMES:
        return list(names)
    return [*names[:LISTED_NAMES], f"... {len(names) - LISTED_NAMES} more"]


class ResumeError(Exception):
    """The state directory holds a run that this config cannot take up."""


def choose_run(latest: RunRecord | None, fleet_name: str, state_dir: str) -> RunRecord | None:
    """The run `fleetdeck run` should take up again, or None for a new run.

    Only the latest run is a candidate, and only when it did not finish (the
    supervisor was killed, or interrupted). A finished run is never resumed:
    running again after it starts a new run. Raises ResumeError when the
    unfinished run belongs to another fleet.
    """
    if latest is None or latest.status == "finished":
        return None
    if latest.fleet != fleet_name:
        raise ResumeError(
            f"{state_dir} holds the unfinished run {latest.run_id} of fleet "
            f"'{latest.fleet}', not '{fleet_name}': use --fresh to start a new run "
            "(the old one stays in the journal), or another --state-dir"
        )
    return latest
