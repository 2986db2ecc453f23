"""The task detail screen at the smallest terminal: the end of the log in sight,
and each attempt's outcome and error as the report words them."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Log

from fleetdeck.model import Outcome, Stage, TaskState
from fleetdeck.snapshot import AttemptRecord
from fleetdeck.testing import ManualExecutor
from fleetdeck.tui.detail import TaskDetailScreen, outcome_text
from tui_support import engine_of, fleet, make_app, until

SMALL = (80, 24)


def _visible(log: Log) -> list[str]:
    """The log's lines the pane shows now."""
    top = round(log.scroll_y)
    return list(log.lines[top : top + log.scrollable_content_region.height])


async def test_the_failed_tasks_log_shows_its_last_line_at_80x24(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "broken", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test(size=SMALL) as pilot:
        await until(lambda: "broken" in executor.current)
        for n in range(1, 16):
            executor.say("broken", f"step {n}")
        executor.say("broken", "error: the change does not compile")
        executor.finish("broken", exit_code=1)
        await until(lambda: engine_of(app).task("broken").state is TaskState.FAILED)
        await pilot.pause()
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen)
        await pilot.pause(0.3)
        log = app.screen.query_one("#log", Log)
        assert log.max_scroll_y > 0  # the log is taller than its pane at 80x24
        assert "error: the change does not compile" in _visible(log)
        table = app.screen.query_one("#attempts", DataTable)
        row = table.get_row_at(0)
        assert str(row[2]) == "failed" and str(row[7]) == "exit 1"
    journal.close()


async def test_the_log_follows_new_lines_until_the_user_scrolls_up(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "talky", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test(size=SMALL) as pilot:
        await until(lambda: "talky" in executor.current)
        await pilot.pause()
        await pilot.press("enter")
        log = app.screen.query_one("#log", Log)
        for n in range(1, 21):
            executor.say("talky", f"line {n}")
        await pilot.pause(0.5)
        assert log.max_scroll_y > 0 and "line 20" in _visible(log)
        log.scroll_home(animate=False)  # the user reads back
        await pilot.pause()
        executor.say("talky", "line 21")
        await pilot.pause(0.5)
        assert log.scroll_y == 0 and "line 21" not in _visible(log)
        log.scroll_end(animate=False)  # back at the end: follow again
        await pilot.pause()
        executor.say("talky", "line 22")
        await pilot.pause(0.5)
        assert "line 22" in _visible(log)
    journal.close()


def _record(outcome: Outcome | None, exit_code: int | None = None) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=1,
        task="t",
        stage=Stage.AGENT,
        number=1,
        worker="coder",
        host="local",
        queued_at=None,
        started_at=1.0,
        finished_at=None if outcome is None else 2.0,
        outcome=outcome,
        exit_code=exit_code,
        error=None,
        log_path="t.1.agent.log",
        output_path="t.1.agent.out",
    )


def test_an_attempt_without_an_outcome_is_running_only_while_the_run_lives() -> None:
    assert str(outcome_text(_record(None), live=True)) == "running"
    assert str(outcome_text(_record(None), live=False)) == "interrupted"
    assert str(outcome_text(_record(Outcome.FAILED, 1), live=False)) == "failed"
