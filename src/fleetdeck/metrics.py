"""Cognitive load, and the run report built from the event stream.

The report is computed from events only, so it is the same whether it is fed live
by the engine or replayed from the journal afterwards (`fleetdeck report`).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetdeck.config import Fleet
from fleetdeck.model import Event, EventKind, Outcome, Stage, TaskState

# --- cognitive load ----------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class CognitiveLoad:
    """The operator's load score against their capacity.

    load = in_flight + 2 * needs_attention + (distinct in-flight states - 1)

    Each task in flight is one thing to keep in mind; each task that needs a
    decision (failed, or a blocked root) weighs double because it interrupts; and
    every extra kind of state in flight (one running, one waiting for CI, one
    waiting to retry) is another context to switch between.
    """

    score: int
    capacity: int
    in_flight: int
    needs_attention: int
    distinct_states: int

    @property
    def over_capacity(self) -> bool:
        """True once the score exceeds the capacity."""
        return self.score > self.capacity


def cognitive_load(
    in_flight_states: Collection[TaskState], needs_attention: int, capacity: int
) -> CognitiveLoad:
    """The load score; `in_flight_states` has one entry per task in flight."""
    distinct = len(set(in_flight_states))
    score = len(in_flight_states) + 2 * needs_attention + max(0, distinct - 1)
    return CognitiveLoad(
        score=score,
        capacity=capacity,
        in_flight=len(in_flight_states),
        needs_attention=needs_attention,
        distinct_states=distinct,
    )


# --- contention over time ------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class PoolSample:
    """One agent's or runner's contention at one instant."""

    at: float
    busy: int
    total: int
    waiting: int


class ContentionHistory:
    """The last `keep` samples of each pool, for sparklines (bounded memory)."""

    def __init__(self, keep: int = 600) -> None:
        self._keep = keep
        self._samples: dict[tuple[Stage, str], deque[PoolSample]] = {}

    def record(
        self, pool: tuple[Stage, str], at: float, busy: int, total: int, waiting: int
    ) -> None:
        """Add a sample for `pool` (stage, name)."""
        samples = self._samples.get(pool)
        if samples is None:
            samples = self._samples[pool] = deque(maxlen=self._keep)
        samples.append(PoolSample(at=at, busy=busy, total=total, waiting=waiting))

    def of(self, pool: tuple[Stage, str]) -> tuple[PoolSample, ...]:
        """The samples of `pool`, oldest first."""
        return tuple(self._samples.get(pool, ()))


# --- statistics ------------------------------------------------------------------------


def mean(values: Collection[float]) -> float | None:
    """The arithmetic mean, or None for no values."""
    return sum(values) / len(values) if values else None


def percentile(values: Iterable[float], fraction: float) -> float | None:
    """The nearest-rank percentile (`fraction` 0.95 for p95), or None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# --- the report --------------------------------------------------------------------------


