"""Pictures of the screens in the states that matter, compared with SVG snapshots.

Each test stages a state with a manual executor and a clock that moves only when
told, so the picture is the same on every run. Update them on purpose with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from fleetdeck.model import TaskState
from fleetdeck.testing import ManualExecutor
from fleetdeck.tui.app import FleetApp
from fleetdeck.tui.detail import TaskDetailScreen
from fleetdeck.tui.lines import set_border_subtitle
from tui_support import (
    FakeClock,
    busy_run,
    engine_of,
    fleet,
    make_app,
    small_fleet_tasks,
    until,
)

SnapCompare = Callable[..., bool]


def staged(
    executor: ManualExecutor, clock: FakeClock, steps: Callable[[FleetApp], Awaitable[None]]
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """A run_before that plays `steps`, samples contention, and repaints."""

    async def run_before(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, FleetApp)
        await steps(app)
        for _ in range(12):  # a dozen one-second samples for the sparklines
            clock.advance(1.0)
            engine_of(app).sample()
        await pilot.pause()
        app.refresh_view()
        await pilot.pause()

    return run_before


def demo_like(tmp_path: Path, **settings: Any) -> list[dict[str, Any]]:
    """A small fleet in three waves with CI on most tasks."""
    return [
        {"id": "schema", "agent": "coder", "ci": "ci", "prompt": "Add the users table"},
        {"id": "auth-api", "agent": "coder", "ci": "ci", "prompt": "Sketch the auth API"},
        {"id": "ui-shell", "agent": "coder", "ci": "ci", "prompt": "Create the UI shell"},
        {"id": "docs", "agent": "coder", "prompt": "Outline the guide"},
        {"id": "login", "agent": "coder", "ci": "ci", "depends_on": ["schema", "auth-api"]},
        {"id": "user-model", "agent": "coder", "ci": "ci", "depends_on": ["schema"]},
        {"id": "ui-login", "agent": "coder", "depends_on": ["ui-shell"]},
        {"id": "sessions", "agent": "coder", "ci": "ci", "depends_on": ["login"]},
        {"id": "rate-limits", "agent": "coder", "ci": "ci", "depends_on": ["login"]},
        {"id": "e2e-tests", "agent": "coder", "ci": "ci", "depends_on": ["sessions", "ui-login"]},
    ]


def test_wave_with_many_in_flight(snap_compare: SnapCompare, tmp_path: Path) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    tasks = [{"id": f"analysis-{i:02d}", "agent": "coder", "ci": "ci"} for i in range(8)]
    tasks.append({"id": "merge", "agent": "coder", "depends_on": [t["id"] for t in tasks]})
    app, journal = make_app(
        fleet(tmp_path, tasks, slots=6), tmp_path, executor=executor, clock=clock
    )

    async def steps(app: FleetApp) -> None:
        await until(lambda: len(executor.current) == 6)
        for i, task in enumerate(sorted(executor.current)):
            clock.advance(0.7)
            executor.say(task, f"step {i}: editing src/module_{i}.py")

    assert snap_compare(app, terminal_size=(120, 36), run_before=staged(executor, clock, steps))
    journal.close()


def test_sequential_with_a_ci_queue(snap_compare: SnapCompare, tmp_path: Path) -> None:
    """Wave let four agents finish at once in front of one runner; then `s`."""
    executor, clock = ManualExecutor(), FakeClock()
    tasks = [{"id": f"pr-{i}", "agent": "coder", "ci": "ci"} for i in range(1, 5)]
    tasks.append({"id": "release", "agent": "coder", "depends_on": [t["id"] for t in tasks]})
    app, journal = make_app(
        fleet(tmp_path, tasks, slots=4), tmp_path, executor=executor, clock=clock
    )

    async def steps(app: FleetApp) -> None:
        await until(lambda: len(executor.current) == 4)
        for i in range(1, 5):
            clock.advance(2.0)
            executor.finish(f"pr-{i}", output=f"PR #{i} ready")
            await until(lambda i=i: engine_of(app).task(f"pr-{i}").state is not TaskState.RUNNING)
        executor.say("pr-1", "running 41 tests")
        # (`s` would go to pipelined, the next in the registry: this picks sequential.)
        app._command("policy", lambda: app.client.set_policy("sequential"))

    assert snap_compare(app, terminal_size=(120, 36), run_before=staged(executor, clock, steps))
    journal.close()


def test_a_failure_fills_the_attention_queue(snap_compare: SnapCompare, tmp_path: Path) -> None:
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        fleet(tmp_path, demo_like(tmp_path)), tmp_path, executor=executor, clock=clock
    )

    async def steps(app: FleetApp) -> None:
        await until(lambda: "schema" in executor.current)
        clock.advance(3.0)
        executor.say("schema", "error: the migration does not apply")
        executor.finish("schema", exit_code=1)
        await until(lambda: engine_of(app).task("schema").state is TaskState.FAILED)
        clock.advance(2.0)
        # docs takes the slot schema left: it starts after the failure, not with it.
        await until(lambda: "docs" in executor.current)
        executor.finish("docs", output="the outline")
        await until(lambda: engine_of(app).task("docs").state is TaskState.SUCCEEDED)

    assert snap_compare(app, terminal_size=(120, 36), run_before=staged(executor, clock, steps))
    journal.close()


def test_main_screen_at_80x24(snap_compare: SnapCompare, tmp_path: Path) -> None:
    """A plain SSH session: everything must still be there and readable."""
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        fleet(tmp_path, demo_like(tmp_path)), tmp_path, executor=executor, clock=clock
    )

    async def steps(app: FleetApp) -> None:
        await until(lambda: len(executor.current) == 3)
        clock.advance(2.5)
        executor.finish("schema", output="schema done")
        await until(lambda: engine_of(app).task("schema").state is TaskState.CI_RUNNING)
        executor.finish("auth-api", output="api done")
        await until(lambda: engine_of(app).task("auth-api").state is TaskState.CI_QUEUED)
        clock.advance(1.5)
        executor.say("schema", "[ci] running unit tests... (1.1s)")
        executor.say("ui-shell", "editing web/shell.tsx")

    assert snap_compare(app, terminal_size=(80, 24), run_before=staged(executor, clock, steps))
    journal.close()


# An SSH session's terminal, and a large screen with room to use.
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((200, 60), id="200x60")]


def busy(tmp_path: Path) -> tuple[FleetApp, Any, ManualExecutor, FakeClock]:
    executor, clock = ManualExecutor(), FakeClock()
    app, journal = make_app(
        fleet(tmp_path, small_fleet_tasks()), tmp_path, executor=executor, clock=clock
    )
    return app, journal, executor, clock


@pytest.mark.parametrize("size", SIZES)
def test_main_screen(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    """Every figure readable at 80x24 (labels, the CI wait, the quit key); the
    room used at 200x60 (every column, the contention table, long histories)."""
    app, journal, executor, clock = busy(tmp_path)

    async def steps(app: FleetApp) -> None:
        await busy_run(app, executor, clock)

    assert snap_compare(app, terminal_size=size, run_before=staged(executor, clock, steps))
    journal.close()


@pytest.mark.parametrize("size", SIZES)
def test_task_detail(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    """A task with a failed attempt and its retry running."""
    app, journal, executor, clock = busy(tmp_path)

    async def steps(app: FleetApp) -> None:
        await busy_run(app, executor, clock)
        app.push_screen(TaskDetailScreen(app.client, "ui-shell"))

    async def run_before(pilot: Pilot[Any]) -> None:
        await staged(executor, clock, steps)(pilot)
        await pilot.pause(0.3)  # the log's first read
        log = pilot.app.screen.query_one("#log")
        # The log's path lies under the test's temporary directory: shown from
        # the state directory on, the same on every run.
        subtitle = str(log.border_subtitle).replace("\\[", "[")
        set_border_subtitle(log, "state/" + subtitle.split("/state/", 1)[1])
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    journal.close()


@pytest.mark.parametrize("size", SIZES)
def test_timeline(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    """One lane per slot (taller at 200x60, with the CI queue as a chart), full
    names where they fit, the selected bar named in full under the chart."""
    app, journal, executor, clock = busy(tmp_path)

    async def steps(app: FleetApp) -> None:
        await busy_run(app, executor, clock)

    async def run_before(pilot: Pilot[Any]) -> None:
        await staged(executor, clock, steps)(pilot)
        await pilot.press("t", "up", "up")  # ci's latest bar, then the lane above
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    journal.close()


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]) -> None:
    app, journal, executor, clock = busy(tmp_path)

    async def steps(app: FleetApp) -> None:
        await busy_run(app, executor, clock)

    async def run_before(pilot: Pilot[Any]) -> None:
        await staged(executor, clock, steps)(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    journal.close()


@pytest.mark.parametrize("size", SIZES)
def test_finished_run_with_its_done_tasks(
    snap_compare: SnapCompare, tmp_path: Path, size: tuple[int, int]
) -> None:
    """The run has ended by itself (one task failed for good, the task it blocks):
    the header says finished and the exit code, the clock stopped, and `a` shows
    the done tasks for browsing."""
    app, journal, executor, clock = busy(tmp_path)

    async def steps(app: FleetApp) -> None:
        await busy_run(app, executor, clock)
        engine = engine_of(app)
        # ui-shell's retry fails too (its budget is spent: ui-login is blocked);
        # everything else succeeds, a second apart.
        while not app.lifecycle.finished:
            await until(
                lambda: (
                    app.lifecycle.finished or any(not p.ended for p in executor.current.values())
                )
            )
            for task, process in list(executor.current.items()):
                if not process.ended:
                    clock.advance(1.0)
                    failing = task == "ui-shell" and engine.task(task).agent_attempts == 2
                    executor.finish(task, exit_code=1 if failing else 0)
            await until(lambda: app.lifecycle.finished or not _just_ended(executor))

    async def run_before(pilot: Pilot[Any]) -> None:
        await staged(executor, clock, steps)(pilot)
        await pilot.press("a")
        await pilot.pause()
        pilot.app.refresh_view()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=run_before)
    journal.close()


def _just_ended(executor: ManualExecutor) -> bool:
    """True while an attempt has ended and nothing new has started yet."""
    return all(process.ended for process in executor.current.values())
