"""The pipelined policy's speculation in the pure core: dependents started on
an upstream's agent output, and preempted when that upstream fails after."""

from __future__ import annotations

from core_support import CoreSim, chain, fleet_toml
from fleetdeck.engine import commands, speculation
from fleetdeck.model import EventKind, Outcome, TaskState
from fleetdeck.stages import EXIT_CONFLICT, EXIT_RETEST


def _chain_sim(retries: int = 1) -> CoreSim:
    """a -> b -> c -> d, each with CI, pipelined."""
    text = fleet_toml(chain("a", "b", "c", "d", ci="ci", retries=retries), slots=4, runner_slots=4)
    sim = CoreSim(text, policy="pipelined")
    sim.start()
    return sim


def _preempted(sim: CoreSim) -> list[str]:
    return [
        str(e.task)
        for e in sim.take_events()
        if e.kind is EventKind.TASK_REQUEUED and e.data.get("cause") == "preempted"
    ]


def test_a_dependent_starts_on_its_upstreams_agent_output_before_its_ci() -> None:
    sim = _chain_sim()
    assert sim.launched() == [("a", "agent")]
    sim.end("a")  # a's agent succeeded: its CI and b's agent start together
    assert sorted(sim.launched()) == [("a", "ci"), ("b", "agent")]
    assert sim.state("a") is TaskState.CI_RUNNING
    assert sim.state("b") is TaskState.RUNNING


def test_wave_waits_for_the_upstreams_ci() -> None:
    text = fleet_toml(chain("a", "b", ci="ci"), slots=4, runner_slots=4)
    sim = CoreSim(text, policy="wave")
    sim.start()
    sim.launched()
    sim.end("a")
    assert sim.launched() == [("a", "ci")]
    assert sim.state("b") is TaskState.PENDING


def test_an_upstream_ci_failure_preempts_a_chain_three_deep_and_spends_no_retry() -> None:
    sim = _chain_sim(retries=1)
    sim.end("a")  # b starts on a's output
    sim.end("b")  # c on b's
    sim.end("c")  # d on c's
    assert sim.state("d") is TaskState.RUNNING
    assert sim.state("c") is TaskState.CI_RUNNING
    sim.launched()
    sim.take_events()
    sim.end("a", exit_code=1)  # a's CI fails: everything downstream is void
    core = sim.core
    # b, c and d were running (CI or agent): each is asked to stop, as preempted.
    stopped = {running.attempt.task for running, _ in sim.fx.stopped}
    assert stopped == {"b", "c", "d"}
    for task in ("b", "c", "d"):
        assert sim.running(task).stop_reason is Outcome.PREEMPTED
    # Their processes end; each is put back to wait for a again, nothing retried.
    for task in ("d", "b", "c"):
        sim.end(task, exit_code=None)
    assert sorted(_preempted(sim)) == ["b", "c", "d"]
    for task in ("b", "c", "d"):
        run = core.tasks[core.node(task)]
        assert run.state is TaskState.PENDING
        assert run.failures == 0  # a preemption spends no retry
        assert run.attempts[-1].outcome is Outcome.PREEMPTED
    assert core.tasks[core.node("a")].state is TaskState.RETRY_WAIT
    assert core.in_flight == 1  # a alone, waiting to retry
    assert sim.busy_slots() == 0
    # a runs again and passes: b starts again on the new output, and the chain goes on.
    sim.advance(5)
    assert sim.launched() == [("a", "agent")]
    sim.end("a")
    assert sorted(sim.launched()) == [("a", "ci"), ("b", "agent")]
    sim.end("a")
    for task in ("b", "c", "d"):
        sim.end(task)  # agent
        sim.end(task)  # CI
    assert sim.states() == dict.fromkeys("abcd", "succeeded")
    assert core.settled and not core.released


def test_a_speculative_success_is_undone_when_its_upstream_fails() -> None:
    """b's agent and CI both passed on a's output before a's CI failed: b's
    success does not stand."""
    sim = _chain_sim(retries=0)
    sim.end("a")
    sim.end("b")  # b's agent; b's CI and c's agent start
    sim.end("b")  # b's CI passes: b succeeded, on a's unchecked output
    assert sim.state("b") is TaskState.SUCCEEDED
    sim.take_events()
    sim.end("a", exit_code=1)  # a gives up (no retries left)
    sim.end("c", exit_code=None)  # c's preempted attempt ends
    assert sim.state("a") is TaskState.FAILED
    assert sim.states() == {"a": "failed", "b": "blocked", "c": "blocked", "d": "blocked"}
    assert sim.core.settled
    assert sim.core.unfinished == 0


