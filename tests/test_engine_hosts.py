"""Host health as executors report it, and what views see of contention."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from conftest import PYTHON, EngineHarness, make_fleet
from fleetdeck.config import Fleet, build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors.base import HostState
from fleetdeck.executors.local import LocalExecutor
from fleetdeck.model import Event, EventKind, Stage
from fleetdeck.testing import ManualExecutor


def scripted_host(host: str) -> ManualExecutor:
    """A remote host whose health the test decides (down until it says); attempts
    succeed at once."""
    return ManualExecutor(host, script=itertools.repeat(0), up=False)


async def test_work_waits_for_a_host_to_come_up(harness: EngineHarness, tmp_path: Path) -> None:
    box = scripted_host("box")
    fleet = fleet_on_hosts(tmp_path, [{"id": "far", "agent": "remote"}], hosts=["box"])

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.RUN_STARTED:
            # Nothing may start while the host has not said it is up.
            asyncio.get_running_loop().call_later(0.3, bring_up)

    def bring_up() -> None:
        assert box.started == []
        assert box.opened
        box.report(HostState.UP, latency=0.002, load=(0.1, 0.2, 0.3))

    run = await harness.run(fleet, during=during, executors={"local": LocalExecutor(), "box": box})
    assert run.result.exit_code == 0
    assert [request.task for request in box.started] == ["far"]
    (up,) = run.of(EventKind.HOST_UP)
    assert up.data == {"host": "box", "state": "up", "latency": 0.002, "load": [0.1, 0.2, 0.3]}


def fleet_on_hosts(tmp_path: Path, tasks: list[dict[str, object]], *, hosts: list[str]) -> Fleet:
    """A fleet whose agent `remote` runs on the SSH hosts `hosts`."""
    return build_fleet(
        {
            "fleet": {"name": "hosts", "state_dir": "state", "grace_period": 0.2},
            "hosts": {name: {"address": f"{name}.example"} for name in hosts},
            "agents": {"remote": {"command": ["true"], "hosts": hosts}},
            "tasks": tasks,
        },
        source="hosts.toml",
        base_dir=tmp_path,
    )


async def test_a_failed_host_strands_only_work_that_has_no_other_host(
    harness: EngineHarness, tmp_path: Path
) -> None:
    bad, good = scripted_host("bad"), scripted_host("good")
    fleet = build_fleet(
        {
            "fleet": {"name": "hosts", "state_dir": "state"},
            "hosts": {"bad": {"address": "bad.example"}, "good": {"address": "good.example"}},
            "agents": {
                "only-bad": {"command": ["true"], "host": "bad"},
                "either": {"command": ["true"], "hosts": ["bad", "good"]},
            },
            "tasks": [
                {"id": "stranded", "agent": "only-bad"},
                {"id": "after-stranded", "agent": "either", "depends_on": ["stranded"]},
                {"id": "movable", "agent": "either"},
            ],
        },
        source="hosts.toml",
        base_dir=tmp_path,
    )

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.RUN_STARTED:
            loop = asyncio.get_running_loop()
            loop.call_soon(lambda: bad.report(HostState.FAILED, reason="host key not trusted"))
            loop.call_soon(good.report, HostState.UP)

    run = await harness.run(fleet, during=during, executors={"bad": bad, "good": good})
    assert run.result.exit_code == 1
    assert run.state("stranded") == "failed"
    assert run.state("after-stranded") == "blocked"
    assert run.state("movable") == "succeeded"
    assert [request.task for request in good.started] == ["movable"]
    assert bad.started == []
    (failed,) = run.of(EventKind.TASK_FAILED, "stranded")
    assert failed.data["reason"] == (
        "no usable host for agent 'only-bad' (bad: host key not trusted)"
    )
    (down,) = run.of(EventKind.HOST_DOWN, host="bad")
    assert down.data["state"] == "failed"


async def test_snapshot_shows_contention_history_and_attempt_resources(
    harness: EngineHarness, tmp_path: Path
) -> None:
    """A CPU-burning agent shows CPU and memory; one-second samples build history."""
    burn = tmp_path / "burn.py"
    burn.write_text("import time\nend = time.time() + 2.6\nwhile time.time() < end:\n    pass\n")
    fleet = make_fleet(
        tmp_path,
        [{"id": "burner", "agent": "py"}, {"id": "ci-bound", "agent": "py", "ci": "ci"}],
        agents={"py": {"command": [PYTHON, str(burn)], "slots": 1}},
        runners={"ci": {"command": ["true"]}},
    )
    seen: list[object] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED and event.task == "burner":
            asyncio.get_running_loop().call_later(2.3, lambda: seen.append(engine.snapshot()))

    await harness.run(fleet, during=during)
    (snapshot,) = seen
    (running,) = snapshot.running  # type: ignore[attr-defined]
    assert running.task == "burner"
    assert running.cpu_percent is not None and running.cpu_percent > 20
    assert running.rss_bytes is not None and running.rss_bytes > 1_000_000
    pool = next(p for p in snapshot.pools if p.stage is Stage.AGENT)  # type: ignore[attr-defined]
    assert len(pool.history) >= 2
    assert pool.history[-1].busy == 1 and pool.history[-1].total == 1
    assert pool.history[-1].waiting == 1  # ci-bound waits for the single slot
    (local,) = snapshot.hosts  # type: ignore[attr-defined]
    assert local.name == "local" and local.state is HostState.UP and local.running == 1
