"""Operator commands as transitions of the core, in virtual time: retry, cancel,
acknowledge, pause and resume, set_policy, with the exact events each tells."""

from __future__ import annotations

import pytest

from core_support import CoreSim, chain, fleet_toml
from fleetdeck.engine import commands
from fleetdeck.engine.core import CommandError
from fleetdeck.model import TaskState

# --- retry and cancel --------------------------------------------------------------


def failed_chain(**settings: object) -> CoreSim:
    """a -> b -> c, with a failed (no retries) and b, c blocked."""
    sim = CoreSim(fleet_toml(chain("a", "b", "c"), **settings))
    sim.start()
    sim.end("a", exit_code=1)
    assert sim.states() == {"a": "failed", "b": "blocked", "c": "blocked"}
    sim.launched()
    sim.take()
    return sim


def test_operator_retry_of_a_failed_task_requeues_it_and_unblocks_its_dependents() -> None:
    sim = failed_chain()
    commands.retry(sim.core, "a")
    sim.settle()
    events = [(str(e.kind), e.task, e.data) for e in sim.take_events()]
    assert events == [
        (
            "task_requeued",
            "a",
            {"state": "ready", "stage": "agent", "reason": "operator retry", "cause": "operator"},
        ),
        ("task_ready", "a", {"wave": 0}),
        ("task_requeued", "b", {"state": "pending", "reason": "'a' retried", "cause": "upstream"}),
        ("task_requeued", "c", {"state": "pending", "reason": "'a' retried", "cause": "upstream"}),
    ]
    assert sim.launched() == [("a", "agent")]
    assert sim.running("a").attempt.number == 2
    assert not any(sim.core.needs_attention(node) for node in range(3))
    sim.end("a")
    sim.end("b")
    sim.end("c")
    assert sim.core.settled and set(sim.states().values()) == {"succeeded"}


def test_operator_retry_of_a_blocked_root_retries_what_blocks_it() -> None:
    sim = failed_chain()
    with pytest.raises(CommandError, match="blocked by 'a', which is not one of its own"):
        commands.retry(sim.core, "c")
    commands.retry(sim.core, "b")
    sim.settle()
    assert sim.take()[:2] == [("task_requeued", "a"), ("task_ready", "a")]
    assert sim.launched() == [("a", "agent")]
    assert sim.states() == {"a": "running", "b": "pending", "c": "pending"}


def test_operator_retry_of_a_cancelled_task() -> None:
    sim = CoreSim(fleet_toml(chain("a", "b")))
    sim.start()
    commands.cancel(sim.core, "a")
    sim.end("a", exit_code=-15)
    assert sim.states() == {"a": "cancelled", "b": "blocked"}
    sim.take()
    commands.retry(sim.core, "a")
    sim.settle()
    assert sim.take() == [("task_requeued", "a"), ("task_ready", "a"), ("task_requeued", "b")]
    assert sim.launched() == [("a", "agent"), ("a", "agent")]


def test_retry_refuses_a_task_that_is_not_failed_cancelled_or_blocked() -> None:
    sim = CoreSim(fleet_toml([{"id": "a"}]))
    sim.start()
    with pytest.raises(CommandError, match="cannot retry 'a': it is running"):
        commands.retry(sim.core, "a")
    with pytest.raises(CommandError, match="unknown task 'b'"):
        commands.retry(sim.core, "b")


def test_cancel_of_a_running_task_stops_it_and_ends_it_cancelled() -> None:
    sim = CoreSim(fleet_toml(chain("a", "b")))
    sim.start()
    running = sim.begin("a")
    sim.take()
    commands.cancel(sim.core, "a")
    assert sim.fx.stopped == [(running, None)]
    assert sim.state("a") is TaskState.RUNNING  # until its process is gone
    assert sim.take() == []
    sim.end("a", exit_code=-15)
    events = [(str(e.kind), e.task, e.data) for e in sim.take_events()]
    assert events == [
        (
            "attempt_finished",
            "a",
            {
                "stage": "agent",
                "attempt": 1,
                "outcome": "cancelled",
                "exit_code": -15,
                "duration": 0.0,
            },
        ),
        ("task_cancelled", "a", {"attempts": 1, "reason": "cancelled by the operator"}),
        ("task_blocked", "b", {"blocked_by": "a"}),
    ]
    # The operator's own decision: nothing to attend to.
    assert not any(sim.core.needs_attention(node) for node in range(2))
    assert sim.core.settled and sim.busy_slots() == 0


def test_cancel_of_a_ready_task_takes_it_out_of_the_queue() -> None:
    sim = CoreSim(fleet_toml([{"id": "a"}, {"id": "b"}], slots=1))
    sim.start()
    assert sim.launched() == [("a", "agent")]
    sim.take()
    commands.cancel(sim.core, "b")
    assert sim.take() == [("task_cancelled", "b")]
    assert sim.fx.stopped == []
    sim.end("a")
    assert sim.launched() == []
    assert sim.states() == {"a": "succeeded", "b": "cancelled"}
    assert sim.core.settled
    with pytest.raises(CommandError, match="cannot cancel 'b': it is already cancelled"):
        commands.cancel(sim.core, "b")


