"""The workspace hook: where a task's attempts work, made before and cleared after.

By default every attempt runs in its worker's `workdir`. A fleet that gives each
task a place of its own (a git worktree on the task's branch, for one) plugs a
`Workspace` into the engine: `prepare` runs before each attempt of a stage that
needs the workspace (stages.StageDef.needs_workspace) and says where it runs and
what it adds to its environment; `release` runs once the task has ended. A
workspace may also have `after_attempt` (see `ReviewsAttempts`): it runs after
each successful attempt of such a stage, before the core hears of its end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class ReviewsAttempts(Protocol):
    """A workspace that acts on each successful attempt (commits its work, say)."""

    async def after_attempt(self, task: str, attempt: Attempt) -> Mapping[str, Any]:
        """The attempt's process exited 0: what to add to its `attempt_finished`
        event. An exception fails the attempt with its message."""


@runtime_checkable
class ShowsDiffs(Protocol):
    """A workspace that can show a task's change as a patch."""

    async def diff(self, base: str, head: str) -> str:
        """The patch from commit `base` to commit `head`, uncoloured."""


@runtime_checkable
class StacksWorkspaces(Protocol):
    """A workspace that can make a task's place on an upstream's unlanded work
    (the pipelined policy on a `[repo]`: engine/speculation.py `stacked_on`)."""

    def stack_on(self, task: str, upstream: str | None) -> None:
        """The next agent attempt of `task` starts on `upstream`'s work (None:
        on the target's tip). Told just before `prepare`."""
