"""Snapshots survive JSON: what a socket will carry to an attached view is what the
engine built, field for field."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetdeck.engine import Engine
from fleetdeck.inprocess import InProcessClient
from fleetdeck.journal import Journal
from fleetdeck.model import HostState, TaskState
from fleetdeck.snapshot import FleetSnapshot, HostView, TaskDetail, Timeline
from fleetdeck.snapshot_codec import SnapshotDecodeError, from_json, to_json
from fleetdeck.testing import ManualExecutor
from tui_support import FakeClock, fleet, small_fleet_tasks, until


def through_json(value: Any) -> Any:
    """`value` encoded, written as JSON text, read back and decoded."""
    return from_json(type(value), json.loads(json.dumps(to_json(value))))


def strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Any value of the snapshot type `tp` (finite floats: NaN equals nothing)."""
    origin = typing.get_origin(tp)
    if origin is types.UnionType or origin is typing.Union:
        return st.one_of(*(strategy(arg) for arg in typing.get_args(tp)))
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy(args[0]), max_size=3).map(tuple)
        return st.tuples(*(strategy(arg) for arg in args))
    if origin is dict:
        key, value = typing.get_args(tp)
        return st.dictionaries(strategy(key), strategy(value), max_size=3)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {field.name: strategy(hints[field.name]) for field in dataclasses.fields(tp)}
        return st.builds(tp, **fields)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    simple: dict[Any, st.SearchStrategy[Any]] = {
        float: st.floats(allow_nan=False, allow_infinity=False),
        int: st.integers(),
        str: st.text(max_size=8),
        bool: st.booleans(),
        type(None): st.none(),
    }
    return simple[tp]


@settings(max_examples=60, deadline=None)
@given(st.one_of(strategy(FleetSnapshot), strategy(TaskDetail), strategy(Timeline)))
def test_any_snapshot_detail_or_timeline_comes_back_equal(value: Any) -> None:
    assert through_json(value) == value


async def test_a_real_run_mid_way_comes_back_equal(tmp_path: Path) -> None:
    """A busy moment of a real engine: attempts running, in CI, failed and retried,
    a CI queue, a task that needs attention, contention history."""
    executor, clock = ManualExecutor(), FakeClock()
    journal = Journal(tmp_path / "state")
    engine = Engine(
        fleet(tmp_path, small_fleet_tasks()),
        journal=journal,
        executors={"local": executor},
        clock=clock,
        sample_interval=None,
    )
    client = InProcessClient(engine)
    run = asyncio.create_task(engine.run())
    try:

        def state(task: str) -> TaskState:
            return engine.task(task).state

        await until(lambda: len(executor.current) == 3)
        clock.advance(2.5)
        engine.sample()
        executor.finish("schema", output="schema done")
        executor.finish("auth-api", output="api done")
        await until(lambda: state("auth-api") is TaskState.CI_QUEUED)
        clock.advance(1.0)
        executor.finish("ui-shell", exit_code=1)
        await until(lambda: state("ui-shell") in (TaskState.READY, TaskState.RUNNING))
        engine.sample()
        clock.advance(0.5)
        snapshot = client.snapshot()
        assert snapshot.running and snapshot.pools and snapshot.pools[0].history
        assert any(pool.waiting for pool in snapshot.pools)
        detail = client.task_detail("schema")
        assert detail.attempts and detail.output == "schema done"
        timeline = client.timeline()
        assert len(timeline.attempts) >= 4 and timeline.lanes
        for value in (snapshot, detail, client.task_detail("login-endpoint"), timeline):
            assert through_json(value) == value
    finally:
        engine.request_stop(hurry=True)
        await run
        journal.close()


def test_enums_and_tuples_come_back_as_themselves_not_as_lookalikes() -> None:
    host = HostView("box", HostState.DOWN, 2, latency=0.25, load=(0.5, 1.0, 2.0))
    data = json.loads(json.dumps(to_json(host)))
    assert data == {
        "name": "box",
        "state": "down",
        "running": 2,
        "latency": 0.25,
        "load": [0.5, 1.0, 2.0],
        "reason": None,
    }
    back = from_json(HostView, data)
    assert back.state is HostState.DOWN and isinstance(back.load, tuple)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"name": "box", "state": "asleep", "running": 0}, "'asleep' is not a HostState"),
        ({"name": "box", "state": "up", "running": "2"}, "HostView.running: expected int"),
        ({"name": "box", "state": "up"}, "HostView: missing 'running'"),
        ({"name": "box", "state": "up", "running": True}, "HostView.running: expected int"),
    ],
)
def test_what_does_not_fit_its_type_is_refused_naming_the_field(
    data: dict[str, Any], says: str
) -> None:
    data = {"latency": None, "load": None, "reason": None, **data}
    with pytest.raises(SnapshotDecodeError, match=says):
        from_json(HostView, data)