@dataclass(slots=True)
class TaskSummary:
    """One row of the end-of-run table."""

    task: str
    state: TaskState = TaskState.PENDING
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    ci_wait: float = 0.0
    # Work done: seconds of every attempt, per stage.
    agent_time: float = 0.0
    ci_time: float = 0.0
    first_ci_at: float | None = None
    failed_at: float | None = None  # start of the current failure streak

    @property
    def duration(self) -> float | None:
        """From the task's first attempt to its end."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(slots=True, frozen=True)
class Report:
    """The figures DESIGN.md asks of every run (seconds unless named otherwise)."""

    makespan: float
    lower_bound: float
    efficiency: float | None
    states: dict[str, int]
    tasks: int
    attempts: int
    retries: int
    completion_rate: float
    mean_time_to_first_ci: float | None
    mean_time_to_complete: float | None
    ci_wait_mean: float | None
    ci_wait_p95: float | None
    throughput_per_hour: float
    mean_recovery: float | None

    def to_json_dict(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        return {name: getattr(self, name) for name in self.__slots__}


class ReportBuilder:
    """Feeds on events (live or replayed) and builds the per-task table and report."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self.rows: dict[str, TaskSummary] = {task.id: TaskSummary(task.id) for task in fleet.tasks}
        self._queued_at: dict[str, float] = {}
        self._ci_waits: list[float] = []
        self._attempts = 0
        self._retries = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._last_ts: float | None = None
        self._recoveries: list[float] = []
        self._handlers: dict[EventKind, Callable[[Any, Event], None]] = {
            EventKind.RUN_STARTED: self._run_started,
            EventKind.RUN_FINISHED: self._run_finished,
            EventKind.ATTEMPT_STARTED: self._attempt_started,
            EventKind.CI_QUEUED: self._ci_queued,
            EventKind.ATTEMPT_FINISHED: self._attempt_finished,
            EventKind.RETRY_SCHEDULED: self._retry_scheduled,
            EventKind.TASK_SUCCEEDED: self._task_succeeded,
            EventKind.TASK_FAILED: self._task_ended,
            EventKind.TASK_BLOCKED: self._task_ended,
            EventKind.TASK_CANCELLED: self._task_ended,
            EventKind.TASK_READY: self._task_ready,
            EventKind.TASK_REQUEUED: self._task_requeued,
        }

    def feed(self, event: Event) -> None:
        """Take one event into account."""
        self._last_ts = event.ts
        handler = self._handlers.get(event.kind)
        if handler is None:
            return
        if event.task is None:
            handler(None, event)
            return
        row = self.rows.get(event.task)
        if row is not None:
            handler(row, event)

    def _run_started(self, _row: TaskSummary | None, event: Event) -> None:
        if self.started_at is None:
            self.started_at = event.ts

    def _run_finished(self, _row: TaskSummary | None, event: Event) -> None:
        self.finished_at = event.ts

    def _attempt_started(self, row: TaskSummary, event: Event) -> None:
        self._attempts += 1
        data = event.data
        if data.get("stage") == Stage.AGENT:
            row.attempts = max(row.attempts, int(data.get("attempt", 0)))
            if row.started_at is None:
                row.started_at = event.ts
            row.state = TaskState.RUNNING
            return
        queued = self._queued_at.pop(row.task, None)
        if queued is not None:
            wait = event.ts - queued
            self._ci_waits.append(wait)
            row.ci_wait += wait
        if row.first_ci_at is None:
            row.first_ci_at = event.ts
        row.state = TaskState.CI_RUNNING

    def _ci_queued(self, row: TaskSummary, event: Event) -> None:
        self._queued_at[row.task] = event.ts
        row.state = TaskState.CI_QUEUED

    def _attempt_finished(self, row: TaskSummary, event: Event) -> None:
        data = event.data
        duration = float(data.get("duration") or 0.0)
        if data.get("stage") == Stage.CI:
            row.ci_time += duration
        else:
            row.agent_time += duration
        if data.get("outcome") in (Outcome.FAILED, Outcome.TIMEOUT) and row.failed_at is None:
            row.failed_at = event.ts

    def _retry_scheduled(self, row: TaskSummary, _event: Event) -> None:
        self._retries += 1
        row.state = TaskState.RETRY_WAIT

    def _task_succeeded(self, row: TaskSummary, event: Event) -> None:
        row.state = TaskState.SUCCEEDED
        row.finished_at = event.ts
        if row.failed_at is not None:
            self._recoveries.append(event.ts - row.failed_at)
            row.failed_at = None

    def _task_ended(self, row: TaskSummary, event: Event) -> None:
        row.state = _FINAL_STATES[event.kind]
        row.finished_at = event.ts

    def _task_ready(self, row: TaskSummary, _event: Event) -> None:
        row.state = TaskState.READY

    def _task_requeued(self, row: TaskSummary, event: Event) -> None:
        row.state = TaskState(event.data.get("state", TaskState.PENDING))
        row.finished_at = None

    def report(self) -> Report:
        """The report of what has been fed so far."""
        start = self.started_at or 0.0
        end = self.finished_at or self._last_ts or start
        makespan = max(0.0, end - start)
        rows = list(self.rows.values())
        states: dict[str, int] = {}
        for row in rows:
            state = str(row.state)
            states[state] = states.get(state, 0) + 1
        succeeded = [row for row in rows if row.state == TaskState.SUCCEEDED]
        lower_bound = self._lower_bound()
        first_ci = [
            row.first_ci_at - row.started_at
            for row in rows
            if row.first_ci_at is not None and row.started_at is not None
        ]
        complete = [d for row in succeeded if (d := row.duration) is not None]
        recoveries = self._recoveries
        return Report(
            makespan=makespan,
            lower_bound=lower_bound,
            efficiency=(lower_bound / makespan) if makespan > 0 else None,
            states=states,
            tasks=len(rows),
            attempts=self._attempts,
            retries=self._retries,
            completion_rate=len(succeeded) / len(rows) if rows else 0.0,
            mean_time_to_first_ci=mean(first_ci),
            mean_time_to_complete=mean(complete),
            ci_wait_mean=mean(self._ci_waits),
            ci_wait_p95=percentile(self._ci_waits, 0.95),
            throughput_per_hour=(len(succeeded) * 3600.0 / makespan) if makespan > 0 else 0.0,
            mean_recovery=mean(recoveries),
        )

    def _lower_bound(self) -> float:
        """max(critical path, work / slots) over the work that was actually done.

        The critical path weighs each task by the time its attempts took; the work
        bound divides each agent's and runner's busy time by its slots.
        """
        fleet = self._fleet
        weights = [
            self.rows[task.id].agent_time + self.rows[task.id].ci_time for task in fleet.tasks
        ]
        bound = fleet.dag.critical_path_length(weights)
        config = fleet.config
        agent_work: dict[str, float] = {}
        runner_work: dict[str, float] = {}
        for task in fleet.tasks:
            row = self.rows[task.id]
            agent_work[task.agent] = agent_work.get(task.agent, 0.0) + row.agent_time
            if task.ci is not None:
                runner_work[task.ci] = runner_work.get(task.ci, 0.0) + row.ci_time
        for work, workers in ((agent_work, config.agents), (runner_work, config.runners)):
            for name, seconds in work.items():
                spec = workers[name]
                slots = spec.slots * len(spec.host_names)
                bound = max(bound, seconds / slots)
        return bound


_FINAL_STATES: Mapping[EventKind, TaskState] = {
    EventKind.TASK_FAILED: TaskState.FAILED,
    EventKind.TASK_BLOCKED: TaskState.BLOCKED,
    EventKind.TASK_CANCELLED: TaskState.CANCELLED,
}
