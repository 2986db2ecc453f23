"""Every key of the TUI, driven with Pilot, and what it does to the engine."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest
from textual.geometry import Region

from conftest import alive
from fleetdeck.config import build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.journal import Journal
from fleetdeck.model import TaskState
from fleetdeck.testing import ManualExecutor
from fleetdeck.tui.detail import TaskDetailScreen
from fleetdeck.tui.header import FleetHeader
from fleetdeck.tui.help import HelpScreen
from fleetdeck.tui.queue import QueuePane, QueueTable
from fleetdeck.tui.timeline import TimelineScreen
from tui_support import FakeClock, app_over, engine_of, fleet, make_app, until


async def test_a_single_task_is_selected(tmp_path: Path) -> None:
    app, journal = make_app(fleet(tmp_path, [{"id": "only", "agent": "coder"}]), tmp_path)
    async with app.run_test() as pilot:
        await until(lambda: engine_of(app).task("only").state is TaskState.RUNNING)
        await pilot.pause()
        assert app.selected_task() == "only"
    journal.close()


async def test_arrows_and_jk_move_over_tasks_and_skip_wave_headers(tmp_path: Path) -> None:
    tasks = [
        {"id": "a", "agent": "coder"},
        {"id": "b", "agent": "coder"},
        {"id": "c", "agent": "coder", "depends_on": ["a"]},
    ]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path)
    async with app.run_test() as pilot:
        await until(lambda: engine_of(app).task("b").state is TaskState.RUNNING)
        await pilot.pause()
        assert app.selected_task() == "a"
        await pilot.press("j")
        assert app.selected_task() == "b"
        await pilot.press("down")  # over the "wave 1" header row
        assert app.selected_task() == "c"
        await pilot.press("k")
        assert app.selected_task() == "b"
        await pilot.press("up", "up")  # the top header row is never selected
        assert app.selected_task() == "a"
    journal.close()


async def test_s_switches_the_policy_used_for_the_next_launch(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [{"id": "first", "agent": "coder"}, {"id": "second", "agent": "coder"}]
    app, journal = make_app(
        fleet(tmp_path, tasks, policy="sequential"), tmp_path, executor=executor
    )
    async with app.run_test() as pilot:
        await until(lambda: "first" in executor.current)
        await pilot.pause()
        assert "second" not in executor.current  # sequential: one task in flight
        await pilot.press("s")
        assert engine_of(app).policy == "wave"
        # The very next launch decision uses wave: the second task starts at once,
        # while the first is still running (switching kills nothing).
        await until(lambda: "second" in executor.current)
        assert engine_of(app).task("first").state is TaskState.RUNNING
        # Through every policy in the registry's order, back to the first.
        for policy in ("pipelined", "adaptive", "sequential"):
            await pilot.press("s")
            assert engine_of(app).policy == policy
    journal.close()


async def test_p_pauses_and_resumes_new_launches(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [
        {"id": "first", "agent": "coder"},
        {"id": "then", "agent": "coder", "depends_on": ["first"]},
    ]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path, executor=executor)
    async with app.run_test() as pilot:
        await until(lambda: "first" in executor.current)
        header = app.query_one(FleetHeader)
        await pilot.press("p")
        assert engine_of(app).paused
        assert "⏸ paused" in str(header.content)  # at once, not at the next refresh
        executor.finish("first")
        await until(lambda: engine_of(app).task("then").state is TaskState.READY)
        await pilot.pause(0.2)
        assert "then" not in executor.current  # held back while paused
        await pilot.press("p")
        assert not engine_of(app).paused
        assert "▶ running" in str(header.content)
        await until(lambda: "then" in executor.current)
    journal.close()


async def test_r_retries_the_selected_failed_task(tmp_path: Path) -> None:
    executor = ManualExecutor()
    # `busy` keeps the run going: once every task has ended, it is over.
    tasks = [{"id": "flaky", "agent": "coder"}, {"id": "busy", "agent": "coder"}]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path, executor=executor)
    async with app.run_test() as pilot:
        await until(lambda: "flaky" in executor.current and "busy" in executor.current)
        executor.finish("flaky", exit_code=1)
        await until(lambda: engine_of(app).task("flaky").state is TaskState.FAILED)
        await pilot.pause()
        assert app.selected_task() == "flaky"
        await pilot.press("r")
        await until(lambda: ("flaky", "agent", 2) in executor.attempts())
        assert engine_of(app).task("flaky").state is TaskState.RUNNING
    journal.close()


async def test_r_on_a_running_task_says_why_not(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "busy", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test() as pilot:
        await until(lambda: "busy" in executor.current)
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        messages = [n.message for n in app._notifications]
        assert any("cannot retry 'busy': it is running" in m for m in messages)
        assert executor.attempts() == [("busy", "agent", 1)]
    journal.close()


async def test_c_asks_then_cancel_kills_the_process(tmp_path: Path) -> None:
    """A real process this time: after `c` `y`, it is gone and the task cancelled."""
    pidfile = tmp_path / "pid"
    config = build_fleet(
        {
            "fleet": {"name": "t", "state_dir": "state", "grace_period": 0.5},
            "agents": {"sh": {"command": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]}},
            "tasks": [
                {"id": "long", "agent": "sh"},
                {"id": "after", "agent": "sh", "depends_on": ["long"]},
            ],
        },
        source="t.toml",
        base_dir=tmp_path,
    )
    journal = Journal(tmp_path / "state")
    engine = Engine(config, journal=journal, executors=build_executors(config))
    app = app_over(engine)
    async with app.run_test() as pilot:
        await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        pid = int(pidfile.read_text())
        await pilot.pause()
        assert app.selected_task() == "long"
        await pilot.press("c")
        assert alive(pid), "nothing happens before the answer"
        await pilot.press("y")
        await until(lambda: engine.task("long").state is TaskState.CANCELLED)
        assert not alive(pid)
        assert engine.task("after").state is TaskState.BLOCKED
    journal.close()


async def test_c_then_n_cancels_nothing(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "keep", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test() as pilot:
        await until(lambda: "keep" in executor.current)
        await pilot.press("c", "n")
        await pilot.pause()
        assert engine_of(app).task("keep").state is TaskState.RUNNING
    journal.close()


async def test_enter_opens_details_with_attempts_and_the_live_log(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "talky", "agent": "coder", "prompt": "say things"}]),
        tmp_path,
        executor=executor,
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await until(lambda: "talky" in executor.current)
        await pilot.pause()
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen)
        executor.say("talky", "thinking about it")
        await pilot.pause(0.4)  # the screen re-reads the log on a timer
        log = app.screen.query_one("#log")
        text = "\n".join(line for line in log.lines)  # type: ignore[attr-defined]
        assert "starting attempt 1" in text and "thinking about it" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, TaskDetailScreen)
    journal.close()


async def test_details_show_a_log_path_with_brackets_as_it_is(tmp_path: Path) -> None:
    """The log's path (under a state directory the user chose) is plain text: a
    `[/b]` in it is not markup, which would stop the app."""
    odd = tmp_path / "odd[" / "b]dir"  # the path reads odd[/b]dir
    odd.mkdir(parents=True)
    app, journal = make_app(
        fleet(odd, [{"id": "talky", "agent": "coder", "prompt": "say things"}]), odd
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        assert isinstance(app.screen, TaskDetailScreen)
        await pilot.pause(0.2)
        log = app.screen.query_one("#log")
        assert f"{odd}/" in log.border_subtitle.replace("\\[", "[")
        await pilot.press("escape")
    journal.close()


async def test_t_opens_the_timeline_and_question_mark_the_help(tmp_path: Path) -> None:
    app, journal = make_app(fleet(tmp_path, [{"id": "x", "agent": "coder"}]), tmp_path)
    async with app.run_test() as pilot:
        await pilot.press("t")
        assert isinstance(app.screen, TimelineScreen)
        await pilot.press("escape", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]
    journal.close()


async def test_slash_filters_the_queue_and_escape_clears_it(tmp_path: Path) -> None:
    tasks = [{"id": name, "agent": "coder"} for name in ("lint", "types", "lint-docs")]
    app, journal = make_app(fleet(tmp_path, tasks, slots=1), tmp_path)
    async with app.run_test() as pilot:
        await pilot.pause()
        await pilot.press("slash", "l", "i", "n", "t")
        await pilot.pause()
        table = app.query_one(QueueTable)
        shown = set(table.row_keys())
        assert shown == {"wave:0", "lint", "lint-docs"}
        await pilot.press("enter", "escape")
        await pilot.pause()
        assert app.query_one(QueuePane).filter_text == ""
        assert set(table.row_keys()) == {"wave:0", "lint", "types", "lint-docs"}
    journal.close()


async def test_the_filter_is_shown_as_typed_even_with_brackets(tmp_path: Path) -> None:
    tasks = [{"id": name, "agent": "coder"} for name in ("lint", "types")]
    app, journal = make_app(fleet(tmp_path, tasks, slots=1), tmp_path)
    async with app.run_test() as pilot:
        await pilot.pause()
        # Once parsed as markup, "[/" stopped the app with a MarkupError.
        await pilot.press("slash", "left_square_bracket", "slash", "b")
        await pilot.pause()
        pane = app.query_one(QueuePane)
        assert pane.filter_text == "[/b"
        title = pane.render_lines(Region(0, 0, pane.size.width, 1))[0].text
        assert "match '[/b'" in title
    journal.close()


async def test_q_with_work_in_flight_asks_then_stops_everything(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    config = build_fleet(
        {
            "fleet": {"name": "t", "state_dir": "state", "grace_period": 0.5},
            "agents": {"sh": {"command": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]}},
            "tasks": [{"id": "long", "agent": "sh"}],
        },
        source="t.toml",
        base_dir=tmp_path,
    )
    journal = Journal(tmp_path / "state")
    engine = Engine(config, journal=journal, executors=build_executors(config))
    app = app_over(engine)
    async with app.run_test() as pilot:
        await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        pid = int(pidfile.read_text())
        await pilot.press("q")
        await pilot.pause()
        assert alive(pid), "q asks first while work is in flight"
        await pilot.press("y")
        await until(lambda: app.result is not None)
    assert app.return_value == 130
    assert not alive(pid)
    journal.close()
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert db.execute("SELECT status FROM runs").fetchone() == ("interrupted",)


async def test_the_command_palette_lists_every_action(tmp_path: Path) -> None:
    app, journal = make_app(fleet(tmp_path, [{"id": "x", "agent": "coder"}]), tmp_path)
    async with app.run_test():
        titles = {command.title for command in app.get_system_commands(app.screen)}
    for title in (
        "Switch policy",
        "Cancel task",
        "Retry task",
        "Pause or resume",
        "Task details",
        "Timeline",
        "Filter queue",
        "Help",
        "Quit",
    ):
        assert title in titles
    journal.close()


@pytest.mark.skipif(sys.platform != "linux", reason="signals as on Linux")
async def test_sighup_stops_the_run_cleanly(tmp_path: Path) -> None:
    """The terminal going away (SIGHUP) stops work in flight and ends the app."""
    import os
    import signal

    pidfile = tmp_path / "pid"
    config = build_fleet(
        {
            "fleet": {"name": "t", "state_dir": "state", "grace_period": 0.5},
            "agents": {"sh": {"command": ["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"]}},
            "tasks": [{"id": "long", "agent": "sh"}],
        },
        source="t.toml",
        base_dir=tmp_path,
    )
    journal = Journal(tmp_path / "state")
    engine = Engine(config, journal=journal, executors=build_executors(config), clock=FakeClock())
    app = app_over(engine)
    async with app.run_test():
        await until(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
        pid = int(pidfile.read_text())
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: app.result is not None)
    assert app.result is not None and app.result.interrupted
    assert not alive(pid)
    journal.close()


@pytest.mark.skipif(sys.platform != "linux", reason="signals as on Linux")
async def test_sigterm_after_the_run_ended_leaves_the_screen_with_the_runs_code(
    tmp_path: Path,
) -> None:
    """The screen stays for browsing once the run has ended; a polite kill then
    (or the terminal going away) leaves it: no one may be there to press q."""
    import os
    import signal

    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "only", "agent": "coder"}]), tmp_path, executor=executor
    )
    async with app.run_test():
        await until(lambda: "only" in executor.current)
        executor.finish("only", exit_code=1)
        await until(lambda: app.result is not None)
        assert app.is_running
        os.kill(os.getpid(), signal.SIGTERM)
        await until(lambda: app.return_value is not None)
    assert app.return_value == 1
    journal.close()


async def test_wave_headers_count_the_tasks_still_in_the_queue(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [{"id": "a", "agent": "coder"}, {"id": "b", "agent": "coder"}]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path, executor=executor)
    async with app.run_test() as pilot:
        await until(lambda: len(executor.current) == 2)
        await pilot.pause()
        table = app.query_one(QueueTable)
        assert str(table.get_cell("wave:0", "task")) == "wave 0 · 2"
        executor.finish("a")
        await until(lambda: engine_of(app).task("a").state is TaskState.SUCCEEDED)
        app.refresh_view()
        assert str(table.get_cell("wave:0", "task")) == "wave 0 · 1"
        assert "a" not in table.row_keys()
    journal.close()


async def test_the_header_shows_the_adaptive_window_as_it_changes(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [{"id": f"t{i}", "agent": "coder"} for i in range(4)]
    app, journal = make_app(fleet(tmp_path, tasks, policy="adaptive"), tmp_path, executor=executor)
    async with app.run_test() as pilot:
        await until(lambda: len(executor.current) == 2)  # the window starts at 2
        header = app.query_one(FleetHeader)
        app.refresh_view()
        await pilot.pause()
        assert "policy adaptive 2" in str(header.content)
        executor.finish("t0")  # a success: the window grows to 3, two more start
        await until(lambda: "t3" in executor.current)
        app.refresh_view()
        await pilot.pause()
        assert "policy adaptive 3" in str(header.content)
    journal.close()
