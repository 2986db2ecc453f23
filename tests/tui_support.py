"""What TUI tests need: a clock that only moves when told, and an executor whose
attempts end when the test says so (fleetdeck.testing's ManualExecutor). With
both, the screen is the same every run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetdeck.config import Fleet, build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors.base import Executor
from fleetdeck.journal import Journal
from fleetdeck.testing import ManualExecutor
from fleetdeck.tui.app import FleetApp

# 2026-11-23 10:00:00 UTC: a fixed start for every deterministic screen.
START = 1_795_428_000.0


class FakeClock:
    """Seconds since the epoch that move only with `advance()`."""

    def __init__(self, start: float = START) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fleet(tmp_path: Path, tasks: list[dict[str, Any]], **settings: Any) -> Fleet:
    """A fleet with agent `coder` (3 slots, or `slots`) and runner `ci` (1 slot)."""
    slots = settings.pop("slots", 3)
    return build_fleet(
        {
            "fleet": {"name": "tui-test", "state_dir": "state", "retry_backoff": 0.0, **settings},
            "agents": {"coder": {"command": ["true"], "slots": slots}},
            "runners": {"ci": {"command": ["true"], "slots": 1}},
            "tasks": tasks,
        },
        source="tui-test.toml",
        base_dir=tmp_path,
    )


def make_app(
    fleet: Fleet,
    tmp_path: Path,
    *,
    executor: Executor | None = None,
    clock: FakeClock | None = None,
) -> tuple[FleetApp, Journal]:
    """The app as the CLI builds it, over an engine with a manual executor and clock."""
    journal = Journal(tmp_path / "state")
    engine = Engine(
        fleet,
        journal=journal,
        executors={"local": executor or ManualExecutor()},
        clock=clock or FakeClock(),
        sample_interval=None,
    )
    return FleetApp(engine), journal


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the event loop run until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
