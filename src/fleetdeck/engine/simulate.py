"""The simulator: one run of a fleet in virtual time, through the engine's own core.

A `Core` with a `VirtualClock` and a `SimulatedExecutor` as its effects: where
the engine starts a process, the simulated executor draws how long the attempt
takes and whether it succeeds (`StageModel`), and sets a virtual timer for its
end. Scheduling, policies, retries with their backoff, timeouts, CI queues and
slots are the core's, unchanged, so what is predicted is what the engine does
with attempts that take those durations. Pure: no asyncio, no processes, no disk.

A run can start from scratch or from the progress of a run under way
(`TaskProgress`): tasks done stay done, attempts running keep the time they
have already run, waiting retries keep what is left of their backoff.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from fleetdeck.config import Fleet
from fleetdeck.engine.clock import Timer, VirtualClock
from fleetdeck.engine.core import Core, Running
from fleetdeck.metrics import Report, ReportBuilder, load_score
from fleetdeck.model import Attempt, Event, EventKind, Stage, TaskState
from fleetdeck.policy import make_policy
from fleetdeck.stages import STAGES, worker_of, workers

# Looked up once: an enum member costs a metaclass lookup each time on Python
# 3.11 (see engine/core.py), and the load hears four events a task.
_TASK_FAILED = EventKind.TASK_FAILED
_TASK_BLOCKED = EventKind.TASK_BLOCKED

# Exit codes the simulated attempts end with.
EXIT_OK = 0
EXIT_FAILED = 1


@dataclass(slots=True, frozen=True)
class StageModel:
    """What one stage of one task does when it runs: durations to draw from and
    how often it fails. `ok` durations are drawn for attempts that succeed,
    `failed` ones for attempts that fail (a failure often comes sooner)."""

    ok: Sequence[float]
    failed: Sequence[float]
    fail_rate: float

    @classmethod
    def fixed(cls, seconds: float, fail_rate: float = 0.0) -> StageModel:
        """Always `seconds`, failing with probability `fail_rate`."""
        return cls(ok=(seconds,), failed=(seconds,), fail_rate=fail_rate)

    def draw(self, rng: random.Random) -> tuple[float, bool]:
        """(duration, succeeded) of one attempt."""
        fails = self.fail_rate > 0.0 and rng.random() < self.fail_rate
        pool = self.failed if fails else self.ok
        return (pool[0] if len(pool) == 1 else rng.choice(pool)), not fails

    def draw_rest(self, rng: random.Random, elapsed: float) -> tuple[float, bool]:
        """(seconds left, succeeded) of an attempt that has run `elapsed` seconds:
        drawn among the durations longer than that. One that has outlived every
        duration observed is taken to end now."""
        fails = self.fail_rate > 0.0 and rng.random() < self.fail_rate
        longer = [seconds for seconds in (self.failed if fails else self.ok) if seconds > elapsed]
        return (rng.choice(longer) - elapsed if longer else 0.0), not fails


@dataclass(slots=True, frozen=True)
class TaskProgress:
    """Where a task of a run under way stands, for a simulation of the rest.

    `attempts` is its agent attempts so far and `failures` those charged to its
    retries; `elapsed` is how long its running attempt has run (running or
    ci_running), `retry_in` how long its retry still waits (retry_wait).
    """

    state: TaskState
    attempts: int = 0
    failures: int = 0
    elapsed: float = 0.0
    retry_in: float = 0.0


@dataclass(slots=True, frozen=True)
class SimulatedRun:
    """What one simulated run gave: its report, load and CI queue waits."""

    policy: str
    report: Report
    # Seconds from the start (or from the progress it started at) to the end.
    makespan: float
    load_peak: int
    load_mean: float
    ci_waits: list[float]
    # False if tasks were left unfinished (nothing could run them).
    settled: bool


class LoadTracker:
    """The cognitive load through a run, kept from counts as events come.

    The score is `fleetdeck.metrics.load_score` of the tasks in flight, those
    that need attention and the distinct states in flight. The peak is over the
    scores that lasted (several events of one instant count as one change) and
    the score the run ends with; the mean is weighted by time.
    """

    __slots__ = ("_counts", "_seen", "area", "attention", "core", "last_at", "peak", "score")

    def __init__(self, core: Core) -> None:
        self.core = core
        self._counts: dict[TaskState, int] = {}
        self._seen: list[TaskState | None] = [None] * len(core.tasks)
        self.attention = 0
        self.score = 0
        self.peak = 0
        self.area = 0.0
        self.last_at = core.clock.now()

    def rescan(self) -> None:
        """Count every task afresh (after a run's state was set up in bulk)."""
        core = self.core
        self._counts.clear()
        self.attention = 0
        for node, task in enumerate(core.tasks):
            state = task.state if task.in_flight else None
            self._seen[node] = state
            if state is not None:
                self._counts[state] = self._counts.get(state, 0) + 1
            if task.attention_since is not None and core.needs_attention(node):
                self.attention += 1
        self.score = load_score(core.in_flight, self.attention, len(self._counts))

    def observe(self, node: int, kind: EventKind, at: float) -> None:
        """Task `node` just told `kind`: its state is current."""
        if at > self.last_at:
            self.area += self.score * (at - self.last_at)
            if self.score > self.peak:
                self.peak = self.score
            self.last_at = at
        task = self.core.tasks[node]
        state = task.state if task.in_flight else None
        seen = self._seen[node]
        if state is not seen:
            counts = self._counts
            if seen is not None:
                left = counts[seen] - 1
                if left:
                    counts[seen] = left
                else:
                    del counts[seen]
            if state is not None:
                counts[state] = counts.get(state, 0) + 1
            self._seen[node] = state
        if kind is _TASK_FAILED or (kind is _TASK_BLOCKED and self.core.needs_attention(node)):
            self.attention += 1
        self.score = load_score(self.core.in_flight, self.attention, len(self._counts))

    def mean(self, start: float, end: float) -> float:
        """The time-weighted mean score from `start` to `end` (the last event)."""
        return self.area / (end - start) if end > start else float(self.score)


class SimulatedExecutor:
    """The core's effects in virtual time: attempts take drawn durations."""

    def __init__(
        self,
        fleet: Fleet,
        clock: VirtualClock,
        models: Sequence[Mapping[Stage, StageModel]],
        rng: random.Random,
        *,
        measure: bool = True,
    ) -> None:
        """`measure`: fold events into a report and the load (else they are dropped)."""
        self.clock = clock
        self._measure = measure
        self.models = models
        self.rng = rng
        self.report = ReportBuilder(fleet)
        self._index = fleet.dag.index
        self._grace = fleet.config.fleet.grace_period
        # Attempt id -> its end timer, when it ends, and with what exit code.
        self._ends: dict[int, tuple[Timer, float, int]] = {}
        # Attempts of a run under way: how long they have run already (by node).
        self.elapsed: dict[int, float] = {}
        self._schedule_due = False
        self.core: Core | None = None
        self.load: LoadTracker | None = None

    def bind(self, core: Core) -> None:
        """The core whose effects these are (built after this executor)."""
        self.core = core
        self.load = LoadTracker(core) if self._measure else None

    # --- Effects ---------------------------------------------------------------

    def emit(self, event: Event, node: int | None = None) -> None:
        """Fold the event into the report and the load."""
        if not self._measure:
            return
        if node is None and event.task is not None:
            node = self._index.get(event.task)
        self.report.feed(event, node)
        if node is not None and self.load is not None:
            self.load.observe(node, event.kind, event.ts)

    def record(self, attempt: Attempt) -> None:
        """Nothing is journaled."""

    def start(self, running: Running) -> None:
        """Draw the attempt's duration and outcome; it has started at once."""
        core = self.core
        assert core is not None
        model = self.models[running.node][running.attempt.stage]
        now = self.clock.now()
        # `elapsed` is empty but for a simulation from a run under way.
        elapsed = self.elapsed.pop(running.node, None) if self.elapsed else None
        if elapsed is None:
            duration, ok = model.draw(self.rng)
        else:
            duration, ok = model.draw_rest(self.rng, elapsed)
            running.attempt.started_at = now - elapsed
        code = EXIT_OK if ok else EXIT_FAILED
        timer = self.clock.call_later(duration, self._ended, running, code)
        self._ends[running.attempt.attempt_id] = (timer, now + duration, code)
        core.attempt_started(running)

    def stop(self, running: Running, grace: float | None) -> None:
        """The attempt ends within the grace period, or sooner if it was ending."""
        end = self._ends.get(running.attempt.attempt_id)
        if end is None:
            return
        timer, end_at, code = end
        timer.cancel()
        left = max(0.0, end_at - self.clock.now())
        seconds = min(self._grace if grace is None else grace, left)
        self._ends[running.attempt.attempt_id] = (
            self.clock.call_later(seconds, self._ended, running, code),
            self.clock.now() + seconds,
            code,
        )

    def schedule_soon(self) -> None:
        """One launch decision per virtual instant, after what happens in it."""
        if not self._schedule_due:
            self._schedule_due = True
            self.clock.call_soon(self._schedule)

    # --- timers ----------------------------------------------------------------

    def _schedule(self) -> None:
        self._schedule_due = False
        assert self.core is not None
        self.core.schedule()

    def _ended(self, running: Running, code: int) -> None:
        del self._ends[running.attempt.attempt_id]
        assert self.core is not None
        self.core.attempt_ended(running, None, code)


def simulate_run(
    fleet: Fleet,
    policy: str,
    models: Sequence[Mapping[Stage, StageModel]],
    *,
    estimates: Sequence[float],
    rng: random.Random,
    progress: Mapping[str, TaskProgress] | None = None,
) -> SimulatedRun:
    """Run `fleet` once under `policy` in virtual time, from the start or from
    `progress` (tasks not in it are pending). `models[node][stage]` says what each
    stage of each task does; `estimates` rank ready tasks, as the engine's do.
    Raises ValueError for an unknown policy."""
    core, executor = _run(fleet, policy, models, estimates, rng, progress, measure=True)
    assert executor.load is not None
    return _result(core, executor, executor.load, policy, executor.clock.now())


def simulate_makespan(
    fleet: Fleet,
    policy: str,
    models: Sequence[Mapping[Stage, StageModel]],
    *,
    estimates: Sequence[float],
    rng: random.Random,
    progress: Mapping[str, TaskProgress] | None = None,
) -> float:
    """The makespan alone of the run `simulate_run` would simulate (the same
    draws), about a quarter cheaper: no report, no load."""
    _core, executor = _run(fleet, policy, models, estimates, rng, progress, measure=False)
    return executor.clock.now()


def _run(
    fleet: Fleet,
    policy: str,
    models: Sequence[Mapping[Stage, StageModel]],
    estimates: Sequence[float],
    rng: random.Random,
    progress: Mapping[str, TaskProgress] | None,
    *,
    measure: bool,
) -> tuple[Core, SimulatedExecutor]:
    clock = VirtualClock()
    executor = SimulatedExecutor(fleet, clock, models, rng, measure=measure)
    core = Core(
        fleet,
        clock=clock,
        effects=executor,
        policy=make_policy(policy, fleet.config.policy_params(policy)),
        estimates=estimates,
        rng=rng,
        # Measuring nothing, the executor drops every event: the core builds none.
        events=measure,
    )
    executor.bind(core)
    for host in fleet.config.hosts:
        core.capacity.set_host_up(host, True)
    if progress is None:
        core.start()
    else:
        core.emit(EventKind.RUN_STARTED, None, fleet=fleet.name, policy=policy, run_id=0)
        _take_up_progress(core, executor, progress)
    executor.schedule_soon()
    with _collector_paused():
        clock.run()
    return core, executor


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the virtual clock runs.

    A simulation frees what it allocates by reference counting alone (the one
    cycle, core and executor, outlives the run), yet allocates enough for the
    collector's full passes over everything alive, the fleet's definition
    first, to cost a tenth of a run of 100,000 tasks for nothing. The collector
    is left as it was found; what happens is the same with it or without it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _result(
    core: Core, executor: SimulatedExecutor, load: LoadTracker, policy: str, end: float
) -> SimulatedRun:
    builder = executor.report
    builder.finished_at = end
    start = builder.started_at or 0.0
    # The score the run ends with counts too: failures left for the operator.
    peak = max(load.peak, load.score)
    if end > load.last_at:
        load.area += load.score * (end - load.last_at)
    return SimulatedRun(
        policy=policy,
        report=builder.report(),
        makespan=end - start,
        load_peak=peak,
        load_mean=load.mean(start, end),
        ci_waits=[wait for waits in core.queue_waits.values() for wait in waits],
        settled=core.settled,
    )


def _take_up_progress(
    core: Core, executor: SimulatedExecutor, progress: Mapping[str, TaskProgress]
) -> None:
    """Put the core where a run under way stands (as `engine.takeup` does from the
    journal, from a few numbers per task instead)."""
    now = core.clock.now()
    launches: list[tuple[int, Stage, float]] = []
    for node, task in enumerate(core.tasks):
        done = progress.get(task.id)
        if done is None:
            continue
        state = done.state
        task.agent_attempts = done.attempts
        task.failures = done.failures
        if state is TaskState.SUCCEEDED:
            task.state = state
            task.finished_at = now
            core.unfinished -= 1
            for child in core.dag.dependents[node]:
                core.waiting_on[child] -= 1
        elif state in (TaskState.FAILED, TaskState.CANCELLED):
            task.state = state
            task.finished_at = now
            task.attention_since = now if state is TaskState.FAILED else None
            core.unfinished -= 1
        elif state in (TaskState.RUNNING, TaskState.CI_RUNNING):
            launches.append(
                (node, Stage.AGENT if state is TaskState.RUNNING else Stage.CI, done.elapsed)
            )
        elif state is TaskState.CI_QUEUED and (runner := core.specs[node].ci) is not None:
            core.enter_flight(task)
            task.state = state
            core.stage_queues[(Stage.CI, runner)].append(node)
        elif state is TaskState.RETRY_WAIT:
            core.enter_flight(task)
            task.state = state
            core.retry_timers[node] = core.clock.call_later(done.retry_in, core.retry_due, node)
        elif state is TaskState.READY and done.attempts > 0:
            core.enter_flight(task)
            core.to_retry_lane(node, "retry")
    for node, stage, elapsed in launches:
        _relaunch(core, executor, node, stage, elapsed)
    for node in core.dag.topo:
        task = core.tasks[node]
        if task.state not in (TaskState.PENDING, TaskState.READY, TaskState.BLOCKED):
            continue
        if task.state is TaskState.READY and task.in_flight:
            continue  # in the retry lane
        blocker = core.blocker_of(node)
        if blocker is not None:
            task.state = TaskState.BLOCKED
            task.blocked_by = blocker
            failed = core.tasks[core.node(blocker)].state is TaskState.FAILED
            task.attention_since = now if failed else None
            core.unfinished -= 1
            continue
        task.state = TaskState.PENDING
        if core.waiting_on[node] == 0:
            core.make_ready(node)
    if executor.load is not None:
        executor.load.rescan()


def _relaunch(
    core: Core, executor: SimulatedExecutor, node: int, stage: Stage, elapsed: float
) -> None:
    """Carry on with an attempt that has run `elapsed` seconds already."""
    spec = core.specs[node]
    name = worker_of(spec, stage)
    if name is None:
        return
    host = core.capacity.acquire(stage, name)
    if host is None:
        # More running than slots (a snapshot taken mid-change): count it anyway.
        host = workers(core.fleet.config, stage)[name].host_names[0]
        core.capacity.take(stage, name, host)
    task = core.tasks[node]
    if stage is Stage.AGENT:
        # launch() counts the attempt; it is counted in the progress already.
        task.agent_attempts = max(0, task.agent_attempts - 1)
    executor.elapsed[node] = max(0.0, elapsed)
    core.launch(node, stage, host)
    assert task.state is STAGES[stage].running
