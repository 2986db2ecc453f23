"""fleetdeck.testing on its own: the executors other tests drive the engine with."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from fleetdeck.executors.base import HostHealth, HostLostError, HostState, LaunchRequest
from fleetdeck.model import Stage
from fleetdeck.testing import LOST, InstantExecutor, ManualExecutor


def request(tmp_path: Path, task: str, number: int = 1) -> LaunchRequest:
    stem = tmp_path / f"{task}.{number}"
    return LaunchRequest(
        attempt_id=number, task=task, stage=Stage.AGENT, number=number, argv=("true",),
        env={}, cwd=None, log_path=f"{stem}.log", output_path=f"{stem}.out",
        inputs_path=f"{stem}.inputs.json", inputs={},
    )  # fmt: skip


async def test_attempts_end_when_the_test_says(tmp_path: Path) -> None:
    executor = ManualExecutor()
    first = await executor.start(request(tmp_path, "a"))
    second = await executor.start(request(tmp_path, "b"))
    waiting = asyncio.ensure_future(first.wait())
    await asyncio.sleep(0.01)
    assert not waiting.done() and not first.ended
    executor.say("a", "working")
    executor.finish("a", exit_code=3, output="result")
    assert await waiting == 3
    assert (tmp_path / "a.1.log").read_text() == "[agent] a: starting attempt 1\nworking\n"
    assert (tmp_path / "a.1.out").read_text() == "result"
    executor.lose("b")
    with pytest.raises(HostLostError):
        await second.wait()
    executor.finish("b", exit_code=0)  # too late: an attempt ends once
    with pytest.raises(HostLostError):
        await second.wait()
    assert executor.attempts() == [("a", "agent", 1), ("b", "agent", 1)]
    assert (first.pid, second.pid) == (40000, 40001)


async def test_a_stop_ends_the_attempt_as_sigterm_does(tmp_path: Path) -> None:
    executor = ManualExecutor(announce=False)
    process = await executor.start(request(tmp_path, "a"))
    await process.stop(2.5)
    await process.stop(0.0)  # a second Ctrl-C
    assert await process.wait() == -signal.SIGTERM
    assert process.stopped_with == 2.5
    assert not (tmp_path / "a.1.log").exists()


async def test_scripted_endings_come_first_then_the_test_decides(tmp_path: Path) -> None:
    executor = ManualExecutor(script=[LOST, 7])
    lost, failed, manual = [await executor.start(request(tmp_path, "t", n)) for n in (1, 2, 3)]
    with pytest.raises(HostLostError):
        await lost.wait()
    assert await failed.wait() == 7
    assert not manual.ended
    assert executor.current["t"] is manual


async def test_health_reported_before_open_is_given_on_open() -> None:
    reports: list[HostHealth] = []
    up = ManualExecutor("box")
    await up.open(reports.append)
    assert reports == [HostHealth("box", HostState.UP)]

    reports.clear()
    down = ManualExecutor("box", up=False)
    await down.open(reports.append)
    assert reports == [] and down.opened
    down.report(HostState.UP, latency=0.5)
    assert reports == [HostHealth("box", HostState.UP, latency=0.5)]

    reports.clear()
    early = ManualExecutor("box", up=False)
    early.report(HostState.FAILED, reason="host key not trusted")
    assert not early.opened
    await early.open(reports.append)
    assert reports == [HostHealth("box", HostState.FAILED, reason="host key not trusted")]


async def test_instant_attempts_have_succeeded_already(tmp_path: Path) -> None:
    process = await InstantExecutor().start(request(tmp_path, "t"))
    assert await process.wait() == 0
