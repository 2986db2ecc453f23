"""Cognitive load, and the run report built from the event stream.

The report is computed from events only, so it is the same whether it is fed live
by the engine or replayed from the journal afterwards (`fleetdeck report`).
"""

from __future__ import annotations

import math
import operator
from array import array
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetdeck.config import Fleet
from fleetdeck.fold import folds_state, next_state
from fleetdeck.model import Cause, Event, EventKind, Outcome, Stage, TaskState

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
    return CognitiveLoad(
        score=load_score(len(in_flight_states), needs_attention, distinct),
        capacity=capacity,
        in_flight=len(in_flight_states),
        needs_attention=needs_attention,
        distinct_states=distinct,
    )


def load_score(in_flight: int, needs_attention: int, distinct_states: int) -> int:
    """The load formula itself (see `CognitiveLoad`), from counts: the simulator
    keeps the counts as it goes instead of a list of states per instant."""
    return in_flight + 2 * needs_attention + max(0, distinct_states - 1)


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
    state: TaskState
    attempts: int
    started_at: float | None
    finished_at: float | None
    ci_wait: float
    # Carried over as done from an earlier run (task_reused): it did not run.
    reused: bool = False
    # API agents: tokens in and out over the task's attempts, and their cost.
    usage: TokenUsage | None = None

    @property
    def duration(self) -> float | None:
        """From the task's first attempt to its end."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(slots=True)
class TokenUsage:
    """Tokens in and out, and their cost in dollars (API agents' `usage`)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    # Attempts that reported it, and attempts ended by a rate or usage limit.
    requests: int = 0
    throttled: int = 0

    def add(self, usage: Mapping[str, Any]) -> None:
        """Count one attempt's `usage`."""
        self.input_tokens += int(usage.get("input_tokens", 0))
        self.output_tokens += int(usage.get("output_tokens", 0))
        self.cost += float(usage.get("cost", 0.0))
        self.requests += 1

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON types, the cost rounded to a millionth of a dollar."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": round(self.cost, 6),
            "requests": self.requests,
            "throttled": self.throttled,
        }