def test_cancelling_a_released_upstream_preempts_its_dependents() -> None:
    sim = _chain_sim()
    sim.end("a")
    sim.take_events()
    commands.cancel(sim.core, "a")
    sim.end("a", exit_code=-15)
    assert sim.state("b") is TaskState.RUNNING  # stopping
    sim.end("b", exit_code=None)
    assert sim.states() == {"a": "cancelled", "b": "blocked", "c": "blocked", "d": "blocked"}
    assert sim.core.settled


def test_a_task_queued_for_ci_when_preempted_leaves_the_queue() -> None:
    """b waits for the only runner (a's CI holds it) when a fails: b leaves the queue."""
    text = fleet_toml(chain("a", "b", ci="ci", retries=1), slots=4, runner_slots=1)
    sim = CoreSim(text, policy="pipelined")
    sim.start()
    sim.end("a")
    sim.end("b")  # b's agent done: queued behind a's CI
    assert sim.state("b") is TaskState.CI_QUEUED
    sim.end("a", exit_code=1)
    assert sim.state("b") is TaskState.PENDING
    assert not any(sim.core.stage_queues.values())
    assert sim.core.in_flight == 1


def _repo_sim(tasks: list[dict[str, object]]) -> CoreSim:
    text = fleet_toml(tasks, slots=4, runner_slots=4)
    sim = CoreSim(text + '\n[repo]\npath = "."\n', policy="pipelined")
    sim.start()
    return sim


def test_with_a_repo_a_dependent_starts_on_the_agent_output_and_lands_after_it() -> None:
    """The Zuul model: b starts on a's unlanded branch; done with its CI first, it
    waits out of the train until a landed, then joins it."""
    sim = _repo_sim(chain("a", "b", ci="ci"))
    assert sim.core.policy.describe() == "pipelined"
    assert sim.launched() == [("a", "agent")]
    sim.end("a")  # a's agent: its CI and b's agent start together
    assert sim.launched() == [("a", "ci"), ("b", "agent")]
    assert speculation.stacked_on(sim.core, sim.core.node("b")) == "a"
    sim.end("b")
    sim.end("b")  # b's CI passed before a's: b waits for a to land
    assert sim.launched() == [("b", "ci")]
    assert sim.state("b") is TaskState.MERGE_QUEUED
    assert not any(sim.core.stage_queues.values())
    sim.end("a")  # a's CI: a joins the train, b still waits
    assert sim.launched() == [("a", "merge")]
    sim.end("a", exit_code=EXIT_RETEST)  # the target moved: a's CI again, b stays
    assert sim.state("b") is TaskState.MERGE_QUEUED and _preempted(sim) == []
    sim.end("a")
    sim.end("a")  # landed: now b joins the train
    assert sim.launched() == [("a", "ci"), ("a", "merge"), ("b", "merge")]
    assert speculation.stacked_on(sim.core, sim.core.node("b")) is None
    sim.end("b")
    assert sim.states() == {"a": "succeeded", "b": "succeeded"}
    assert not sim.core.released and not sim.core.landing_after


def test_with_a_repo_a_conflict_of_the_upstream_preempts_its_waiting_dependent() -> None:
    sim = _repo_sim(chain("a", "b", ci="ci", retries=1))
    sim.end("a")
    sim.end("b")
    sim.end("b")  # b waits for a to land
    sim.end("a")
    sim.take_events()
    sim.end("a", exit_code=EXIT_CONFLICT)  # a goes back to its agent: b's work is void
    assert _preempted(sim) == ["b"]
    assert sim.state("b") is TaskState.PENDING
    assert not sim.core.landing_after


def test_with_a_repo_a_task_of_several_dependencies_waits_for_them_to_land() -> None:
    """One worktree is stacked on one unlanded branch, never on a merge of two."""
    tasks: list[dict[str, object]] = [
        {"id": "a", "ci": "ci"},
        {"id": "b", "ci": "ci"},
        {"id": "c", "ci": "ci", "depends_on": ["a", "b"]},
    ]
    sim = _repo_sim(tasks)
    sim.end("a")
    sim.end("b")  # both agents done: c does not start on them
    assert sorted(sim.launched()) == [("a", "agent"), ("a", "ci"), ("b", "agent"), ("b", "ci")]
    for task in ("a", "a", "b", "b"):
        sim.end(task)  # CI, then landed
    assert sim.launched()[-1] == ("c", "agent")
    assert speculation.stacked_on(sim.core, sim.core.node("c")) is None


def test_without_a_repo_pipelined_says_its_name_alone() -> None:
    sim = _chain_sim()
    assert sim.core.policy.describe() == "pipelined"
