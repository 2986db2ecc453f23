"""What the main screen reads of the engine per refresh: one snapshot, and the task
views that changed since the previous refresh.

The engine keeps each task's view from one snapshot to the next until something
in it changes, so a changed view is a different object: finding the changes is
an identity check per task, and the queue redraws only those.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetdeck.client import EngineClient
from fleetdeck.snapshot import FleetSnapshot, TaskView


@dataclass(frozen=True, slots=True)
class Refresh:
    """One refresh's worth of the engine.

    `full`: `changed` is every task, in config order (the first refresh).
    """

    snapshot: FleetSnapshot
    changed: tuple[TaskView, ...]
    full: bool
    longest_id: int  # the longest task id, in characters (0 before any task is known)


class SnapshotFeed:
    """Polls one engine (through its client) for the main screen; remembers what it
    has handed out."""

    def __init__(self, client: EngineClient) -> None:
        self._client = client
        self._known: tuple[TaskView, ...] | None = None  # the views of the last poll
        self._longest = 0

    def poll(self) -> Refresh:
        """The snapshot now, and the task views that changed since the last poll."""
        snapshot = self._client.snapshot()
        tasks = snapshot.tasks
        known, self._known = self._known, tasks
        if known is None:
            self._longest = max((len(task.id) for task in tasks), default=0)
            return Refresh(snapshot, tasks, True, self._longest)
        # Tasks come in the same order every time: compared place by place, no
        # lookups. (A view in another place would only count as changed.)
        changed = tuple(new for new, old in zip(tasks, known, strict=False) if new is not old)
        return Refresh(snapshot, changed + tasks[len(known) :], False, self._longest)
