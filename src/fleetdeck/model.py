"""The product's words as plain types: task states, stages, outcomes, events.

Everything here is a plain enum or dataclass so that the engine, the journal, the
views and the tests can share it without importing anything heavy.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

LOCAL_HOST = "local"
# Where the merge train runs its landings: in fleetdeck's own process (its
# executor is fleetdeck.workspace.train), never on a configured host.
TRAIN_HOST = "merge-train"
# Where API agents' attempts run: HTTP requests made by fleetdeck's own process
# (fleetdeck.executors.http), never a process on a host.
API_HOST = "api"
# The run's status file (in its run directory): one line per local attempt ended.
STATUS_FILE = "status"


class TaskState(enum.StrEnum):
    """Where a task is in its lifecycle (docs/architecture.md, "The task lifecycle")."""

    PENDING = "pending"
    READY = "ready"
    RUNNING = "running"
    CI_QUEUED = "ci_queued"
    CI_RUNNING = "ci_running"
    # Waiting for the merge train, and landing on the target.
    MERGE_QUEUED = "merge_queued"
    MERGING = "merging"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True when the task will not move again without an operator command."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.BLOCKED, TaskState.CANCELLED}
)
# Tasks in these states stop their dependents from ever running until retried.
BLOCKING_STATES = frozenset({TaskState.FAILED, TaskState.CANCELLED, TaskState.BLOCKED})


class Stage(enum.StrEnum):
    """An attempt runs one stage of a task."""

    AGENT = "agent"
    CI = "ci"
    MERGE = "merge"


class Outcome(enum.StrEnum):
    """How an attempt ended."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    # The host went away under the attempt: not the task's fault (SSH hosts).
    LOST = "lost"
    # A merge attempt: the task's branch conflicts with the target's tip (its
    # agent runs again there, spending a retry).
    CONFLICT = "conflict"
    # A merge attempt: the target moved since the task's CI ran; CI runs again
    # on the candidate rebuilt on the new tip before it may land.
    RETEST = "retest"
    # A merge attempt: landing would overwrite the user's uncommitted changes in
    # a checkout of the target; the task waits in the merge queue (no retry spent).
    WAIT = "wait"
    # A rate or usage limit of the agent's provider: no retry spent; the agent's
    # launches pause until the limit resets, then the task runs again.
    THROTTLED = "throttled"
    # Stopped because an upstream it started on speculatively (the pipelined
    # policy) failed its CI or gave up: not a failure, no retry spent; the task
    # waits for its upstream again.
    PREEMPTED = "preempted"


class EventKind(enum.StrEnum):
    """The one event vocabulary shared by the journal, the headless view and --json."""

    RUN_STARTED = "run_started"
    TASK_READY = "task_ready"
    ATTEMPT_STARTED = "attempt_started"
    CI_QUEUED = "ci_queued"
    MERGE_QUEUED = "merge_queued"
    ATTEMPT_FINISHED = "attempt_finished"
    RETRY_SCHEDULED = "retry_scheduled"
    TASK_SUCCEEDED = "task_succeeded"
    # The task's change is on the target branch (`commit`: the target's new tip).
    TASK_LANDED = "task_landed"
    # Succeeded in an earlier run, unchanged since: carried over, not run again.
    TASK_REUSED = "task_reused"
    TASK_FAILED = "task_failed"
    TASK_BLOCKED = "task_blocked"
    # An operator retry put the task back (pending or ready), or unblocked it.
    TASK_REQUEUED = "task_requeued"
    TASK_CANCELLED = "task_cancelled"
    # The operator has seen a failed or blocked task: it leaves the attention queue.
    TASK_ACKNOWLEDGED = "task_acknowledged"
    POLICY_CHANGED = "policy_changed"
    PAUSED = "paused"
    RESUMED = "resumed"
    HOST_UP = "host_up"
    HOST_DOWN = "host_down"
    # `fleetdeck run` took up an unfinished run again from the journal.
    RUN_RESUMED = "run_resumed"
    RUN_FINISHED = "run_finished"
    # The task goes to another agent (`from`, `to`, `reason`): its own gave up,
    # is over budget, or is throttled too long.
    TASK_REROUTED = "task_rerouted"
    # The adaptive policy's in-flight window changed (`window`, `previous`, `reason`).
    WINDOW_CHANGED = "window_changed"
    # The operator added a task to the running fleet (`spec`: its [[tasks]] table,
    # validated as the config's; a resumed run builds the fleet with it).
    TASK_ADDED = "task_added"


class Cause(enum.StrEnum):
    """Why a task was put back (`cause` of task_requeued): typed, where `reason`
    is the words for people."""

    # The operator retried it: it gets a fresh retry budget.
    OPERATOR = "operator"
    # Its definition changed in the config since the run was recorded.
    DEFINITION = "definition"
    # Something upstream of it runs again, so its inputs may change.
    UPSTREAM = "upstream"
    # It had started on an upstream's agent output (pipelined), and that
    # upstream failed after: its work is thrown away, no retry spent.
    PREEMPTED = "preempted"


