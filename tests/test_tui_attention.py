"""What the operator sees of tasks held back or needing them: `x` (seen) on a
failure, and a ready task the policy holds back while slots are free."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.geometry import Region
from textual.widget import Widget

from fleetdeck.model import TaskState
from fleetdeck.tui.load import LoadPane
from fleetdeck.tui.queue import QueueTable
from tui_support import ManualExecutor, engine_of, fleet, make_app, until


def rendered(widget: Widget) -> str:
    """The widget's lines as drawn (border included)."""
    return "\n".join(strip.text for strip in widget.render_lines(Region(0, 0, *widget.outer_size)))


def messages(app: App[object]) -> list[str]:
    return [notification.message for notification in app._notifications]


async def test_x_on_a_failed_task_takes_it_off_the_attention_list(tmp_path: Path) -> None:
    executor = ManualExecutor()
    # `busy` keeps the run going: once every task has ended, it is over.
    tasks = [{"id": "flaky", "agent": "coder"}, {"id": "busy", "agent": "coder"}]
    app, journal = make_app(fleet(tmp_path, tasks), tmp_path, executor=executor)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: {"flaky", "busy"} <= set(executor.current))
        executor.finish("flaky", exit_code=1)
        await until(lambda: engine_of(app).task("flaky").state is TaskState.FAILED)
        app.refresh_view()
        await pilot.pause()
        load = app.query_one(LoadPane)
        assert "✗ flaky failed" in rendered(load)
        assert "attention 1" in rendered(load)
        assert app.selected_task() == "flaky"
        await pilot.press("x")
        await pilot.pause()
        assert "flaky" not in rendered(load) and "nothing needs you" in rendered(load)
        assert engine_of(app).snapshot().attention == ()
        assert engine_of(app).task("flaky").state is TaskState.FAILED  # seen, not retried
        # Once more: it needs nothing now, and the engine's reason is shown.
        await pilot.press("x")
        await pilot.pause()
        assert any("'flaky' does not need attention" in m for m in messages(app))
    journal.close()


async def test_sequential_with_free_slots_blames_the_policy_not_a_slot(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [{"id": f"pr-{i}", "agent": "coder"} for i in range(1, 4)]
    config = fleet(tmp_path, tasks, slots=3, policy="sequential")
    app, journal = make_app(config, tmp_path, executor=executor)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: "pr-1" in executor.current)
        app.refresh_view()
        await pilot.pause()
        table = app.query_one(QueueTable)
        assert str(table.get_cell("pr-2", "waits for")) == "policy: sequential"
        assert str(table.get_cell("pr-3", "waits for")) == "policy: sequential"
        await pilot.press("s")  # wave: every slot is taken at once, nothing waits
        await until(lambda: {"pr-2", "pr-3"} <= set(executor.current))
    journal.close()


async def test_full_slots_are_still_what_a_ready_task_waits_for(tmp_path: Path) -> None:
    executor = ManualExecutor()
    tasks = [{"id": f"pr-{i}", "agent": "coder"} for i in range(1, 4)]
    app, journal = make_app(fleet(tmp_path, tasks, slots=2), tmp_path, executor=executor)
    async with app.run_test(size=(120, 36)) as pilot:
        await until(lambda: {"pr-1", "pr-2"} <= set(executor.current))
        app.refresh_view()
        await pilot.pause()
        table = app.query_one(QueueTable)
        assert str(table.get_cell("pr-3", "waits for")) == "slot of coder"
    journal.close()
