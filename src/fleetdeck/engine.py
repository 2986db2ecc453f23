"""The engine: the asyncio supervisor that owns all state of a run.

One object, one event loop, no locks: every state change happens on the loop, in
plain methods, and is recorded as an event. Events are journaled first and only
published to views after the journal commit (group commit, once per loop turn),
so no event is ever told that the journal does not hold. No process starts
before everything recorded until its launch is committed: its own attempt row,
and the success of each dependency (or of the sequential policy's previous
task). So a success is durable before any dependent starts, and the decision to
launch a dependent can be taken at once, in the same commit as the success.

Views use only the public interface: `snapshot()`, `subscribe()`, and the
commands `retry`, `cancel`, `set_policy`, `pause`, `resume`, `request_stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleetdeck.config import Fleet, TaskSpec, WorkerSpec, config_json, suggest
from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HostHealth,
    HostLostError,
    HostState,
    LaunchError,
    LaunchRequest,
    Usage,
)
from fleetdeck.journal import Journal, JournalError, RunRecord
from fleetdeck.metrics import (
    ContentionHistory,
    Report,
    ReportBuilder,
    TaskSummary,
    cognitive_load,
    mean,
    percentile,
)
from fleetdeck.model import (
    BLOCKING_STATES,
    LOCAL_HOST,
    Attempt,
    Event,
    EventKind,
    Outcome,
    Stage,
    TaskRun,
    TaskState,
    now,
)
from fleetdeck.policy import (
    LaunchContext,
    Policy,
    ReadyQueue,
    launch_budget,
    parse_policy,
    ready_order_key,
)
from fleetdeck.redact import Redactor
from fleetdeck.resume import ResumePlan, listed, plan_resume
from fleetdeck.slots import Capacity
from fleetdeck.text import plural

# What views see (fleetdeck.snapshot) is imported by the methods that build it: a
# headless run never asks, and its ten dataclasses are ~10 ms of start-up.
if TYPE_CHECKING:
    from fleetdeck.snapshot import FleetSnapshot, TaskDetail, TaskView, Timeline

# A task whose attempts keep getting lost (its host dies under it) is failed after
# this many lost attempts: lost attempts do not spend the task's own retries.
MAX_LOST_ATTEMPTS = 3

# How much of an input or output the detail screen gets.
DETAIL_TEXT_LIMIT = 4096

# Events that nothing waits for are committed (and told) within this long, with
# whatever comes meanwhile: a run of short tasks then commits once per task, not
# twice. A launch never waits for it: it asks for its commit at once.
EVENT_COMMIT_DELAY = 0.005

# How often contention and resource use are sampled (sparklines, CPU, memory).
SAMPLE_INTERVAL = 1.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

Listener = Callable[[Event], None]


class CommandError(Exception):
    """An operator command that cannot be carried out; the message says why."""


@dataclass(slots=True, frozen=True)
class RunResult:
    """How a run ended."""

    run_id: int
    interrupted: bool
    exit_code: int
    report: Report
    # Built when asked for: a row per task is megabytes at 100,000 tasks.
    _summaries: Callable[[], list[TaskSummary]]

    @property
    def tasks(self) -> list[TaskSummary]:
        """The per-task table."""
        return self._summaries()


@dataclass(slots=True)
class _Running:
    """An attempt between launch and end."""

    node: int
    attempt: Attempt
    timeout: float | None
    process: AttemptProcess | None = None
    stop_reason: Outcome | None = None
    timer: asyncio.TimerHandle | None = None
    supervisor: asyncio.Task[None] | None = None
    # The journal's count of rows recorded when this attempt was launched: its
    # process starts once those are committed.
    recorded: int = 0


class Engine:
    """Runs one fleet: applies the policy, launches attempts, records everything."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        journal: Journal,
        executors: Mapping[str, Executor],
        policy: Policy | None = None,
        clock: Callable[[], float] = now,
        rng: random.Random | None = None,
        sample_interval: float | None = SAMPLE_INTERVAL,
        resume: RunRecord | None = None,
    ) -> None:
        """`sample_interval` is how often contention and resources are sampled
        (None: only when `sample()` is called, for tests that want a still picture).

        With `resume` (an unfinished run of the same journal, see
        `fleetdeck.resume.choose_run`), the run takes up where that one left off
        instead of starting a new one.

        Ready tasks are ranked by critical path, weighted by how long each task
        took in earlier runs in the same journal (see `estimated_durations`)."""
        self.fleet = fleet
        self._journal = journal
        self._executors = dict(executors)
        self._policy: Policy = policy or parse_policy(fleet.config.fleet.policy)
        self._clock = clock
        self._rng = rng or random.Random()
        self._specs: Sequence[TaskSpec] = fleet.tasks
        dag = fleet.dag
        self._dag = dag
        self._tasks = [TaskRun(id=spec.id) for spec in self._specs]
        self.estimates = estimated_durations(fleet, journal.learned_durations())
        # One number per task in an array (not a key tuple): the key is built when pushed.
        self._critical = dag.critical_path(self.estimates)
        self._waiting_on = [len(deps) for deps in dag.deps]
        self._ready = ReadyQueue()
        self._retry_lane: deque[int] = deque()
        self._ci_queues: dict[str, deque[int]] = {name: deque() for name in fleet.config.runners}
        self._capacity = Capacity(fleet.config.agents, fleet.config.runners, fleet.config.hosts)
        self._running: dict[int, _Running] = {}
        # Each task's view, kept from one snapshot to the next until something in
        # it changes (see `_view_changed`): a refresh at 10,000 tasks rebuilds the
        # few that changed, and views can tell what changed by identity. None until
        # the first snapshot, so a run nobody watches pays nothing for it.
        self._views: list[TaskView | None] | None = None
        self._stale_views: set[int] = set()
        self._ci_waits: dict[str, list[float]] = {}
        self._workdirs: dict[int, str] = {}
        self._argv_templates: dict[int, tuple[tuple[str, bool], ...] | None] = {}
        # This machine is up from the start; other hosts once their executor says so.
        self._hosts: dict[str, HostHealth] = {LOCAL_HOST: HostHealth(LOCAL_HOST, HostState.UP)}
        self._history = ContentionHistory()
        self._sample_timer: asyncio.TimerHandle | None = None
        self._retry_timers: dict[int, asyncio.TimerHandle] = {}
        self._in_flight = 0
        self._unfinished = len(self._tasks)
        self._paused = False
        self._listeners: list[Listener] = []
        self._report = ReportBuilder(fleet)
        # Group commit: events wait here for the journal commit, then are published.
        self._unpublished: list[Event] = []
        # Resolved once what is recorded now is committed: launches wait on it
        # before their process starts (one future per batch, shared).
        self._next_commit: asyncio.Future[None] | None = None
        # The commit to come, if one is scheduled, and whether it comes at once.
        self._flush_handle: asyncio.Handle | None = None
        self._flush_urgent = False
        self.journal_error: JournalError | None = None
        # The launch decision waiting for its turn of the loop, if one is.
        self._pending_schedule: asyncio.Handle | None = None
        self._stopping = False
        self._hurry = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settled: asyncio.Event | None = None
        self._stop_requested: asyncio.Event | None = None
        self._next_attempt_id = journal.next_attempt_id()
        self.run_id: int | None = None
        self.started_at: float | None = None
        # Once run() has ended: when, and the exit code the process will have.
        self.finished_at: float | None = None
        self.exit_code: int | None = None
        self.grace = fleet.config.fleet.grace_period
        self._sample_interval = sample_interval
        # Masks the values of the fleet's secrets in events, errors and what views read.
        self.redactor = Redactor.for_fleet(fleet)
        self._masking = bool(self.redactor)  # checked for every event: a plain bool
        # The names whose values a local attempt's shim masks in its log file (the
        # shim reads the values from its own environment, the attempt's).
        self._redact_names: tuple[str, ...] = fleet.secrets if self._masking else ()
        self._resume_from = resume
        # What a resume did with the attempts it found unfinished.
        self.reattached = 0
        self.recovered = 0
        self.lost_on_resume = 0

    # --- public interface -------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The policy the next launch decision uses."""
        return self._policy

    @property
    def paused(self) -> bool:
        """True while new launches are held back."""
        return self._paused

    @property
    def in_flight(self) -> int:
        """Tasks between their first launch and their end."""
        return self._in_flight

    def task(self, task_id: str) -> TaskRun:
        """The live state of one task (read it, do not change it)."""
        return self._tasks[self._node(task_id)]

    def tasks(self) -> Sequence[TaskRun]:
        """Every task's live state, in config order (read only)."""
        return self._tasks

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each event once it is journaled; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def snapshot(self) -> FleetSnapshot:
        """A consistent, immutable picture of the run for views."""
        from fleetdeck.snapshot import AttemptView, AttentionItem, FleetSnapshot, HostView, PoolView

        at = self._clock()
        attention: list[AttentionItem] = []
        in_flight_states: list[TaskState] = []
        done = 0
        views = self._fresh_views()
        for node, task in enumerate(self._tasks):
            state = task.state
            if state is TaskState.SUCCEEDED:
                done += 1
            if task.in_flight:
                in_flight_states.append(state)
            if task.attention_since is not None and self._needs_attention(node):
                attention.append(
                    AttentionItem(task=task.id, state=state, since=task.attention_since)
                )
        attention.sort(key=lambda item: item.since)
        resources: dict[int, Usage] = {}
        for executor in self._executors.values():
            resources.update(executor.usage())
        running = tuple(
            AttemptView(
                attempt_id=r.attempt.attempt_id,
                task=r.attempt.task,
                stage=r.attempt.stage,
                number=r.attempt.number,
                worker=r.attempt.worker,
                host=r.attempt.host,
                pid=r.attempt.pid,
                started_at=r.attempt.started_at or at,
                log_path=r.attempt.log_path,
                stopping=r.stop_reason is not None,
                redactor=self.redactor,
                cpu_percent=u.cpu_percent if (u := resources.get(r.attempt.attempt_id)) else None,
                rss_bytes=u.rss_bytes if u else None,
            )
            for r in self._running.values()
        )
        pools = [
            PoolView(
                stage=Stage.AGENT,
                name=name,
                busy=(usage := self._capacity.usage(Stage.AGENT, name)).busy,
                total=usage.total,
                waiting=self._ready.waiting(name),
                history=self._history.of((Stage.AGENT, name)),
            )
            for name in self.fleet.config.agents
        ]
        for name, queue in self._ci_queues.items():
            usage = self._capacity.usage(Stage.CI, name)
            waits = self._ci_waits.get(name, [])
            pools.append(
                PoolView(
                    stage=Stage.CI,
                    name=name,
                    busy=usage.busy,
                    total=usage.total,
                    waiting=len(queue),
                    wait_mean=mean(waits),
                    wait_p95=percentile(waits, 0.95),
                    history=self._history.of((Stage.CI, name)),
                    oldest_wait=self._oldest_wait(queue, at),
                )
            )
        hosts = tuple(
            HostView(
                name=name,
                state=health.state if (health := self._hosts.get(name)) else HostState.DOWN,
                running=self._capacity.sessions(name),
                latency=health.latency if health else None,
                load=health.load if health else None,
                reason=self.redactor.text(health.reason) if health and health.reason else None,
            )
            for name in (LOCAL_HOST, *self.fleet.config.hosts)
        )
        return FleetSnapshot(
            fleet=self.fleet.name,
            policy=self._policy,
            paused=self._paused,
            stopping=self._stopping,
            now=at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            tasks=views,
            running=running,
            pools=tuple(pools),
            hosts=hosts,
            load=cognitive_load(
                in_flight_states, len(attention), self.fleet.config.fleet.load_capacity
            ),
            attention=tuple(attention),
            done=done,
            total=len(self._tasks),
        )

    def _oldest_wait(self, queue: deque[int], at: float) -> float | None:
        """How long the task at the head of a CI queue has waited."""
        if not queue:
            return None
        attempt = self._tasks[queue[0]].current_attempt
        if attempt is None or attempt.queued_at is None:
            return None
        return at - attempt.queued_at

    def _fresh_views(self) -> tuple[TaskView, ...]:
        """Every task's view, rebuilding only those that changed since the last call."""
        # Imported once here, not per view: an import statement costs ~1 us (measured) even
        # when the module is loaded, and the first snapshot builds every task's view.
        from fleetdeck.snapshot import TaskView

        if self._views is None:
            self._views = [self._task_view(node, TaskView) for node in range(len(self._tasks))]
        else:
            views = self._views
            for node in self._stale_views:
                views[node] = self._task_view(node, TaskView)
        self._stale_views.clear()
        return tuple(self._views)  # type: ignore[arg-type]  # no None left

    def _view_changed(self, node: int, *, dependents: bool = False) -> None:
        """Something the task's view shows changed (and, with `dependents`, what its
        dependents wait for). Every change comes with an event about the task
        (`_emit` calls this), except the launch, and what a success changes for its
        dependents, which call it directly.

        Views read task states live: a launch or a success shows in a snapshot up
        to one commit (EVENT_COMMIT_DELAY at most) before the journal holds it;
        events, and the processes that depend on a success, wait for the commit."""
        if self._views is None:
            return
        self._stale_views.add(node)
        if dependents:
            self._stale_views.update(self._dag.dependents[node])

    def _task_view(self, node: int, view: type[TaskView]) -> TaskView:
        """Task `node`'s view, built with `view` (TaskView, imported by the caller)."""
        task = self._tasks[node]
        spec = self._specs[node]
        return view(
            id=task.id,
            state=task.state,
            wave=self._dag.levels[node],
            agent=spec.agent,
            runner=spec.ci,
            attempts=task.agent_attempts,
            waiting_for=tuple(
                self._tasks[dep].id
                for dep in self._dag.deps[node]
                if self._tasks[dep].state is not TaskState.SUCCEEDED
            ),
            blocked_by=task.blocked_by,
            in_flight=task.in_flight,
            started_at=task.first_started_at,
            finished_at=task.finished_at,
            retry_at=task.retry_at,
        )

    def task_detail(self, task_id: str) -> TaskDetail:
        """One task's attempts, inputs and output, for the detail screen."""
        from fleetdeck.snapshot import AttemptRecord, TaskDetail, TaskView

        node = self._node(task_id)
        task = self._tasks[node]
        redact = self.redactor.text
        return TaskDetail(
            task=self._task_view(node, TaskView),
            prompt=redact(self._specs[node].prompt),
            depends_on=tuple(self._tasks[dep].id for dep in self._dag.deps[node]),
            dependents=tuple(self._tasks[child].id for child in self._dag.dependents[node]),
            attempts=tuple(AttemptRecord.of(attempt, self.redactor) for attempt in task.attempts),
            inputs={
                self._tasks[dep].id: redact(self._read_output(dep, DETAIL_TEXT_LIMIT))
                for dep in self._dag.deps[node]
            },
            output=redact(self._read_output(node, DETAIL_TEXT_LIMIT)) if task.output_path else None,
        )

    def timeline(self) -> Timeline:
        """Every attempt so far and the slots they ran in, for the timeline screen."""
        from fleetdeck.snapshot import AttemptRecord, Lane, Timeline

        lanes: list[Lane] = []
        for stage, workers in (
            (Stage.AGENT, self.fleet.config.agents),
            (Stage.CI, self.fleet.config.runners),
        ):
            for name, spec in workers.items():
                for host in spec.host_names:
                    lanes.extend(Lane(stage, name, host, slot) for slot in range(1, spec.slots + 1))
        attempts = tuple(
            AttemptRecord.of(attempt, self.redactor)
            for task in self._tasks
            for attempt in task.attempts
        )
        # Once the run has ended, its axis ends there, not at the moment of asking.
        at = self.finished_at if self.finished_at is not None else self._clock()
        return Timeline(started_at=self.started_at, now=at, lanes=tuple(lanes), attempts=attempts)

    def _needs_attention(self, node: int) -> bool:
        """Failed tasks awaiting a decision, and blocked roots (blocked directly by a
        failed or cancelled dependency, not through another blocked task)."""
        state = self._tasks[node].state
        if state is TaskState.FAILED:
            return True
        if state is TaskState.BLOCKED:
            return any(
                self._tasks[dep].state in (TaskState.FAILED, TaskState.CANCELLED)
                for dep in self._dag.deps[node]
            )
        return False

    def summaries(self) -> list[TaskSummary]:
        """The per-task table so far."""
        return self._report.summaries()

    def report(self) -> Report:
        """The report of the run so far."""
        return self._report.report()

    def set_policy(self, name: str) -> None:
        """Switch policy for the next launch decision; never touches work in flight."""
        try:
            policy = parse_policy(name)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if policy == self._policy:
            return
        previous, self._policy = self._policy, policy
        self._emit(EventKind.POLICY_CHANGED, None, policy=policy, previous=previous)
        self._request_schedule()

    def pause(self) -> None:
        """Hold back new agent attempts (work in flight, CI included, goes on)."""
        if not self._paused:
            self._paused = True
            self._emit(EventKind.PAUSED, None)

    def resume(self) -> None:
        """Let launches start again."""
        if self._paused:
            self._paused = False
            self._emit(EventKind.RESUMED, None)
            self._request_schedule()

    def cancel(self, task_id: str) -> None:
        """Cancel a task: stop its attempt (the whole process tree) and block its dependents."""
        node = self._node(task_id)
        task = self._tasks[node]
        state = task.state
        if state.is_terminal:
            raise CommandError(f"cannot cancel '{task_id}': it is already {state}")
        running = self._running_for(node)
        if running is not None:
            self._stop_attempt(running, Outcome.CANCELLED)
            return
        self._ready.remove(task_id)
        with contextlib.suppress(ValueError):
            self._retry_lane.remove(node)
        timer = self._retry_timers.pop(node, None)
        if timer is not None:
            timer.cancel()
        for queue in self._ci_queues.values():
            with contextlib.suppress(ValueError):
                queue.remove(node)
        self._give_up(node, TaskState.CANCELLED, reason="cancelled by the operator")
        self._request_schedule()

    def retry(self, task_id: str) -> None:
        """Run a failed or cancelled task again (a blocked root: the tasks blocking it)."""
        node = self._node(task_id)
        task = self._tasks[node]
        if task.state in (TaskState.FAILED, TaskState.CANCELLED):
            self._requeue(node)
        elif task.state is TaskState.BLOCKED:
            roots = [
                dep
                for dep in self._dag.deps[node]
                if self._tasks[dep].state in (TaskState.FAILED, TaskState.CANCELLED)
            ]
            if not roots:
                raise CommandError(
                    f"cannot retry '{task_id}': it is blocked by '{task.blocked_by}', "
                    f"which is not one of its own dependencies; retry '{task.blocked_by}'"
                )
            for dep in roots:
                self._requeue(dep)
        else:
            raise CommandError(
                f"cannot retry '{task_id}': it is {task.state}; only failed, cancelled "
                "or blocked tasks can be retried"
            )
        self._request_schedule()

    def request_stop(self, *, hurry: bool = False) -> None:
        """Stop the run: no new launches, in-flight attempts stopped cleanly.

        With `hurry` (a second Ctrl-C), attempts get no grace period: SIGKILL at once,
        still to every process of their trees.
        """
        self._hurry = self._hurry or hurry
        if self._stop_requested is not None:
            self._stop_requested.set()
        if self._stopping and hurry:
            for running in list(self._running.values()):
                self._stop_attempt(running, Outcome.CANCELLED, grace=0.0)
            for executor in self._executors.values():
                executor.hurry()

    async def run(self, *, until_settled: bool = True) -> RunResult:
        """Run the fleet.

        With `until_settled` (headless and the TUI), return once every task has ended;
        otherwise keep going, so a failed task can still be retried, until
        `request_stop()`.
        """
        self._loop = asyncio.get_running_loop()
        self._settled = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self.started_at = self._clock()
        plan = self._open_run()
        # A string: paths are built per attempt, and pathlib costs more than it helps.
        self._run_dir = str(self._journal.run_dir(self._run_id))
        interrupted = True
        try:
            # Hosts other than this machine take work once their executor says
            # they are up; opening never waits for a slow host.
            for host in self.fleet.config.hosts:
                self._capacity.set_host_up(host, False)
            if plan is None:
                self._emit(
                    EventKind.RUN_STARTED,
                    None,
                    fleet=self.fleet.name,
                    policy=self._policy,
                    tasks=len(self._tasks),
                    run_id=self.run_id,
                )
                for node, waiting in enumerate(self._waiting_on):
                    if waiting == 0:
                        self._make_ready(node)
            for executor in self._executors.values():
                await executor.open(self._on_host_health)
            if plan is not None:
                await self._take_up(plan)
            if self._sample_interval is not None:
                self._sample_timer = self._loop.call_later(self._sample_interval, self._sample_tick)
            self._request_schedule()
            waiters = [asyncio.ensure_future(self._stop_requested.wait())]
            if until_settled:
                waiters.append(asyncio.ensure_future(self._settled.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            # A stop after everything ended (quitting the TUI) interrupts nothing.
            interrupted = self._stop_requested.is_set() and (
                self._unfinished > 0 or bool(self._running)
            )
        finally:
            await self._shut_down()
        return self._finish(interrupted)

    def _open_run(self) -> ResumePlan | None:
        """Journal the start of the run, or take over the unfinished one; then the
        plan to resume it (None for a new run).

        A method of its own so that the config's JSON (100 bytes a task) is not
        kept alive for the whole run by run()'s frame.
        """
        # Stored with the secrets' values masked; compared masked too, so that an
        # unchanged secret does not make its tasks look changed on resume.
        settings = self.redactor.config_json(config_json(self.fleet.config))
        if self._resume_from is None:
            self.run_id = self._journal.begin_run(
                fleet=self.fleet.name,
                config_path=self.fleet.source,
                config_json=settings,
                policy=self._policy,
                started_at=self.started_at or self._clock(),
            )
            return None
        previous = self._resume_from
        self.run_id = previous.run_id
        self.started_at = previous.started_at
        plan = plan_resume(
            self.fleet,
            previous,
            self._journal.events(previous.run_id),
            self._journal.attempts(previous.run_id),
            new_config=json.loads(settings),
            run_dir=str(self._journal.run_dir(previous.run_id)),
        )
        self._journal.resume_run(previous.run_id, config_json=settings, policy=self._policy)
        return plan

    # --- resuming a run -------------------------------------------------------------

    async def _take_up(self, plan: ResumePlan) -> None:
        """Rebuild every task's state from the journal and carry on from there.

        Tasks that succeeded stay done (their outputs still feed their dependents);
        tasks in flight continue: a retry that was waiting is due at once, work
        queued for CI joins its runner's queue, and an attempt that never ended
        is reattached, its recorded status used, or (gone without a status) it
        is `lost` and runs again without spending a retry.
        """
        for event in plan.events:
            # The report covers the whole run, from its first start.
            if event.kind is not EventKind.RUN_FINISHED:
                self._report.feed(event)
        unfinished_by_task: dict[str, list[Attempt]] = {}
        for attempt in plan.unfinished:
            unfinished_by_task.setdefault(attempt.task, []).append(attempt)
        renewed = {*plan.changed, *plan.invalidated}
        # Look for the attempts first, so that run_resumed, the first event of
        # this supervisor, can say what became of them.
        found = await self._find_attempts(plan, renewed)
        done = sum(
            1
            for task_id, replayed in plan.tasks.items()
            if replayed.state is TaskState.SUCCEEDED and task_id in self._dag.index
        )
        self._emit(
            EventKind.RUN_RESUMED,
            None,
            fleet=self.fleet.name,
            policy=self._policy,
            tasks=len(self._tasks),
            run_id=self.run_id,
            done=done,
            to_go=len(self._tasks) - done,
            reattached=self.reattached,
            recovered=self.recovered,
            lost=self.lost_on_resume,
            # Config changes, only those there are: an unchanged config says nothing.
            **{
                key: listed(names)
                for key, names in (
                    ("changed", plan.changed),
                    ("added", plan.added),
                    ("removed", plan.removed),
                    ("rerun", plan.invalidated),
                )
                if names
            },
        )
        for node, task in enumerate(self._tasks):
            replayed = plan.tasks.get(task.id)
            if replayed is None:
                continue
            task.attempts = tuple(replayed.attempts)
            task.agent_attempts = max(
                (a.number for a in replayed.attempts if a.stage is Stage.AGENT), default=0
            )
            task.failures = replayed.failures
            task.lost = replayed.lost
            outputs = [
                a for a in replayed.attempts if a.stage is Stage.AGENT and a.outcome is Outcome.OK
            ]
            state = replayed.state
            if state is TaskState.SUCCEEDED:
                task.output_attempt = outputs[-1] if outputs else None
                task.state = state
                task.finished_at = replayed.finished_at
                self._unfinished -= 1
                for child in self._dag.dependents[node]:
                    self._waiting_on[child] -= 1
            elif state in (TaskState.FAILED, TaskState.CANCELLED):
                task.state = state
                task.finished_at = replayed.finished_at
                task.attention_since = replayed.attention_since or self._clock()
                self._unfinished -= 1
            elif state is TaskState.CI_QUEUED and outputs:
                task.output_attempt = outputs[-1]
                self._enter_flight(task)
                task.state = TaskState.CI_QUEUED
                runner = self._specs[node].ci
                assert runner is not None
                self._ci_queues[runner].append(node)
            elif state in (TaskState.RETRY_WAIT, TaskState.RUNNING, TaskState.CI_RUNNING):
                if task.id in unfinished_by_task:
                    continue  # decided below, once its attempt is found again or not
                # Interrupted (its attempt was stopped) or waiting to retry: due now.
                self._enter_flight(task)
                task.state = TaskState.READY
                self._retry_lane.append(node)
                self._emit(
                    EventKind.TASK_READY, task.id, wave=self._dag.levels[node], reason="resumed"
                )
            # pending, ready and blocked tasks are worked out below, in DAG order.
        for task_id in plan.changed:
            self._emit(
                EventKind.TASK_REQUEUED,
                task_id,
                state=TaskState.PENDING,
                reason="definition changed",
            )
        for task_id in plan.invalidated:
            self._emit(
                EventKind.TASK_REQUEUED,
                task_id,
                state=TaskState.PENDING,
                reason="an upstream task runs again",
            )
        self._take_up_attempts(found, renewed)
        for node in self._dag.topo:
            task = self._tasks[node]
            if task.state not in (TaskState.PENDING, TaskState.READY, TaskState.BLOCKED):
                continue
            if task.state is TaskState.READY and task.in_flight:
                continue  # already in the retry lane
            blocker = self._blocker_of(node)
            if blocker is not None:
                was = task.state is TaskState.BLOCKED and task.blocked_by == blocker
                task.state = TaskState.BLOCKED
                task.blocked_by = blocker
                task.attention_since = task.attention_since or self._clock()
                self._unfinished -= 1
                if not was:
                    self._emit(EventKind.TASK_BLOCKED, task.id, blocked_by=blocker)
                continue
            task.state = TaskState.PENDING
            task.blocked_by = None
            if self._waiting_on[node] == 0:
                self._make_ready(node)
        # Many tasks changed here without an event of their own (replayed from the
        # journal): any view built before this is stale.
        if self._views is not None:
            self._stale_views.update(range(len(self._tasks)))
        self._check_settled()

    def _enter_flight(self, task: TaskRun) -> None:
        if not task.in_flight:
            task.in_flight = True
            self._in_flight += 1

    async def _find_attempts(
        self, plan: ResumePlan, renewed: set[str]
    ) -> list[tuple[Attempt, AttemptProcess | int | None]]:
        """Find again every attempt the last supervisor left unfinished: its process
        if it still runs, its recorded status if it ended, None if it is gone.
        Those that run what the config no longer says are stopped."""
        found: list[tuple[Attempt, AttemptProcess | int | None]] = []
        for attempt in plan.unfinished:
            executor = self._executors.get(attempt.host)
            result: AttemptProcess | int | None = None
            if executor is not None:
                try:
                    result = await executor.recover(attempt)
                except Exception as exc:  # an executor bug must not stop a resume
                    attempt.error = f"cannot find the attempt again: {exc}"
            if attempt.task not in self._dag.index or attempt.task in renewed:
                if isinstance(result, AttemptProcess):
                    with contextlib.suppress(Exception):
                        await result.stop(self._grace_for_stop())
            elif isinstance(result, AttemptProcess):
                self.reattached += 1
            elif isinstance(result, int):
                self.recovered += 1
            else:
                self.lost_on_resume += 1
            found.append((attempt, result))
        return found

    def _take_up_attempts(
        self, found: list[tuple[Attempt, AttemptProcess | int | None]], renewed: set[str]
    ) -> None:
        """Carry on with each attempt found (or not) by `_find_attempts`."""
        for attempt, result in found:
            node = self._dag.index.get(attempt.task)
            if node is None or attempt.task in renewed:
                reason = "task removed" if node is None else "definition changed"
                self._close_old_attempt(attempt, Outcome.CANCELLED, None, reason)
                continue
            task = self._tasks[node]
            self._enter_flight(task)
            # In flight again, whatever comes next (not pending: that would launch it).
            task.state = TaskState.RUNNING if attempt.stage is Stage.AGENT else TaskState.CI_RUNNING
            if isinstance(result, AttemptProcess):
                self._reattach(node, attempt, result)
            elif isinstance(result, int):
                self._adopt_status(node, attempt, result)
            else:
                running = _Running(node=node, attempt=attempt, timeout=None)
                self._running[attempt.attempt_id] = running
                self._capacity.take(attempt.stage, attempt.worker, attempt.host)
                attempt.error = attempt.error or "the attempt vanished with the supervisor"
                self._attempt_ended(running, Outcome.LOST, None)

    def _close_old_attempt(
        self, attempt: Attempt, outcome: Outcome, exit_code: int | None, reason: str
    ) -> None:
        attempt.finished_at = self._clock()
        attempt.outcome = outcome
        attempt.exit_code = exit_code
        self._journal.record_attempt(self._run_id, attempt)
        self._emit(
            EventKind.ATTEMPT_FINISHED,
            attempt.task,
            stage=attempt.stage,
            attempt=attempt.number,
            outcome=outcome,
            exit_code=exit_code,
            duration=round(attempt.duration or 0.0, 3),
            reason=reason,
        )

    def _reattach(self, node: int, attempt: Attempt, process: AttemptProcess) -> None:
        """Supervise an attempt that outlived the last supervisor, as if we started it."""
        task = self._tasks[node]
        task.state = TaskState.RUNNING if attempt.stage is Stage.AGENT else TaskState.CI_RUNNING
        self._capacity.take(attempt.stage, attempt.worker, attempt.host)
        spec = self._specs[node]
        timeout = spec.timeout
        if timeout is None:
            timeout = self._worker(attempt.stage, attempt.worker).timeout
        running = _Running(node=node, attempt=attempt, timeout=timeout, process=process)
        self._running[attempt.attempt_id] = running
        assert self._loop is not None
        running.supervisor = self._loop.create_task(self._supervise(running, reattached=True))

    def _adopt_status(self, node: int, attempt: Attempt, exit_code: int) -> None:
        """An attempt that ended while no supervisor watched: its recorded status counts."""
        running = _Running(node=node, attempt=attempt, timeout=None)
        self._running[attempt.attempt_id] = running
        self._capacity.take(attempt.stage, attempt.worker, attempt.host)
        self._attempt_ended(running, Outcome.OK if exit_code == 0 else Outcome.FAILED, exit_code)

    # --- state transitions ------------------------------------------------------------

    def _node(self, task_id: str) -> int:
        node = self._dag.index.get(task_id)
        if node is None:
            raise CommandError(f"unknown task '{task_id}'{suggest(task_id, self._dag.ids)}")
        return node

    def _running_for(self, node: int) -> _Running | None:
        attempt = self._tasks[node].current_attempt
        if attempt is None:
            return None
        return self._running.get(attempt.attempt_id)

    def _make_ready(self, node: int) -> None:
        task = self._tasks[node]
        task.state = TaskState.READY
        spec = self._specs[node]
        self._ready.push(
            task.id, spec.agent, ready_order_key(spec.priority, self._critical[node], node)
        )
        self._emit(EventKind.TASK_READY, task.id, wave=self._dag.levels[node])

    def _request_schedule(self) -> None:
        if self._pending_schedule is None and self._loop is not None:
            self._pending_schedule = self._loop.call_soon(self._schedule)

    def _schedule(self) -> None:
        """Launch what the policy and the free slots allow. Cheap; called often."""
        if self._pending_schedule is not None:
            self._pending_schedule.cancel()  # when a flush takes it early
            self._pending_schedule = None
        if self._stopping:
            return
        capacity = self._capacity
        # CI first: these tasks are already in flight, FIFO per runner.
        for runner, queue in self._ci_queues.items():
            while queue and capacity.free(Stage.CI, runner) > 0:
                self._launch(queue.popleft(), Stage.CI)
        if self._paused:
            return
        # Retries of tasks already in flight come before new tasks, and are not
        # counted against the budget: they already hold their place.
        for _ in range(len(self._retry_lane)):
            node = self._retry_lane.popleft()
            if capacity.free(Stage.AGENT, self._specs[node].agent) > 0:
                self._launch(node, Stage.AGENT)
            else:
                self._retry_lane.append(node)
        budget = launch_budget(
            self._policy,
            LaunchContext(
                in_flight=self._in_flight,
                max_in_flight=self.fleet.config.fleet.max_in_flight,
                paused=self._paused,
            ),
        )
        while budget > 0:
            free_agents = [
                agent
                for agent in self._ready.agents_waiting()
                if capacity.free(Stage.AGENT, agent) > 0
            ]
            picked = self._ready.pop_best(free_agents)
            if picked is None:
                break
            self._launch(self._dag.index[picked[0]], Stage.AGENT)
            budget -= 1

    def _launch(self, node: int, stage: Stage) -> None:
        task = self._tasks[node]
        spec = self._specs[node]
        worker_name = spec.agent if stage is Stage.AGENT else spec.ci
        assert worker_name is not None
        host = self._capacity.acquire(stage, worker_name)
        assert host is not None, "launch without a free slot"
        at = self._clock()
        if stage is Stage.AGENT:
            task.agent_attempts += 1
            task.state = TaskState.RUNNING
        else:
            task.state = TaskState.CI_RUNNING
        if not task.in_flight:
            task.in_flight = True
            self._in_flight += 1
        attempt = Attempt(
            attempt_id=self._next_attempt_id,
            task=task.id,
            stage=stage,
            number=task.agent_attempts,
            worker=worker_name,
            host=host,
            run_dir=self._run_dir,
            started_at=at,
        )
        self._next_attempt_id += 1
        if stage is Stage.CI:
            previous = task.current_attempt
            attempt.queued_at = previous.queued_at if previous is not None else None
            if attempt.queued_at is not None:
                self._ci_waits.setdefault(worker_name, []).append(at - attempt.queued_at)
        task.add_attempt(attempt)
        self._view_changed(node)  # running now; ATTEMPT_STARTED comes once it has started
        timeout = spec.timeout
        worker = self._worker(stage, worker_name)
        if timeout is None:
            timeout = worker.timeout
        running = _Running(node=node, attempt=attempt, timeout=timeout)
        self._running[attempt.attempt_id] = running
        # Journaled before its process exists: a supervisor that dies from here
        # on leaves a row by which the next one finds the attempt (by its
        # environment, when no pid was recorded yet), instead of starting the
        # task again beside it. The process waits for the commit (_supervise).
        self._journal.record_attempt(self._run_id, attempt)
        running.recorded = self._journal.recorded
        # The commit is asked for before the supervisor is created, so it comes
        # first in the loop's next turn: the supervisor then finds its row
        # committed and starts the process in that same turn, rather than waiting
        # for the commit, and then for one more turn to be woken.
        self._request_flush()
        assert self._loop is not None
        running.supervisor = self._loop.create_task(self._supervise(running))

    def _worker(self, stage: Stage, name: str) -> WorkerSpec:
        workers = self.fleet.config.agents if stage is Stage.AGENT else self.fleet.config.runners
        return workers[name]

    def _request_for(self, running: _Running) -> LaunchRequest:
        attempt = running.attempt
        spec = self._specs[running.node]
        worker = self._worker(attempt.stage, attempt.worker)
        cwd = self._local_workdir(worker) if attempt.host == LOCAL_HOST else worker.workdir
        number = str(attempt.number)
        templates = self._templates(worker)
        if templates is None:
            argv = worker.command
        else:
            fields = {
                "task": spec.id,
                "prompt": spec.prompt,
                "attempt": number,
                "workdir": cwd or "",
                "python": sys.executable,
            }
            argv = tuple(
                arg.format_map(fields) if templated else arg for arg, templated in templates
            )
        env = {
            **worker.env,
            "FLEETDECK_TASK": spec.id,
            "FLEETDECK_ATTEMPT": number,
            "FLEETDECK_PROMPT": spec.prompt,
            "FLEETDECK_STAGE": attempt.stage,
        }
        task = self._tasks[running.node]
        if attempt.stage is Stage.CI and task.output_path is not None:
            env["FLEETDECK_AGENT_OUTPUT"] = task.output_path
        tasks = self._tasks
        inputs = DependencyOutputs(
            {tasks[dep].id: tasks[dep].output_attempt for dep in self._dag.deps[running.node]}
        )
        stem = attempt.stem
        return LaunchRequest(
            attempt_id=attempt.attempt_id,
            task=spec.id,
            stage=attempt.stage,
            number=attempt.number,
            argv=argv,
            env=env,
            cwd=cwd,
            log_path=stem + ".log",
            output_path=stem + ".out",
            inputs_path=stem + ".inputs.json",
            inputs=inputs,
            status_path=attempt.status_path,
            redact=self._redact_names,
        )

    def _templates(self, worker: WorkerSpec) -> tuple[tuple[str, bool], ...] | None:
        """Each argv element of `worker` and whether it has placeholders to fill;
        None when none has (the command is used as it is)."""
        key = id(worker)
        if key not in self._argv_templates:
            # `}}` alone is a literal brace too: anything with a brace is formatted.
            templates = tuple((arg, "{" in arg or "}" in arg) for arg in worker.command)
            self._argv_templates[key] = (
                templates if any(templated for _, templated in templates) else None
            )
        return self._argv_templates[key]

    def _local_workdir(self, worker: WorkerSpec) -> str:
        # Path.resolve() touches the disk; the answer does not change during a run.
        cwd = self._workdirs.get(id(worker))
        if cwd is None:
            cwd = self._workdirs[id(worker)] = str(self.fleet.workdir(worker))
        return cwd

    def _read_output(self, node: int, limit: int | None = None) -> str:
        return read_output(self._tasks[node].output_path, limit)

    async def _supervise(self, running: _Running, *, reattached: bool = False) -> None:
        """One attempt from launch (or, `reattached`, from a restart) to end; never raises."""
        attempt = running.attempt
        if reattached:
            assert running.process is not None
            process = running.process
            # The attempt was started long ago: only what is left of its timeout.
            timeout = running.timeout
            if timeout is not None:
                timeout = max(0.0, timeout - (self._clock() - (attempt.started_at or 0.0)))
        else:
            executor = self._executors.get(attempt.host)
            try:
                if executor is None:
                    raise LaunchError(f"no executor for host '{attempt.host}'")
                request = self._request_for(running)
                await self._durable(running.recorded)
                if running.stop_reason is not None:
                    # Stopped while it was being journaled: it never starts.
                    self._announce_start(attempt)
                    self._attempt_ended(running, running.stop_reason, None)
                    return
                running.process = await executor.start(request)
            except Exception as exc:  # LaunchError, or an executor bug: never take the engine down
                attempt.error = self.redactor.text(
                    str(exc) if isinstance(exc, LaunchError) else f"{type(exc).__name__}: {exc}"
                )
                # Every attempt_finished has its attempt_started, even with no process.
                self._announce_start(attempt)
                self._attempt_ended(running, Outcome.FAILED, None)
                return
            process = running.process
            attempt.pid = process.pid
            attempt.pid_started = process.pid_started
            self._announce_start(attempt)
            timeout = running.timeout
        if running.stop_reason is not None:
            # Cancelled or interrupted while the process was starting.
            self._stop_attempt(running, running.stop_reason, force=True)
        elif timeout is not None:
            assert self._loop is not None
            running.timer = self._loop.call_later(
                timeout, self._stop_attempt, running, Outcome.TIMEOUT
            )
        try:
            exit_code: int | None = await process.wait()
        except HostLostError as exc:
            attempt.error = self.redactor.text(str(exc)) or "host lost"
            self._attempt_ended(running, Outcome.LOST, None)
            return
        if running.stop_reason is not None:
            # Stopped: the attempt ends when its whole tree is gone, not when the
            # main process is (children may ignore SIGTERM until the SIGKILL).
            with contextlib.suppress(Exception):
                await process.stop(self._grace_for_stop())
        outcome = running.stop_reason or (Outcome.OK if exit_code == 0 else Outcome.FAILED)
        self._attempt_ended(running, outcome, exit_code)

    def _announce_start(self, attempt: Attempt) -> None:
        if attempt.pid is not None or attempt.error is not None:
            # The row journaled at launch has the rest already.
            self._journal.record_attempt(self._run_id, attempt)
        self._emit(
            EventKind.ATTEMPT_STARTED,
            attempt.task,
            stage=attempt.stage,
            attempt=attempt.number,
            **{"agent" if attempt.stage is Stage.AGENT else "runner": attempt.worker},
            host=attempt.host,
            pid=attempt.pid,
        )

    def _stop_attempt(
        self, running: _Running, reason: Outcome, *, grace: float | None = None, force: bool = False
    ) -> None:
        """Ask a running attempt to stop; its supervisor reports how it ended."""
        if running.stop_reason is not None and not force and grace is None:
            return
        running.stop_reason = running.stop_reason or reason
        if running.timer is not None:
            running.timer.cancel()
            running.timer = None
        if running.process is None:
            return  # still starting: _supervise stops it as soon as it exists
        assert self._loop is not None
        self._loop.create_task(running.process.stop(self._grace_for_stop(grace)))

    def _grace_for_stop(self, grace: float | None = None) -> float:
        if grace is not None:
            return grace
        return 0.0 if self._hurry else self.grace

    def _attempt_ended(self, running: _Running, outcome: Outcome, exit_code: int | None) -> None:
        attempt = running.attempt
        node = running.node
        task = self._tasks[node]
        attempt.finished_at = at = self._clock()
        attempt.outcome = outcome
        attempt.exit_code = exit_code
        if running.timer is not None:
            running.timer.cancel()
        del self._running[attempt.attempt_id]
        self._capacity.release(attempt.stage, attempt.worker, attempt.host)
        self._journal.record_attempt(self._run_id, attempt)
        details: dict[str, Any] = {
            "stage": attempt.stage,
            "attempt": attempt.number,
            "outcome": outcome,
            "exit_code": exit_code,
            "duration": round(attempt.duration or 0.0, 3),
        }
        if outcome is Outcome.TIMEOUT:
            details["reason"] = f"timed out after {running.timeout:g}s"
        elif self._stopping and outcome is Outcome.CANCELLED:
            details["reason"] = "interrupted"
        if attempt.error:
            details["error"] = attempt.error
        self._emit(EventKind.ATTEMPT_FINISHED, task.id, **details)
        if self._stopping:
            return  # interrupted: the task keeps its state, to be resumed
        if outcome is Outcome.OK:
            if attempt.stage is Stage.AGENT:
                task.output_attempt = attempt
                runner = self._specs[node].ci
                if runner is not None:
                    self._queue_for_ci(node, runner)
                else:
                    self._succeed(node, at)
            else:
                self._succeed(node, at)
        elif outcome is Outcome.CANCELLED:
            self._give_up(node, TaskState.CANCELLED, reason="cancelled by the operator")
        elif outcome is Outcome.LOST and task.lost < MAX_LOST_ATTEMPTS:
            task.lost += 1
            # Not the task's fault: run it again at once, on a healthy host.
            task.state = TaskState.READY
            self._retry_lane.append(node)
            self._emit(
                EventKind.TASK_READY, task.id, wave=self._dag.levels[node], reason="attempt lost"
            )
        else:
            self._attempt_failed(node, outcome)
        self._request_schedule()

    def _queue_for_ci(self, node: int, runner: str) -> None:
        task = self._tasks[node]
        task.state = TaskState.CI_QUEUED
        queue = self._ci_queues[runner]
        queue.append(node)
        attempt = task.current_attempt
        at = self._clock()
        if attempt is not None:
            attempt.queued_at = at
        self._emit(EventKind.CI_QUEUED, task.id, runner=runner, position=len(queue))

    def _attempt_failed(self, node: int, outcome: Outcome) -> None:
        task = self._tasks[node]
        spec = self._specs[node]
        task.failures += 1
        if task.failures <= spec.retries:
            settings = self.fleet.config.fleet
            ceiling = min(
                settings.retry_backoff_max, settings.retry_backoff * 2 ** (task.failures - 1)
            )
            # "Equal jitter": half fixed, half random, so retries of tasks that
            # failed together do not all come back at the same instant.
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
            task.state = TaskState.RETRY_WAIT
            task.retry_at = self._clock() + delay
            assert self._loop is not None
            self._retry_timers[node] = self._loop.call_later(delay, self._retry_due, node)
            self._emit(
                EventKind.RETRY_SCHEDULED,
                task.id,
                delay=round(delay, 3),
                attempt=task.agent_attempts + 1,
                retries_left=spec.retries - task.failures,
            )
        else:
            reason = "timed out" if outcome is Outcome.TIMEOUT else "failed"
            if outcome is Outcome.LOST:
                reason = "host lost too often"
            attempts = plural(task.agent_attempts, "attempt")
            self._give_up(node, TaskState.FAILED, reason=f"{reason} after {attempts}")

    def _retry_due(self, node: int) -> None:
        self._retry_timers.pop(node, None)
        task = self._tasks[node]
        if task.state is not TaskState.RETRY_WAIT:
            return
        task.retry_at = None
        task.state = TaskState.READY
        self._retry_lane.append(node)
        self._emit(EventKind.TASK_READY, task.id, wave=self._dag.levels[node], reason="retry")
        self._request_schedule()

    def _succeed(self, node: int, at: float) -> None:
        """The task is done (at `at`, the end of its last attempt): its dependents
        may be launched at once. Their processes start only once the journal holds
        this success (see `_durable`)."""
        task = self._tasks[node]
        if task.state is TaskState.SUCCEEDED:
            # Counted once only, whatever happens: a second count would leave the
            # run waiting forever for a task that does not exist.
            return
        duration = at - (task.first_started_at or at)
        task.state = TaskState.SUCCEEDED
        task.finished_at = at
        self._leave_flight(task)
        self._emit(
            EventKind.TASK_SUCCEEDED,
            task.id,
            attempts=task.agent_attempts,
            duration=round(duration, 3),
        )
        # What the dependents wait for changed too.
        self._view_changed(node, dependents=True)
        self._unfinished -= 1
        for child in self._dag.dependents[node]:
            self._waiting_on[child] -= 1
            if self._waiting_on[child] == 0 and self._tasks[child].state is TaskState.PENDING:
                self._make_ready(child)
        self._request_schedule()
        self._check_settled()

    def _leave_flight(self, task: TaskRun) -> None:
        if task.in_flight:
            task.in_flight = False
            self._in_flight -= 1

    def _give_up(self, node: int, state: TaskState, *, reason: str) -> None:
        """End a task as failed or cancelled, and block everything downstream."""
        task = self._tasks[node]
        at = self._clock()
        task.state = state
        task.finished_at = at
        task.attention_since = at
        task.retry_at = None
        self._leave_flight(task)
        self._unfinished -= 1
        kind = EventKind.TASK_FAILED if state is TaskState.FAILED else EventKind.TASK_CANCELLED
        self._emit(kind, task.id, attempts=task.agent_attempts, reason=reason)
        for child in self._dag.descendants(node):
            blocked = self._tasks[child]
            if blocked.state in (TaskState.PENDING, TaskState.READY):
                self._ready.remove(blocked.id)
                blocked.state = TaskState.BLOCKED
                blocked.blocked_by = task.id
                blocked.attention_since = at
                self._unfinished -= 1
                self._emit(EventKind.TASK_BLOCKED, blocked.id, blocked_by=task.id)
        self._check_settled()

    def _requeue(self, node: int) -> None:
        """Operator retry: the task runs again with a fresh retry budget."""
        task = self._tasks[node]
        task.failures = 0
        task.lost = 0
        task.finished_at = None
        task.attention_since = None
        self._unfinished += 1
        ready = self._waiting_on[node] == 0
        task.state = TaskState.READY if ready else TaskState.PENDING
        self._emit(EventKind.TASK_REQUEUED, task.id, state=task.state, reason="operator retry")
        if ready:
            self._make_ready(node)
        # Dependents return to pending unless another failure still blocks them.
        for child in self._dag.descendants(node):
            blocked = self._tasks[child]
            if blocked.state is not TaskState.BLOCKED:
                continue
            blocker = self._blocker_of(child)
            if blocker is None:
                blocked.state = TaskState.PENDING
                blocked.blocked_by = None
                blocked.attention_since = None
                self._unfinished += 1
                self._emit(
                    EventKind.TASK_REQUEUED,
                    blocked.id,
                    state=TaskState.PENDING,
                    reason=f"'{task.id}' retried",
                )
            elif blocker != blocked.blocked_by:
                blocked.blocked_by = blocker
                self._emit(EventKind.TASK_BLOCKED, blocked.id, blocked_by=blocker)
        self._settled_clear()

    def _blocker_of(self, node: int) -> str | None:
        """The failed or cancelled task that keeps `node` from running, if any."""
        for dep in self._dag.deps[node]:
            upstream = self._tasks[dep]
            if upstream.state is TaskState.BLOCKED:
                return upstream.blocked_by
            if upstream.state in BLOCKING_STATES:
                return upstream.id
        return None

    def _check_settled(self) -> None:
        if self._unfinished == 0 and not self._running and self._settled is not None:
            self._settled.set()

    def _settled_clear(self) -> None:
        if self._settled is not None:
            self._settled.clear()

    # --- hosts and contention -------------------------------------------------------

    def _on_host_health(self, health: HostHealth) -> None:
        """An executor's report on its host: update slots, tell on every change."""
        previous = self._hosts.get(health.host)
        self._hosts[health.host] = health
        self._capacity.set_host_up(health.host, health.state is HostState.UP)
        if previous is None or previous.state is not health.state:
            details: dict[str, Any] = {"state": health.state}
            if health.latency is not None:
                details["latency"] = round(health.latency, 4)
            if health.load is not None:
                details["load"] = list(health.load)
            if health.reason:
                details["reason"] = health.reason
            kind = EventKind.HOST_UP if health.state is HostState.UP else EventKind.HOST_DOWN
            self._emit(kind, None, host=health.host, **details)
        if health.state is HostState.FAILED and not self._stopping:
            self._fail_stranded()
        self._request_schedule()

    def _usable(self, stage: Stage, worker: str) -> bool:
        """False when every host of `worker` has failed for good."""
        spec = self._worker(stage, worker)
        return any(
            (health := self._hosts.get(host)) is None or health.state is not HostState.FAILED
            for host in spec.host_names
        )

    def _fail_stranded(self) -> None:
        """Fail waiting tasks whose agent or runner has no host left to run on."""
        for node, task in enumerate(self._tasks):
            if task.state.is_terminal or self._running_for(node) is not None:
                continue
            spec = self._specs[node]
            stranded = [
                (stage, name)
                for stage, name in ((Stage.AGENT, spec.agent), (Stage.CI, spec.ci))
                if name is not None and not self._usable(stage, name)
            ]
            if not stranded:
                continue
            stage, name = stranded[0]
            hosts = self._worker(stage, name).host_names
            reasons = "; ".join(
                f"{host}: {health.reason or health.state}"
                for host in hosts
                if (health := self._hosts.get(host)) is not None
            )
            kind = "agent" if stage is Stage.AGENT else "runner"
            self._ready.remove(task.id)
            with contextlib.suppress(ValueError):
                self._retry_lane.remove(node)
            if spec.ci is not None:
                with contextlib.suppress(ValueError):
                    self._ci_queues[spec.ci].remove(node)
            timer = self._retry_timers.pop(node, None)
            if timer is not None:
                timer.cancel()
            self._give_up(
                node, TaskState.FAILED, reason=f"no usable host for {kind} '{name}' ({reasons})"
            )

    def _sample_tick(self) -> None:
        self.sample()
        assert self._loop is not None and self._sample_interval is not None
        self._sample_timer = self._loop.call_later(self._sample_interval, self._sample_tick)

    def sample(self) -> None:
        """Measure resource use of attempts and contention (for sparklines); the
        engine does it every `sample_interval` seconds on its own."""
        for executor in self._executors.values():
            executor.sample()
        at = self._clock()
        for stage, names in ((Stage.AGENT, self.fleet.config.agents), (Stage.CI, self._ci_queues)):
            for name in names:
                usage = self._capacity.usage(stage, name)
                waiting = (
                    self._ready.waiting(name)
                    if stage is Stage.AGENT
                    else len(self._ci_queues[name])
                )
                self._history.record((stage, name), at, usage.busy, usage.total, waiting)

    # --- events and the journal -----------------------------------------------------

    @property
    def _run_id(self) -> int:
        assert self.run_id is not None
        return self.run_id

    def _emit(self, kind: EventKind, task: str | None, **data: Any) -> None:
        # Four of these per task: positional arguments and no helper calls here
        # are measurably cheaper at 100,000 tasks.
        if self._masking:
            data = self.redactor.details(data)
        event = Event(self._clock(), kind, task, data)
        # None for the run's own events, and for an attempt of a task the config
        # no longer has (closed on resume).
        node = None if task is None else self._dag.index.get(task)
        if node is not None and self._views is not None:
            # A task put back changes what its dependents wait for.
            self._view_changed(node, dependents=kind is EventKind.TASK_REQUEUED)
        self._journal.append(self._run_id, event)
        self._report.feed(event, node)
        self._unpublished.append(event)
        if self._flush_handle is None:
            self._request_flush(urgent=False)

    def _flush(self) -> None:
        """Commit what this turn of the loop recorded, then tell the listeners and
        let the launches waiting for it start (group commit: one per turn)."""
        self._flush_handle = None
        if self._loop is None:
            return
        if self._pending_schedule is not None:
            # The launches this turn decides join its commit: their processes can
            # start as soon as it is done.
            self._schedule()
            if self._flush_handle is not None:
                # Asked for by those launches and their events: this commit is it.
                self._flush_handle.cancel()
                self._flush_handle = None
        if not self._recorded():
            return
        try:
            self._commit()
        except JournalError as error:
            # Stop cleanly; what was not committed is kept, and told if a later
            # commit succeeds.
            self.journal_error = self.journal_error or error
            self.request_stop()

    def _recorded(self) -> bool:
        """True when something is waiting for a commit."""
        return bool(self._unpublished or self._journal.pending or self._next_commit is not None)

    def _commit(self) -> None:
        """Commit what was recorded; then tell the listeners and release the launches
        waiting for it. Raises JournalError (the launches get it too)."""
        events, self._unpublished = self._unpublished, []
        waiters, self._next_commit = self._next_commit, None
        try:
            self._journal.commit()
        except JournalError as error:
            _release(waiters, error)
            self._unpublished = events + self._unpublished
            raise
        _release(waiters, None)
        self._publish(events)

    async def _durable(self, recorded: int) -> None:
        """Return once the first `recorded` rows are committed (raises JournalError)."""
        if self._journal.committed >= recorded:
            return
        assert self._loop is not None
        if self._next_commit is None:
            self._next_commit = self._loop.create_future()
        waiters = self._next_commit
        self._request_flush()
        await waiters

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            for listener in list(self._listeners):
                listener(event)

    def _request_flush(self, *, urgent: bool = True) -> None:
        """Commit soon: in this turn of the loop when something waits for it (a
        launch), else within EVENT_COMMIT_DELAY, with whatever comes meanwhile."""
        if self._loop is None:
            return
        handle = self._flush_handle
        if handle is not None:
            if self._flush_urgent or not urgent:
                return
            handle.cancel()
        self._flush_urgent = urgent
        if urgent:
            self._flush_handle = self._loop.call_soon(self._flush)
        else:
            self._flush_handle = self._loop.call_later(EVENT_COMMIT_DELAY, self._flush)

    def _drain(self) -> None:
        """Commit and publish what is left (raises JournalError)."""
        while self._recorded():
            self._commit()

    # --- the end ----------------------------------------------------------------------

    async def _shut_down(self) -> None:
        """Stop whatever still runs, flush the journal, close the executors."""
        self._stopping = True
        if self._sample_timer is not None:
            self._sample_timer.cancel()
        for timer in self._retry_timers.values():
            timer.cancel()
        self._retry_timers.clear()
        for running in list(self._running.values()):
            self._stop_attempt(running, Outcome.CANCELLED, grace=0.0 if self._hurry else None)
        supervisors = [r.supervisor for r in self._running.values() if r.supervisor is not None]
        if supervisors:
            await asyncio.gather(*supervisors, return_exceptions=True)
        for executor in self._executors.values():
            with contextlib.suppress(Exception):
                await executor.aclose()
        # Run anything that was waiting on a commit (a success just before the stop).
        self._drain()

    def _finish(self, interrupted: bool) -> RunResult:
        self._report.finished_at = self._clock()
        report = self._report.report()
        if interrupted:
            exit_code = EXIT_INTERRUPTED
        elif all(task.state is TaskState.SUCCEEDED for task in self._tasks):
            exit_code = EXIT_OK
        else:
            exit_code = EXIT_FAILED
        self._emit(
            EventKind.RUN_FINISHED,
            None,
            status="interrupted" if interrupted else "finished",
            exit_code=exit_code,
            report=report.to_json_dict(),
        )
        self._drain()
        self.finished_at, self.exit_code = self._clock(), exit_code
        self._journal.finish_run(
            self._run_id,
            status="interrupted" if interrupted else "finished",
            exit_code=exit_code,
            finished_at=self.finished_at,
        )
        return RunResult(
            run_id=self._run_id,
            interrupted=interrupted,
            exit_code=exit_code,
            # Again, now that run_finished is in: as `fleetdeck report` rebuilds it.
            report=self._report.report(),
            _summaries=self.summaries,
        )


def _release(waiters: asyncio.Future[None] | None, error: JournalError | None) -> None:
    """Wake whoever waits for a commit: done, or failed with `error`."""
    if waiters is None or waiters.done():
        return
    if error is None:
        waiters.set_result(None)
    else:
        waiters.set_exception(error)


def estimated_durations(fleet: Fleet, learned: Mapping[str, float]) -> list[float]:
    """The expected duration of each task, for critical-path priority.

    A task that ran before weighs the seconds it took; one that never ran weighs
    the mean of those that did. With no history at all, every task weighs 1 and
    the critical path counts hops: the longest chain still goes first.
    """
    known = [learned[task.id] for task in fleet.tasks if task.id in learned]
    default = sum(known) / len(known) if known else 1.0
    return [learned.get(task.id, default) for task in fleet.tasks]


def read_output(path: str | None, limit: int | None = None) -> str:
    """An output file as text ("" when there is none), cut to `limit` bytes."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            data = handle.read() if limit is None else handle.read(limit + 1)
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if limit is not None and len(data) > limit:
        text = text[:limit] + "\n[...]"
    return text


class DependencyOutputs(Mapping[str, str]):
    """Each dependency's output, read from its file only when an executor asks.

    An executor that hands inputs to its attempts reads them all; one that does
    not (an in-process executor) costs no file access at all.
    """

    __slots__ = ("_attempts",)

    def __init__(self, attempts: dict[str, Attempt | None]) -> None:
        # The successful attempt of each dependency (its output file's name is
        # built only if someone reads it).
        self._attempts = attempts

    def __getitem__(self, task: str) -> str:
        attempt = self._attempts[task]
        return "" if attempt is None else read_output(attempt.output_path)

    def __iter__(self) -> Iterator[str]:
        return iter(self._attempts)

    def __len__(self) -> int:
        return len(self._attempts)
