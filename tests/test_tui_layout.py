"""What a small terminal must still show, and the timeline's zoom, scroll and selection.

Read from what the widgets render (the text on screen), not from their state.
"""

from __future__ import annotations

import re
from pathlib import Path

from textual.app import App
from textual.geometry import Region
from textual.widget import Widget
from textual.widgets import Static

from fleetdeck.model import Outcome, Stage
from fleetdeck.snapshot import AttemptRecord, Lane, Timeline
from fleetdeck.tui.contention import ContentionPane
from fleetdeck.tui.footer import FleetFooter
from fleetdeck.tui.gantt import Window, render_timeline
from fleetdeck.tui.help import HelpScreen
from fleetdeck.tui.load import LoadPane
from fleetdeck.tui.timeline import TimelineScreen
from tui_support import (
    START,
    FakeClock,
    ManualExecutor,
    busy_run,
    engine_of,
    fleet,
    make_app,
    small_fleet_tasks,
    until,
)


def rendered(widget: Widget) -> list[str]:
    """The widget's lines as drawn (border included)."""
    return [strip.text for strip in widget.render_lines(Region(0, 0, *widget.outer_size))]


def on_screen(app: App[object]) -> str:
    """Every line of the terminal as the app composed it."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def test_80x24_keeps_the_quit_key_and_the_ci_wait_uncut(tmp_path: Path) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        fleet(tmp_path, small_fleet_tasks()), tmp_path, executor=executor, clock=clock
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await busy_run(app, executor, clock)
        app.refresh_view()
        await pilot.pause()
        footer = on_screen(app).splitlines()[-1]
        assert re.search(r"q Quit\s*$", footer), footer
        # The footer as a widget holds the key too (not some other text ending so).
        assert any(key.action == "quit" for key in app.query_one(FleetFooter).query("FooterKey"))
        lines = rendered(app.query_one(ContentionPane))
        text = "\n".join(lines)
        # auth-api waited 1.5 s for the runner, schema none: mean 0.8 s, p95 1.5 s.
        assert "wait mean 0.8s p95 1.5s" in text, text
        assert "busy 1/1 queue 0" in text, text
        assert "…" not in text, text
    journal.close()


async def test_60x20_still_shows_the_load(tmp_path: Path) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        fleet(tmp_path, small_fleet_tasks()), tmp_path, executor=executor, clock=clock
    )
    async with app.run_test(size=(60, 20)) as pilot:
        await busy_run(app, executor, clock)
        app.refresh_view()
        await pilot.pause()
        load = engine_of(app).snapshot().load
        screen = on_screen(app)
        assert f"load {load.score}/{load.capacity}" in screen, screen
        assert re.search(r"q Quit\s*$", screen.splitlines()[-1]), screen
    journal.close()


async def test_timeline_zooms_scrolls_and_selects(tmp_path: Path) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        fleet(tmp_path, small_fleet_tasks()), tmp_path, executor=executor, clock=clock
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await busy_run(app, executor, clock)
        clock.advance(12.0)  # a run of 20 s
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, TimelineScreen)
        assert screen.visible_range() == (0.0, 20.0)  # the whole run
        await pilot.press("plus")
        assert screen.visible_range() == (10.0, 20.0)  # half, ending now
        await pilot.press("left")
        assert screen.visible_range() == (7.5, 17.5)  # a quarter earlier
        gantt = str(screen.query_one("#gantt", Static).content)
        assert "┆0:08" in gantt and "┆0:00" not in gantt
        await pilot.press("home")
        assert screen.visible_range() == (0.0, 10.0)
        await pilot.press("end")
        assert screen.visible_range() == (10.0, 20.0)
        await pilot.press("minus")
        assert screen.visible_range() == (0.0, 20.0)
        # The selection: the latest bar of the last lane (ci), then the lane above.
        await pilot.press("up")
        selected = str(screen.query_one("#selected", Static).content)
        assert selected.startswith("auth-api  attempt 1 · ci on ci · running"), selected
        await pilot.press("up")
        selected = str(screen.query_one("#selected", Static).content)
        assert selected.startswith("user-model  attempt 1 · agent on coder"), selected
        assert "15.0s · from 0:05 to 0:20" in selected
        await pilot.press("shift+left")  # the bar before it in its lane: ui-shell's first
        selected = str(screen.query_one("#selected", Static).content)
        assert selected.startswith("ui-shell  attempt 1 · agent on coder · failed"), selected
    journal.close()


def record(task: str, start: float, end: float, *, number: int = 1) -> AttemptRecord:
    return AttemptRecord(
        attempt_id=hash((task, number)) & 0xFFFF,
        task=task,
        stage=Stage.AGENT,
        number=number,
        worker="coder",
        host="local",
        queued_at=None,
        started_at=START + start,
        finished_at=START + end,
        outcome=Outcome.OK,
        exit_code=0,
        error=None,
        log_path="",
        output_path="",
    )


def test_bars_carry_full_names_where_they_fit_and_lanes_use_the_height() -> None:
    lane = Lane(Stage.AGENT, "coder", "local", 1)
    timeline = Timeline(
        started_at=START,
        now=START + 60,
        lanes=(lane,),
        attempts=(record("login-endpoint", 0, 30), record("a-very-long-task-name", 30, 33)),
    )
    whole = Window(START, START + 60)
    wide = render_timeline(timeline, whole, width=120, height=20).plain
    assert "▏login-endpoint" in wide
    assert "#1 30.0s" in wide  # the attempt and its duration, on the lane's second row
    assert re.search(r"▏a-v[a-z-]*…", wide)  # a short bar: its name cut, with an ellipsis
    # One row per lane when the height is short; the name only.
    short = render_timeline(timeline, whole, width=120, height=4).plain
    assert "#1 30.0s" not in short
    # Zoomed on the short bar, its whole name fits.
    zoomed = render_timeline(timeline, Window(START + 29, START + 35), width=120, height=20)
    assert "▏a-very-long-task-name" in zoomed.plain


async def test_a_one_row_attention_queue_names_the_oldest_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        fleet(tmp_path, small_fleet_tasks()), tmp_path, executor=executor, clock=clock
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: "schema" in executor.current)
        executor.finish("schema", exit_code=1)  # its two dependents are blocked by it
        await until(lambda: len(engine_of(app).snapshot().attention) == 3)
        pane = app.query_one(LoadPane)
        pane.styles.height = 5  # room for the gauge, its breakdown and one row
        await pilot.pause()
        app.refresh_view()
        await pilot.pause()
        lines = rendered(pane)
        assert "✗ schema failed 0:00 +2 more" in lines[3], lines
    journal.close()


async def test_the_help_lays_each_load_term_out_under_itself_at_80_columns(
    tmp_path: Path,
) -> None:
    app, journal = make_app(fleet(tmp_path, [{"id": "x", "agent": "coder"}]), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        lines = [line.rstrip() for s in app.screen.query(Static) for line in rendered(s)]
        start = next(i for i, line in enumerate(lines) if line.startswith("in_flight "))
        column = lines[start].index("tasks between")
        words, wrapped = lines[start][column:].split(), 0
        for line in lines[start + 1 :]:
            if line.startswith("needs_attention"):
                break
            # A definition's next line starts under its first, never at the margin.
            assert line[:column].strip() == "" and line[column] != " ", lines
            words += line.split()
            wrapped += 1
        assert " ".join(words).endswith("each one thing to keep in mind"), lines
        assert wrapped > 0, lines  # it did wrap at this width
    journal.close()
