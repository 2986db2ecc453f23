"""The engine: the asyncio shell that carries out what the core decides.

The core (fleetdeck.engine.core) holds every task's state and decides every
transition; this shell feeds it what happens (attempts starting and ending,
timers, host health, operator commands) and carries out its effects for real:
events into the journal and then to views, attempts started and stopped
through executors.

One event loop, no locks: every state change happens on the loop and is
recorded as an event. Events are journaled first and only published to views
after the journal commit (group commit, once per loop turn), so no event is
ever told that the journal does not hold. No process starts before everything
recorded until its launch is committed: its own attempt row, and the success
of each dependency (or of the sequential policy's previous task). So a success
is durable before any dependent starts, and the decision to launch a dependent
can be taken at once, in the same commit as the success.

Views use only the public interface, through a client (fleetdeck.client):
`snapshot()`, `task_detail()`, `timeline()`, `subscribe()`, and the commands
`retry`, `cancel`, `acknowledge`, `set_policy`, `pause`, `resume`,
`request_stop`; `run()` is started for them by fleetdeck.lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetdeck.config import Fleet, TaskSpec, config_json
from fleetdeck.engine import commands, speculation
from fleetdeck.engine.commit import GroupCommit
from fleetdeck.engine.core import CommandError, Core, Running
from fleetdeck.engine.hosts import HostWatch
from fleetdeck.engine.launch import RequestBuilder
from fleetdeck.engine.opening import find_attempts, fleet_with_added, open_run
from fleetdeck.engine.takeup import carry_over, take_up
from fleetdeck.engine.usagewatch import (
    follow_usage,
    usage_limit_hit,
    usage_limit_of,
    watches_usage,
)
from fleetdeck.engine.views import ViewBuilder
from fleetdeck.engine.workspace import ReviewsAttempts, ShowsDiffs, StacksWorkspaces, Workspace
from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HostHealth,
    HostLostError,
    LaunchError,
    Usage,
)
from fleetdeck.journal import Journal, JournalError, RunRecord
from fleetdeck.metrics import ContentionHistory, Report, ReportBuilder, TaskSummary
from fleetdeck.model import Event, EventKind, Outcome, Stage, TaskRun, TaskState, now
from fleetdeck.policy import Policy, make_policy
from fleetdeck.redact import Redactor
from fleetdeck.resume import (
    ResumePlan,
)
from fleetdeck.stages import STAGES

if TYPE_CHECKING:
    from fleetdeck.engine.clock import Timer
    from fleetdeck.snapshot import FleetSnapshot, TaskDetail, Timeline

__all__ = ["CommandError", "Engine", "RunResult", "estimated_durations"]

# How often contention and resource use are sampled (sparklines, CPU, memory).
SAMPLE_INTERVAL = 1.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

Listener = Callable[[Event], None]

# The events after which a task's workspace is released.
_TASK_ENDS = frozenset({EventKind.TASK_SUCCEEDED, EventKind.TASK_FAILED, EventKind.TASK_CANCELLED})


class LoopClock:
    """Wall time (or a test's clock) and the running asyncio loop's timers.

    `now` is a plain attribute holding the function: it is called for every
    event, and a method around it would cost a call each time."""

    __slots__ = ("_loop", "now")

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self._loop: asyncio.AbstractEventLoop | None = None

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        """Set an asyncio timer on the running loop."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop.call_later(delay, callback, *args)


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
class _Process:
    """The shell's side of a running attempt: its process and supervisor."""

    process: AttemptProcess | None = None
    supervisor: asyncio.Task[None] | None = None
    # The journal's count of rows recorded when this attempt was launched: its
    # process starts once those are committed.
    recorded: int = 0


class Engine:
    """Runs one fleet: feeds the core, carries out its effects, records everything."""

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
        workspace: Workspace | None = None,
    ) -> None:
        """`sample_interval` is how often contention and resources are sampled
        (None: only when `sample()` is called, for tests that want a still picture).

        With `resume` (the latest run of the same journal, see
        `fleetdeck.resume.choose_run`), the run takes up where that one left off
        if it did not finish; if it finished, a new run starts that carries over
        its successes that still hold (`fleetdeck.resume.carries_over`).

        Ready tasks are ranked by critical path, weighted by how long each task
        took in earlier runs in the same journal (see `estimated_durations`).

        `workspace` gives each task a place of its own (see engine/workspace.py);
        without it, attempts run in their worker's workdir."""
        # A run taken up goes on with the tasks added to it (engine/adding.py).
        configured = len(fleet.tasks)
        fleet, self.added_skipped = fleet_with_added(fleet, journal, resume)
        self.fleet = fleet
        self._workspace = workspace
        self._reviews = workspace if isinstance(workspace, ReviewsAttempts) else None
        # Workspace releases under way (awaited before the run ends).
        self._releases: set[asyncio.Task[None]] = set()
        self._journal = journal
        self._executors = dict(executors)
        self._tell_added(fleet.tasks[configured:])
        self._clock = clock
        self._loop_clock = LoopClock(clock)
        self.estimates = estimated_durations(fleet, journal.learned_durations())
        self.core = Core(
            fleet,
            clock=self._loop_clock,
            effects=self,
            policy=make_policy(
                name := policy or fleet.config.fleet.policy, fleet.config.policy_params(name)
            ),
            estimates=self.estimates,
            rng=rng,
            next_attempt_id=journal.next_attempt_id(),
        )
        self._processes: dict[int, _Process] = {}
        self._host_watch = HostWatch(self.core)
        self._history = ContentionHistory()
        self._sample_timer: asyncio.TimerHandle | None = None
        self._listeners: list[Listener] = []
        self._report = ReportBuilder(fleet, grown=lambda: self.core.fleet)
        # Group commit: events are told once the journal holds them.
        self._commits = GroupCommit(
            journal,
            publish=self._publish,
            before_commit=self._schedule_now,
            on_error=self._journal_failed,
        )
        self.journal_error: JournalError | None = None
        # The launch decision waiting for its turn of the loop, if one is.
        self._pending_schedule: asyncio.Handle | None = None
        self._hurry = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._settled: asyncio.Event | None = None
        # False when run() goes on after every task ended (until asked to stop).
        self._ends_when_settled = True
        self._stop_requested: asyncio.Event | None = None
        self.run_id: int | None = None
        self.started_at: float | None = None
        # Once run() has ended: when (its clocks stop there), and the exit code
        # the process will have.
        self.finished_at: float | None = None
        self.exit_code: int | None = None
        self.grace = fleet.config.fleet.grace_period
        self._sample_interval = sample_interval
        # Masks the values of the fleet's secrets in events, errors and what views read.
        self.redactor = Redactor.for_fleet(fleet)
        self._masking = bool(self.redactor)  # checked for every event: a plain bool
        self._requests = RequestBuilder(fleet, self.core, self.redactor)
        self._views = ViewBuilder(
            self.core,
            redactor=self.redactor,
            hosts=self._host_watch.health,
            history=self._history,
            usage=self._usage,
        )
        self._resume_from = resume
        # Agents with a `usage_limit`: their attempts' logs are read as they run, and at the end.
        self._watch_usage = watches_usage(fleet)
        # What a resume did with the attempts it found unfinished.
        self.reattached = 0
        self.recovered = 0
        self.lost_on_resume = 0

    # --- public interface -------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The policy the next launch decision uses."""
        return self.core.policy.name

    @property
    def paused(self) -> bool:
        """True while new launches are held back."""
        return self.core.paused

    @property
    def state_dir(self) -> Path:
        """The state directory of the run's journal (its history, for the what-if)."""
        return self._journal.state_dir

    @property
    def in_flight(self) -> int:
        """Tasks between their first launch and their end."""
        return self.core.in_flight

    def task(self, task_id: str) -> TaskRun:
        """The live state of one task (read it, do not change it)."""
        return self.core.tasks[self.core.node(task_id)]

    def tasks(self) -> Sequence[TaskRun]:
        """Every task's live state, in config order (read only)."""
        return self.core.tasks

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with each event once it is journaled; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def snapshot(self) -> FleetSnapshot:
        """A consistent, immutable picture of the run for views."""
        return self._views.snapshot(
            now=self._clock(),
            started_at=self.started_at,
            finished_at=self.finished_at,
            exit_code=self.exit_code,
            stopping=self.core.stopping,
        )

    def task_detail(self, task_id: str) -> TaskDetail:
        """One task's attempts, inputs and output, for the detail screen."""
        return self._views.task_detail(task_id)

    async def task_diff(self, task_id: str) -> str:
        """The patch of the change `task_id`'s agent committed last (CommandError
        for an unknown task, or one with no change to show)."""
        change = self._views.changes.by_node.get(self.core.node(task_id))
        if change is None:
            raise CommandError(f"{task_id} has no committed change to show")
        if not isinstance(self._workspace, ShowsDiffs):
            raise CommandError("this run's workspace cannot show changes")
        try:
            return await self._workspace.diff(change.base, change.commit)
        except Exception as exc:  # git's own one-line error: the view says it
            raise CommandError(str(exc) or type(exc).__name__) from None

    def _note_change(self, task_id: str | None, details: Mapping[str, Any]) -> None:
        """What a journaled agent attempt committed, for the views (a run taken up)."""
        node = self.core.dag.index.get(task_id) if task_id is not None else None
        if node is not None:
            self._views.changes.record(node, details)

    def timeline(self) -> Timeline:
        """Every attempt so far and the slots they ran in, for the timeline screen."""
        at = self._clock() if self.finished_at is None else self.finished_at
        return self._views.timeline(now=at, started_at=self.started_at)

    def summaries(self) -> list[TaskSummary]:
        """The per-task table so far."""
        return self._report.summaries()

    def report(self) -> Report:
        """The report of the run so far."""
        return self._report.report()

    def set_policy(self, name: str) -> None:
        """Switch policy for the next launch decision; never touches work in flight."""
        commands.set_policy(self.core, name)

    def pause(self) -> None:
        """Hold back new agent attempts (work in flight, CI included, goes on)."""
        commands.pause(self.core)

    def resume(self) -> None:
        """Let launches start again."""
        commands.resume(self.core)

    def cancel(self, task_id: str) -> None:
        """Cancel a task: stop its attempt (the whole process tree) and block its dependents."""
        commands.cancel(self.core, task_id)
        self._check_settled()

    def retry(self, task_id: str, stage: str | None = None) -> None:
        """Run a failed or cancelled task again (a blocked root: the tasks blocking
        it); `stage` "ci": CI alone, for a task whose CI failed."""
        commands.retry(self.core, task_id, stage)
        if self._settled is not None and not self.core.settled:
            self._settled.clear()

    async def add(self, tables: object, *, source: str = "add") -> list[str]:
        """Add tasks (`[[tasks]]` tables) to the running fleet; returns their ids
        once their `task_added` events are durable (CommandError with the
        config's message for a bad one: then nothing changed)."""
        settled = self._settled
        if settled is None or self.finished_at is not None:
            raise CommandError("cannot add tasks: the run is not going (start it again)")
        if settled.is_set() and self._ends_when_settled:
            raise CommandError("cannot add tasks: the run has ended (start it again)")
        first = len(self.core.tasks)
        ids = commands.add(self.core, tables, estimate=self._estimate, source=source)
        self.fleet = self.core.fleet
        self._tell_added(self.fleet.tasks[first:])
        if not self.core.settled:
            settled.clear()  # a run kept going once everything had ended: not any more
        self._requests.fleet = self.fleet
        # Acknowledged only once the journal holds them: a supervisor killed
        # after this reply resumes with them.
        await self._commits.durable(self._journal.recorded)
        return ids

    def _tell_added(self, specs: Sequence[TaskSpec]) -> None:
        """What keeps something per task beside the core (the workspace's
        worktrees, the merge train) learns of the tasks added."""
        if not specs:
            return
        for part in (self._workspace, *self._executors.values()):
            tasks_added = getattr(part, "tasks_added", None)
            if tasks_added is not None:
                tasks_added(specs)

    def _estimate(self, task_id: str) -> float:
        known = self.estimates
        return sum(known) / len(known) if known else 1.0

    def retry_stages(self, task_id: str) -> tuple[Stage, ...]:
        """The stages a retry of `task_id` may start from (see commands.retry_stages)."""
        return commands.retry_stages(self.core, self.core.node(task_id))

    def acknowledge(self, task_id: str) -> None:
        """The operator has seen a task that needs attention: it leaves the queue."""
        commands.acknowledge(self.core, task_id)

    def request_stop(self, *, hurry: bool = False) -> None:
        """Stop the run: no new launches, in-flight attempts stopped cleanly.

        With `hurry` (a second Ctrl-C), attempts get no grace period: SIGKILL at once,
        still to every process of their trees.
        """
        self._hurry = self._hurry or hurry
        if self._stop_requested is not None:
            self._stop_requested.set()
        if self.core.stopping and hurry:
            for running in list(self.core.running.values()):
                self.core.stop_attempt(running, Outcome.CANCELLED, grace=0.0)
            for executor in self._executors.values():
                executor.hurry()

    async def run(self, *, until_settled: bool = True) -> RunResult:
        """Run the fleet.

        With `until_settled`, return once every task has ended; otherwise keep
        going, so the operator can still retry, until `request_stop()`.
        """
        self._loop = asyncio.get_running_loop()
        self._commits.open(self._loop)
        self._settled = asyncio.Event()
        self._ends_when_settled = until_settled
        self._stop_requested = asyncio.Event()
        self.started_at = self._clock()
        plan = self._open_run()
        # A string: paths are built per attempt, and pathlib costs more than it helps.
        self.core.run_dir = str(self._journal.run_dir(self._run_id))
        self.core.run_id = self._run_id
        interrupted = True
        try:
            # Hosts other than this machine take work once their executor says
            # they are up; opening never waits for a slow host.
            for host in self.fleet.config.hosts:
                self.core.capacity.set_host_up(host, False)
            if plan is None:
                self.core.start()
            elif plan.carried_over:
                carry_over(self.core, plan)
            for executor in self._executors.values():
                await executor.open(self._on_host_health)
            if plan is not None and not plan.carried_over:
                await self._take_up(plan)
            if self._sample_interval is not None:
                self._sample_timer = self._loop.call_later(self._sample_interval, self._sample_tick)
            self.schedule_soon()
            self._check_settled()
            waiters = [asyncio.ensure_future(self._stop_requested.wait())]
            if until_settled:
                waiters.append(asyncio.ensure_future(self._settled.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            # A stop after everything ended interrupts nothing.
            interrupted = self._stop_requested.is_set() and not self.core.settled
        finally:
            await self._shut_down()
        return self._finish(interrupted)

    def _open_run(self) -> ResumePlan | None:
        """Journal the start of the run, or take over the unfinished one; then the
        plan to resume it, or for a new run after a finished one, what it carries
        over (None for a new run from scratch).

        A method of its own so that the config's JSON (100 bytes a task) is not
        kept alive for the whole run by run()'s frame.
        """
        opening = open_run(
            self.fleet,
            self._journal,
            settings=self.redactor.config_json(config_json(self.fleet.config)),
            previous=self._resume_from,
            policy=self.policy,
            started_at=self.started_at or self._clock(),
        )
        self.run_id, self.started_at = opening.run_id, opening.started_at
        return opening.plan

    async def _take_up(self, plan: ResumePlan) -> None:
        """Find the attempts the last supervisor left, then rebuild the core from
        the journal (fleetdeck.engine.takeup) and supervise those still running."""
        for event in plan.events:
            # The report covers the whole run, from its first start.
            if event.kind is not EventKind.RUN_FINISHED:
                self._report.feed(event)
            if event.kind is EventKind.ATTEMPT_FINISHED and event.data.get("stage") == Stage.AGENT:
                self._note_change(event.task, event.data)
        recovery = await find_attempts(self.fleet, plan, self._executors, self._grace_for_stop)
        self.reattached = recovery.reattached
        self.recovered = recovery.recovered
        self.lost_on_resume = recovery.lost
        counts = {
            "reattached": recovery.reattached,
            "recovered": recovery.recovered,
            "lost": recovery.lost,
        }
        for running in take_up(self.core, plan, recovery.found, counts):
            shell = _Process(process=recovery.processes[running.attempt.attempt_id])
            self._processes[running.attempt.attempt_id] = shell
            assert self._loop is not None
            shell.supervisor = self._loop.create_task(self._supervise(running, reattached=True))

    # --- effects of the core ----------------------------------------------------------

    def emit(self, event: Event, node: int | None = None) -> None:
        """Journal an event; it is told once committed (Effects.emit)."""
        # Four of these per task: no helper calls here, measurably cheaper at scale.
        if self._masking:
            event.data = self.redactor.details(event.data)
        task = event.task
        if node is None and task is not None:
            # Not passed by the core: None for the run's own events, and for an
            # attempt of a task the config no longer has (closed on resume).
            node = self.fleet.dag.index.get(task)
        if node is not None:
            if self.core.dirty is not None:  # None until a view looks: no call then
                # A task put back changes what its dependents wait for.
                self.core.touch(node, dependents=event.kind is EventKind.TASK_REQUEUED)
            if self._workspace is not None and event.kind in _TASK_ENDS:
                self._release_workspace(node)
        run_id = self.run_id  # the attribute, not the `_run_id` property: one call less
        assert run_id is not None
        self._journal.append(run_id, event)
        self._report.feed(event, node)
        self._commits.add(event)

    def _release_workspace(self, node: int) -> None:
        assert self._workspace is not None and self._loop is not None
        task = self.core.tasks[node]
        release = self._loop.create_task(self._workspace.release(task.id, task.state))
        self._releases.add(release)
        release.add_done_callback(self._releases.discard)

    def record(self, attempt: Any) -> None:
        """Journal an attempt's row (Effects.record)."""
        self._journal.record_attempt(self._run_id, attempt)

    def start(self, running: Running) -> None:
        """Start an attempt's process once its launch is durable (Effects.start)."""
        shell = _Process(recorded=self._journal.recorded)
        self._processes[running.attempt.attempt_id] = shell
        # The commit is asked for before the supervisor is created, so it comes
        # first in the loop's next turn: the supervisor then finds its row
        # committed and starts the process in that same turn.
        self._commits.request()
        assert self._loop is not None
        shell.supervisor = self._loop.create_task(self._supervise(running))

    def stop(self, running: Running, grace: float | None) -> None:
        """Stop an attempt's process tree (Effects.stop)."""
        shell = self._processes.get(running.attempt.attempt_id)
        if shell is None or shell.process is None:
            return  # still starting: _supervise stops it as soon as it exists
        assert self._loop is not None
        self._loop.create_task(shell.process.stop(self._grace_for_stop(grace)))

    def schedule_soon(self) -> None:
        """Run the launch decision in the loop's next turn (Effects.schedule_soon)."""
        if self._pending_schedule is None and self._loop is not None:
            self._pending_schedule = self._loop.call_soon(self._schedule)

    def _schedule(self) -> None:
        if self._pending_schedule is not None:
            self._pending_schedule.cancel()  # when a flush takes it early
            self._pending_schedule = None
        self.core.schedule()
        self._check_settled()

    def _schedule_now(self) -> None:
        """Before a commit: the launch decision pending, if any, so that its
        launches join the commit and their processes start right after it."""
        if self._pending_schedule is not None:
            self._schedule()

    def _publish(self, events: list[Event]) -> None:
        for event in events:
            for listener in list(self._listeners):
                listener(event)

    def _journal_failed(self, error: JournalError) -> None:
        # The disk filled up or went read-only: stop cleanly; what was not
        # committed is kept, and told if a later commit succeeds.
        self.journal_error = self.journal_error or error
        self.request_stop()

    # --- attempts ---------------------------------------------------------------------

    async def _supervise(self, running: Running, *, reattached: bool = False) -> None:
        """One attempt from launch (or, `reattached`, from a restart) to end; never raises."""
        attempt = running.attempt
        shell = self._processes[attempt.attempt_id]
        core = self.core
        watch: asyncio.Task[None] | None = None
        try:
            if reattached:
                assert shell.process is not None
                core.arm_timeout(running)
            else:
                executor = self._executors.get(attempt.host)
                try:
                    if executor is None:
                        raise LaunchError(f"no executor for host '{attempt.host}'")
                    place = None
                    if self._workspace is not None and STAGES[attempt.stage].needs_workspace:
                        if attempt.stage is Stage.AGENT and isinstance(
                            self._workspace, StacksWorkspaces
                        ):
                            stack = speculation.stacked_on(core, running.node)
                            self._workspace.stack_on(attempt.task, stack)
                        place = await self._workspace.prepare(attempt.task, attempt)
                    request = self._requests.request_for(running, place)
                    if self._journal.committed < shell.recorded:
                        # Usually committed already (start() asked for the commit
                        # before creating this supervisor): no coroutine to make then.
                        await self._commits.durable(shell.recorded)
                    if running.stop_reason is not None:
                        # Stopped while it was being journaled: it never starts.
                        core.attempt_started(running)
                        core.attempt_ended(running, running.stop_reason, None)
                        return
                    shell.process = await executor.start(request)
                except HostLostError as exc:  # its host went while its place was made there
                    attempt.error = self.redactor.text(str(exc)) or "host lost"
                    core.attempt_started(running)
                    core.attempt_ended(running, Outcome.LOST, None)
                    return
                except Exception as exc:  # LaunchError, or an executor bug: never fatal
                    attempt.error = self.redactor.text(
                        str(exc) if isinstance(exc, LaunchError) else f"{type(exc).__name__}: {exc}"
                    )
                    # Every attempt_finished has its attempt_started, even with no process.
                    core.attempt_started(running)
                    core.attempt_ended(running, Outcome.FAILED, None)
                    return
                core.attempt_started(
                    running, pid=shell.process.pid, pid_started=shell.process.pid_started
                )
            process = shell.process
            watch = self._follow_usage(running)
            if running.stop_reason is not None:
                # Cancelled or interrupted while the process was starting.
                core.stop_attempt(running, running.stop_reason, force=True)
            try:
                exit_code: int | None = await process.wait()
            except HostLostError as exc:
                attempt.error = self.redactor.text(str(exc)) or "host lost"
                core.attempt_ended(running, Outcome.LOST, None)
                return
            if self._watch_usage and running.stop_reason in (None, Outcome.TIMEOUT):
                limited = await usage_limit_hit(self.fleet, attempt)
                if limited is not None:  # the CLI agent hit its usage limit
                    with contextlib.suppress(Exception):
                        await process.stop(self._grace_for_stop())
                    running.details = {**(running.details or {}), **limited}
                    core.attempt_ended(running, Outcome.THROTTLED, exit_code)
                    return
            if running.stop_reason is not None:
                # Stopped: the attempt ends when its whole tree is gone, not when the
                # main process is (children may ignore SIGTERM until the SIGKILL).
                with contextlib.suppress(Exception):
                    await process.stop(self._grace_for_stop())
            elif (
                (exit_code == 0 or attempt.stage is Stage.MERGE)  # a merge says why it waits
                and self._reviews is not None
                and not await self._review(running)
            ):
                return
            outcome = None
            if process.outcome is not None or process.details or process.error:
                # An executor that knows more than an exit status (an API request).
                outcome = running.stop_reason or process.outcome
                if process.error and not attempt.error:
                    attempt.error = self.redactor.text(process.error)
                if process.details:
                    running.details = {**(running.details or {}), **process.details}
            core.attempt_ended(running, outcome, exit_code)
        finally:
            if watch is not None:
                watch.cancel()
            self._processes.pop(attempt.attempt_id, None)
            self._check_settled()

    def _follow_usage(self, running: Running) -> asyncio.Task[None] | None:
        """A CLI agent with a `usage_limit`: its log is read as it is written, and
        the limit's message stops the attempt as throttled (engine/usagewatch.py)."""
        limit = usage_limit_of(self.fleet, running.attempt) if self._watch_usage else None
        if limit is None:
            return None

        def hit(details: dict[str, Any]) -> None:
            if running.stop_reason is None:  # not already cancelled, timed out, interrupted
                running.details = {**(running.details or {}), **details}
                self.core.stop_attempt(running, Outcome.THROTTLED)

        return asyncio.ensure_future(follow_usage(limit, running.attempt, hit))

    async def _review(self, running: Running) -> bool:
        """Hand a successful attempt to the workspace (it commits an agent's work,
        and says what a merge landed); False when that failed the attempt."""
        assert self._reviews is not None
        attempt = running.attempt
        try:
            running.details = dict(await self._reviews.after_attempt(attempt.task, attempt))
        except Exception as exc:  # the workspace's own error, or a bug: the attempt fails
            attempt.error = self.redactor.text(str(exc) or type(exc).__name__)
            # Its host went before its work came back from there: lost, not failed.
            failed = Outcome.LOST if isinstance(exc, HostLostError) else Outcome.FAILED
            self.core.attempt_ended(running, running.stop_reason or failed, 0)
            return False
        if attempt.stage is Stage.AGENT:
            self._views.changes.record(running.node, running.details)
        landed = running.details.get("landed")
        if attempt.stage is Stage.MERGE and landed:
            self.core.emit(EventKind.TASK_LANDED, attempt.task, commit=landed)
        return True

    def _grace_for_stop(self, grace: float | None = None) -> float:
        if grace is not None:
            return grace
        return 0.0 if self._hurry else self.grace

    def _check_settled(self) -> None:
        if self.core.settled and self._settled is not None:
            self._settled.set()

    def _usage(self) -> dict[int, Usage]:
        resources: dict[int, Usage] = {}
        for executor in self._executors.values():
            resources.update(executor.usage())
        return resources

    # --- hosts and contention -------------------------------------------------------

    def _on_host_health(self, health: HostHealth) -> None:
        self._host_watch.update(health)
        self._check_settled()

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
        core = self.core
        for name in self.fleet.config.agents:
            usage = core.capacity.usage(Stage.AGENT, name)
            waiting = core.ready.waiting(name)
            self._history.record((Stage.AGENT, name), at, usage.busy, usage.total, waiting)
        for (stage, name), queue in core.stage_queues.items():
            usage = core.capacity.usage(stage, name)
            self._history.record((stage, name), at, usage.busy, usage.total, len(queue))

    # --- the journal ------------------------------------------------------------------

    @property
    def _run_id(self) -> int:
        assert self.run_id is not None
        return self.run_id

    # --- the end ----------------------------------------------------------------------

    async def _shut_down(self) -> None:
        """Stop whatever still runs, flush the journal, close the executors."""
        core = self.core
        core.stopping = True
        if self._sample_timer is not None:
            self._sample_timer.cancel()
        for timer in core.retry_timers.values():
            timer.cancel()
        core.retry_timers.clear()
        for running in list(core.running.values()):
            core.stop_attempt(running, Outcome.CANCELLED, grace=0.0 if self._hurry else None)
        supervisors = [p.supervisor for p in self._processes.values() if p.supervisor is not None]
        if supervisors:
            await asyncio.gather(*supervisors, return_exceptions=True)
        # Releases first: one may still need its host (a worktree in an SSH host's clone).
        if self._releases:
            await asyncio.gather(*self._releases, return_exceptions=True)
        for executor in self._executors.values():
            with contextlib.suppress(Exception):
                await executor.aclose()
        # Run anything that was waiting on a commit (a success just before the stop).
        self._commits.drain()

    def _finish(self, interrupted: bool) -> RunResult:
        self.finished_at = self._report.finished_at = self._clock()
        report = self._report.report()
        if interrupted:
            exit_code = EXIT_INTERRUPTED
        elif all(task.state is TaskState.SUCCEEDED for task in self.core.tasks):
            exit_code = EXIT_OK
        else:
            exit_code = EXIT_FAILED
        self.exit_code = exit_code
        self.core.emit(
            EventKind.RUN_FINISHED,
            None,
            status="interrupted" if interrupted else "finished",
            exit_code=exit_code,
            report=report.to_json_dict(),
        )
        self._commits.drain()
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


def estimated_durations(fleet: Fleet, learned: Mapping[str, float]) -> list[float]:
    """The expected duration of each task, for critical-path priority.

    A task that ran before weighs the seconds it took; one that never ran weighs
    the mean of those that did. With no history at all, every task weighs 1 and
    the critical path counts hops: the longest chain still goes first.
    """
    known = [learned[task.id] for task in fleet.tasks if task.id in learned]
    default = sum(known) / len(known) if known else 1.0
    return [learned.get(task.id, default) for task in fleet.tasks]
