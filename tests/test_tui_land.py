"""What the operator sees of a fleet that lands its changes (real repositories,
real processes): the merge stage in the panes, each task's branch, base and diff
stat on its detail screen, its patch on `d`, and a warning when two changes in
flight touch the same files."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import App
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import RichLog, Static

from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.inprocess import InProcessClient
from fleetdeck.journal import Journal
from fleetdeck.model import TRAIN_HOST, Stage, TaskState
from fleetdeck.snapshot import AttemptView, FleetSnapshot, TaskDetail
from fleetdeck.snapshot_codec import from_json, to_json
from fleetdeck.tui.contention import ContentionPane
from fleetdeck.tui.detail import TaskDetailScreen
from fleetdeck.tui.diff import DiffScreen
from fleetdeck.tui.inflight import _Cells
from fleetdeck.tui.load import LoadPane
from fleetdeck.tui.queue import QueueTable
from fleetdeck.workspace.train import Train
from fleetdeck.workspace.worktrees import GitWorkspace
from git_support import git, make_repo
from test_worktrees import land_fleet
from tui_support import app_over, until


def rendered(widget: Widget) -> str:
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.outer_size)))


def text_of(widget: Static) -> str:
    content = widget.render()
    return content.plain if isinstance(content, Text) else str(content)


def engine_client(app: App[None]) -> InProcessClient:
    client = app.client  # type: ignore[attr-defined]
    assert isinstance(client, InProcessClient)
    return client


def landing_app(tmp_path: Path, gate: Path) -> tuple[App[None], Engine, Journal, Path]:
    """Two tasks that change one file (different lines: both land) and a CI that
    holds them in flight until `gate` exists."""
    repo = make_repo(tmp_path / "repo", {"shared.txt": "1\n2\n3\n4\n5\n", "README": "hi\n"})
    fleet = land_fleet(
        tmp_path,
        repo,
        [
            {"id": "a", "agent": "sh", "ci": "t", "prompt": "one\nsed -i s/^1$/one/ shared.txt"},
            {
                "id": "b",
                "agent": "sh",
                "ci": "t",
                "prompt": "five\nsed -i s/^5$/five/ shared.txt; echo b > b.txt",
            },
        ],
        runners={"t": {"command": ["sh", "-c", f"until [ -f {gate} ]; do sleep 0.05; done"]}},
    )
    workspace = GitWorkspace(fleet, tmp_path / "state")
    journal = Journal(tmp_path / "state")
    engine = Engine(
        fleet,
        journal=journal,
        executors={**build_executors(fleet), TRAIN_HOST: Train(fleet, workspace)},
        workspace=workspace,
        sample_interval=None,
    )
    return app_over(engine), engine, journal, repo


async def test_overlapping_changes_are_shown_and_the_diff_is_paged(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    app, engine, journal, repo = landing_app(tmp_path, gate)

    def state(task: str) -> TaskState:
        return engine.task(task).state

    in_ci = (TaskState.CI_QUEUED, TaskState.CI_RUNNING)
    async with app.run_test(size=(140, 40)) as pilot:
        await until(lambda: state("a") in in_ci and state("b") in in_ci, timeout=20)
        snapshot = engine.snapshot()
        views = {task.id: task for task in snapshot.tasks}
        assert views["a"].overlaps == ("b",) and views["b"].overlaps == ("a",)
        warned = {item.task: item for item in snapshot.attention}
        assert warned["a"].files == ("shared.txt",) and warned["a"].overlaps == ("b",)
        assert warned["b"].files == ("shared.txt",)
        # The merge train is a pool of its own.
        train = [pool for pool in snapshot.pools if pool.stage is Stage.MERGE]
        assert [(pool.name, pool.total) for pool in train] == [("train", 1)]
        # Plain data: they travel to a view in another process as they are.
        detail = engine.task_detail("b")
        assert detail.change is not None and detail.change.paths == ("b.txt", "shared.txt")
        assert from_json(TaskDetail, to_json(detail)) == detail
        assert from_json(FleetSnapshot, to_json(snapshot)) == snapshot
        app.refresh_view()  # type: ignore[attr-defined]
        await pilot.pause()
        assert "⚠ overlaps b" in str(app.query_one(QueueTable).get_cell("a", "waits for"))
        load = rendered(app.query_one(LoadPane))
        assert "a overlaps b: shared.txt" in load and "b overlaps a: shared.txt" in load
        assert "merge train" in rendered(app.query_one(ContentionPane))

        await app.push_screen(TaskDetailScreen(engine_client(app), "b"))
        await until(lambda: isinstance(app.screen, TaskDetailScreen))
        await pilot.pause()
        summary = text_of(app.screen.query_one("#summary", Static))
        base = git(repo, "rev-parse", "main")
        assert f"branch fleetdeck/b from {base[:10]}" in summary
        assert "2 files +2 -1" in summary and "⚠ overlaps a" in summary

        await pilot.press("d")
        await until(lambda: isinstance(app.screen, DiffScreen) and app.screen.loaded)
        lines = [strip.text for strip in app.screen.query_one(RichLog).lines]
        assert "+five" in lines and "-5" in lines and "+b" in lines
        assert any(line.startswith("diff --git a/b.txt") for line in lines)
        await pilot.press("escape")
        await pilot.press("escape")

        gate.write_text("")
        await until(lambda: state("a") is state("b") is TaskState.SUCCEEDED, timeout=30)
        # Landed: nothing in flight overlaps any more.
        assert engine.snapshot().attention == ()
        assert git(repo, "show", "main:shared.txt").splitlines() == ["one", "2", "3", "4", "five"]
    journal.close()


def test_the_in_flight_pane_names_the_merge_stage() -> None:
    attempt = AttemptView(
        attempt_id=1,
        task="a",
        stage=Stage.MERGE,
        number=1,
        worker="train",
        host=TRAIN_HOST,
        pid=None,
        started_at=0.0,
        log_path="a.log",
        stopping=False,
    )
    cells = _Cells.of(attempt, 3.0, "")
    assert cells.stage == "merge"
    assert str(cells.render(10)[1]) == "merge"
