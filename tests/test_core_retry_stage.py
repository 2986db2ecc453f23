"""Stage-aware retry as a transition of the core, in virtual time: a task whose
CI failed reruns CI alone on its agent's output, or the agent and CI; the
journal says which, and a run taken up from it carries on in the same place."""

from __future__ import annotations

import pytest

from core_support import CoreSim, fleet_toml
from fleetdeck.engine import commands
from fleetdeck.engine.core import CommandError
from fleetdeck.engine.takeup import take_up
from fleetdeck.model import Stage, TaskState
from fleetdeck.resume import ResumePlan, replay


def ci_failed(**settings: object) -> CoreSim:
    """a (agent then CI, no retries) -> b, with a's CI failed: a failed, b blocked."""
    tasks = [{"id": "a", "ci": "ci", "retries": 0}, {"id": "b", "depends_on": ["a"]}]
    sim = CoreSim(fleet_toml(tasks, **settings))
    sim.start()
    sim.end("a")
    sim.end("a", exit_code=1)
    assert sim.states() == {"a": "failed", "b": "blocked"}
    assert sim.launched() == [("a", "agent"), ("a", "ci")]
    sim.take()
    return sim


def test_a_task_whose_ci_failed_may_rerun_ci_alone_others_only_from_the_agent() -> None:
    sim = ci_failed()
    core = sim.core
    assert commands.retry_stages(core, core.node("a")) == (Stage.AGENT, Stage.CI)
    # Blocked, not failed in CI: from its agent only (which retries what blocks it).
    assert commands.retry_stages(core, core.node("b")) == (Stage.AGENT,)
    with pytest.raises(CommandError, match="cannot rerun ci alone for 'b': only a task that"):
        commands.retry(core, "b", "ci")
    with pytest.raises(CommandError, match="from stage 'lint': the stages are agent, ci, merge"):
        commands.retry(core, "a", "lint")


def test_an_agent_failure_or_a_cancelled_ci_cannot_rerun_ci_alone() -> None:
    sim = CoreSim(fleet_toml([{"id": task, "ci": "ci", "retries": 0} for task in ("a", "c")]))
    sim.start()
    sim.end("a", exit_code=1)  # its agent failed: there is nothing for CI to test
    sim.end("c")
    commands.cancel(sim.core, "c")
    sim.end("c", exit_code=-15)
    assert sim.states() == {"a": "failed", "c": "cancelled"}
    for task in ("a", "c"):
        assert commands.retry_stages(sim.core, sim.core.node(task)) == (Stage.AGENT,)
        with pytest.raises(CommandError, match=f"cannot rerun ci alone for '{task}'"):
            commands.retry(sim.core, task, "ci")


def test_rerunning_ci_alone_queues_the_task_for_ci_on_its_agents_output() -> None:
    sim = ci_failed()
    sim.clock.advance(30.0)
    commands.retry(sim.core, "a", "ci")
    assert [(str(e.kind), e.task, e.data) for e in sim.take_events()] == [
        (
            "task_requeued",
            "a",
            {
                "state": "ci_queued",
                "stage": "ci",
                "reason": "operator retry (ci only)",
                "cause": "operator",
            },
        ),
        ("ci_queued", "a", {"runner": "ci", "position": 1}),
        ("task_requeued", "b", {"state": "pending", "reason": "'a' retried", "cause": "upstream"}),
    ]
    task = sim.core.tasks[sim.core.node("a")]
    assert task.in_flight and sim.core.in_flight == 1 and not sim.core.settled
    assert not sim.core.needs_attention(sim.core.node("a"))
    assert sim.states() == {"a": "ci_queued", "b": "pending"}
    sim.settle()
    # CI alone: no new agent attempt, the same agent output, a wait of its own.
    assert sim.launched() == [("a", "ci")]
    attempt = sim.running("a").attempt
    assert attempt.number == 1 and task.agent_attempts == 1
    assert task.output_attempt is task.attempts[0]
    assert attempt.queued_at == attempt.started_at == 30.0
    sim.end("a")
    assert sim.states() == {"a": "succeeded", "b": "running"}
    sim.end("b")
    assert sim.core.settled and set(sim.states().values()) == {"succeeded"}


def test_rerunning_ci_alone_gives_a_fresh_retry_budget() -> None:
    sim = ci_failed()
    commands.retry(sim.core, "a", "ci")
    sim.settle()
    sim.end("a", exit_code=1)  # retries = 0: failed again at once, in CI
    assert sim.state("a") is TaskState.FAILED
    assert commands.retry_stages(sim.core, sim.core.node("a")) == (Stage.AGENT, Stage.CI)


def test_retrying_from_the_agent_runs_the_agent_and_ci_as_before() -> None:
    for stage in (None, "agent"):
        sim = ci_failed()
        commands.retry(sim.core, "a", stage)
        sim.settle()
        assert sim.take()[0] == ("task_requeued", "a")
        assert sim.launched() == [("a", "agent")]
        assert sim.running("a").attempt.number == 2


def test_a_cancel_while_queued_for_ci_again_leaves_no_stale_queue_time() -> None:
    sim = ci_failed(runner_slots=1)
    sim.clock.advance(5.0)
    commands.retry(sim.core, "a", "ci")
    commands.cancel(sim.core, "a")
    assert sim.state("a") is TaskState.CANCELLED
    assert not sim.core.queued_since
    assert not any(sim.core.stage_queues.values())


def test_a_run_taken_up_after_a_ci_only_retry_resumes_queued_for_ci() -> None:
    sim = ci_failed()
    commands.retry(sim.core, "a", "ci")
    # The supervisor stops here: the journal holds the events so far.
    events = list(sim.fx.events)
    replayed = replay(events, [], run_dir="")
    assert replayed["a"].state is TaskState.CI_QUEUED
    assert replayed["a"].failures == 0
    assert replayed["b"].state is TaskState.PENDING
    # The attempts as the journal's rows hold them.
    for task in sim.core.tasks:
        replayed[task.id].attempts = list(task.attempts)
    plan = ResumePlan(
        run_id=1,
        tasks=replayed,
        unfinished=[],
        changed=[],
        added=[],
        removed=[],
        invalidated=[],
        events=events,
    )
    again = CoreSim(fleet_toml([{"id": "a", "ci": "ci"}, {"id": "b", "depends_on": ["a"]}]))
    take_up(again.core, plan, [], {})
    again.core.schedule()
    again.settle()
    assert again.launched() == [("a", "ci")]
    assert again.running("a").attempt.number == 1
    again.end("a")
    again.end("b")
    assert again.core.settled and set(again.states().values()) == {"succeeded"}