def test_cancel_of_a_blocked_task_cancels_it_and_it_leaves_the_attention_queue() -> None:
    sim = failed_chain()
    b = sim.core.node("b")
    assert sim.core.needs_attention(b)
    commands.cancel(sim.core, "b")
    events = [(str(e.kind), e.task, e.data) for e in sim.take_events()]
    assert events == [
        (
            "task_cancelled",
            "b",
            {"attempts": 0, "reason": "cancelled by the operator (blocked by 'a')"},
        )
    ]
    assert sim.state("b") is TaskState.CANCELLED
    assert not sim.core.needs_attention(b)
    assert sim.core.settled


def test_acknowledge_takes_a_task_out_of_attention_and_refuses_one_that_needs_none() -> None:
    sim = failed_chain()
    needs = [sim.core.needs_attention(node) for node in range(3)]
    assert needs == [True, True, False]
    commands.acknowledge(sim.core, "a")
    assert sim.take() == [("task_acknowledged", "a")]
    assert not sim.core.needs_attention(sim.core.node("a"))
    assert sim.state("a") is TaskState.FAILED  # neither retried nor cancelled
    with pytest.raises(CommandError, match="'c' does not need attention \\(it is blocked\\)"):
        commands.acknowledge(sim.core, "c")
    with pytest.raises(CommandError, match="'a' does not need attention"):
        commands.acknowledge(sim.core, "a")
    assert sim.take() == []


def test_pause_holds_new_agent_launches_but_ci_still_launches() -> None:
    sim = CoreSim(fleet_toml([{"id": "a", "ci": "ci"}, {"id": "b"}], slots=1))
    sim.start()
    assert sim.launched() == [("a", "agent")]
    sim.take()
    commands.pause(sim.core)
    commands.pause(sim.core)  # twice: told once
    sim.end("a")
    assert sim.launched() == [("a", "ci")]
    assert sim.state("b") is TaskState.READY
    assert sim.take() == [
        ("paused", None),
        ("attempt_started", "a"),
        ("attempt_finished", "a"),
        ("ci_queued", "a"),
    ]
    commands.resume(sim.core)
    sim.settle()
    assert sim.take() == [("resumed", None)]
    assert sim.launched() == [("b", "agent")]


def test_set_policy_takes_effect_at_the_next_decision_and_stops_nothing() -> None:
    sim = CoreSim(fleet_toml([{"id": f"t{i}"} for i in range(5)], slots=5, max_in_flight=2))
    sim.start()
    assert sim.launched() == [("t0", "agent"), ("t1", "agent")]
    commands.set_policy(sim.core, "sequential")
    sim.settle()
    assert sim.take()[-1] == ("policy_changed", None)
    assert sim.fx.events[-1].data == {"policy": "sequential", "previous": "wave"}
    assert sim.fx.stopped == [] and len(sim.core.running) == 2
    sim.end("t0")
    assert sim.launched() == []  # t1 is still in flight
    sim.end("t1")
    assert sim.launched() == [("t2", "agent")]
    commands.set_policy(sim.core, "wave")
    sim.settle()
    assert sim.launched() == [("t3", "agent")]  # max_in_flight 2 again
    commands.set_policy(sim.core, "wave")  # no change, no event
    assert sim.take()[-1] == ("policy_changed", None)
    with pytest.raises(CommandError, match="unknown policy 'eager'"):
        commands.set_policy(sim.core, "eager")


def test_cancelling_a_blocked_task_moves_none_of_its_dependents_into_attention() -> None:
    """b's dependent c was blocked through b: once b is cancelled, c is blocked by
    a cancel, which needs no attention; d, blocked by a failure of its own, still does."""
    sim = CoreSim(
        fleet_toml(
            [
                *chain("a", "b", "c"),
                {"id": "x"},
                {"id": "d", "depends_on": ["b", "x"]},
            ]
        )
    )
    sim.start()
    sim.end("x", exit_code=1)
    sim.end("a", exit_code=1)
    assert sim.states() == {
        "a": "failed",
        "b": "blocked",
        "c": "blocked",
        "x": "failed",
        "d": "blocked",
    }
    attention = {
        task.id for node, task in enumerate(sim.core.tasks) if sim.core.needs_attention(node)
    }
    assert attention == {"a", "b", "x", "d"}
    commands.cancel(sim.core, "b")
    attention = {
        task.id for node, task in enumerate(sim.core.tasks) if sim.core.needs_attention(node)
    }
    assert attention == {"a", "x", "d"}


def test_retrying_a_cancelled_blocked_task_whose_blocker_still_failed_blocks_it_again() -> None:
    sim = failed_chain()
    b = sim.core.node("b")
    commands.cancel(sim.core, "b")
    assert not sim.core.needs_attention(b)
    sim.take_events()
    commands.retry(sim.core, "b")
    events = [(str(e.kind), e.task, e.data) for e in sim.take_events()]
    assert events == [("task_blocked", "b", {"blocked_by": "a"})]
    # Blocked by a failure again: a blocked root the operator must decide on.
    assert sim.state("b") is TaskState.BLOCKED
    assert sim.core.needs_attention(b)
    assert sim.core.settled
