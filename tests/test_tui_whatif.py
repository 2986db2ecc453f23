"""The live what-if: its text, its pace, its prediction process, and the line in
the running TUI."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.app import App
from textual.widget import Widget

from fleetdeck.engine.simulate import TaskProgress
from fleetdeck.history import History, history_of
from fleetdeck.inprocess import InProcessClient
from fleetdeck.journal import Journal
from fleetdeck.model import Attempt, Outcome, Stage, TaskState
from fleetdeck.testing import ManualExecutor
from fleetdeck.tui.whatif import (
    PENDING,
    UNAVAILABLE,
    Pacer,
    WhatIfLine,
    better_of,
    duration,
    format_whatif,
)
from fleetdeck.whatif import (
    EARLY_HISTORY_SECONDS,
    NoBasis,
    PredictionError,
    PredictionProcess,
    Predictor,
    pack,
    unpack,
)
from tui_support import FakeClock, engine_of, fleet, make_app, until

# At 80 columns the side column leaves the line 32 cells inside its padding.
NARROW = 32


def on_screen(app: App[object]) -> str:
    """Every line of the terminal as the app composed it."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def styles_of(line: Text, word: str) -> str:
    """The style of the span that starts where `word` does."""
    at = line.plain.index(word)
    return " ".join(str(span.style) for span in line.spans if span.start == at)


# --- formatting -----------------------------------------------------------------------


def test_durations_round_to_the_second_and_abbreviate() -> None:
    assert [duration(s) for s in (0.4, 42.0, 190.0, 599.6, 7380.0)] == [
        "0s",
        "42s",
        "3m10s",
        "10m00s",
        "2h03m",
    ]
    assert [duration(s, short=True) for s in (42.0, 190.0, 7380.0)] == ["42s", "3m10", "2h03"]


def test_the_better_policy_is_the_one_that_finishes_a_second_sooner() -> None:
    assert better_of({"sequential": 580.0, "wave": 190.0}) == "wave"
    assert better_of({"sequential": 190.2, "wave": 190.4}) is None  # the same, shown
    assert better_of({"wave": 10.0}) is None


def test_the_line_reads_whole_when_it_fits_and_abbreviates_at_80_columns() -> None:
    remaining = {"sequential": 580.0, "wave": 190.0}
    wide = format_whatif(remaining, "wave", 80)
    assert wide.plain == "what-if: ▸wave 3m10s · sequential 9m40s"
    narrow = format_whatif(remaining, "wave", NARROW)
    assert narrow.plain == "what-if: ▸wave 3m10 · seq 9m40"
    assert len(narrow) <= NARROW
    # Narrower still, the label goes before any figure is cut.
    assert format_whatif(remaining, "wave", 22).plain == "▸wave 3m10 · seq 9m40"


def test_the_current_policy_comes_first_marked_and_the_better_one_is_highlighted() -> None:
    remaining = {"sequential": 580.0, "wave": 190.0}
    line = format_whatif(remaining, "sequential", 80)
    assert line.plain == "what-if: ▸sequential 9m40s · wave 3m10s"
    assert "underline" in styles_of(line, "sequential")
    assert "green" in styles_of(line, "wave") and "green" not in styles_of(line, "sequential")
    # No winner, no highlight.
    even = format_whatif({"sequential": 60.0, "wave": 60.0}, "wave", 80)
    assert "green" not in " ".join(str(span.style) for span in even.spans)


def test_before_the_first_prediction_and_after_a_failed_one() -> None:
    assert format_whatif(None, "wave", 80).plain == PENDING == "what-if: …"
    assert format_whatif(None, "wave", 80, failed=True).plain == UNAVAILABLE


# --- pace -----------------------------------------------------------------------------


def test_predictions_start_at_once_then_every_interval_one_at_a_time() -> None:
    pacer = Pacer(interval=3.0, pace=4.0)
    assert pacer.due(100.0)
    pacer.started(100.0)
    assert not pacer.due(104.0), "one under way: no second one"
    pacer.finished(100.1)
    assert not pacer.due(102.9)
    assert pacer.due(103.0)


