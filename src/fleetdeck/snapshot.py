"""What views see of a run: immutable pictures built by `Engine.snapshot()`.

Views render these and nothing else of the engine's state, so that a later
socket transport can ship them to a TUI attached from another terminal.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetdeck.executors.base import HostState
from fleetdeck.metrics import CognitiveLoad, PoolSample
from fleetdeck.model import Stage, TaskState
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
    """A task that needs the operator: failed, or a blocked root."""

    task: str
    state: TaskState
    since: float


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

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return 0.0 if self.started_at is None else max(0.0, self.now - self.started_at)
