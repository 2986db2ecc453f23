"""The core: every task's state and every transition of the task lifecycle.

Pure: no asyncio, no processes, no disk. Inputs arrive as method calls (an
attempt started or ended, a timer fired, an operator command, a host's health);
each transition updates the task table and reports what must happen through
the `Effects` port: events to journal and tell, attempt rows to record,
attempts to start or stop. Time and timers come from a `Clock`. The asyncio
engine (fleetdeck.engine.shell) carries the effects out for real; the simulator
(fleetdeck.engine.simulate) and the pure tests carry them out in virtual time.
So there is one lifecycle, and what the simulator predicts is what runs.

The lifecycle, per task (stages as in fleetdeck.stages):

    pending --deps done--> ready --policy+slot--> running(first stage)
      --ok--> queued(next stage) --slot--> running(next stage) ... --ok--> succeeded
    an attempt that fails: retry_wait (backoff) -> ready, until retries are spent -> failed
    failed or cancelled => everything downstream blocked; operator retry => ready again
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetdeck.config import Fleet, TaskSpec
from fleetdeck.engine import ends, speculation
from fleetdeck.engine.clock import Clock, Timer
from fleetdeck.engine.limits import AgentLimits
from fleetdeck.engine.reroute import reroute
from fleetdeck.engine.scheduler import ReadyQueue, decide, ready_order_key
from fleetdeck.model import (
    BLOCKING_STATES,
    Attempt,
    Event,
    EventKind,
    Outcome,
    Stage,
    TaskRun,
    TaskState,
)
from fleetdeck.policy import LaunchContext, SchedulingPolicy
from fleetdeck.slots import Capacity
from fleetdeck.stages import STAGES, outcome_of, pipeline, worker_of, workers
from fleetdeck.text import plural

# The enum members the hot transitions name, looked up once: on Python 3.11 each
# `Stage.AGENT` goes through the enum's metaclass (about 0.1 us, five times a
# plain global, measured), and one task's transitions name a score of them.
_AGENT = Stage.AGENT
_READY = TaskState.READY
_OK = Outcome.OK
# Outcomes of a released task's later stage that leave its dependents standing:
# CI again on its rebased candidate, or a wait for the user's checkout (its
# change is the same; its dependents land after it all the same).
_KEEPS_RELEASED = frozenset({Outcome.OK, Outcome.RETEST, Outcome.WAIT})
_FAILED = Outcome.FAILED
_TIMEOUT = Outcome.TIMEOUT
_TASK_READY = EventKind.TASK_READY
_ATTEMPT_STARTED = EventKind.ATTEMPT_STARTED
_ATTEMPT_FINISHED = EventKind.ATTEMPT_FINISHED
# A task that waits to land is in its merge queue, or trying to land again.
_WAITING_TO_LAND = (TaskState.MERGE_QUEUED, TaskState.MERGING)

# The events after which the tasks needing attention may have changed (a success
# never changes them): a policy that admits by the load has them counted again.
_ATTENTION_EVENTS = frozenset(
    {
        EventKind.TASK_FAILED,
        EventKind.TASK_BLOCKED,
        EventKind.TASK_CANCELLED,
        EventKind.TASK_REQUEUED,
        EventKind.TASK_ACKNOWLEDGED,
        # A merge attempt's end clears what its task waited for (a landing that must wait).
        EventKind.MERGE_QUEUED,
    }
)

# A task whose attempts keep getting lost (its host dies under it) is failed after
# this many lost attempts: lost attempts do not spend the task's own retries.
MAX_LOST_ATTEMPTS = 3


class CommandError(Exception):
    """An operator command that cannot be carried out; the message says why."""


@dataclass(slots=True)
class Running:
    """An attempt between its launch and its end."""

    node: int
    attempt: Attempt
    timeout: float | None
    # Why it is being stopped (cancel, timeout, interruption), once asked to stop.
    stop_reason: Outcome | None = None
    timer: Timer | None = None
    # What the shell adds to its attempt_finished event (the workspace's diff stat).
    details: dict[str, Any] | None = None


class Effects(Protocol):
    """What the core asks of whoever runs it."""

    def emit(self, event: Event, node: int | None = None) -> None:
        """Journal `event`, then tell it (in the order emitted). `node` is the DAG
        node of `event.task` when the core knows it (None: look it up)."""

    def record(self, attempt: Attempt) -> None:
        """Journal the attempt's row (new, or changed)."""

    def start(self, running: Running) -> None:
        """Start the attempt's process once everything emitted so far is durable;
        then call `Core.attempt_started`, and `Core.attempt_ended` when it ends."""

    def stop(self, running: Running, grace: float | None) -> None:
        """Stop the attempt's process (its whole tree), within `grace` seconds
        (None: the fleet's grace period); its end comes as `attempt_ended`."""

    def schedule_soon(self) -> None:
        """Call `Core.schedule()` soon: something may have become launchable."""


