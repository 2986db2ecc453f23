"""The engine keeps each task's view between snapshots until something in it
changes: views compare by identity, and a stale view would be a wrong screen."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleetdeck.engine import Engine
from fleetdeck.journal import Journal
from fleetdeck.model import TaskState
from fleetdeck.snapshot import TaskView
from fleetdeck.testing import ManualExecutor
from tui_support import FakeClock, fleet, until


def views(engine: Engine) -> dict[str, TaskView]:
    return {view.id: view for view in engine.snapshot().tasks}


async def test_views_change_exactly_when_their_task_or_its_dependencies_do(
    tmp_path: Path,
) -> None:
    tasks = [
        {"id": "a", "agent": "coder"},
        {"id": "b", "agent": "coder", "depends_on": ["a"]},
        {"id": "c", "agent": "coder", "depends_on": ["a", "b"]},
        {"id": "other", "agent": "coder", "depends_on": ["b"]},
    ]
    executor = ManualExecutor()
    journal = Journal(tmp_path / "state")
    engine = Engine(
        fleet(tmp_path, tasks),
        journal=journal,
        executors={"local": executor},
        clock=FakeClock(),
        sample_interval=None,
    )
    # Not until settled: after b fails everything has ended until the retry.
    run = asyncio.create_task(engine.run(until_settled=False))
    await until(lambda: "a" in executor.current)
    first = views(engine)
    assert first["a"].state is TaskState.RUNNING and first["a"].attempts == 1
    assert first["c"].waiting_for == ("a", "b")
    again = views(engine)
    assert all(again[task] is first[task] for task in first)  # nothing changed

    executor.finish("a")
    await until(lambda: "b" in executor.current)
    second = views(engine)
    assert second["a"].state is TaskState.SUCCEEDED
    assert second["b"].state is TaskState.RUNNING
    # c waits for one dependency less; `other` (on b only) is untouched.
    assert second["c"].waiting_for == ("b",) and second["c"] is not first["c"]
    assert second["other"] is first["other"]

    executor.finish("b", exit_code=1)  # no retries: b fails, c and other are blocked
    await until(lambda: engine.task("c").state is TaskState.BLOCKED)
    third = views(engine)
    assert third["b"].state is TaskState.FAILED
    assert (third["c"].state, third["c"].blocked_by) == (TaskState.BLOCKED, "b")
    assert (third["other"].state, third["other"].blocked_by) == (TaskState.BLOCKED, "b")
    assert third["a"] is second["a"]

    engine.retry("b")  # the operator retries: b runs again, its dependents wait for it
    await until(lambda: "b" in executor.current and engine.task("b").attempts[-1].number == 2)
    fourth = views(engine)
    assert (fourth["b"].state, fourth["b"].attempts) == (TaskState.RUNNING, 2)
    assert (fourth["c"].state, fourth["c"].blocked_by) == (TaskState.PENDING, None)
    executor.finish("b")
    await until(lambda: "c" in executor.current and "other" in executor.current)
    fifth = views(engine)
    assert fifth["c"].waiting_for == () and fifth["c"].state is TaskState.RUNNING
    executor.finish("c")
    executor.finish("other")
    await until(lambda: engine.task("c").state is TaskState.SUCCEEDED)
    await until(lambda: engine.task("other").state is TaskState.SUCCEEDED)
    assert all(view.state is TaskState.SUCCEEDED for view in views(engine).values())
    engine.request_stop()
    await asyncio.wait_for(run, 10)
    journal.close()
