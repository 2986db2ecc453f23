"""A task added while the TUI looks at the run (through the client, as `fleetdeck
add` does through the socket) shows in its queue, in its wave."""

from __future__ import annotations

from pathlib import Path

from fleetdeck.tui.queue import QueueTable
from tui_support import ManualExecutor, engine_of, fleet, make_app, until


async def test_an_added_task_appears_in_the_queue(tmp_path: Path) -> None:
    executor = ManualExecutor()
    app, journal = make_app(
        fleet(tmp_path, [{"id": "first", "agent": "coder"}]), tmp_path, executor=executor
    )
    try:
        async with app.run_test() as pilot:
            engine = engine_of(app)
            await until(lambda: engine.run_id is not None)
            await pilot.pause()
            table = app.query_one(QueueTable)
            assert set(table.rows.views) == {"first"}
            added = [{"id": "later", "agent": "coder", "depends_on": ["first"]}]
            assert await app.client.add(added) == ["later"]
            await until(lambda: "later" in table.rows.views)
            await pilot.pause()
            view = table.rows.views["later"]
            assert view.wave == 1 and view.waiting_for == ("first",)
            assert table.rows.shows("later")
    finally:
        journal.close()
