"""Stages as data: what a task runs, in order, and where each stage draws its slots.

A task runs a pipeline of stages: `agent`, then `ci` when it names a runner.
Each stage names its pool (the config table whose workers run it), the states a
task is in while it waits for and runs that stage, and whether it works in the
task's workspace. The core, the scheduler and the views go by this table, so a
new stage is a new row here (and its pool), not a new branch in each of them.

The first stage is the one the policy launches (from the ready queue); every
later stage waits in a first-come, first-served queue of its pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fleetdeck.config import FleetConfig, TaskSpec, WorkerSpec
from fleetdeck.model import EventKind, Stage, TaskState

Pool = Literal["agents", "runners"]


@dataclass(slots=True, frozen=True)
class StageDef:
    """One kind of stage."""

    stage: Stage
    # The config table of its workers, and what one is called (for messages and events).
    pool: Pool
    worker_kind: Literal["agent", "runner"]
    # The task's state while it waits for a slot of this stage, and while it runs.
    queued: TaskState
    running: TaskState
    # The event that says the task joined this stage's queue (None for the first
    # stage: its queue is the ready queue, told by task_ready).
    queued_event: EventKind | None
    # True when the stage works in the task's workspace (its files).
    needs_workspace: bool


STAGES: dict[Stage, StageDef] = {
    Stage.AGENT: StageDef(
        stage=Stage.AGENT,
        pool="agents",
        worker_kind="agent",
        queued=TaskState.READY,
        running=TaskState.RUNNING,
        queued_event=None,
        needs_workspace=True,
    ),
    Stage.CI: StageDef(
        stage=Stage.CI,
        pool="runners",
        worker_kind="runner",
        queued=TaskState.CI_QUEUED,
        running=TaskState.CI_RUNNING,
        queued_event=EventKind.CI_QUEUED,
        needs_workspace=True,
    ),
}

FIRST_STAGE = Stage.AGENT


# The pipelines there are, shared by every task that runs them (100,000 tasks
# would otherwise hold 100,000 equal tuples).
_AGENT_ONLY: tuple[Stage, ...] = (Stage.AGENT,)
_AGENT_THEN_CI: tuple[Stage, ...] = (Stage.AGENT, Stage.CI)


def pipeline(spec: TaskSpec) -> tuple[Stage, ...]:
    """The stages `spec` runs, in order."""
    return _AGENT_ONLY if spec.ci is None else _AGENT_THEN_CI


def worker_of(spec: TaskSpec, stage: Stage) -> str | None:
    """The name of the agent or runner that runs `stage` of `spec` (None if it has none)."""
    return spec.agent if stage is Stage.AGENT else spec.ci


def workers(config: FleetConfig, stage: Stage) -> Mapping[str, WorkerSpec]:
    """Every worker that can run `stage`, by name."""
    return config.agents if STAGES[stage].pool == "agents" else config.runners


def stage_of_state(state: TaskState) -> Stage | None:
    """The stage a task waits for or runs in `state` (None outside any stage)."""
    for definition in STAGES.values():
        if state is definition.running or (
            definition.queued_event is not None and state is definition.queued
        ):
            return definition.stage
    return None
