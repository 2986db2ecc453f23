"""The operator's run in the TUI: it ends by itself, the screen stays for browsing,
and the keys that need a live run say that it has finished."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from textual.binding import Binding
from textual.command import CommandPalette
from textual.widgets import OptionList

from fleetdeck.config import build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.journal import Journal
from fleetdeck.model import TaskState
from fleetdeck.tui.app import FleetApp
from fleetdeck.tui.confirm import ConfirmScreen
from fleetdeck.tui.detail import TaskDetailScreen
from fleetdeck.tui.header import FleetHeader
from fleetdeck.tui.queue import QueueTable
from fleetdeck.tui.timeline import TimelineScreen
from tui_support import FakeClock, ManualExecutor, app_over, engine_of, fleet, make_app, until


def runs(tmp_path: Path) -> list[tuple[str, int | None]]:
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    try:
        return db.execute("SELECT status, exit_code FROM runs").fetchall()
    finally:
        db.close()


def messages(app: FleetApp) -> list[str]:
    return [notification.message for notification in app._notifications]


async def test_a_run_of_real_processes_ends_by_itself_and_q_then_leaves_at_once(
    tmp_path: Path,
) -> None:
    config = build_fleet(
        {
            "fleet": {"name": "t", "state_dir": "state"},
            "agents": {"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 2}},
            "tasks": [
                {"id": "fine", "agent": "sh", "prompt": "echo fine"},
                {"id": "broken", "agent": "sh", "prompt": "echo no; exit 3"},
            ],
        },
        source="t.toml",
        base_dir=tmp_path,
    )
    journal = Journal(tmp_path / "state")
    engine = Engine(config, journal=journal, executors=build_executors(config))
    app = app_over(engine)
    async with app.run_test() as pilot:
        await until(lambda: app.result is not None)
        await pilot.pause()
        # Journaled as finished while the screen is still open, not when q is pressed.
        assert runs(tmp_path) == [("finished", 1)]
        assert app.is_running and app.return_value is None
        header = str(app.query_one(FleetHeader).content)
        assert "■ finished · exit 1" in header and "1/2 done" in header
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen), "nothing in flight: no question"
    assert app.return_value == 1
    journal.close()


async def test_after_the_end_the_clock_stops_and_live_commands_say_so(tmp_path: Path) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    tasks = [{"id": "one", "agent": "coder"}, {"id": "two", "agent": "coder"}]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path, executor=executor, clock=clock)
    async with app.run_test() as pilot:
        await until(lambda: len(executor.current) == 2)
        clock.advance(5.0)
        executor.finish("one")
        executor.finish("two", exit_code=1)
        await until(lambda: app.result is not None)
        end = engine_of(app).finished_at
        assert end is not None
        clock.advance(60.0)  # the screen stays open a minute more
        app.refresh_view()
        snapshot = engine_of(app).snapshot()
        assert snapshot.finished_at == end and snapshot.exit_code == 1
        assert snapshot.elapsed == end - engine_of(app).started_at
        assert str(app.query_one(FleetHeader).content).endswith(" 0:05")  # not 1:05
        # The timeline keeps its scale: its axis ends at the run's end.
        assert engine_of(app).timeline().now == end
        await pilot.pause()
        assert app.selected_task() == "two"
        # Nothing can be retried any more: the queue does not offer it.
        assert str(app.query_one(QueueTable).get_cell("two", "waits for")) == ""
        for key in ("r", "p", "s", "c"):
            await pilot.press(key)
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        said = [m for m in messages(app) if m.startswith("The run has finished:")]
        assert len(said) == 4, messages(app)
        assert not engine_of(app).paused and engine_of(app).policy == "wave"
        assert engine_of(app).task("two").state is TaskState.FAILED
        await pilot.press("q")
    assert app.return_value == 1
    journal.close()


async def test_ctrl_c_asks_like_q_and_only_once(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "busy", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test() as pilot:
        await until(lambda: "busy" in executor.current)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        depth = len(app.screen_stack)
        await pilot.press("ctrl+c")  # again, while the question is up: still one
        await pilot.pause()
        assert len(app.screen_stack) == depth
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert engine_of(app).task("busy").state is TaskState.RUNNING
        await pilot.press("ctrl+c", "y")
        await until(lambda: app.result is not None)
    assert app.return_value == 130
    journal.close()


async def test_the_palette_has_only_operator_commands_and_searches_descriptions(
    tmp_path: Path,
) -> None:
    app, journal = make_app(fleet(tmp_path, [{"id": "x", "agent": "coder"}]), tmp_path)
    async with app.run_test() as pilot:
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for textual_own in ("Theme", "Keys", "Maximize", "Minimize", "Screenshot"):
            assert textual_own not in titles
        assert titles.count("Quit") == 1
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert isinstance(app.screen, CommandPalette)
        # In no command's name, only in "Pause or resume"'s description.
        await pilot.press(*"launches")
        await pilot.pause(0.5)
        options = app.screen.query_one(OptionList)
        shown = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any("Pause or resume" in prompt for prompt in shown), shown
        assert not any("Theme" in prompt for prompt in shown)
        await pilot.press("escape")
    journal.close()


async def test_a_shows_the_done_tasks_and_enter_opens_one(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [{"id": "early", "agent": "coder"}, {"id": "late", "agent": "coder"}]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path, executor=executor)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: len(executor.current) == 2)
        executor.finish("early", output="the early result")
        await until(lambda: engine_of(app).task("early").state is TaskState.SUCCEEDED)
        app.refresh_view()
        table = app.query_one(QueueTable)
        assert table.row_keys() == ["wave:0", "late"]
        await pilot.press("a")
        assert table.row_keys() == ["wave:0", "late", "wave:done", "early"]
        assert str(table.get_cell("wave:done", "task")) == "done · 1"
        await pilot.press("end")  # the last row: the task done
        assert app.selected_task() == "early"
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen) and app.screen.task_id == "early"
        await pilot.pause(0.3)
        assert "the early result" in str(app.screen.query_one("#output").render())
        await pilot.press("escape")
        # A task ending while the done tasks are shown moves to their group.
        executor.finish("late", exit_code=1)
        await until(lambda: app.result is not None)
        app.refresh_view()
        assert table.row_keys() == ["wave:0", "late", "wave:done", "early"]
        await pilot.press("a")
        assert table.row_keys() == ["wave:0", "late"]
    journal.close()


async def test_a_failed_task_has_no_output_rather_than_not_yet(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [{"id": "bad", "agent": "coder"}, {"id": "busy", "agent": "coder"}]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path, executor=executor)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: len(executor.current) == 2)
        executor.finish("bad", exit_code=1)
        await until(lambda: engine_of(app).task("bad").state is TaskState.FAILED)
        await pilot.pause()
        assert app.selected_task() == "bad"
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert str(app.screen.query_one("#output").render()) == "none (failed)"
    journal.close()


async def test_enter_on_a_timeline_bar_opens_its_task(tmp_path: Path) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    tasks = [{"id": "first", "agent": "coder"}, {"id": "second", "agent": "coder"}]
    app, journal = make_app(
        fleet(tmp_path, tasks, slots=1), tmp_path, executor=executor, clock=clock
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: "first" in executor.current)
        clock.advance(2.0)
        executor.finish("first")
        await until(lambda: "second" in executor.current)
        clock.advance(1.0)
        await pilot.press("t")
        assert isinstance(app.screen, TimelineScreen)
        assert app.selected_task() == "second"  # the latest bar, to begin with
        await pilot.press("shift+left")  # the previous bar in its lane
        assert app.selected_task() == "first"
        await pilot.press("shift+left")  # no bar before the first: it stays
        assert app.selected_task() == "first"
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen) and app.screen.task_id == "first"
        await pilot.press("escape")
        assert isinstance(app.screen, TimelineScreen)
        await pilot.press("shift+right", "enter")
        assert isinstance(app.screen, TaskDetailScreen) and app.screen.task_id == "second"
    journal.close()


async def test_yes_to_quit_after_the_run_ended_meanwhile_leaves(tmp_path: Path) -> None:
    """The last task ends while the quit question is up: `y` still leaves, with the
    code of the run that finished (nothing was interrupted)."""
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "last", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test() as pilot:
        await until(lambda: "last" in executor.current)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        executor.finish("last")
        await until(lambda: app.result is not None)
        await pilot.press("y")
        await pilot.pause()
    assert app.return_value == 0
    assert runs(tmp_path) == [("finished", 0)]
    journal.close()


def test_help_and_readme_list_every_key_of_the_footer_and_ctrl_c() -> None:
    from fleetdeck.tui.help import KEYS

    display = {"slash": "/", "question_mark": "?"}
    shown = {display.get(b.key, b.key) for b in FleetApp.BINDINGS if isinstance(b, Binding)}
    helped = {key for key, _ in KEYS}
    assert shown - {"escape", "j", "k"} <= helped  # esc, j, k: under their own names
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for key in ("a", "ctrl+c", "enter", "t", "q"):
        assert key in helped
        assert f"| `{key}` |" in readme


async def test_the_end_of_run_notice_is_brief_and_leaves_the_load_in_sight(
    tmp_path: Path,
) -> None:
    """At 80x24 the notice covers the cognitive-load pane: one line, gone in 3 s
    (the header already says the run has finished)."""
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "one", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: "one" in executor.current)
        executor.finish("one", exit_code=1)
        await until(lambda: app.result is not None)
        await pilot.pause()
        notice = [n for n in app._notifications if "finished" in n.message]
        assert len(notice) == 1 and notice[0].timeout <= 3
        # One line of a toast at 80 columns: half the width, less its padding and edge.
        assert len(notice[0].message) <= 80 // 2 - 4, notice[0].message
    journal.close()