def test_slow_predictions_are_spaced_so_the_thread_works_a_quarter_of_the_time() -> None:
    pacer = Pacer(interval=3.0, pace=4.0)
    pacer.started(100.0)
    pacer.finished(102.0)  # took 2 s: the next one 8 s after this one started
    assert not pacer.due(107.9)
    assert pacer.due(108.0)


# --- the predictor --------------------------------------------------------------------


def four_tasks(tmp_path: Path, **settings: Any) -> Any:
    """Four independent tasks of a minute each on two coder slots."""
    tasks = [{"id": f"t{i}", "agent": "coder", "estimate": 60} for i in range(4)]
    return fleet(tmp_path, tasks, slots=2, **settings)


def test_the_predictor_simulates_every_policy_from_the_progress(tmp_path: Path) -> None:
    predictor = Predictor(four_tasks(tmp_path), tmp_path / "no-journal-here")
    running = TaskProgress(TaskState.RUNNING, attempts=1, elapsed=30.0)
    progress = {"t0": running, "t1": running}
    # No journal: the tasks' estimates. Two running for 30 s of their 60, then two more.
    assert predictor.predict(progress) == {
        "sequential": 150.0,
        "wave": 90.0,
        "pipelined": 90.0,
        "adaptive": 90.0,
    }


def test_with_no_history_and_no_estimate_there_is_no_figure_but_learning(
    tmp_path: Path,
) -> None:
    """A first run of a fleet without estimates: the built-in defaults would be a
    guess shown as a figure, so the predictor says it is learning; and it reads
    the journal again soon, not after HISTORY_SECONDS, to learn from the first
    attempts that end."""
    bare = fleet(tmp_path, [{"id": f"t{i}", "agent": "coder"} for i in range(2)])
    now = [0.0]
    predictor = Predictor(bare, tmp_path / "no-journal-here", monotonic=lambda: now[0])
    with pytest.raises(NoBasis, match="learning"):
        predictor.predict({})
    first = predictor.history()
    now[0] = EARLY_HISTORY_SECONDS  # still nothing known: read again already
    assert predictor.history() is not first
    process = PredictionProcess(Predictor(bare, tmp_path / "none"))
    try:
        process.send({})
        with pytest.raises(NoBasis):
            process.receive()
    finally:
        process.close()
    line = format_whatif(None, "wave", 60, failed=True, learning=True)
    assert line.plain == "what-if: learning from the first attempts…"


def journal_with(state: Path, rows: list[tuple[str, Stage, float]]) -> None:
    """A journal in `state` holding one run and these successful attempts."""
    journal = Journal(state)
    run_id = journal.begin_run(
        fleet="tui-test", config_path="f.toml", config_json="{}", policy="wave", started_at=0.0
    )
    for attempt_id, (task, stage, seconds) in enumerate(rows, start=1):
        journal.record_attempt(
            run_id,
            Attempt(
                attempt_id=attempt_id,
                task=task,
                stage=stage,
                number=1,
                worker="coder" if stage is Stage.AGENT else "ci",
                host="local",
                run_dir=str(journal.run_dir(run_id)),
                started_at=0.0,
                finished_at=seconds,
                outcome=Outcome.OK,
            ),
        )
    journal.close()


def test_early_in_a_first_run_ci_takes_what_the_agents_took_not_the_default(
    tmp_path: Path,
) -> None:
    """Two agent attempts of 2 s have ended, no CI yet: the CI stages are taken to
    last 2 s too (the mean of every observed attempt), not the built-in 30 s."""
    state = tmp_path / "state"
    journal_with(state, [("t0", Stage.AGENT, 2.0), ("t1", Stage.AGENT, 2.0)])
    two = fleet(tmp_path, [{"id": f"t{i}", "agent": "coder", "ci": "ci"} for i in range(2)])
    predictor = Predictor(two, state, policies=["wave"], runs=1)
    # Both agents side by side, then the two CI stages one after another on one runner.
    assert predictor.predict({}) == {"wave": 6.0}


