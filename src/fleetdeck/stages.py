"""Stages as data: what a task runs, in order, and where each stage draws its slots.

A task runs a pipeline of stages: `agent`, then `ci` when it names a runner,
then `merge` when the fleet has a `[repo]` and the task lands its change.
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
from fleetdeck.model import TRAIN_HOST, EventKind, Outcome, Stage, TaskState

Pool = Literal["agents", "runners", "trains"]

# The merge train of the fleet's repository: one landing at a time, in
# fleetdeck's own process (its executor serves TRAIN_HOST).
TRAIN = "train"
TRAIN_WORKER = WorkerSpec(command=("land",), slots=1, host=TRAIN_HOST)
# Exit codes of a merge attempt that are not a plain failure.
EXIT_CONFLICT = 3
EXIT_RETEST = 4
EXIT_WAIT = 5


@dataclass(slots=True, frozen=True)
class StageDef:
    """One kind of stage."""

    stage: Stage
    # The config table of its workers, and what one is called (for messages and events).
    pool: Pool
    worker_kind: Literal["agent", "runner", "train"]
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
    Stage.MERGE: StageDef(
        stage=Stage.MERGE,
        pool="trains",
        worker_kind="train",
        queued=TaskState.MERGE_QUEUED,
        running=TaskState.MERGING,
        queued_event=EventKind.MERGE_QUEUED,
        needs_workspace=False,
    ),
}
# What a merge attempt's exit code means (any other is a failure).
_MERGE_OUTCOMES = {
    0: Outcome.OK,
    EXIT_CONFLICT: Outcome.CONFLICT,
    EXIT_RETEST: Outcome.RETEST,
    EXIT_WAIT: Outcome.WAIT,
}

FIRST_STAGE = Stage.AGENT


# The pipelines there are, shared by every task that runs them (100,000 tasks
# would otherwise hold 100,000 equal tuples).
_AGENT_ONLY: tuple[Stage, ...] = (Stage.AGENT,)
_AGENT_THEN_CI: tuple[Stage, ...] = (Stage.AGENT, Stage.CI)
_AGENT_THEN_MERGE: tuple[Stage, ...] = (Stage.AGENT, Stage.MERGE)
_AGENT_CI_MERGE: tuple[Stage, ...] = (Stage.AGENT, Stage.CI, Stage.MERGE)


def pipeline(spec: TaskSpec, config: FleetConfig | None = None) -> tuple[Stage, ...]:
    """The stages `spec` runs, in order (landing only with `config`'s `[repo]`)."""
    if config is not None and config.repo is not None and spec.land:
        return _AGENT_THEN_MERGE if spec.ci is None else _AGENT_CI_MERGE
    return _AGENT_ONLY if spec.ci is None else _AGENT_THEN_CI


def worker_of(spec: TaskSpec, stage: Stage) -> str | None:
    """The name of the agent or runner that runs `stage` of `spec` (None if it has none)."""
    if stage is Stage.MERGE:
        return TRAIN
    return spec.agent if stage is Stage.AGENT else spec.ci


def workers(config: FleetConfig, stage: Stage) -> Mapping[str, WorkerSpec]:
    """Every worker that can run `stage`, by name."""
    pool = STAGES[stage].pool
    if pool == "trains":
        return {TRAIN: TRAIN_WORKER} if config.repo is not None else {}
    return config.agents if pool == "agents" else config.runners


def outcome_of(stage: Stage, exit_code: int | None) -> Outcome:
    """How an attempt of `stage` that ended on its own went, by its exit code."""
    if stage is Stage.MERGE:
        return _MERGE_OUTCOMES.get(exit_code if exit_code is not None else -1, Outcome.FAILED)
    return Outcome.OK if exit_code == 0 else Outcome.FAILED


def stage_of_state(state: TaskState) -> Stage | None:
    """The stage a task waits for or runs in `state` (None outside any stage)."""
    for definition in STAGES.values():
        if state is definition.running or (
            definition.queued_event is not None and state is definition.queued
        ):
            return definition.stage
    return None
