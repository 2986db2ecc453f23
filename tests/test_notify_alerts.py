"""What needs the operator is told, every kind the same way: the events of real
runs (a landing that conflicts, one waiting on a dirty checkout, an agent at its
usage limit, a budget spent) heard by a `Notifier` that runs a real command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_server import api_server
from conftest import EngineHarness, make_fleet
from fleetdeck.alerts import alert_of
from fleetdeck.engine import Engine
from fleetdeck.model import Event, EventKind
from fleetdeck.notify import Notifier
from git_support import git, make_repo
from test_budget_attention import writer
from test_land import CONFLICTING
from test_usage_limit import AGENT
from test_worktrees import land, land_fleet, landing


async def _told(events: list[Event], tmp_path: Path) -> list[str]:
    """What a notifier with a long interval says of `events`: the first alert at
    the loop's next turn, the rest gathered with the end."""
    told = tmp_path / "told"
    notifier = Notifier(
        "n", command=["sh", "-c", f'echo "$0" >> {told}', "{message}"], interval=120.0
    )
    for event in events:
        notifier(event)
    await notifier.close()
    return told.read_text().splitlines()


async def test_a_merge_conflict_is_told(harness: EngineHarness, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = [{"id": t, "agent": "sh", "prompt": CONFLICTING, "retries": 1} for t in ("a", "b")]
    run = await land(harness, land_fleet(tmp_path, repo, tasks), tmp_path)
    (conflict,) = [e for e in run.events if e.data.get("outcome") == "conflict"]
    assert await _told(run.events, tmp_path) == [
        f"fleetdeck n: merge conflict: {conflict.task}; run finished (exit 0)"
    ]


async def test_a_landing_waiting_on_a_dirty_checkout_is_told(
    harness: EngineHarness, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "README").write_text("my own edit\n")
    fleet = land_fleet(tmp_path, repo, [{"id": "a", "agent": "sh", "prompt": "echo x > README"}])
    waits: list[Event] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_FINISHED and event.data.get("outcome") == "wait":
            waits.append(event)
            if len(waits) == 2:
                git(repo, "checkout", "--", "README")

    run = await harness.run(fleet, during=during, **landing(fleet, tmp_path))
    assert len(waits) == 2
    # Waiting twice is one task waiting: named once.
    assert await _told(run.events, tmp_path) == [
        "fleetdeck n: waiting to land (local changes in the target): a; run finished (exit 0)"
    ]


async def test_an_agent_throttled_is_told_with_when_it_resumes(
    harness: EngineHarness, tmp_path: Path
) -> None:
    fleet = make_fleet(
        tmp_path,
        [{"id": "a", "agent": "coder", "retries": 0}],
        agents={
            "coder": {
                "command": ["sh", "-c", AGENT],
                "env": {"MARK": str(tmp_path / "limited")},
                "usage_limit": {"pattern": "usage limit", "resume_after": 60},
            }
        },
    )
    run = await harness.run(fleet)
    (paused,) = run.of(EventKind.PAUSED)
    assert await _told(run.events, tmp_path) == [
        f"fleetdeck n: agent throttled: coder until {paused.data['until']}; run finished (exit 0)"
    ]


async def test_a_budget_spent_is_told(harness: EngineHarness, tmp_path: Path) -> None:
    with api_server("--latency", "0", "--chunk-delay", "0", "--words", "10") as server:
        fleet = make_fleet(
            tmp_path,
            [{"id": f"t{i}", "agent": "writer", "prompt": f"item {i}"} for i in range(4)],
            agents={"writer": writer(server.base_url, 0.015)},
        )
        run = await harness.run(fleet)
    lines = await _told(run.events, tmp_path)
    assert len(lines) == 1, lines
    assert "budget spent on writer: $0.0200 of $0.015" in lines[0]
    assert lines[0].endswith("run finished (exit 1)")


def test_the_socket_form_of_an_event_is_the_same_alert() -> None:
    """Over the control socket, enums in `data` are strings: an attached screen
    rings for the same events as the in-process one."""
    wait: dict[str, Any] = {"stage": "merge", "outcome": "wait"}
    assert alert_of(Event(0.0, EventKind.ATTEMPT_FINISHED, "a", wait)) is not None
    assert alert_of(Event(0.0, EventKind.ATTEMPT_FINISHED, "a", {"outcome": "ok"})) is None
