"""`r` on a task whose CI failed asks what to rerun: CI alone, or the agent and
CI; on any other task it retries at once, as before."""

from __future__ import annotations

from pathlib import Path

from fleetdeck.model import TaskState
from fleetdeck.testing import ManualExecutor
from fleetdeck.tui.app import FleetApp
from fleetdeck.tui.choice import ChoiceScreen
from tui_support import engine_of, fleet, make_app, until

TASKS = [
    {"id": "flaky", "agent": "coder", "ci": "ci", "retries": 0},
    # Keeps the run going: once every task has ended, it is over.
    {"id": "busy", "agent": "coder"},
]


async def ci_failed(app: FleetApp, executor: ManualExecutor) -> None:
    """Play `flaky` to a failed CI attempt, and select it."""
    await until(lambda: "flaky" in executor.current and "busy" in executor.current)
    executor.finish("flaky")
    await until(lambda: ("flaky", "ci", 1) in executor.attempts() and "flaky" in executor.current)
    executor.finish("flaky", exit_code=1)
    await until(lambda: engine_of(app).task("flaky").state is TaskState.FAILED)


async def test_r_on_a_task_whose_ci_failed_asks_and_c_reruns_ci_alone(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(fleet(tmp_path, TASKS), tmp_path, executor=executor)
    async with app.run_test() as pilot:
        await ci_failed(app, executor)
        await pilot.pause()
        assert app.selected_task() == "flaky"
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        assert "Rerun CI only" in app.screen.question
        await pilot.press("x")  # not an answer: the question stays, nothing happens
        await pilot.pause()
        assert isinstance(app.screen, ChoiceScreen)
        assert engine_of(app).task("flaky").state is TaskState.FAILED
        await pilot.press("c")
        await until(lambda: executor.attempts().count(("flaky", "ci", 1)) == 2)
        assert not isinstance(app.screen, ChoiceScreen)
        assert ("flaky", "agent", 2) not in executor.attempts()
        assert engine_of(app).task("flaky").state is TaskState.CI_RUNNING
        executor.finish("flaky")
        await until(lambda: engine_of(app).task("flaky").state is TaskState.SUCCEEDED)
    journal.close()


async def test_a_reruns_the_agent_and_esc_reruns_nothing(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(fleet(tmp_path, TASKS), tmp_path, executor=executor)
    async with app.run_test() as pilot:
        await ci_failed(app, executor)
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, ChoiceScreen)
        assert engine_of(app).task("flaky").state is TaskState.FAILED
        await pilot.press("r")
        await pilot.pause()
        await pilot.press("a")
        await until(lambda: ("flaky", "agent", 2) in executor.attempts())
        assert engine_of(app).task("flaky").state is TaskState.RUNNING
    journal.close()