class Core:
    """The task table and the transitions of one run."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        clock: Clock,
        effects: Effects,
        policy: SchedulingPolicy,
        estimates: Sequence[float],
        rng: random.Random | None = None,
        next_attempt_id: int = 1,
        events: bool = True,
    ) -> None:
        """`events` False: nothing hears the run's events (`effects.emit` would drop
        them; a simulation of the makespan alone), so none is built unless the
        policy observes them."""
        self.fleet = fleet
        self.clock = clock
        self.effects = effects
        self._events = events
        self.policy = policy
        self.rng = rng or random.Random()
        self.specs: Sequence[TaskSpec] = fleet.tasks
        self.dag = fleet.dag
        self.tasks = [TaskRun(id=spec.id) for spec in self.specs]
        self.pipelines = [pipeline(spec, fleet.config) for spec in self.specs]
        self.agent_of = [spec.agent for spec in self.specs]
        # One number per task in an array (not a key tuple): the key is built when pushed.
        self.critical = self.dag.critical_path(estimates)
        # Kept for tasks added while the run goes (engine/adding.py: the path is redone).
        self.estimates: Sequence[float] = estimates
        self.waiting_on = [len(deps) for deps in self.dag.deps]
        self.ready: ReadyQueue[int] = ReadyQueue()
        self.retry_lane: deque[int] = deque()
        config = fleet.config
        # The queue of every later stage's pool, first come first served.
        self.stage_queues: dict[tuple[Stage, str], deque[int]] = {
            (stage, name): deque()
            for stage in STAGES
            if stage is not Stage.AGENT
            for name in workers(config, stage)
        }
        self.capacity = Capacity(
            config.agents, config.runners, config.hosts, workers(config, Stage.MERGE)
        )
        self.running: dict[int, Running] = {}
        self.retry_timers: dict[int, Timer] = {}
        # Tasks whose dependents no longer wait for them: their agent stage
        # succeeded under a speculating policy, their later stages have not yet
        # (fleetdeck.engine.speculation).
        self.released: set[int] = set()
        # Tasks done with CI that wait, before the merge train, for a speculative
        # upstream of theirs to land first (fleetdeck.engine.speculation).
        self.landing_after: set[int] = set()
        self.in_flight = 0
        self.unfinished = len(self.tasks)
        self.paused = False
        # Set once the run is being stopped: attempts that end then keep their task's
        # state (interrupted, to be resumed), and nothing new starts.
        self.stopping = False
        # True when the last decision left ready tasks with free slots because of
        # the policy (views say so instead of blaming the slots).
        self.held_by_policy = False
        # Tasks whose view changed since the views last looked (None: nobody looks).
        self.dirty: set[int] | None = None
        # When each task in a later stage's queue joined it (its wait, for the
        # queue-wait figures and views); only tasks queued there have an entry.
        self.queued_since: dict[int, float] = {}
        # Queue waits of later stages, per pool (for contention views).
        self.queue_waits: dict[str, list[float]] = {}
        self.next_attempt_id = next_attempt_id
        self.run_dir = ""
        self.run_id = 0
        settings = config.fleet
        self._backoff = settings.retry_backoff
        self._backoff_max = settings.retry_backoff_max
        self._max_in_flight = settings.max_in_flight
        # The last context the policy was asked about: most decisions ask with the
        # same figures (one task ended, one starts), and a frozen dataclass costs
        # more to build than the rest of a decision.
        self._context = LaunchContext(in_flight=0, max_in_flight=self._max_in_flight)
        # Agents paused by their provider's limits, held, or over budget.
        self.limits = AgentLimits(self)
        # Fallbacks (engine/reroute.py): the agents each rerouted task has left,
        # and why each failed optional task's output is missing.
        self.tried_agents: dict[int, set[str]] = {}
        self.missing: dict[int, str] = {}
        # Each worker's timeout, looked up once rather than at every launch.
        self._timeouts = {
            (stage, name): spec.timeout
            for stage in STAGES
            for name, spec in workers(config, stage).items()
        }

    @property
    def policy(self) -> SchedulingPolicy:
        """The policy of the next launch decision (set_policy replaces it)."""
        return self._policy

    @policy.setter
    def policy(self, policy: SchedulingPolicy) -> None:
        self._policy = policy
        # Looked at here, once, rather than at each event: a policy that keeps no
        # state is not called four times a task for nothing. One that does not
        # say is taken to observe: slower, never wrong.
        observes = getattr(policy, "observes", True)
        self._observe = policy.observe if observes else None
        # A policy that decides on the load and the CI queue is told them (they
        # cost a look at every task in flight, so only such a one is).
        self._admits = bool(getattr(policy, "admits", False))
        # The tasks needing attention, kept for such a policy (None: to find by a
        # look at every task), and the tasks to look at again (an event named them
        # or a dependency of theirs: whether a blocked task needs attention depends
        # on its dependencies).
        self._attending: set[int] | None = None
        self._attention_stale: set[int] = set()
        # A policy may have events of its own to tell (the adaptive window).
        self._policy_events: list[tuple[EventKind, dict[str, Any]]] | None = getattr(
            policy, "events", None
        )
        # Dependents may start on a task's agent output (pipelined).
        self.speculates = bool(getattr(policy, "speculates", False))
        # False when nobody hears events: the hot paths then skip building
        # their details too (a simulation of the makespan alone).
        self.telling = self._events or observes

    # --- queries -------------------------------------------------------------------

    def node(self, task_id: str) -> int:
        """The DAG node of `task_id` (CommandError naming the nearest id if unknown)."""
        node = self.dag.index.get(task_id)
        if node is None:
            from fleetdeck.config import suggest

            raise CommandError(f"unknown task '{task_id}'{suggest(task_id, self.dag.ids)}")
        return node

    def running_for(self, node: int) -> Running | None:
        """The attempt of task `node` running now, if one is."""
        attempt = self.tasks[node].current_attempt
        return None if attempt is None else self.running.get(attempt.attempt_id)

    @property
    def settled(self) -> bool:
        """True when every task has ended and no attempt runs."""
        return self.unfinished == 0 and not self.running

    def blocker_of(self, node: int) -> str | None:
        """The failed or cancelled task that keeps `node` from running, if any."""
        for dep in self.dag.deps[node]:
            upstream = self.tasks[dep]
            if upstream.state is TaskState.BLOCKED:
                return upstream.blocked_by
            if upstream.state in BLOCKING_STATES and dep not in self.missing:
                return upstream.id
        return None

    def needs_attention(self, node: int) -> bool:
        """Failed tasks awaiting a decision, and blocked roots (blocked directly by a
        failed or cancelled dependency, not through another blocked task)."""
        task = self.tasks[node]
        if task.attention_since is None:
            return False
        if task.state is TaskState.FAILED:
            return True
        if task.state is TaskState.BLOCKED:
            return any(
                self.tasks[dep].state in (TaskState.FAILED, TaskState.CANCELLED)
                for dep in self.dag.deps[node]
            )
        # Waiting to land: flagged until it lands, its retried merge attempts too
        # (the item does not come and go with each of them).
        return task.waiting_for is not None and task.state in _WAITING_TO_LAND

    def needs_attention_as_blocked(self, node: int) -> bool:
        """True when a blocked task is blocked directly by a failure (a blocked
        root the operator must decide on), not only by their own cancels."""
        return any(self.tasks[dep].state is TaskState.FAILED for dep in self.dag.deps[node])

    # --- the start -----------------------------------------------------------------

    def start(self, *, emit_started: bool = True) -> None:
        """A new run: tell it, and make every task without dependencies ready."""
        if emit_started:
            self.emit(
                EventKind.RUN_STARTED,
                None,
                fleet=self.fleet.name,
                policy=self.policy.name,
                tasks=len(self.tasks),
                run_id=self.run_id,
            )
        for node, waiting in enumerate(self.waiting_on):
            if waiting == 0:
                self.make_ready(node)

    # --- events --------------------------------------------------------------------

    def emit(self, kind: EventKind, task: str | None, **data: Any) -> None:
        """Tell an event: the effects journal it, the policy hears it."""
        self.tell(kind, task, None, data)

    def tell(
        self, kind: EventKind, task: str | None, node: int | None, data: dict[str, Any]
    ) -> None:
        """`emit` with its details as a dict already built (the hot paths build
        one literal rather than pack keywords twice), and `node`, the DAG node of
        `task` when the caller has it at hand: the effects need not look it up."""
        if not self.telling:
            return  # nobody hears it: building the event would be all it costs
        event = Event(self.clock.now(), kind, task, data)
        if self._admits and self._attending is not None and task is not None:
            self._note_attention(kind, task, node, data)
        if self._events:
            self.effects.emit(event, node)
        if self._observe is not None:
            self._observe(event)
            if self._policy_events:
                # The policy's own events (a window change), told after what caused them.
                self._tell_policy_events()

    def _tell_policy_events(self) -> None:
        """Tell the events the policy has to tell of its own (the adaptive window)."""
        told = self._policy_events
        assert told is not None
        pending = told[:]
        told.clear()
        for policy_kind, policy_data in pending:
            self.tell(policy_kind, None, None, policy_data)

    def _note_attention(
        self, kind: EventKind, task: str, node: int | None, data: dict[str, Any]
    ) -> None:
        """After an event that may change whether its task (or, through it, a
        dependent) needs attention, look at them again at the next admission."""
        if kind in _ATTENTION_EVENTS or (
            kind is _ATTEMPT_FINISHED and data.get("stage") is Stage.MERGE
        ):
            named = self.dag.index[task] if node is None else node
            self._attention_stale.add(named)
            self._attention_stale.update(self.dag.dependents[named])

    def touch(self, node: int, *, dependents: bool = False) -> None:
        """Task `node`'s view changed (and, with `dependents`, what they wait for)."""
        dirty = self.dirty
        if dirty is not None:
            dirty.add(node)
            if dependents:
                dirty.update(self.dag.dependents[node])

    # --- scheduling ----------------------------------------------------------------

    def make_ready(self, node: int, reason: str | None = None) -> None:
        """Put a task whose dependencies are done in the ready queue."""
        task = self.tasks[node]
        task.state = _READY
        spec = self.specs[node]
        key = ready_order_key(spec.priority, self.critical[node], node)
        self.ready.push(node, self.agent_of[node], key)
        if self.telling:  # else nobody hears it (see `tell`): no details to build
            data: dict[str, Any] = {"wave": self.dag.levels[node]}
            if reason is not None:
                data["reason"] = reason
            self.tell(_TASK_READY, task.id, node, data)

    def to_retry_lane(self, node: int, reason: str) -> None:
        """A task already in flight is due to run its first stage again."""
        self.tasks[node].state = TaskState.READY
        self.retry_lane.append(node)
        data = {"wave": self.dag.levels[node], "reason": reason}
        self.tell(EventKind.TASK_READY, self.tasks[node].id, node, data)

    def schedule(self) -> None:
        """Launch what the policy and the free slots allow. Cheap; called often."""
        if self.stopping:
            return
        if self.limits.spent_out:
            self.limits.sweep()
        ready = self.ready
        if not ready and not self.retry_lane and not any(self.stage_queues.values()):
            # Nothing waits to start (most attempt ends in a deep DAG): there is no
            # decision to take, and nothing ready for the policy to hold back.
            self.held_by_policy = False
            return
        budget = 0
        if ready and not self.paused:
            # Asked only when a task is ready: the budget is a question, and with
            # nothing ready its answer would change nothing.
            context = self._context
            if self._admits:
                context = self.admission_context()
            elif context.in_flight != self.in_flight:
                context = self._context = LaunchContext(
                    in_flight=self.in_flight, max_in_flight=self._max_in_flight
                )
            budget = self._policy.budget(context)
            if self._policy_events:  # a window clamped to a changed max_in_flight
                self._tell_policy_events()
        decision = decide(
            self.stage_queues,
            self.retry_lane,
            self.ready,
            self.capacity,
            self.agent_of,
            budget=budget,
            paused=self.paused,
        )
        self.held_by_policy = decision.held
        for node, stage, host in decision.launches:
            self.launch(node, stage, host)

    def admission_context(self) -> LaunchContext:
        """The launch context with the load's terms and the CI queue (what a
        policy that `admits` decides on): a look at each task in flight."""
        states: set[TaskState] = set()
        for running in self.running.values():
            states.add(self.tasks[running.node].state)
        ci_queued = 0
        for (stage, _name), queue in self.stage_queues.items():
            if queue:
                states.add(STAGES[stage].queued)
                if stage is Stage.CI:
                    ci_queued += len(queue)
        if self.retry_timers:
            states.add(TaskState.RETRY_WAIT)
        if self.retry_lane:
            states.add(TaskState.READY)
        attending = self._attending
        stale = self._attention_stale
        if attending is None:
            stale = set(range(len(self.tasks)))
            attending = self._attending = set()
        for node in stale:
            # Only tasks a failure, block, requeue... named (successes, most
            # events of a run, change nothing here).
            if self.tasks[node].attention_since is not None and self.needs_attention(node):
                attending.add(node)
            else:
                attending.discard(node)
        self._attention_stale = set()
        attention = len(attending)
        runners = self.fleet.config.runners
        estimates = [spec.estimate for spec in runners.values() if spec.estimate is not None]
        return LaunchContext(
            in_flight=self.in_flight,
            max_in_flight=self._max_in_flight,
            needs_attention=attention,
            distinct_states=len(states),
            agent_running=TaskState.RUNNING in states,
            load_capacity=self.fleet.config.fleet.load_capacity,
            ci_queued=ci_queued,
            ci_slots=sum(spec.slots * len(spec.host_names) for spec in runners.values()),
            ci_estimate=sum(estimates) / len(estimates) if estimates else None,
        )

    def launch(self, node: int, stage: Stage, host: str) -> Running:
        """Start an attempt of `stage` on `host`, whose slot the scheduler took."""
        task = self.tasks[node]
        spec = self.specs[node]
        # The task's agent now (a fallback may have taken over from its own).
        worker_name: str | None = self.agent_of[node]
        if stage is _AGENT:
            task.agent_attempts += 1
        else:
            worker_name = worker_of(spec, stage)
        assert worker_name is not None
        at = self.clock.now()
        task.state = STAGES[stage].running
        if not task.in_flight:  # enter_flight(), inline: once per launch
            task.in_flight = True
            self.in_flight += 1
        attempt = Attempt(
            attempt_id=self.next_attempt_id,
            task=task.id,
            stage=stage,
            number=task.agent_attempts,
            worker=worker_name,
            host=host,
            run_dir=self.run_dir,
            started_at=at,
        )
        self.next_attempt_id += 1
        if stage is not _AGENT:
            attempt.queued_at = self.queued_since.pop(node, None)
            if attempt.queued_at is not None:
                self.queue_waits.setdefault(worker_name, []).append(at - attempt.queued_at)
        task.add_attempt(attempt)
        if self.dirty is not None:
            self.dirty.add(node)  # running now; ATTEMPT_STARTED comes once it has started
        timeout = spec.timeout
        if timeout is None:
            timeout = self._timeouts[(stage, worker_name)]
        running = Running(node=node, attempt=attempt, timeout=timeout)
        self.running[attempt.attempt_id] = running
        # Journaled before its process exists: a supervisor that dies from here on
        # leaves a row by which the next one finds the attempt, instead of starting
        # the task again beside it. The process waits for the commit (Effects.start).
        self.effects.record(attempt)
        self.effects.start(running)
        return running

    def enter_flight(self, task: TaskRun) -> None:
        """Count the task in flight (what the sequential policy and the cap count)."""
        if not task.in_flight:
            task.in_flight = True
            self.in_flight += 1

    def leave_flight(self, task: TaskRun) -> None:
        """The task is done or given up: no longer in flight."""
        if task.in_flight:
            task.in_flight = False
            self.in_flight -= 1

    # --- attempts ------------------------------------------------------------------

    def attempt_started(
        self, running: Running, *, pid: int | None = None, pid_started: float | None = None
    ) -> None:
        """The attempt's process exists (or, with an error set, never will): tell it,
        and arm its timeout for what is left of it."""
        attempt = running.attempt
        attempt.pid = pid
        attempt.pid_started = pid_started
        if attempt.pid is not None or attempt.error is not None:
            self.effects.record(attempt)  # the row journaled at launch has the rest
        if self.telling:
            data = {
                "stage": attempt.stage,
                "attempt": attempt.number,
                STAGES[attempt.stage].worker_kind: attempt.worker,
                "host": attempt.host,
                "pid": attempt.pid,
            }
            self.tell(_ATTEMPT_STARTED, attempt.task, running.node, data)
        if running.timeout is not None:  # (else arm_timeout has nothing to do)
            self.arm_timeout(running)

    def arm_timeout(self, running: Running) -> None:
        """Set the attempt's timeout timer (what is left of it after a restart)."""
        if running.stop_reason is not None or running.timeout is None or running.timer:
            return
        # `is None`, not `or`: a virtual clock starts at 0.0, a launch time like any other.
        started_at = running.attempt.started_at
        elapsed = 0.0 if started_at is None else self.clock.now() - started_at
        running.timer = self.clock.call_later(
            max(0.0, running.timeout - elapsed), self.stop_attempt, running, Outcome.TIMEOUT
        )

    def stop_attempt(
        self, running: Running, reason: Outcome, *, grace: float | None = None, force: bool = False
    ) -> None:
        """Ask a running attempt to stop; its end comes back through `attempt_ended`."""
        if running.stop_reason is not None and not force and grace is None:
            return
        running.stop_reason = running.stop_reason or reason
        if running.timer is not None:
            running.timer.cancel()
            running.timer = None
        self.effects.stop(running, grace)

    def attempt_ended(
        self, running: Running, outcome: Outcome | None, exit_code: int | None
    ) -> None:
        """The attempt is over. `outcome` None: decided by how it was stopped, if
        it was, else by its exit code."""
        if outcome is None:
            outcome = running.stop_reason or outcome_of(running.attempt.stage, exit_code)
        elif running.stop_reason is Outcome.PREEMPTED:
            # Stopped for its upstream: however it ended (lost with its host...),
            # its work is void and it waits for that upstream again.
            outcome = Outcome.PREEMPTED
        attempt = running.attempt
        node = running.node
        task = self.tasks[node]
        attempt.finished_at = at = self.clock.now()
        attempt.outcome = outcome
        attempt.exit_code = exit_code
        if running.timer is not None:
            running.timer.cancel()
        del self.running[attempt.attempt_id]
        self.capacity.release(attempt.stage, attempt.worker, attempt.host)
        self.effects.record(attempt)
        details = running.details
        if details is not None and "usage" in details:
            self.limits.spend(attempt.worker, details["usage"], node)
        if self.telling:
            details = self._finished_details(running, outcome, exit_code)
            self.tell(_ATTEMPT_FINISHED, task.id, node, details)
        if self.stopping:
            return  # interrupted: the task keeps its state, to be resumed
        if task.waiting_for is not None and outcome is not Outcome.WAIT:
            task.waiting_for = task.attention_since = None  # what it waited for is over
        if outcome not in _KEEPS_RELEASED and self.released and node in self.released:
            # Its dependents started on the agent output this stage was checking.
            speculation.preempt(self, node, f"{outcome} in {attempt.stage}")
        if outcome is _OK:
            self._stage_done(node, attempt, at)
        elif outcome is Outcome.RETEST:
            self._stage_done(node, attempt, at, again=Stage.CI)
        elif outcome is Outcome.WAIT:
            self._wait_to_land(node, attempt, (running.details or {}).get("reason"))
        elif outcome is Outcome.CANCELLED:
            ends.give_up(self, node, TaskState.CANCELLED, reason="cancelled by the operator")
        elif outcome is Outcome.THROTTLED:
            self.limits.throttled(node, attempt.worker, details)
        elif outcome is Outcome.PREEMPTED:
            speculation.ended(self, node, (running.details or {}).get("reason"))
        elif outcome is Outcome.LOST and task.lost < MAX_LOST_ATTEMPTS:
            task.lost += 1
            # Not the task's fault: run it again at once, on a healthy host.
            self.to_retry_lane(node, "attempt lost")
        elif details is not None and details.get("permanent"):
            # The server refused the request itself (bad model, bad key): the
            # same request would be refused again, so no retry is spent on it.
            if details.get("auth"):
                self.limits.hold(attempt.worker, attempt.error or "the key was refused")
            reason = attempt.error or "refused"
            if reroute(self, node, f"{attempt.worker}: {reason}"):
                self.to_retry_lane(node, f"rerouted to {self.agent_of[node]}")
            else:
                ends.give_up(self, node, TaskState.FAILED, reason=reason)
        else:
            self._attempt_failed(node, outcome)
        self.effects.schedule_soon()

    def _finished_details(
        self, running: Running, outcome: Outcome, exit_code: int | None
    ) -> dict[str, Any]:
        """What `attempt_finished` says of an attempt that just ended."""
        attempt = running.attempt
        details: dict[str, Any] = {
            "stage": attempt.stage,
            "attempt": attempt.number,
            "outcome": outcome,
            "exit_code": exit_code,
            "duration": round(attempt.duration or 0.0, 3),
        }
        if outcome is _TIMEOUT:
            details["reason"] = f"timed out after {running.timeout:g}s"
        elif self.stopping and outcome is Outcome.CANCELLED:
            details["reason"] = "interrupted"
        if attempt.error:
            details["error"] = attempt.error
        if running.details:
            details.update(running.details)
        return details

    def _stage_done(
        self, node: int, attempt: Attempt, at: float, *, again: Stage | None = None
    ) -> None:
        """The task moves on to its next stage (`again`: back to that earlier one)."""
        task = self.tasks[node]
        stages = self.pipelines[node]
        if attempt.stage is _AGENT:
            task.output_attempt = attempt
        position = stages.index(attempt.stage) + 1 if again is None else stages.index(again)
        if position == len(stages):
            ends.succeed(self, node, at)
            return
        stage = stages[position]
        definition = STAGES[stage]
        worker_name = worker_of(self.specs[node], stage)
        assert worker_name is not None and definition.queued_event is not None
        if self.speculates and stage is Stage.MERGE and speculation.held(self, node, at):
            return  # it joins the train once its upstream landed
        task.state = definition.queued
        queue = self.stage_queues[(stage, worker_name)]
        queue.append(node)
        self.queued_since[node] = at
        data = {definition.worker_kind: worker_name, "position": len(queue)}
        self.tell(definition.queued_event, task.id, node, data)
        if self.speculates and attempt.stage is _AGENT:
            speculation.release(self, node)

    def _wait_to_land(self, node: int, attempt: Attempt, reason: str | None) -> None:
        """The task cannot land until the operator does something (their checkout
        of the target has local changes to what would land): it stays in the
        merge train, spending no retry, and tries again after the first retry's
        backoff; until it lands the attention queue says why."""
        task = self.tasks[node]
        task.state = TaskState.MERGE_QUEUED
        task.waiting_for = reason or "waiting to land"
        if task.attention_since is None:
            task.attention_since = self.clock.now()
        delay = min(self._backoff, self._backoff_max)
        data = {"train": attempt.worker, "reason": task.waiting_for, "delay": round(delay, 3)}
        self.tell(EventKind.MERGE_QUEUED, task.id, node, data)
        self.retry_timers[node] = self.clock.call_later(delay, self._land_again, node, attempt)

    def _land_again(self, node: int, attempt: Attempt) -> None:
        """A task that waited to land joins the merge queue again."""
        self.retry_timers.pop(node, None)
        if self.tasks[node].state is TaskState.MERGE_QUEUED and not self.stopping:
            self._stage_done(node, attempt, self.clock.now(), again=Stage.MERGE)
            self.effects.schedule_soon()

    def _attempt_failed(self, node: int, outcome: Outcome) -> None:
        task = self.tasks[node]
        spec = self.specs[node]
        task.failures += 1
        if task.failures <= spec.retries:
            ceiling = min(self._backoff_max, self._backoff * 2 ** (task.failures - 1))
            # "Equal jitter": half fixed, half random, so retries of tasks that
            # failed together do not all come back at the same instant.
            delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
            task.state = TaskState.RETRY_WAIT
            task.retry_at = self.clock.now() + delay
            self.retry_timers[node] = self.clock.call_later(delay, self.retry_due, node)
            data = {
                "delay": round(delay, 3),
                "attempt": task.agent_attempts + 1,
                "retries_left": spec.retries - task.failures,
            }
            self.tell(EventKind.RETRY_SCHEDULED, task.id, node, data)
        else:
            reason = "timed out" if outcome is Outcome.TIMEOUT else "failed"
            if outcome is Outcome.LOST:
                reason = "host lost too often"
            attempts = plural(task.agent_attempts, "attempt")
            if reroute(self, node, f"{reason} after {attempts} on {self.agent_of[node]}"):
                self.to_retry_lane(node, f"rerouted to {self.agent_of[node]}")
                return
            ends.give_up(self, node, TaskState.FAILED, reason=f"{reason} after {attempts}")

    def retry_due(self, node: int) -> None:
        """A task's retry backoff is over: it joins the retry lane."""
        self.retry_timers.pop(node, None)
        task = self.tasks[node]
        if task.state is not TaskState.RETRY_WAIT:
            return
        task.retry_at = None
        self.to_retry_lane(node, "retry")
        self.effects.schedule_soon()
