"""The run's lifecycle, shared by the TUI and headless: it starts the engine's run,
owns the stop signals while the run is on, and tells the view how it ended."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from pathlib import Path

import pytest

from fleetdeck.engine import Engine
from fleetdeck.journal import Journal
from fleetdeck.lifecycle import RunLifecycle
from fleetdeck.testing import ManualExecutor
from tui_support import FakeClock, fleet, until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="signals as on Linux")


def engine_for(tmp_path: Path, executor: ManualExecutor) -> tuple[Engine, Journal]:
    journal = Journal(tmp_path / "state")
    tasks = [{"id": "a", "agent": "coder"}, {"id": "b", "agent": "coder"}]
    engine = Engine(
        fleet(tmp_path, tasks),
        journal=journal,
        executors={"local": executor},
        clock=FakeClock(),
        sample_interval=None,
    )
    return engine, journal


async def test_a_run_that_ends_by_itself_is_told_once_with_its_result(tmp_path: Path) -> None:
    executor = ManualExecutor()
    engine, journal = engine_for(tmp_path, executor)
    lifecycle = RunLifecycle(engine)
    told: list[int | None] = []
    lifecycle.start(on_finish=lambda: told.append(lifecycle.exit_code))
    with pytest.raises(RuntimeError, match="already started"):
        lifecycle.start()
    await until(lambda: len(executor.current) == 2)
    assert not lifecycle.finished and lifecycle.result is None and lifecycle.exit_code is None
    executor.finish("a")
    executor.finish("b", exit_code=1)
    result = await lifecycle.wait()
    await lifecycle.close()
    assert told == [1] and result.exit_code == 1 and not result.interrupted
    assert lifecycle.finished and lifecycle.failure is None
    assert not lifecycle.stopped_from_outside
    journal.close()


async def test_sigint_stops_cleanly_then_hurries_and_the_handlers_go_with_the_run(
    tmp_path: Path,
) -> None:
    executor = ManualExecutor()
    engine, journal = engine_for(tmp_path, executor)
    err = io.StringIO()
    lifecycle = RunLifecycle(engine, interrupt=True, err=err)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signalled: list[bool] = []
    lifecycle.start(on_stop_signal=lambda: signalled.append(True))
    await until(lambda: len(executor.current) == 2)
    os.kill(os.getpid(), signal.SIGINT)
    await until(lambda: bool(signalled))
    assert err.getvalue() == (
        f"fleetdeck: interrupted: stopping 2 attempt(s) (grace {engine.grace:g}s; "
        "Ctrl-C again to kill at once)\n"
    )
    assert lifecycle.stopped_from_outside
    # Cleanly: each attempt was given its grace period.
    assert [p.stopped_with for p in executor.current.values()] == [engine.grace] * 2
    # A second one is the lifecycle's too (it hurries; these attempts ended already).
    os.kill(os.getpid(), signal.SIGINT)
    await until(lambda: len(signalled) == 2)
    result = await lifecycle.wait()
    assert result.interrupted and result.exit_code == 130
    await lifecycle.close()
    # Python's own handlers are back: a Ctrl-C now is pytest's again.
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    journal.close()


async def test_close_leaves_no_work_behind(tmp_path: Path) -> None:
    """A view that goes away mid-run (a crash, a test's end) stops the run at once."""
    executor = ManualExecutor()
    engine, journal = engine_for(tmp_path, executor)
    lifecycle = RunLifecycle(engine)
    lifecycle.start()
    await until(lambda: len(executor.current) == 2)
    await asyncio.wait_for(lifecycle.close(), 10)
    assert lifecycle.finished and lifecycle.exit_code == 130
    journal.close()
