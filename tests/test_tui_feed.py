"""What the main screen's feed hands over per refresh: the task views that changed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

from fleetdeck.engine import Engine
from fleetdeck.model import TaskState
from fleetdeck.snapshot import TaskView
from fleetdeck.tui.feed import SnapshotFeed
from test_tui_queue import view


@dataclass(frozen=True)
class Snapshot:
    tasks: tuple[TaskView, ...]


@dataclass
class Views:
    """Stands for the engine: its snapshots show the task views the test sets."""

    tasks: tuple[TaskView, ...]

    def snapshot(self) -> Snapshot:
        return Snapshot(self.tasks)


def test_only_the_views_that_are_new_objects_are_handed_over() -> None:
    first = (view("a", 0), view("b", 0), view("long-name", 1))
    engine = Views(first)
    feed = SnapshotFeed(cast(Engine, engine))
    refresh = feed.poll()
    assert refresh.full and refresh.changed == first and refresh.longest_id == 9
    assert feed.poll().changed == ()

    b = replace(first[1], state=TaskState.RUNNING)
    engine.tasks = (first[0], b, first[2])
    refresh = feed.poll()
    assert not refresh.full and len(refresh.changed) == 1 and refresh.changed[0] is b

    late = view("late", 2)  # a task the engine did not show before
    engine.tasks = (*engine.tasks, late)
    assert feed.poll().changed == (late,)
