"""The core's agent limits in virtual time: throttled attempts pause their agent
and spend no retry; refused keys hold it; budgets stop launches (engine/limits.py)."""

from __future__ import annotations

from core_support import CoreSim, fleet_toml
from fleetdeck.model import EventKind, Outcome


def test_throttled_pauses_the_agent_until_the_reset_and_spends_no_retry() -> None:
    sim = CoreSim(fleet_toml([{"id": f"t{i}"} for i in range(3)], slots=2, agents={"coder": 2}))
    sim.start()
    assert sim.launched() == [("t0", "agent"), ("t1", "agent")]
    running = sim.running("t0")
    running.details = {"retry_after": 10.0}
    sim.end("t0", 1, Outcome.THROTTLED)
    # The freed slot stays empty: the agent is paused, t0 waits in the retry lane.
    assert sim.launched() == [] and sim.state("t0") == "ready"
    assert sim.core.limits.why("coder") is not None
    sim.end("t1", 0)  # work in flight finishes; still nothing launches
    assert sim.launched() == []
    sim.advance(9.9)
    assert sim.launched() == []
    sim.advance(0.2)
    # Resumed: the throttled task first (it was in flight), then the next.
    assert sim.launched() == [("t0", "agent"), ("t2", "agent")]
    task = sim.core.tasks[sim.core.node("t0")]
    assert task.failures == 0 and task.agent_attempts == 2
    ready = [e for e in sim.take_events() if e.kind is EventKind.TASK_READY and e.task == "t0"]
    assert "throttled: agent coder resumes at" in ready[-1].data["reason"]


def test_a_later_throttle_extends_the_pause_an_earlier_one_does_not_shorten_it() -> None:
    sim = CoreSim(fleet_toml([{"id": f"t{i}"} for i in range(3)], agents={"coder": 2}))
    sim.start()
    sim.running("t0").details = {"retry_after": 10.0}
    sim.end("t0", 1, Outcome.THROTTLED)
    sim.running("t1").details = {"retry_after": 2.0}
    sim.end("t1", 1, Outcome.THROTTLED)
    sim.launched()
    sim.advance(5)
    assert sim.launched() == []
    sim.advance(5.1)
    assert len(sim.launched()) == 2


def test_a_permanent_failure_spends_no_retry_and_a_refused_key_holds_the_agent() -> None:
    sim = CoreSim(fleet_toml([{"id": "t0", "retries": 3}, {"id": "t1"}], agents={"coder": 1}))
    sim.start()
    sim.running("t0").details = {"permanent": True, "auth": True}
    sim.running("t0").attempt.error = "HTTP 401: bad key"
    sim.end("t0", 1, Outcome.FAILED)
    assert sim.state("t0") == "failed" and sim.core.tasks[0].agent_attempts == 1
    assert sim.launched() == [("t0", "agent")]  # only the first launch
    assert sim.state("t1") == "ready"  # held, not failed
    from fleetdeck.engine import commands

    commands.resume(sim.core)
    sim.settle()
    assert sim.launched() == [("t1", "agent")]


def test_a_spent_budget_stops_launches_and_fails_what_waited_for_it() -> None:
    sim = CoreSim(fleet_toml([{"id": f"t{i}"} for i in range(4)], agents={"coder": 2}, budget=1.0))
    sim.start()
    sim.launched()
    sim.running("t0").details = {"usage": {"input_tokens": 1, "output_tokens": 1, "cost": 0.6}}
    sim.end("t0", 0)
    assert sim.launched() == [("t2", "agent")]
    sim.running("t1").details = {"usage": {"input_tokens": 1, "output_tokens": 1, "cost": 0.6}}
    sim.end("t1", 0)
    # Over the fleet's budget: t2 (in flight) goes on, t3 (waiting) fails with why.
    assert sim.launched() == [] and sim.state("t2") == "running"
    assert sim.state("t3") == "failed"
    events = sim.take_events()
    failed = [e for e in events if e.kind is EventKind.TASK_FAILED]
    assert [e.task for e in failed] == ["t3"]
    assert "the fleet's budget is spent ($1.2000 of $1)" in failed[0].data["reason"]
    assert any(e.kind is EventKind.PAUSED and e.data.get("agent") == "coder" for e in events)
    sim.end("t2", 0)
    assert sim.state("t2") == "succeeded" and sim.core.settled


def test_a_spent_budget_reroutes_what_waits_to_a_fallback() -> None:
    text = fleet_toml([{"id": f"t{i}"} for i in range(3)], agents={"coder": 1, "spare": 1})
    text = text.replace(
        '[agents.coder]\ncommand = ["true"]\nslots = 1',
        '[agents.coder]\ncommand = ["true"]\nslots = 1\nbudget = 0.5\nfallback = "spare"',
    )
    sim = CoreSim(text)
    sim.start()
    sim.running("t0").details = {"usage": {"input_tokens": 1, "output_tokens": 1, "cost": 0.6}}
    sim.end("t0", 0)
    # coder is over budget: t1 and t2 go to spare (one slot), nothing fails.
    assert [(r.attempt.task, r.attempt.worker) for r in sim.fx.started[1:]] == [("t1", "spare")]
    rerouted = [e for e in sim.take_events() if e.kind is EventKind.TASK_REROUTED]
    assert [e.task for e in rerouted] == ["t1", "t2"]
    assert "budget of agent coder spent" in rerouted[0].data["reason"]
    sim.end("t1", 0)
    sim.end("t2", 0)
    assert sim.core.settled and sim.states() == dict.fromkeys(("t0", "t1", "t2"), "succeeded")
