"""What views see of a run: immutable pictures built by `Engine.snapshot()`.

Views render these and nothing else of the engine's state. They are plain data
(no methods that read files, no live objects), so that a socket can ship them
to a TUI attached from another terminal: `fleetdeck.snapshot_codec` turns them
into JSON and back. What views read of attempt logs, they ask of their client
(`fleetdeck.client`), which masks the fleet's secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetdeck.metrics import CognitiveLoad, PoolSample
from fleetdeck.model import HostState, Outcome, Stage, TaskState
from fleetdeck.policy import Policy


@dataclass(slots=True, frozen=True)
class TaskView:
    """One task as the queue pane shows it."""

    id: str
    state: TaskState
    wave: int
    agent: str
    runner: str | None
    attempts: int
    waiting_for: tuple[str, ...]  # dependencies not yet succeeded
    blocked_by: str | None
    in_flight: bool
    started_at: float | None
    finished_at: float | None
    retry_at: float | None
    # Tasks in flight whose change touches files this task's change touches too.
    overlaps: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class AttemptView:
    """An attempt running now (the in-flight pane)."""

    attempt_id: int
    task: str
    stage: Stage
    number: int
    worker: str
    host: str
    pid: int | None
    started_at: float
    log_path: str
    stopping: bool
    cpu_percent: float | None = None  # the attempt's process tree, last sample
    rss_bytes: int | None = None


@dataclass(slots=True, frozen=True)
class PoolView:
    """Contention of one agent or runner: busy/total slots and who waits.

    `waiting` is ready tasks waiting for an agent slot, or the CI queue length for
    a runner; `wait_mean`/`wait_p95` are CI queue waits (runners only).
    """

    stage: Stage
    name: str
    busy: int
    total: int
    waiting: int
    wait_mean: float | None = None
    wait_p95: float | None = None
    history: tuple[PoolSample, ...] = ()  # one sample a second, oldest first
    oldest_wait: float | None = None  # runners: how long the head of the queue has waited
    # Agents: why it takes no launches now (rate or usage limit, refused key,
    # budget spent), and what its API requests used so far (tokens in and out, dollars).
    held: str | None = None
    held_until: float | None = None  # a throttled agent: when it resumes
    tokens: tuple[int, int] | None = None
    cost: float | None = None


@dataclass(slots=True, frozen=True)
class HostView:
    """A host's health and how many attempts it runs."""

    name: str
    state: HostState
    running: int
    latency: float | None = None
    load: tuple[float, float, float] | None = None
    reason: str | None = None


@dataclass(slots=True, frozen=True)
class AttentionItem:
    """A task that needs the operator: failed, a blocked root, waiting to land
    (with `reason`), or (with `files`) one whose change overlaps the changes of
    `overlaps`, tasks in flight too; or (with `agent`) an agent that takes no
    launches until the operator acts (its budget is spent; `reason` says so,
    `task` is empty and `state` is blocked)."""

    task: str
    state: TaskState
    since: float
    # What the operator must do, when the state does not say it (waiting to land).
    reason: str | None = None
    overlaps: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    agent: str | None = None


@dataclass(slots=True, frozen=True)
class FleetSnapshot:
    """The whole run at one instant."""

    fleet: str
    policy: Policy
    paused: bool
    stopping: bool
    now: float
    started_at: float | None
    tasks: tuple[TaskView, ...]
    running: tuple[AttemptView, ...]
    pools: tuple[PoolView, ...]
    hosts: tuple[HostView, ...]
    load: CognitiveLoad
    attention: tuple[AttentionItem, ...]
    done: int
    total: int
    # True when the policy, not the slots, keeps ready tasks from starting.
    held_by_policy: bool = False
    # Once the run has ended (the engine's run() returned): when, and its exit code.
    finished_at: float | None = None
    exit_code: int | None = None
    # The policy in a few words when its name is not all (`adaptive 3`: its window).
    policy_detail: str = ""

    @property
    def in_flight(self) -> int:
        """Tasks between their first launch and their end."""
        return self.load.in_flight

    @property
    def elapsed(self) -> float:
        """Seconds since the run started, up to its end once it has ended."""
        if self.started_at is None:
            return 0.0
        end = self.now if self.finished_at is None else self.finished_at
        return max(0.0, end - self.started_at)


@dataclass(slots=True, frozen=True)
class AttemptRecord:
    """One attempt, running or ended (detail and timeline screens)."""

    attempt_id: int
    task: str
    stage: Stage
    number: int
    worker: str
    host: str
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    outcome: Outcome | None
    exit_code: int | None
    error: str | None
    log_path: str
    output_path: str


@dataclass(slots=True, frozen=True)
class TaskChange:
    """What a task's last agent attempt changed, in its branch (with a `[repo]`)."""

    branch: str
    base: str  # the target's commit the change starts from
    commit: str  # the change's head
    files: int
    insertions: int
    deletions: int
    paths: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class TaskDetail:
    """Everything the detail screen shows of one task.

    `inputs` maps each dependency to its output and `output` is the task's own, as
    far as they exist yet, each cut to a readable length.
    """

    task: TaskView
    prompt: str
    depends_on: tuple[str, ...]
    dependents: tuple[str, ...]
    attempts: tuple[AttemptRecord, ...]
    inputs: dict[str, str]
    output: str | None
    change: TaskChange | None = None
    # API agents: tokens in and out over the task's attempts, and their cost.
    usage: tuple[int, int, float] | None = None


@dataclass(slots=True, frozen=True)
class Lane:
    """One slot of an agent or runner on a host: a row of the timeline."""

    stage: Stage
    worker: str
    host: str
    slot: int  # 1-based, per worker and host


@dataclass(slots=True, frozen=True)
class Timeline:
    """Every attempt of the run so far, and the slots they ran in."""

    started_at: float | None
    now: float
    lanes: tuple[Lane, ...]
    attempts: tuple[AttemptRecord, ...]
