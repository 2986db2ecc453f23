"""Regenerate the README's screenshots from the demo fleet: `make screenshots`.

Runs config/demo.toml for real (simulated agents, real processes) in a headless
TUI, waits for moments worth showing, and saves SVGs into screenshots/:
the main screen (wide and 80x24), a task's detail, the timeline and the help.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot

from fleetdeck.client import InProcessClient
from fleetdeck.config import load_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.journal import Journal
from fleetdeck.lifecycle import RunLifecycle
from fleetdeck.model import TaskState
from fleetdeck.tui.app import FleetApp
from fleetdeck.tui.queue import QueueTable

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "screenshots"


def engine_of(app: FleetApp) -> Engine:
    """The engine behind the app's client, to wait for a moment worth showing."""
    client = app.client
    assert isinstance(client, InProcessClient)
    return client.engine


async def wait_for(condition: Callable[[], object]) -> None:
    """Let the demo run until `condition()` holds (at most a minute)."""
    try:
        async with asyncio.timeout(60):
            while not condition():  # noqa: ASYNC110 - engine state, polled
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise SystemExit("the demo did not reach the state to photograph") from None


Scene = Callable[[FleetApp, Pilot[int]], Awaitable[None]]


async def shoot(size: tuple[int, int], name: str, scene: Scene) -> None:
    fleet = load_fleet(ROOT / "config" / "demo.toml")
    state = Path(tempfile.mkdtemp(prefix="fleetdeck-shots-"))
    journal = Journal(state)
    engine = Engine(fleet, journal=journal, executors=build_executors(fleet))
    app = FleetApp(InProcessClient(engine), RunLifecycle(engine))
    try:
        async with app.run_test(size=size) as pilot:
            await scene(app, pilot)
            app.refresh_view()  # the moment, now: it may not last a timer tick
            await pilot.pause(0.05)
            app.save_screenshot(str(OUT / f"{name}.svg"))
            print(f"screenshots/{name}.svg")
    finally:
        journal.close()
        shutil.rmtree(state, ignore_errors=True)


async def main_screen(app: FleetApp, pilot: Pilot[int]) -> None:
    # session-tokens fails once on purpose and runs again; by then rate-limits has
    # failed for good, so the attention queue has work for the operator.
    tokens = engine_of(app).task("session-tokens")
    await wait_for(lambda: tokens.agent_attempts == 2 and tokens.state is TaskState.RUNNING)
    await pilot.pause(0.6)  # some output in its log


async def detail(app: FleetApp, pilot: Pilot[int]) -> None:
    await wait_for(lambda: engine_of(app).task("rate-limits").state is TaskState.FAILED)
    table = app.query_one(QueueTable)
    table.move_cursor(row=table.get_row_index("rate-limits"))
    await pilot.press("enter")
    await pilot.pause(0.5)  # the detail screen reads the log on its timer


async def timeline(app: FleetApp, pilot: Pilot[int]) -> None:
    await wait_for(lambda: engine_of(app).task("e2e-tests").state is TaskState.CI_RUNNING)
    await pilot.press("t")
    await pilot.pause(0.2)


async def help_screen(app: FleetApp, pilot: Pilot[int]) -> None:
    await wait_for(lambda: engine_of(app).snapshot().running)
    await pilot.press("question_mark")
    await pilot.pause(0.2)


async def main() -> None:
    OUT.mkdir(exist_ok=True)
    await shoot((140, 40), "main", main_screen)
    await shoot((80, 24), "main-80x24", main_screen)
    await shoot((140, 40), "detail", detail)
    await shoot((140, 40), "timeline", timeline)
    await shoot((100, 30), "help", help_screen)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
