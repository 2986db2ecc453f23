"""`add` in the engine: acknowledged only once the journal holds it, and the run
goes on to its end with the tasks added (real agents, the real journal)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from conftest import EngineHarness, make_fleet
from fleetdeck.client import CommandError
from fleetdeck.inprocess import InProcessClient
from fleetdeck.journal import DB_NAME
from fleetdeck.model import TaskState


def _journaled_adds(state_dir: Path) -> list[tuple[str, dict[str, object]]]:
    """The `task_added` events another process reads in the journal now."""
    db = sqlite3.connect(state_dir / DB_NAME)
    try:
        rows = db.execute("SELECT task, data FROM events WHERE event = 'task_added'").fetchall()
    finally:
        db.close()
    return [(task, json.loads(data)) for task, data in rows]


async def test_an_add_is_acknowledged_only_once_the_journal_holds_it(
    harness: EngineHarness, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    hold = f"while [ ! -e {gate} ]; do sleep 0.02; done"
    fleet = make_fleet(tmp_path, [{"id": "hold", "agent": "sh", "prompt": hold}])
    engine = harness.engine(fleet)
    client = InProcessClient(engine, what_if=False)
    running = asyncio.ensure_future(engine.run())
    while engine.run_id is None:
        await asyncio.sleep(0.01)
    table = {"id": "more", "agent": "sh", "prompt": "true", "depends_on": ["hold"]}
    assert await client.add([table]) == ["more"]
    # Read at once, from another connection (as a restarted supervisor would):
    # the acknowledged task is already durable.
    assert _journaled_adds(tmp_path / "state") == [("more", {"spec": table})]
    # Refused: the config's message, and nothing journaled.
    with pytest.raises(
        CommandError, match=r"duplicate task id 'more' \(first used by tasks\[1\]\)"
    ):
        await client.add([{"id": "more", "agent": "sh"}])
    assert len(_journaled_adds(tmp_path / "state")) == 1
    assert engine.task("more").state is TaskState.PENDING
    gate.touch()
    result = await running
    assert result.exit_code == 0
    assert {task.id: task.state for task in engine.tasks()} == {
        "hold": TaskState.SUCCEEDED,
        "more": TaskState.SUCCEEDED,
    }
    assert [(s.task, s.state) for s in engine.summaries()] == [
        ("hold", TaskState.SUCCEEDED),
        ("more", TaskState.SUCCEEDED),
    ]
    # Once the run has ended, nothing can be added to it.
    with pytest.raises(CommandError, match="the run is not going"):
        await client.add([{"id": "late", "agent": "sh"}])


async def test_an_added_task_lands_on_a_real_repository(
    harness: EngineHarness, tmp_path: Path
) -> None:
    from git_support import git, make_repo
    from test_worktrees import land_fleet, landing

    repo = make_repo(tmp_path / "repo")
    gate = tmp_path / "gate"
    fleet = land_fleet(
        tmp_path,
        repo,
        [
            {
                "id": "a",
                "agent": "sh",
                "prompt": f"add a\nwhile [ ! -e {gate} ]; do sleep 0.02; done; echo a > a.txt",
            }
        ],
        runners={"t": {"command": ["sh", "-c", 'test -f "$FLEETDECK_TASK.txt"'], "slots": 1}},
    )
    engine = harness.engine(fleet, **landing(fleet, tmp_path))
    client = InProcessClient(engine, what_if=False)
    running = asyncio.ensure_future(engine.run())
    while engine.run_id is None:
        await asyncio.sleep(0.01)
    table = {"id": "b", "agent": "sh", "prompt": "add b\necho b > b.txt", "ci": "t"}
    await client.add([{**table, "depends_on": ["a"]}])
    gate.touch()
    result = await running
    assert result.exit_code == 0
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == [
        "README",
        "a.txt",
        "b.txt",
    ]
    assert git(repo, "log", "-1", "--format=%s", "main") == "b: add b"


async def test_a_run_kept_going_after_its_end_takes_an_added_task(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(tmp_path, [{"id": "quick", "agent": "sh", "prompt": "true"}])
    engine = harness.engine(fleet)
    client = InProcessClient(engine, what_if=False)
    running = asyncio.ensure_future(engine.run(until_settled=False))
    while engine.run_id is None or engine.task("quick").state is not TaskState.SUCCEEDED:
        await asyncio.sleep(0.01)
    out = tmp_path / "late.out"
    await client.add([{"id": "late", "agent": "sh", "prompt": f"echo late > {out}"}])
    while engine.task("late").state is not TaskState.SUCCEEDED:
        await asyncio.sleep(0.01)
    assert out.read_text() == "late\n"
    engine.request_stop()
    result = await running
    assert result.exit_code == 0
