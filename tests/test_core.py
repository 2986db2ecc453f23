"""The core's lifecycle in virtual time: every transition, with the exact events.

No loop, no processes, no sleeps: `CoreSim` (tests/core_support.py) plays the
shell, and each test says when attempts start and end and when time passes.
"""

from __future__ import annotations

from core_support import CoreSim, fleet_toml
from fleetdeck.engine import commands


def chain(*ids: str, **fields: object) -> list[dict[str, object]]:
    """Tasks each depending on the one before."""
    return [
        {"id": task, **({"depends_on": [ids[i - 1]]} if i else {}), **fields}
        for i, task in enumerate(ids)
    ]


def test_times_count_from_a_launch_at_virtual_time_zero() -> None:
    """A virtual clock starts at 0.0: a launch then is at a time like any other,
    for the task's duration and for what is left of its timeout."""
    sim = CoreSim(fleet_toml([{"id": "a", "timeout": 10}, {"id": "b"}]))
    sim.start()
    sim.advance(4.0)
    sim.begin("a")  # its process took 4 s to exist: 6 s of its timeout are left
    sim.begin("b")
    sim.advance(5.0)
    sim.end("b")
    assert sim.fx.events[-1].data == {"attempts": 1, "duration": 9.0}
    sim.advance(0.99)
    assert sim.fx.stopped == []
    sim.advance(0.02)
    assert [running.attempt.task for running, _ in sim.fx.stopped] == ["a"]


def test_cancelling_a_blocked_task_moves_none_of_its_dependents_into_attention() -> None:
    """b's dependent c was blocked through b: once b is cancelled, c is blocked by
    a cancel, which needs no attention; d, blocked by a failure of its own, still does."""
    sim = CoreSim(
        fleet_toml(
            [
                *chain("a", "b", "c"),
                {"id": "x"},
                {"id": "d", "depends_on": ["b", "x"]},
            ]
        )
    )
    sim.start()
    sim.end("x", exit_code=1)
    sim.end("a", exit_code=1)
    assert sim.states() == {
        "a": "failed",
        "b": "blocked",
        "c": "blocked",
        "x": "failed",
        "d": "blocked",
    }
    attention = {
        task.id for node, task in enumerate(sim.core.tasks) if sim.core.needs_attention(node)
    }
    assert attention == {"a", "b", "x", "d"}
    commands.cancel(sim.core, "b")
    attention = {
        task.id for node, task in enumerate(sim.core.tasks) if sim.core.needs_attention(node)
    }
    assert attention == {"a", "x", "d"}