def test_a_basis_is_needed_for_every_stage_kind_the_fleet_uses(tmp_path: Path) -> None:
    """An estimate for one task's agent is no basis for the CI stages nor for the
    other agent; one observed attempt of any stage is, through the fallbacks."""
    partly = fleet(
        tmp_path,
        [
            {"id": "t0", "agent": "coder", "ci": "ci", "estimate": 2},
            {"id": "t1", "agent": "coder"},
        ],
    )
    predictor = Predictor(partly, tmp_path / "no-journal-here")
    assert not predictor.has_basis(History())
    with pytest.raises(NoBasis, match="learning"):
        predictor.predict({})
    assert predictor.has_basis(history_of([("t0", "agent", "ok", 2.0)]))
    assert Predictor(four_tasks(tmp_path), tmp_path / "none").has_basis(History())


def test_the_journal_is_read_again_soon_until_every_stage_kind_was_seen(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    journal_with(state, [("t0", Stage.AGENT, 2.0)])
    two = fleet(tmp_path, [{"id": f"t{i}", "agent": "coder", "ci": "ci"} for i in range(2)])
    now = [0.0]
    predictor = Predictor(two, state, monotonic=lambda: now[0])
    first = predictor.history()
    now[0] = EARLY_HISTORY_SECONDS  # agents seen, CI not: read again already
    second = predictor.history()
    assert second is not first
    journal_with(tmp_path / "full", [("t0", Stage.AGENT, 2.0), ("t0", Stage.CI, 1.0)])
    predictor.state_dir = tmp_path / "full"
    now[0] = 2 * EARLY_HISTORY_SECONDS
    third = predictor.history()
    assert third is not second and (("t0", Stage.CI) in third.observed)
    now[0] = 3 * EARLY_HISTORY_SECONDS  # every kind seen: the normal pace
    assert predictor.history() is third


def test_progress_crosses_the_pipe_unchanged() -> None:
    progress = {
        "a": TaskProgress(TaskState.RUNNING, attempts=2, failures=1, elapsed=12.5),
        "b": TaskProgress(TaskState.RETRY_WAIT, attempts=1, failures=1, retry_in=3.0),
        "c": TaskProgress(TaskState.SUCCEEDED, attempts=1),
    }
    assert unpack(pack(progress)) == progress


def test_the_prediction_process_answers_says_why_not_and_goes_when_closed(
    tmp_path: Path,
) -> None:
    process = PredictionProcess(Predictor(four_tasks(tmp_path), tmp_path / "none"))
    try:
        running = TaskProgress(TaskState.RUNNING, attempts=1, elapsed=30.0)
        process.send({"t0": running, "t1": running})
        assert process.receive() == {
            "sequential": 150.0,
            "wave": 90.0,
            "pipelined": 90.0,
            "adaptive": 90.0,
        }
        child = process._process
        assert child is not None and child.poll() is None
    finally:
        process.close()
    assert child.poll() is not None
    broken = PredictionProcess(Predictor(four_tasks(tmp_path), tmp_path, policies=["nope"]))
    try:
        broken.send({})
        with pytest.raises(PredictionError, match="unknown policy 'nope'"):
            broken.receive()
    finally:
        broken.close()


# --- in the TUI -------------------------------------------------------------------------


async def test_the_what_if_line_shows_each_policy_and_goes_when_the_run_ends(
    tmp_path: Path,
) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        four_tasks(tmp_path), tmp_path, executor=executor, clock=clock, whatif=True
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: len(executor.current) == 2)
        line = app.query_one(WhatIfLine)
        # Two running (just started), two ready: two minutes in waves, four in sequence.
        await until(lambda: line.remaining is not None and line.remaining["wave"] == 120.0)
        app.refresh_view()
        await pilot.pause()
        assert line.remaining == {
            "sequential": 240.0,
            "wave": 120.0,
            "pipelined": 120.0,
            "adaptive": 120.0,
        }
        assert "▸w 2m00 s 4m00 p 2m00 a 2m00" in on_screen(app)
        for task in ("t0", "t1"):
            executor.finish(task)
        await until(lambda: {"t2", "t3"} <= set(executor.current))
        executor.finish("t2")
        executor.finish("t3")
        await until(lambda: app.result is not None)
        await pilot.pause()
        assert not line.display
        assert "what-if" not in on_screen(app)
        client = app.client
        assert isinstance(client, InProcessClient) and client._predictions is not None
        child = client._predictions._process
        assert child is not None and child.poll() is None
    # The app has gone, and its prediction process with it.
    assert child.poll() is not None
    journal.close()