def iso_timestamp(ts: float) -> str:
    """UTC ISO 8601 with milliseconds and a Z, as in `2026-11-23T10:00:00.123Z`."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(slots=True)
class Event:
    """One thing that happened, with its UTC timestamp (seconds since the epoch).

    `data` holds the event's details (stage, outcome, delay...); its keys are the
    ones `--json` prints next to `ts`, `event` and `task`. Treat it as immutable:
    it is not frozen only because the engine makes four per task and frozen
    dataclasses are several times slower to build.
    """

    ts: float
    kind: EventKind
    task: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """The `--json` form: `{"ts": ..., "event": ..., "task": ..., **data}`."""
        out: dict[str, Any] = {"ts": iso_timestamp(self.ts), "event": str(self.kind)}
        if self.task is not None:
            out["task"] = self.task
        out.update(self.data)
        return out


@dataclass(slots=True)
class Attempt:
    """One execution of one stage of a task. Retries are new attempts."""

    attempt_id: int
    task: str
    stage: Stage
    number: int  # 1 for the task's first attempt; CI attempts share the agent's number
    worker: str  # the agent or runner name
    host: str
    # The run's directory, shared by every attempt of the run: the attempt's
    # files are named from it, not stored (100,000 tasks, 200 bytes each).
    run_dir: str
    queued_at: float | None = None  # CI only: when the task joined the runner's queue
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    # When the process `pid` started (seconds since the epoch, as the kernel
    # says): with the pid, it finds the attempt again after a supervisor restart
    # without mistaking a reused pid for it.
    pid_started: float | None = None
    outcome: Outcome | None = None
    exit_code: int | None = None
    error: str | None = None

    @property
    def stem(self) -> str:
        """The common start of the attempt's file names: RUN_DIR/TASK.N.STAGE"""
        return f"{self.run_dir}/{self.task}.{self.number}.{self.stage}"

    @property
    def log_path(self) -> str:
        """The attempt's stdout and stderr."""
        return self.stem + ".log"

    @property
    def output_path(self) -> str:
        """Where the attempt's $FLEETDECK_OUTPUT ends up."""
        return self.stem + ".out"

    @property
    def status_path(self) -> str:
        """Where the local shim records the exit status when the command ends: the
        run's status file, one line per attempt."""
        return f"{self.run_dir}/{STATUS_FILE}"

    @property
    def inputs_path(self) -> str:
        """Where a local attempt's $FLEETDECK_INPUTS is written."""
        return self.stem + ".inputs.json"

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish, once finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(slots=True)
class TaskRun:
    """The live state of one task in a run.

    Its definition lives in the config, its place in the DAG (node, wave) in the
    engine's Dag: only what changes is kept here, to stay small at 100,000 tasks.
    """

    id: str
    state: TaskState = TaskState.PENDING
    # The attempts (see `attempts`): most tasks have one, kept bare, since a
    # 1-tuple costs 48 bytes, and an empty tuple nothing.
    _attempts: Attempt | tuple[Attempt, ...] = ()
    # Agent attempts started so far: the number the next attempt gets is this + 1.
    agent_attempts: int = 0
    # Failed attempts charged to the task's own retry budget (lost ones are not).
    failures: int = 0
    lost: int = 0
    # True from the first launch until the task is done or given up: what the
    # sequential policy and max_in_flight count (retry_wait included).
    in_flight: bool = False
    blocked_by: str | None = None
    finished_at: float | None = None
    # When the task started to need the operator (failed, cancelled, blocked).
    attention_since: float | None = None
    # What the operator must do before the task can go on (while it waits to land).
    waiting_for: str | None = None
    # The successful agent attempt, whose output file is the task's output
    # (outputs stay on disk).
    output_attempt: Attempt | None = None
    retry_at: float | None = None

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        """The task's attempts so far, oldest first."""
        held = self._attempts
        return (held,) if isinstance(held, Attempt) else held

    @attempts.setter
    def attempts(self, attempts: tuple[Attempt, ...]) -> None:
        self._attempts = attempts[0] if len(attempts) == 1 else attempts

    def add_attempt(self, attempt: Attempt) -> None:
        """Append a new attempt."""
        self._attempts = attempt if not self._attempts else (*self.attempts, attempt)

    @property
    def first_started_at(self) -> float | None:
        """When the task's first attempt started."""
        held = self._attempts
        first = held if isinstance(held, Attempt) else held[0] if held else None
        return None if first is None else first.started_at

    @property
    def output_path(self) -> str | None:
        """The file holding the task's output, once its agent stage succeeded."""
        return None if self.output_attempt is None else self.output_attempt.output_path

    @property
    def current_attempt(self) -> Attempt | None:
        """The latest attempt, running or not."""
        held = self._attempts
        return held if isinstance(held, Attempt) else held[-1] if held else None


class HostState(enum.StrEnum):
    """How reachable a host is."""

    UP = "up"
    # Not reachable now (never connected yet, or stopped answering): fleetdeck
    # keeps trying, and launches nothing there meanwhile.
    DOWN = "down"
    # Will not be tried again this run (host key refused, authentication failed):
    # work that has no other host fails instead of waiting forever.
    FAILED = "failed"


# The default clock: seconds since the epoch (time.time itself: it is called
# for every event, and a wrapper would cost a call each time).
now = time.time
