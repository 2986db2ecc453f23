"""The workspace hook: where a task's attempts work, made before and cleared after.

By default every attempt runs in its worker's `workdir`. A fleet that gives each
task a place of its own (a git worktree on the task's branch, for one) plugs a
`Workspace` into the engine: `prepare` runs before each attempt of a stage that
needs the workspace (stages.StageDef.needs_workspace) and says where it runs and
what it adds to its environment; `release` runs once the task has ended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from fleetdeck.model import Attempt, TaskState


@dataclass(slots=True, frozen=True)
class Place:
    """Where an attempt works: its directory (None: the worker's) and extra variables."""

    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class Workspace(Protocol):
    """Prepares and clears each task's place."""

    async def prepare(self, task: str, attempt: Attempt) -> Place:
        """Make (or reuse) the task's place for `attempt`, before it starts. An
        exception fails the attempt with its message, like a launch error."""

    async def release(self, task: str, state: TaskState) -> None:
        """The task ended in `state` (succeeded, failed, cancelled): clear what it
        no longer needs. Must not raise."""