async def test_what_if_dots_until_the_first_prediction_then_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread is held back: the screen says a figure is coming, and the keys
    still answer meanwhile."""
    release = threading.Event()
    seen: list[object] = []
    send = PredictionProcess.send

    def held(self: PredictionProcess, progress: Mapping[str, TaskProgress]) -> None:
        seen.append(progress)
        release.wait(10.0)
        send(self, progress)

    monkeypatch.setattr(PredictionProcess, "send", held)
    executor = ManualExecutor()
    app, journal = make_app(four_tasks(tmp_path), tmp_path, executor=executor, whatif=True)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await until(lambda: len(executor.current) == 2 and bool(seen))
            app.refresh_view()
            await pilot.pause()
            assert "what-if: …" in on_screen(app)
            # A plain mapping of the progress, not the engine's live core.
            assert isinstance(seen[0], dict)
            await pilot.press("p")  # the loop is free while the thread works
            assert engine_of(app).paused
            release.set()
            line = app.query_one(WhatIfLine)
            await until(lambda: line.remaining is not None)
            app.refresh_view()
            await pilot.pause()
            assert "▸w 2m00 s 4m00 p 2m00 a 2m00" in on_screen(app)
    finally:
        release.set()
    journal.close()


async def test_without_what_if_the_line_takes_no_room(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(four_tasks(tmp_path), tmp_path, executor=executor)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(lambda: len(executor.current) == 2)
        await pilot.pause()
        line: Widget = app.query_one(WhatIfLine)
        assert not line.display and line.outer_size.height == 0
        assert "what-if" not in on_screen(app)
    journal.close()


async def test_nothing_is_predicted_when_the_terminal_has_no_room_for_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(PredictionProcess, "send", lambda self, *args: calls.append(args))
    executor = ManualExecutor()
    app, journal = make_app(four_tasks(tmp_path), tmp_path, executor=executor, whatif=True)
    async with app.run_test(size=(70, 24)) as pilot:  # narrow: no side column
        await until(lambda: len(executor.current) == 2)
        app.refresh_view()
        await pilot.pause(0.2)  # what the worker would have taken to ask
        assert calls == [] and not app.query_one(WhatIfLine).display
    journal.close()


def test_every_policy_fits_a_narrow_pane_by_its_initial() -> None:
    remaining = {"sequential": 240.0, "wave": 120.0, "pipelined": 100.0, "adaptive": 130.0}
    wide = format_whatif(remaining, "wave", 80)
    assert (
        wide.plain == "what-if: ▸wave 2m00s · sequential 4m00s · pipelined 1m40s · adaptive 2m10s"
    )
    assert format_whatif(remaining, "wave", 46).plain == (
        "▸wave 2m00 · seq 4m00 · pipe 1m40 · adapt 2m10"
    )
    narrow = format_whatif(remaining, "wave", 32)
    assert narrow.plain == "▸w 2m00 s 4m00 p 1m40 a 2m10"
    assert "green" in styles_of(narrow, "p 1m40")
