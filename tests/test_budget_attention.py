"""A spent budget needs the operator: an agent's item in the attention queue (the
cognitive-load pane counts it) and one line in the headless view; against the
real local API server, with the real CLI for the headless run."""

from __future__ import annotations

from pathlib import Path

from api_server import api_server
from conftest import EngineHarness, make_fleet
from fleetdeck.model import EventKind, TaskState
from test_cli_run import fleetdeck


def writer(url: str, budget: float) -> dict[str, object]:
    # 10 output tokens at $1000 per million: a cent each request.
    return {
        "kind": "openai",
        "model": "m",
        "base_url": url,
        "slots": 1,
        "price": {"input": 0, "output": 1000.0},
        "budget": budget,
    }


async def test_a_spent_budget_is_an_item_of_the_attention_queue(
    harness: EngineHarness, tmp_path: Path
) -> None:
    with api_server("--latency", "0", "--chunk-delay", "0", "--words", "10") as server:
        fleet = make_fleet(
            tmp_path,
            [{"id": f"t{i}", "agent": "writer", "prompt": f"item {i}"} for i in range(4)],
            agents={"writer": writer(server.base_url, 0.015)},
        )
        run = await harness.run(fleet)
    (paused,) = run.of(EventKind.PAUSED)
    assert paused.data["attention"] == "budget spent on writer: $0.0200 of $0.015"
    snapshot = run.engine.snapshot()
    agents = [item for item in snapshot.attention if item.agent is not None]
    assert [(i.agent, i.task, i.state, i.reason) for i in agents] == [
        ("writer", "", TaskState.BLOCKED, paused.data["attention"])
    ]
    assert abs(agents[0].since - paused.ts) < 0.01
    # Counted in the operator's load beside the two tasks that failed for it.
    assert snapshot.load.needs_attention == len(snapshot.attention) == 3


def test_headless_says_once_that_the_budget_is_spent(tmp_path: Path) -> None:
    with api_server("--latency", "0", "--chunk-delay", "0", "--words", "10") as server:
        tasks = "".join(
            f'\n[[tasks]]\nid = "t{i}"\nagent = "w{i % 2}"\nprompt = "item {i}"\n' for i in range(6)
        )
        agents = "".join(
            f'\n[agents.w{n}]\nkind = "openai"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
            "slots = 1\nprice = { input = 0, output = 1000.0 }\n"
            for n in range(2)
        )
        config = tmp_path / "fleet.toml"
        config.write_text(
            '[fleet]\nname = "spend"\nstate_dir = "state"\nbudget = 0.03\n' + agents + tasks
        )
        done = fleetdeck("run", str(config), "--no-tui")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    told = [line.strip() for line in lines if "needs you:" in line]
    # The fleet's budget: each agent that costs is held, and said so once.
    assert sorted(told) == [
        "needs you: budget spent on w0: the fleet's $0.0300 of $0.03",
        "needs you: budget spent on w1: the fleet's $0.0300 of $0.03",
    ]
    # Under the paused event that says it (which does not repeat it in its details).
    for line in told:
        above = lines[lines.index(next(x for x in lines if x.strip() == line)) - 1]
        assert " paused " in above and "attention=" not in above
