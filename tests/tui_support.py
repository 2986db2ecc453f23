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
from fleetdeck.inprocess import InProcessClient
from fleetdeck.journal import Journal
from fleetdeck.lifecycle import RunLifecycle
from fleetdeck.model import TaskState
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
    whatif: bool = False,
) -> tuple[FleetApp, Journal]:
    """The app as the CLI builds it, over an engine with a manual executor and clock;
    without the live what-if unless asked (its figures come from a thread, in their
    own time: screens compared with snapshots would differ from run to run)."""
    journal = Journal(tmp_path / "state")
    engine = Engine(
        fleet,
        journal=journal,
        executors={"local": executor or ManualExecutor()},
        clock=clock or FakeClock(),
        sample_interval=None,
    )
    return app_over(engine, whatif=whatif), journal


def app_over(engine: Engine, *, whatif: bool = False) -> FleetApp:
    """The app over `engine` as the CLI builds it: through a client, with the run's
    lifecycle (and its stop signals). `whatif`: predictions on (their timing is
    their own, so tests that look at the screen leave them off)."""
    return FleetApp(InProcessClient(engine, what_if=whatif), RunLifecycle(engine))


def engine_of(app: FleetApp) -> Engine:
    """The engine behind `app`, for a test to look at what the screen does not show."""
    client = app.client
    assert isinstance(client, InProcessClient)
    return client.engine


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Let the event loop run until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def small_fleet_tasks() -> list[dict[str, Any]]:
    """A small fleet in waves with CI on most tasks and a retry to spend."""
    return [
        {"id": "schema", "agent": "coder", "ci": "ci", "prompt": "Add the users table"},
        {"id": "auth-api", "agent": "coder", "ci": "ci", "prompt": "Sketch the auth API"},
        {"id": "ui-shell", "agent": "coder", "ci": "ci", "retries": 1, "prompt": "UI shell"},
        {"id": "docs", "agent": "coder", "prompt": "Outline the guide"},
        {"id": "login-endpoint", "agent": "coder", "ci": "ci", "depends_on": ["schema"]},
        {"id": "user-model", "agent": "coder", "ci": "ci", "depends_on": ["schema"]},
        {"id": "ui-login", "agent": "coder", "depends_on": ["ui-shell"]},
        {"id": "sessions", "agent": "coder", "ci": "ci", "depends_on": ["login-endpoint"]},
    ]


async def busy_run(app: FleetApp, executor: ManualExecutor, clock: FakeClock) -> None:
    """Play a run to a busy moment: a CI attempt done after a wait, one in CI,
    a failed attempt retried, agents running with output."""
    engine = engine_of(app)

    def state(task: str) -> TaskState:
        return engine.task(task).state

    await until(lambda: len(executor.current) == 3)
    clock.advance(2.5)
    executor.finish("schema", output="schema done")
    await until(lambda: state("schema") is TaskState.CI_RUNNING and "docs" in executor.current)
    executor.finish("auth-api", output="api done")
    await until(lambda: state("auth-api") is TaskState.CI_QUEUED)
    clock.advance(1.5)
    executor.say("schema", "[ci] 41 passed")
    executor.finish("schema")  # its CI: auth-api's CI starts after 1.5 s in the queue
    await until(lambda: state("auth-api") is TaskState.CI_RUNNING)
    await until(lambda: state("login-endpoint") is TaskState.RUNNING)
    clock.advance(1.0)
    executor.say("ui-shell", "error: web/shell.tsx does not compile")
    executor.finish("ui-shell", exit_code=1)
    # Its retry waits for a slot: user-model, ready before it, takes the one it left.
    await until(lambda: state("ui-shell") is TaskState.READY)
    await until(lambda: state("user-model") is TaskState.RUNNING)
    clock.advance(2.0)
    executor.finish("docs", output="the outline")
    await until(lambda: state("docs") is TaskState.SUCCEEDED)
    await until(lambda: sum(t.state is TaskState.RUNNING for t in engine.snapshot().tasks) == 3)
    clock.advance(1.0)
    executor.say("auth-api", "[ci] running unit tests... (1.1s)")
    executor.say("login-endpoint", "editing src/api/login.py: adding the password check")
