"""What a restarted supervisor keeps of fallbacks, throttles and optional tasks:
real processes, the real local API server, the real journal, two supervisors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api_server import api_server
from conftest import make_fleet
from fleetdeck.config import Fleet
from fleetdeck.engine import Engine, RunResult
from fleetdeck.executors import build_executors
from fleetdeck.journal import Journal
from fleetdeck.model import Event, EventKind, Outcome
from fleetdeck.resume import choose_run, throttles


async def supervise(
    fleet: Fleet, state: Path, stop_when: Callable[[Event], bool] | None = None
) -> tuple[RunResult, list[Event], Engine]:
    """One supervisor on `state`, taking up the latest unfinished run; stopped
    (as Ctrl-C does) at the first event `stop_when` is true of."""
    journal = Journal(state)
    try:
        previous = choose_run(journal.latest_run(), fleet.name, str(state))
        engine = Engine(fleet, journal=journal, executors=build_executors(fleet), resume=previous)
        events: list[Event] = []

        def listen(event: Event) -> None:
            events.append(event)
            if stop_when is not None and stop_when(event):
                engine.request_stop()

        engine.subscribe(listen)
        return await engine.run(), events, engine
    finally:
        journal.close()


def counted(marks: Path, name: str, then: str) -> str:
    """A command that appends a line to `marks/name` each time it runs, then runs `then`."""
    return f"echo run >> {marks}/{name}; {then}"


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


async def test_a_rerouted_task_stays_on_its_fallback_after_a_restart(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    # main always fails; spare sleeps the first time (the supervisor is stopped
    # under it), and succeeds the next.
    spare = counted(
        marks,
        "spare",
        f'if [ -e {marks}/slept ]; then echo done > "$FLEETDECK_OUTPUT"; '
        f"else touch {marks}/slept; sleep 30; fi",
    )
    fleet = make_fleet(
        tmp_path,
        [{"id": "a", "agent": "main", "prompt": "x", "retries": 0}],
        agents={
            "main": {
                "command": ["sh", "-c", counted(marks, "main", "exit 3")],
                "fallback": "spare",
            },
            "spare": {"command": ["sh", "-c", spare]},
        },
        grace_period=0.2,
    )

    def on_spare(event: Event) -> bool:
        return event.kind is EventKind.ATTEMPT_STARTED and event.data.get("agent") == "spare"

    first, events, _ = await supervise(fleet, state, on_spare)
    assert first.exit_code == 130
    assert [e.data["to"] for e in events if e.kind is EventKind.TASK_REROUTED] == ["spare"]

    second, events, engine = await supervise(fleet, state)
    assert second.exit_code == 0
    started = [e.data["agent"] for e in events if e.kind is EventKind.ATTEMPT_STARTED]
    # On spare at once: main, whose attempts it spent, is not tried again.
    assert started == ["spare"]
    assert (lines(marks / "main"), lines(marks / "spare")) == (1, 2)
    assert not [e for e in events if e.kind is EventKind.TASK_REROUTED]
    assert engine.snapshot().tasks[0].agent == "spare"


async def test_a_throttled_agent_stays_paused_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # 12 requests a minute, one at a time: the second request within 5 s gets a
    # 429 with Retry-After up to 5 s.
    with api_server("--latency", "0", "--chunk-delay", "0", "--rpm", "12") as server:
        agent = {"kind": "openai", "model": "m", "base_url": server.base_url, "slots": 1}
        fleet = make_fleet(
            tmp_path,
            [{"id": "a", "agent": "writer", "prompt": "A"}, {"id": "b", "agent": "writer"}],
            agents={"writer": agent},
            grace_period=0.2,
        )

        def on_throttle(event: Event) -> bool:
            return event.kind is EventKind.PAUSED and event.data.get("agent") == "writer"

        first, events, _ = await supervise(fleet, state, on_throttle)
        assert first.exit_code == 130
        (throttled,) = [
            e
            for e in events
            if e.kind is EventKind.ATTEMPT_FINISHED and e.data["outcome"] == "throttled"
        ]
        (paused,) = [e for e in events if e.kind is EventKind.PAUSED]
        until = paused.ts + paused.data["delay"]
        assert paused.data["delay"] == throttled.data["retry_after"] > 1
        assert paused.data["until"].endswith("Z")

        second, events, _ = await supervise(fleet, state)
        stats = server.stats()
    assert second.exit_code == 0
    # The restarted supervisor held the agent until the server's time: the one
    # request over the limit is the one before the restart.
    assert stats["over_limit"] == 1 and stats["completed"] == 2
    started = [e for e in events if e.kind is EventKind.ATTEMPT_STARTED]
    assert len(started) == 1 and started[0].ts >= until - 0.05
    assert [e.task for e in events if e.kind is EventKind.TASK_SUCCEEDED] == [throttled.task]


async def test_a_throttled_agent_is_shown_held_after_a_restart(tmp_path: Path) -> None:
    # A CLI agent at its usage limit ("try again in 1 minute"): the restarted
    # supervisor says until when, and starts nothing before.
    state = tmp_path / "state"
    fleet = make_fleet(
        tmp_path,
        [{"id": "a", "agent": "coder", "prompt": "x"}],
        agents={
            "coder": {
                "command": ["sh", "-c", "echo 'Usage limit reached. Try again in 1 minute.'"],
                "usage_limit": {"pattern": "usage limit", "resume_after": 5},
            }
        },
    )

    def on_throttle(event: Event) -> bool:
        return event.kind is EventKind.PAUSED

    first, events, _ = await supervise(fleet, state, on_throttle)
    assert first.exit_code == 130
    (paused,) = [e for e in events if e.kind is EventKind.PAUSED]
    assert paused.data["delay"] == 60 and "Try again in 1 minute" in paused.data["reason"]
    journal = Journal(state)
    try:
        engine = Engine(
            fleet,
            journal=journal,
            executors=build_executors(fleet),
            resume=choose_run(journal.latest_run(), fleet.name, str(state)),
        )
        events = []
        engine.subscribe(events.append)
        task = asyncio.ensure_future(engine.run())
        await asyncio.sleep(0.5)
        assert not [e for e in events if e.kind is EventKind.ATTEMPT_STARTED]
        (pool,) = [p for p in engine.snapshot().pools if p.name == "coder"]
        assert pool.held == "throttled"
        assert pool.held_until is not None and abs(pool.held_until - (paused.ts + 60)) < 0.01
        engine.request_stop()
        assert (await task).exit_code == 130
    finally:
        journal.close()


async def test_dependents_of_a_failed_optional_task_run_after_a_restart(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    state = tmp_path / "state"
    slow_once = f"if [ ! -e {marks}/slept ]; then touch {marks}/slept; sleep 30; fi"
    fleet = make_fleet(
        tmp_path,
        [
            {"id": "extra", "agent": "sh", "prompt": "exit 3", "optional": True},
            {"id": "base", "agent": "sh", "prompt": f"{slow_once}; echo base > $FLEETDECK_OUTPUT"},
            {
                "id": "merge",
                "agent": "sh",
                "prompt": f'cat "$FLEETDECK_INPUTS" > {marks}/merge.inputs',
                "depends_on": ["extra", "base"],
            },
        ],
        grace_period=0.2,
    )

    def on_failed(event: Event) -> bool:
        return event.kind is EventKind.TASK_FAILED and event.task == "extra"

    first, _, _ = await supervise(fleet, state, on_failed)
    assert first.exit_code == 130
    second, events, engine = await supervise(fleet, state)
    assert engine.task("merge").state == "succeeded"
    assert not [e for e in events if e.kind is EventKind.TASK_BLOCKED]
    inputs = json.loads((marks / "merge.inputs").read_text())
    assert inputs == {
        "base": "base\n",
        "extra": "(missing: optional task 'extra' failed: failed after 1 attempt)",
    }
    assert second.exit_code == 1  # the optional task failed: the run says so


def test_throttles_are_read_from_paused_events_only_with_a_delay() -> None:
    def paused(ts: float, **data: Any) -> Event:
        return Event(ts, EventKind.PAUSED, None, data)

    events = [
        paused(100.0),  # the operator's pause
        paused(101.0, agent="w", reason="budget of agent w spent ($1 of $1)"),
        paused(102.0, agent="x", delay=30.0, until="...", reason="429"),
        paused(110.0, agent="x", delay=5.0, until="...", reason="429"),  # ends sooner: kept
        Event(103.0, EventKind.ATTEMPT_FINISHED, "t", {"outcome": Outcome.THROTTLED}),
    ]
    assert throttles(events) == {"x": 132.0}


async def test_what_was_spent_before_a_restart_counts_against_the_budget(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # A cent a request (10 tokens out at $1000 per million); the budget holds two.
    with api_server("--latency", "0.3", "--chunk-delay", "0", "--words", "10") as server:
        agent = {
            "kind": "openai",
            "model": "m",
            "base_url": server.base_url,
            "slots": 1,
            "price": {"input": 0, "output": 1000.0},
            "budget": 0.015,
        }
        fleet = make_fleet(
            tmp_path,
            [{"id": f"t{i}", "agent": "writer", "prompt": f"item {i}"} for i in range(4)],
            agents={"writer": agent},
            grace_period=0.2,
        )

        def on_first(event: Event) -> bool:
            return event.kind is EventKind.TASK_SUCCEEDED

        first, _, _ = await supervise(fleet, state, on_first)
        assert first.exit_code == 130
        assert server.stats()["completed"] == 1
        second, events, engine = await supervise(fleet, state)
        stats = server.stats()
    # One more request after the restart spends the budget: the cent before it counted.
    assert stats["completed"] == 2
    (paused,) = [e for e in events if e.kind is EventKind.PAUSED]
    assert paused.data["attention"] == "budget spent on writer: $0.0200 of $0.015"
    assert sorted(e.task for e in events if e.kind is EventKind.TASK_FAILED) == ["t2", "t3"]
    (pool,) = [p for p in engine.snapshot().pools if p.name == "writer"]
    assert pool.tokens is not None and pool.tokens[1] == 20 and pool.cost == 0.02
    assert second.exit_code == 1
