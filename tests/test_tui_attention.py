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
from tui_support import ManualExecutor, fleet, make_app, until


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
        await until(lambda: app.engine.task("flaky").state is TaskState.FAILED)
        app.refresh_view()
        await pilot.pause()
        load = app.query_one(LoadPane)
        assert "✗ flaky failed" in rendered(load)
        assert "attention 1" in rendered(load)
        assert app.selected_task() == "flaky"
        await pilot.press("x")
        await pilot.pause()
        assert "flaky" not in rendered(load) and "nothing needs you" in rendered(load)
        assert app.engine.snapshot().attention == ()
        assert app.engine.task("flaky").state is TaskState.FAILED  # seen, not retried
        # Once more: it needs nothing now, and the engine's reason is shown.
        await pilot.press("x")
        await pilot.pause()
        assert any("'flaky' does not need attention" in m for m in messages(app))
    journal.close()