@dataclass(slots=True, frozen=True)
class Report:
    """The figures of every run (seconds unless named otherwise).

    A report of a run that stopped before every task ended (interrupted, or still
    running) is `partial`: its efficiency and throughput are None, since a few
    quick tasks over a short makespan would read as a fast, efficient fleet.
    Efficiency is None too when nothing succeeded, or nothing took any time.
    """

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
    throughput_per_hour: float | None
    mean_recovery: float | None
    # True while some task has not ended (an interrupted or running run).
    partial: bool = False
    # The policies the run ran under, in order: (policy, from, to) in seconds
    # since the run started (the operator may switch policy during a run).
    policies: tuple[tuple[str, float, float], ...] = ()
    # Tasks carried over as done from an earlier run: counted among the succeeded
    # (`states`, completion rate), not in the time, work or throughput figures.
    reused: int = 0
    # Landing (a fleet with a `[repo]`): tasks landed, merge attempts that
    # conflicted, CI reruns because the target moved (the merge stage's `retest`),
    # and the mean time from a task's first agent start to its landing.
    lands: bool = False
    landed: int = 0
    conflicts: int = 0
    ci_reruns: int = 0
    mean_time_to_land: float | None = None
    # API agents: usage per agent (empty: none ran), and for the whole run.
    usage: Mapping[str, TokenUsage] = field(default_factory=dict)
    usage_total: TokenUsage | None = None
    # Speculation (the pipelined policy): tasks put back because an upstream
    # they started on failed after (each a compound failure; the rate is per
    # task of the fleet), attempts stopped for it, and the agent and CI seconds
    # thrown away (the work of every task put back, since it last started).
    compound_failures: int = 0
    compound_failure_rate: float = 0.0
    preempted_attempts: int = 0
    rework_agent: float = 0.0
    rework_ci: float = 0.0
    # The adaptive policy's window over time: (seconds since the start, window),
    # one entry per change.
    windows: tuple[tuple[float, int], ...] = ()

    @property
    def rework(self) -> float:
        """Agent and CI seconds thrown away by preemptions."""
        return self.rework_agent + self.rework_ci

    def to_json_dict(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        out = {name: getattr(self, name) for name in self.__slots__}
        out["usage"] = {name: usage.to_json_dict() for name, usage in self.usage.items()}
        total = self.usage_total
        out["usage_total"] = None if total is None else total.to_json_dict()
        return out


_NAN = float("nan")
_STATES: tuple[TaskState, ...] = tuple(TaskState)
_STATE_CODE = {state: code for code, state in enumerate(_STATES)}


def _time(value: float) -> float | None:
    return None if math.isnan(value) else value


class ReportBuilder:
    """Feeds on events (live or replayed) and builds the per-task table and report.

    Per task it keeps a few numbers in flat arrays (NaN for "not yet") rather than
    an object with float objects: with 100,000 tasks that is ~70 bytes a task
    instead of ~300.
    """

    def __init__(self, fleet: Fleet, *, grown: Callable[[], Fleet] | None = None) -> None:
        """`grown`: the fleet with the tasks added since (a live run's core has
        it); without it, an added task's fleet is rebuilt from its `task_added`."""
        self._fleet = fleet
        self._grown = grown
        self._node = fleet.dag.index
        n = len(fleet.tasks)
        self._state = bytearray([_STATE_CODE[TaskState.PENDING]]) * n
        self._tries = array("l", [0]) * n  # agent attempts
        self._started = array("d", [_NAN]) * n
        self._finished = array("d", [_NAN]) * n
        self._first_ci = array("d", [_NAN]) * n
        self._landed = array("d", [_NAN]) * n
        self._conflicts = 0
        self._ci_reruns = 0
        self._failed_at = array("d", [_NAN]) * n  # start of the current failure streak
        self._ci_wait = array("d", [0.0]) * n
        self._agent_time = array("d", [0.0]) * n
        self._ci_time = array("d", [0.0]) * n
        self._reused = bytearray(n)
        # API agents' usage, per task node and per agent (only those that have some).
        self._task_usage: dict[int, TokenUsage] = {}
        # Tasks whose agent attempts ran on another agent than their own (a fallback).
        self._rerouted: dict[int, str] = {}
        self._agent_usage: dict[str, TokenUsage] = {}
        self._queued_at: dict[int, float] = {}
        self._ci_waits: list[float] = []
        self._recoveries: list[float] = []
        self._attempts = 0
        self._retries = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._last_ts: float | None = None
        # (when, policy): the policy at the start, and every switch after.
        self._policy_changes: list[tuple[float, str]] = []
        # Speculation: agent and CI seconds each task spent since it last
        # started afresh (thrown away if it is preempted), and the totals.
        self._spent_agent = array("d", [0.0]) * n
        self._spent_ci = array("d", [0.0]) * n
        self._compound = 0
        self._preempted_attempts = 0
        self._rework_agent = 0.0
        self._rework_ci = 0.0
        self._windows: list[tuple[float, int]] = []
        self._handlers: dict[EventKind, Callable[[int, Event], None]] = {
            EventKind.ATTEMPT_STARTED: self._attempt_started,
            EventKind.CI_QUEUED: self._ci_queued,
            EventKind.ATTEMPT_FINISHED: self._attempt_finished,
            EventKind.RETRY_SCHEDULED: self._retry_scheduled,
            EventKind.TASK_SUCCEEDED: self._task_succeeded,
            EventKind.TASK_REUSED: self._task_reused,
            EventKind.TASK_FAILED: self._task_ended,
            EventKind.TASK_BLOCKED: self._task_ended,
            EventKind.TASK_CANCELLED: self._task_ended,
            EventKind.TASK_READY: self._task_ready,
            EventKind.TASK_REQUEUED: self._task_requeued,
            EventKind.TASK_LANDED: self._task_landed,
            EventKind.TASK_REROUTED: self._task_rerouted,
        }

    def feed(self, event: Event, node: int | None = None) -> None:
        """Take one event into account (`node`: its task's place in the DAG, when
        the caller knows it; else it is looked up)."""
        self._last_ts = event.ts
        kind = event.kind
        handler = self._handlers.get(kind)
        if handler is None:
            if kind is EventKind.RUN_STARTED:
                if self.started_at is None:
                    self.started_at = event.ts
                self._policy_changed(event)
            elif kind in _POLICY_EVENTS:
                self._policy_changed(event)
            elif kind is EventKind.RUN_FINISHED:
                self.finished_at = event.ts
            elif kind is EventKind.TASK_ADDED and event.task not in self._node:
                self._task_added(event)
            elif kind is EventKind.WINDOW_CHANGED:
                window = event.data.get("window")
                if isinstance(window, int):
                    self._windows.append((event.ts, window))
            return
        if node is None and event.task is not None:
            node = self._node.get(event.task)
        if node is not None:
            handler(node, event)
            if folds_state(kind):
                # The task's state, read from its events as resume reads it.
                self._state[node] = _STATE_CODE[next_state(_STATES[self._state[node]], event)]

    def _task_added(self, event: Event) -> None:
        """A task added to the running fleet: every per-task array grows."""
        if self._grown is not None:
            fleet = self._grown()
        else:
            from fleetdeck.addition import appended

            spec = event.data.get("spec")
            if not isinstance(spec, dict):
                return
            fleet, _skipped = appended(self._fleet, [spec])
        grow = len(fleet.tasks) - len(self._state)
        if grow <= 0:
            return
        self._fleet = fleet
        self._node = fleet.dag.index
        self._state.extend(bytearray([_STATE_CODE[TaskState.PENDING]]) * grow)
        self._reused.extend(bytearray(grow))
        self._tries.extend(array("l", [0]) * grow)
        for nan in (self._started, self._finished, self._first_ci, self._landed, self._failed_at):
            nan.extend(array("d", [_NAN]) * grow)
        for zero in (
            self._ci_wait,
            self._agent_time,
            self._ci_time,
            self._spent_agent,
            self._spent_ci,
        ):
            zero.extend(array("d", [0.0]) * grow)

    def _policy_changed(self, event: Event) -> None:
        policy = event.data.get("policy")
        if not isinstance(policy, str):
            return
        changes = self._policy_changes
        if not changes or changes[-1][1] != policy:
            changes.append((event.ts, policy))

    def _attempt_started(self, node: int, event: Event) -> None:
        self._attempts += 1
        data = event.data
        if data.get("stage") == Stage.AGENT:
            self._tries[node] = max(self._tries[node], int(data.get("attempt", 0)))
            if math.isnan(self._started[node]):
                self._started[node] = event.ts
            return
        queued = self._queued_at.pop(node, None)
        if queued is not None:
            wait = event.ts - queued
            self._ci_waits.append(wait)
            self._ci_wait[node] += wait
        if math.isnan(self._first_ci[node]) and data.get("stage") == Stage.CI:
            self._first_ci[node] = event.ts

    def _ci_queued(self, node: int, event: Event) -> None:
        self._queued_at[node] = event.ts

    def _attempt_finished(self, node: int, event: Event) -> None:
        data = event.data
        duration = float(data.get("duration") or 0.0)
        stage = data.get("stage")
        if data.get("outcome") == Outcome.PREEMPTED:
            self._preempted_attempts += 1
        if stage == Stage.CI:
            self._ci_time[node] += duration
            self._spent_ci[node] += duration
        elif stage == Stage.MERGE:
            # A landing is not agent work (nor a runner's): counted on its own.
            outcome = data.get("outcome")
            self._conflicts += outcome == Outcome.CONFLICT
            self._ci_reruns += outcome == Outcome.RETEST
        else:
            self._agent_time[node] += duration
            self._spent_agent[node] += duration
        usage = data.get("usage")
        if usage is not None or data.get("outcome") == Outcome.THROTTLED:
            self._count_usage(node, usage)
        failed = data.get("outcome") in (Outcome.FAILED, Outcome.TIMEOUT)
        if failed and math.isnan(self._failed_at[node]):
            self._failed_at[node] = event.ts

    def _count_usage(self, node: int, usage: Mapping[str, Any] | None) -> None:
        agent = self._rerouted.get(node) or self._fleet.tasks[node].agent
        for counted in (
            self._task_usage.setdefault(node, TokenUsage()),
            self._agent_usage.setdefault(agent, TokenUsage()),
        ):
            if usage is None:
                counted.throttled += 1
            else:
                counted.add(usage)

    def _task_rerouted(self, node: int, event: Event) -> None:
        self._rerouted[node] = str(event.data.get("to"))

    def _retry_scheduled(self, node: int, _event: Event) -> None:
        self._retries += 1

    def _task_succeeded(self, node: int, event: Event) -> None:
        self._finished[node] = event.ts
        if not math.isnan(self._failed_at[node]):
            self._recoveries.append(event.ts - self._failed_at[node])
            self._failed_at[node] = _NAN

    def _task_landed(self, node: int, event: Event) -> None:
        self._landed[node] = event.ts

    def _task_reused(self, node: int, _event: Event) -> None:
        # Done, but not in this run: no start, no end, no time of its own.
        self._reused[node] = 1

    def _task_ended(self, node: int, event: Event) -> None:
        self._finished[node] = event.ts

    def _task_ready(self, node: int, _event: Event) -> None:
        """Nothing but its state (folded in `feed`)."""

    def _task_requeued(self, node: int, event: Event) -> None:
        self._finished[node] = _NAN
        self._reused[node] = 0
        if event.data.get("cause") == Cause.PREEMPTED:
            self._compound += 1
            self._rework_agent += self._spent_agent[node]
            self._rework_ci += self._spent_ci[node]
        self._spent_agent[node] = self._spent_ci[node] = 0.0

    def summaries(self) -> list[TaskSummary]:
        """The per-task table so far, in config order."""
        return [
            TaskSummary(
                task=task.id,
                state=_STATES[self._state[node]],
                attempts=self._tries[node],
                started_at=_time(self._started[node]),
                finished_at=_time(self._finished[node]),
                ci_wait=self._ci_wait[node],
                reused=bool(self._reused[node]),
                usage=self._task_usage.get(node),
            )
            for node, task in enumerate(self._fleet.tasks)
        ]

    def report(self, *, until: float | None = None) -> Report:
        """The report of what has been fed so far; `until` (now, for a run still
        going) ends the makespan instead of the last event."""
        start = self.started_at or 0.0
        end = self.finished_at or until or self._last_ts or start
        makespan = max(0.0, end - start)
        n = len(self._state)
        states: dict[str, int] = {}
        for code in self._state:
            state = str(_STATES[code])
            states[state] = states.get(state, 0) + 1
        # Sums and counts rather than lists: this runs at the end of every run,
        # and lists of 100,000 floats are several megabytes.
        succeeded_code = _STATE_CODE[TaskState.SUCCEEDED]
        complete = _Mean()
        first_ci = _Mean()
        to_land = _Mean()
        landed = 0
        for node, code in enumerate(self._state):
            started = self._started[node]
            if not math.isnan(self._landed[node]):
                landed += 1
                if not math.isnan(started):
                    to_land.add(self._landed[node] - started)
            if math.isnan(started):
                continue
            if not math.isnan(self._first_ci[node]):
                first_ci.add(self._first_ci[node] - started)
            if code == succeeded_code:
                complete.add(self._finished[node] - started)
        succeeded = self._state.count(succeeded_code)
        reused = self._reused.count(1)
        lower_bound = self._lower_bound()
        partial = any(not _STATES[code].is_terminal for code in set(self._state))
        measured = makespan > 0 and not partial
        return Report(
            makespan=makespan,
            lower_bound=lower_bound,
            # None when nothing ran (every task reused): no work to be efficient at.
            efficiency=(lower_bound / makespan)
            if measured and succeeded and self._attempts
            else None,
            states=states,
            tasks=n,
            attempts=self._attempts,
            retries=self._retries,
            completion_rate=succeeded / n if n else 0.0,
            mean_time_to_first_ci=first_ci.value,
            mean_time_to_complete=complete.value,
            ci_wait_mean=mean(self._ci_waits),
            ci_wait_p95=percentile(self._ci_waits, 0.95),
            throughput_per_hour=((succeeded - reused) * 3600.0 / makespan) if measured else None,
            mean_recovery=mean(self._recoveries),
            partial=partial,
            policies=self._policy_spans(start, end),
            reused=reused,
            lands=self._fleet.config.repo is not None,
            landed=landed,
            conflicts=self._conflicts,
            ci_reruns=self._ci_reruns,
            mean_time_to_land=to_land.value,
            usage=dict(self._agent_usage),
            usage_total=self._usage_total(),
            compound_failures=self._compound,
            compound_failure_rate=self._compound / n if n else 0.0,
            preempted_attempts=self._preempted_attempts,
            rework_agent=self._rework_agent,
            rework_ci=self._rework_ci,
            windows=tuple((max(0.0, at - start), window) for at, window in self._windows),
        )

    def _usage_total(self) -> TokenUsage | None:
        if not self._agent_usage:
            return None
        total = TokenUsage()
        for usage in self._agent_usage.values():
            total.input_tokens += usage.input_tokens
            total.output_tokens += usage.output_tokens
            total.cost += usage.cost
            total.requests += usage.requests
            total.throttled += usage.throttled
        return total

    def _policy_spans(self, start: float, end: float) -> tuple[tuple[str, float, float], ...]:
        """Each policy of the run with the time it was in force, from the run's start."""
        changes = self._policy_changes
        spans = []
        for index, (at, policy) in enumerate(changes):
            until = changes[index + 1][0] if index + 1 < len(changes) else end
            spans.append((policy, max(0.0, at - start), max(0.0, until - start)))
        return tuple(spans)

    def _lower_bound(self) -> float:
        """max(critical path, work / slots) over the work that was actually done.

        The critical path weighs each task by the time its attempts took; the work
        bound divides each agent's and runner's busy time by its slots.
        """
        fleet = self._fleet
        weights = array("d", map(operator.add, self._agent_time, self._ci_time))
        bound = fleet.dag.critical_path_length(weights)
        config = fleet.config
        agent_work: dict[str, float] = {}
        runner_work: dict[str, float] = {}
        for node, task in enumerate(fleet.tasks):
            agent_work[task.agent] = agent_work.get(task.agent, 0.0) + self._agent_time[node]
            if task.ci is not None:
                runner_work[task.ci] = runner_work.get(task.ci, 0.0) + self._ci_time[node]
        for work, workers in ((agent_work, config.agents), (runner_work, config.runners)):
            for name, seconds in work.items():
                spec = workers[name]
                slots = spec.slots * len(spec.host_names)
                bound = max(bound, seconds / slots)
        return bound


class _Mean:
    """A running mean: None until something is added."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None


# Events that say which policy is in force from then on (a resumed run may be
# given another one with --policy).
_POLICY_EVENTS = frozenset({EventKind.POLICY_CHANGED, EventKind.RUN_RESUMED})
