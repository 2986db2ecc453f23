"""Fallback agents and optional tasks: in virtual time (the core's rules), and in
a real run against the local API server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api_server import api_server
from conftest import EngineHarness, make_fleet
from core_support import CoreSim
from fleetdeck.config import ConfigError, parse_fleet
from fleetdeck.model import EventKind, Outcome

TWO_AGENTS = """
[fleet]
name = "fb"
retry_backoff = 1.0
[agents.main]
command = ["true"]
slots = 1
fallback = "spare"
fallback_after = 30
[agents.spare]
command = ["true"]
slots = 1
"""


def tasks(*lines: str) -> str:
    return TWO_AGENTS + "".join(f"\n[[tasks]]\n{line}\n" for line in lines)


def test_spent_attempts_reroute_to_the_fallback_with_a_fresh_budget() -> None:
    sim = CoreSim(tasks('id = "a"\nagent = "main"\nretries = 1'))
    sim.start()
    sim.end("a", 1)
    sim.advance(2)
    assert sim.launched() == [("a", "agent"), ("a", "agent")]
    sim.end("a", 1)  # its attempts on main are spent
    assert sim.launched() == [("a", "agent")]
    assert sim.running("a").attempt.worker == "spare"
    rerouted = [e for e in sim.take_events() if e.kind is EventKind.TASK_REROUTED]
    assert [(e.data["from"], e.data["to"]) for e in rerouted] == [("main", "spare")]
    assert rerouted[0].data["reason"] == "failed after 2 attempts on main"
    sim.end("a", 1)
    sim.advance(2)
    sim.end("a", 0)  # its retry on spare succeeds: a fresh budget there
    assert sim.state("a") == "succeeded"


def test_no_fallback_left_fails_as_before() -> None:
    sim = CoreSim(tasks('id = "a"\nagent = "spare"'))
    sim.start()
    sim.end("a", 1)
    assert sim.state("a") == "failed"


def test_throttled_longer_than_fallback_after_reroutes_what_waits() -> None:
    sim = CoreSim(tasks('id = "a"\nagent = "main"', 'id = "b"\nagent = "main"'))
    sim.start()
    sim.running("a").details = {"retry_after": 3600}
    sim.end("a", 1, Outcome.THROTTLED)
    # Both go to spare (one slot): a first (in flight), then b.
    assert [(r.attempt.task, r.attempt.worker) for r in sim.fx.started[1:]] == [("a", "spare")]
    sim.end("a", 0)
    assert sim.running("b").attempt.worker == "spare"


def test_a_short_throttle_waits_instead() -> None:
    sim = CoreSim(tasks('id = "a"\nagent = "main"'))
    sim.start()
    sim.running("a").details = {"retry_after": 10}
    sim.end("a", 1, Outcome.THROTTLED)
    assert len(sim.fx.started) == 1
    sim.advance(10.1)
    assert sim.running("a").attempt.worker == "main"


def test_an_optional_failure_lets_its_dependents_run() -> None:
    sim = CoreSim(
        tasks(
            'id = "extra"\nagent = "spare"\noptional = true',
            'id = "base"\nagent = "spare"',
            'id = "merge"\nagent = "spare"\ndepends_on = ["extra", "base"]',
        )
    )
    sim.start()
    sim.end("extra", 1)
    sim.end("base", 0)
    assert sim.state("extra") == "failed" and sim.state("merge") == "running"
    node = sim.core.node("extra")
    assert (
        sim.core.missing[node] == "(missing: optional task 'extra' failed: failed after 1 attempt)"
    )
    sim.end("merge", 0)
    assert sim.core.settled


def test_fallbacks_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_fleet(
            TWO_AGENTS.replace('fallback = "spare"', 'fallback = "spars"')
            + '\n[[tasks]]\nid = "a"\nagent = "main"\nfallback = "nope"\n'
        )
    text = caught.value.render()
    assert "agents.main.fallback: unknown agent 'spars' (did you mean 'spare'?)" in text
    assert "tasks[0].fallback: unknown agent 'nope'" in text


async def test_a_refused_model_reroutes_to_another_provider_and_inputs_mark_what_is_missing(
    harness: EngineHarness, tmp_path: Path
) -> None:
    with api_server("--latency", "0", "--chunk-delay", "0") as server:
        fleet = make_fleet(
            tmp_path,
            [
                {"id": "draft", "agent": "primary", "prompt": "Write it"},
                {"id": "extra", "agent": "sh", "prompt": "exit 3", "optional": True},
                {
                    "id": "merge",
                    "agent": "sh",
                    "prompt": 'cat "$FLEETDECK_INPUTS" > "$FLEETDECK_OUTPUT"',
                    "depends_on": ["draft", "extra"],
                },
            ],
            agents={
                # A model the server refuses (a 404): the draft goes to the other format.
                "primary": {
                    "kind": "openai",
                    "model": "error-404",
                    "base_url": server.base_url,
                    "fallback": "backup",
                },
                "backup": {"kind": "anthropic", "model": "local", "base_url": server.base_url},
                "sh": {"command": ["sh", "-c", "{prompt}"]},
            },
        )
        run = await harness.run(fleet)
    assert run.state("draft") == "succeeded" and run.state("merge") == "succeeded"
    assert run.state("extra") == "failed"
    (rerouted,) = run.of(EventKind.TASK_REROUTED, "draft")
    assert (rerouted.data["from"], rerouted.data["to"]) == ("primary", "backup")
    run_dir = next(p for p in (tmp_path / "state" / "runs").iterdir() if p.is_dir())
    inputs = json.loads((run_dir / "merge.1.agent.out").read_text())
    assert inputs["draft"].startswith("On Write it")
    assert inputs["extra"] == "(missing: optional task 'extra' failed: failed after 1 attempt)"
    assert run.result.exit_code == 1  # the optional task failed: the run says so
    usage = run.result.report.usage
    assert set(usage) == {"backup"} and usage["backup"].requests == 1


def test_api_agent_keys_are_checked() -> None:
    text = (
        '[repo]\npath = "."\n'
        '[agents.w]\nkind = "openai"\ncommand = ["x"]\nhost = "local"\n'
        '[agents.p]\ncommand = ["true"]\nmodel = "m"\nusage_limit = { pattern = "(" }\n'
        '[runners.r]\nkind = "anthropic"\nmodel = "m"\n'
        '[[tasks]]\nid = "a"\nagent = "w"\n'
    )
    with pytest.raises(ConfigError) as caught:
        parse_fleet(text)
    lines = caught.value.render().splitlines()
    for expected in (
        "agents.w.kind: API agents do not work in a fleet with [repo] yet: "
        "run them in a fleet of their own",
        "agents.w.command: an agent of kind 'openai' runs no command",
        "agents.w.host: an agent of kind 'openai' takes no host",
        "agents.w: missing required key 'model' (an agent of kind 'openai')",
        "agents.p.model: only an API agent takes it (kind = 'openai' or 'anthropic')",
        "runners.r.kind: a runner runs a command; only agents may be API agents",
    ):
        assert any(line.endswith(expected) for line in lines), (expected, lines)
    assert any("agents.p.usage_limit.pattern: bad regular expression" in line for line in lines)
