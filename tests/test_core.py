"""The core's lifecycle in virtual time: every transition, with the exact events.

No loop, no processes, no sleeps: `CoreSim` (tests/core_support.py) plays the
shell, and each test says when attempts start and end and when time passes.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core_support import CoreSim, chain, fleet_toml
from fleetdeck.engine import commands
from fleetdeck.engine.core import MAX_LOST_ATTEMPTS, Core, Running
from fleetdeck.fold import next_state
from fleetdeck.model import Event, EventKind, Outcome, Stage, TaskState
from fleetdeck.stages import EXIT_WAIT

# --- the start and the launch decision ----------------------------------------------


def test_only_roots_are_ready_at_the_start() -> None:
    sim = CoreSim(
        fleet_toml(
            [
                {"id": "a"},
                {"id": "b"},
                {"id": "c", "depends_on": ["a"]},
                {"id": "d", "depends_on": ["b", "c"]},
            ]
        )
    )
    sim.core.start()
    events = sim.take_events()
    assert [(str(e.kind), e.task, e.data) for e in events] == [
        ("run_started", None, {"fleet": "core", "policy": "wave", "tasks": 4, "run_id": 0}),
        ("task_ready", "a", {"wave": 0}),
        ("task_ready", "b", {"wave": 0}),
    ]
    assert sim.states() == {"a": "ready", "b": "ready", "c": "pending", "d": "pending"}
    assert sim.fx.started == [] and sim.core.in_flight == 0


def test_wave_launches_every_ready_task_its_slots_allow() -> None:
    sim = CoreSim(fleet_toml([{"id": f"t{i}"} for i in range(5)], slots=3))
    sim.start()
    assert sim.launched() == [("t0", "agent"), ("t1", "agent"), ("t2", "agent")]
    assert sim.core.in_flight == 3
    assert sim.states() == {
        "t0": "running",
        "t1": "running",
        "t2": "running",
        "t3": "ready",
        "t4": "ready",
    }
    # The slots, not the policy, hold the rest.
    assert sim.core.held_by_policy is False
    sim.end("t1")
    assert sim.launched() == [("t3", "agent")]


def test_wave_stops_at_max_in_flight() -> None:
    sim = CoreSim(fleet_toml([{"id": f"t{i}"} for i in range(4)], slots=4, max_in_flight=2))
    sim.start()
    assert sim.launched() == [("t0", "agent"), ("t1", "agent")]
    assert sim.core.held_by_policy is True
    sim.end("t0")
    assert sim.launched() == [("t2", "agent")]
    assert sim.core.in_flight == 2


def test_sequential_launches_the_next_only_once_the_last_succeeded_or_failed() -> None:
    sim = CoreSim(fleet_toml([{"id": "a"}, {"id": "b"}, {"id": "c"}], slots=3), policy="sequential")
    sim.start()
    assert sim.launched() == [("a", "agent")]
    sim.begin("a")
    sim.settle()
    assert sim.launched() == []
    sim.end("a")
    assert sim.launched() == [("b", "agent")]
    sim.end("b", exit_code=1)  # no retries: failed for good
    assert sim.state("b") is TaskState.FAILED
    assert sim.launched() == [("c", "agent")]
    assert sim.core.in_flight == 1


def test_held_by_policy_under_sequential_with_free_slots_not_when_slots_lack() -> None:
    sim = CoreSim(fleet_toml([{"id": "a"}, {"id": "b"}], slots=2), policy="sequential")
    sim.start()
    assert sim.launched() == [("a", "agent")]
    assert sim.core.held_by_policy is True  # a slot is free, b is ready: the policy holds it
    one_slot = CoreSim(fleet_toml([{"id": "a"}, {"id": "b"}], slots=1), policy="sequential")
    one_slot.start()
    assert one_slot.core.held_by_policy is False  # no free slot: not the policy's doing
    # Wave with a slot missing: not held either.
    wave = CoreSim(fleet_toml([{"id": "a"}, {"id": "b"}], slots=1))
    wave.start()
    assert wave.core.held_by_policy is False


def test_priority_then_critical_path_then_config_order() -> None:
    tasks = [
        {"id": "lone"},
        {"id": "head"},  # starts a chain of three: the longest critical path
        {"id": "mid", "depends_on": ["head"]},
        {"id": "tail", "depends_on": ["mid"]},
        {"id": "urgent", "priority": 5},
        {"id": "other"},
    ]
    sim = CoreSim(fleet_toml(tasks, slots=1))
    sim.start()
    order = []
    while sim.core.running:
        (launch,) = sim.launched()
        order.append(launch[0])
        sim.end(launch[0])
    # Once mid is done, tail's path is as short as lone's: config order decides.
    assert order == ["urgent", "head", "mid", "lone", "tail", "other"]
    assert sim.core.settled


# --- stages, retries, timeouts ------------------------------------------------------


def test_agent_then_ci_then_succeeded_with_the_events_in_order() -> None:
    sim = CoreSim(fleet_toml([{"id": "a", "ci": "ci"}]))
    sim.start()
    sim.clock.advance(1.0)
    sim.begin("a", pid=41)
    sim.clock.advance(4.0)
    agent = sim.running("a")
    sim.core.attempt_ended(agent, None, 0)
    assert sim.state("a") is TaskState.CI_QUEUED
    sim.settle()
    assert sim.state("a") is TaskState.CI_RUNNING
    assert sim.core.in_flight == 1
    sim.begin("a", pid=42)
    sim.clock.advance(2.0)
    sim.end("a")
    assert sim.state("a") is TaskState.SUCCEEDED
    events = [(str(e.kind), e.task, e.data) for e in sim.take_events()]
    assert events == [
        ("run_started", None, {"fleet": "core", "policy": "wave", "tasks": 1, "run_id": 0}),
        ("task_ready", "a", {"wave": 0}),
        (
            "attempt_started",
            "a",
            {"stage": "agent", "attempt": 1, "agent": "coder", "host": "local", "pid": 41},
        ),
        (
            "attempt_finished",
            "a",
            {"stage": "agent", "attempt": 1, "outcome": "ok", "exit_code": 0, "duration": 5.0},
        ),
        ("ci_queued", "a", {"runner": "ci", "position": 1}),
        (
            "attempt_started",
            "a",
            {"stage": "ci", "attempt": 1, "runner": "ci", "host": "local", "pid": 42},
        ),
        (
            "attempt_finished",
            "a",
            {"stage": "ci", "attempt": 1, "outcome": "ok", "exit_code": 0, "duration": 2.0},
        ),
        ("task_succeeded", "a", {"attempts": 1, "duration": 7.0}),
    ]
    assert sim.core.settled and sim.core.in_flight == 0 and sim.busy_slots() == 0
    # Each attempt's row is recorded at launch, with its pid, and at its end.
    assert [(task, str(stage), outcome) for _, task, stage, outcome in sim.fx.records] == [
        ("a", "agent", None),
        ("a", "agent", None),
        ("a", "agent", "ok"),
        ("a", "ci", None),
        ("a", "ci", None),
        ("a", "ci", "ok"),
    ]


def test_a_ci_failure_retries_the_agent_stage() -> None:
    sim = CoreSim(fleet_toml([{"id": "a", "ci": "ci", "retries": 1}], retry_backoff=0.0))
    sim.start()
    sim.end("a")
    assert sim.launched() == [("a", "agent"), ("a", "ci")]
    sim.take()
    sim.end("a", exit_code=1)
    assert sim.take() == [
        ("attempt_started", "a"),
        ("attempt_finished", "a"),
        ("retry_scheduled", "a"),
    ]
    assert sim.state("a") is TaskState.RETRY_WAIT
    sim.advance(0.0)
    assert sim.take() == [("task_ready", "a")]
    assert sim.launched() == [("a", "agent")]
    assert sim.running("a").attempt.number == 2
    sim.end("a")
    sim.end("a")
    assert sim.state("a") is TaskState.SUCCEEDED


def test_retry_backoff_is_jittered_within_its_ceiling_and_waits_for_the_clock() -> None:
    seed = 1234
    sim = CoreSim(
        fleet_toml([{"id": "a", "retries": 3}], retry_backoff=4.0, retry_backoff_max=10.0),
        seed=seed,
    )
    expected = random.Random(seed)
    sim.start()
    for ceiling in (4.0, 8.0, 10.0):
        sim.launched()
        sim.take()
        sim.end("a", exit_code=1)
        (started, finished, scheduled) = sim.take_events()
        assert str(started.kind) == "attempt_started"
        assert str(finished.kind) == "attempt_finished"
        assert str(scheduled.kind) == "retry_scheduled"
        delay = scheduled.data["delay"]
        assert ceiling / 2 <= delay <= ceiling
        assert delay == round(ceiling / 2 + expected.uniform(0, ceiling / 2), 3)
        task = sim.core.tasks[0]
        assert task.retry_at == pytest.approx(sim.clock.now() + delay, abs=1e-3)
        sim.advance(delay - 0.01)
        assert sim.launched() == [] and sim.state("a") is TaskState.RETRY_WAIT
        sim.advance(0.02)
        assert sim.launched() == [("a", "agent")]
        assert sim.take() == [("task_ready", "a")]
    sim.end("a", exit_code=1)
    assert sim.state("a") is TaskState.FAILED


def test_spent_retries_fail_the_task_and_block_its_descendants_not_its_sibling() -> None:
    sim = CoreSim(fleet_toml([*chain("a", "b", "c"), {"id": "sibling"}], slots=2))
    sim.start()
    assert sim.launched() == [("a", "agent"), ("sibling", "agent")]
    sim.begin("sibling")
    sim.take()
    sim.end("a", exit_code=3)
    events = [(str(e.kind), e.task, e.data) for e in sim.take_events()]
    assert events[1:] == [
        (
            "attempt_finished",
            "a",
            {"stage": "agent", "attempt": 1, "outcome": "failed", "exit_code": 3, "duration": 0.0},
        ),
        ("task_failed", "a", {"attempts": 1, "reason": "failed after 1 attempt"}),
        ("task_blocked", "b", {"blocked_by": "a"}),
        ("task_blocked", "c", {"blocked_by": "a"}),
    ]
    assert sim.states() == {"a": "failed", "b": "blocked", "c": "blocked", "sibling": "running"}
    assert sim.core.running_for(sim.core.node("sibling")) is not None
    assert sim.fx.stopped == []
    # The failure and its blocked root need the operator; c is blocked through b.
    needs = [task.id for node, task in enumerate(sim.core.tasks) if sim.core.needs_attention(node)]
    assert needs == ["a", "b"]
    sim.end("sibling")
    assert sim.core.settled


def test_a_timeout_fires_at_its_virtual_time() -> None:
    sim = CoreSim(fleet_toml([{"id": "a", "timeout": 30}]))
    sim.start()
    sim.advance(2.0)  # the process takes two seconds to exist: the timeout counts them
    running = sim.begin("a")
    sim.advance(27.9)
    assert sim.fx.stopped == []
    sim.advance(0.2)
    assert sim.fx.stopped == [(running, None)]
    assert running.stop_reason is Outcome.TIMEOUT
    assert sim.clock.now() == pytest.approx(30.1)
    sim.take()
    sim.end("a", exit_code=-15)
    events = [(str(e.kind), e.data) for e in sim.take_events()]
    assert events == [
        (
            "attempt_finished",
            {
                "stage": "agent",
                "attempt": 1,
                "outcome": "timeout",
                "exit_code": -15,
                "duration": pytest.approx(30.1),
                "reason": "timed out after 30s",
            },
        ),
        ("task_failed", {"attempts": 1, "reason": "timed out after 1 attempt"}),
    ]


def test_lost_attempts_run_again_without_spending_retries_until_too_many() -> None:
    sim = CoreSim(fleet_toml([{"id": "a"}]))
    sim.start()
    assert sim.launched() == [("a", "agent")]
    for lost in range(1, MAX_LOST_ATTEMPTS + 1):
        sim.take()
        sim.end("a", exit_code=None, outcome=Outcome.LOST)
        events = [(str(e.kind), e.data) for e in sim.take_events()]
        assert events[-1] == ("task_ready", {"wave": 0, "reason": "attempt lost"})
        assert "retry_scheduled" not in [kind for kind, _ in events]
        task = sim.core.tasks[0]
        assert (task.lost, task.failures, task.in_flight) == (lost, 0, True)
        assert sim.launched() == [("a", "agent")]  # at once, from the retry lane
    sim.take()
    sim.end("a", exit_code=None, outcome=Outcome.LOST)
    assert sim.take()[-1] == ("task_failed", "a")
    assert sim.core.tasks[0].agent_attempts == MAX_LOST_ATTEMPTS + 1
    assert (
        sim.fx.events[-1].data["reason"]
        == f"host lost too often after {MAX_LOST_ATTEMPTS + 1} attempts"
    )
    assert sim.core.settled and sim.core.in_flight == 0


def test_times_count_from_a_launch_at_virtual_time_zero() -> None:
    """A virtual clock starts at 0.0: a launch then is at a time like any other,
    for the task's duration and for what is left of its timeout."""
    sim = CoreSim(fleet_toml([{"id": "a", "timeout": 10}, {"id": "b"}]))
    sim.start()
    sim.advance(4.0)
    sim.begin("a")  # its process took 4 s to exist: 6 s of its timeout are left
    sim.begin("b")
    sim.advance(5.0)
    sim.end("b")
    assert sim.fx.events[-1].data == {"attempts": 1, "duration": 9.0}
    sim.advance(0.99)
    assert sim.fx.stopped == []
    sim.advance(0.02)
    assert [running.attempt.task for running, _ in sim.fx.stopped] == ["a"]


# --- contention ----------------------------------------------------------------------


def test_queue_waits_of_ci_are_recorded() -> None:
    sim = CoreSim(fleet_toml([{"id": "a", "ci": "ci"}, {"id": "b", "ci": "ci"}], runner_slots=1))
    sim.start()
    sim.advance(1.0)
    sim.end("a")  # a's CI starts at once
    sim.advance(2.0)
    sim.end("b")  # b's waits for the only runner
    assert sim.state("b") is TaskState.CI_QUEUED
    assert sim.fx.events[-1].data == {"runner": "ci", "position": 1}
    sim.advance(6.0)
    sim.end("a")
    assert sim.state("b") is TaskState.CI_RUNNING
    ci = sim.running("b").attempt
    assert (ci.queued_at, ci.started_at) == (3.0, 9.0)
    assert sim.core.queue_waits == {"ci": [0.0, 6.0]}
    # The queue time is the CI attempt's own: the agent attempt, which ended
    # before its task queued, never says it waited (the journal keeps its row).
    agent = sim.core.tasks[sim.core.node("b")].attempts[0]
    assert agent.stage is Stage.AGENT and agent.queued_at is None
    assert sim.core.queued_since == {}  # nobody left in a later stage's queue


# --- any DAG, any outcomes ----------------------------------------------------------


@st.composite
def fleets(draw: st.DrawFn) -> str:
    """A random DAG of up to 8 tasks: random CI stages, retries, slots, cap."""
    count = draw(st.integers(1, 8))
    tasks: list[dict[str, object]] = []
    for i in range(count):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)) if i else []
        task: dict[str, object] = {"id": f"t{i}", "retries": draw(st.integers(0, 2))}
        if deps:
            task["depends_on"] = [f"t{d}" for d in sorted(deps)]
        if draw(st.booleans()):
            task["ci"] = "ci"
        if draw(st.booleans()):
            task["priority"] = draw(st.integers(-2, 2))
        tasks.append(task)
    cap = draw(st.sampled_from([None, 1, 2, 3]))
    return fleet_toml(
        tasks,
        slots=draw(st.integers(1, 3)),
        runner_slots=draw(st.integers(1, 2)),
        retry_backoff=0.5,
        **({} if cap is None else {"max_in_flight": cap}),
    )


# What happens to a running attempt, picked at each step.
ENDINGS = ["ok", "ok", "ok", "failed", "lost", "cancel"]


@settings(max_examples=60, deadline=None, database=None)
@given(
    text=fleets(),
    policy=st.sampled_from(["wave", "sequential", "pipelined", "adaptive"]),
    data=st.data(),
)
def test_any_dag_with_any_outcomes_ends_settled(
    text: str, policy: str, data: st.DataObject
) -> None:
    sim = CoreSim(text, policy=policy)
    core = sim.core
    launched_before_deps: list[str] = []

    def check_start(running: Running) -> None:
        node = running.node
        # Pipelined may start a dependent on a dependency's agent output (released).
        if any(
            core.tasks[dep].state is not TaskState.SUCCEEDED and dep not in core.released
            for dep in core.dag.deps[node]
        ):
            launched_before_deps.append(running.attempt.task)

    sim.fx.on_start = check_start
    sim.start()
    for _ in range(500):
        # The journal's reading of the events is the core's own table, at every step.
        assert folded_states(sim.fx.events, core) == announced_states(sim.fx.events, core)
        if core.settled:
            break
        if policy == "adaptive":
            # The attention the core keeps for the load admission is a fresh count's.
            fresh = sum(
                1
                for node, task in enumerate(core.tasks)
                if task.attention_since is not None and core.needs_attention(node)
            )
            assert core.admission_context().needs_attention == fresh
        if policy == "sequential":
            assert core.in_flight <= 1
            assert sum(task.in_flight for task in core.tasks) <= 1
        if core.running:
            running = data.draw(
                st.sampled_from(sorted(core.running.values(), key=lambda r: r.attempt.attempt_id))
            )
            ending = data.draw(st.sampled_from(ENDINGS))
            task = running.attempt.task
            if ending == "cancel":
                commands.cancel(core, task)
                sim.end(task, exit_code=-15)
            elif ending == "lost":
                sim.end(task, exit_code=None, outcome=Outcome.LOST)
            else:
                sim.end(task, exit_code=0 if ending == "ok" else 1)
        else:
            # Nothing runs: only a retry's backoff can be left to wait for.
            assert sim.clock.step(), f"stuck: {sim.states()}"
            sim.settle()
    assert core.settled, sim.states()
    assert all(task.state.is_terminal for task in core.tasks), sim.states()
    assert launched_before_deps == []
    assert core.in_flight == 0 and not any(task.in_flight for task in core.tasks)
    assert sim.busy_slots() == 0
    assert len(core.ready) == 0 and not core.retry_lane
    assert not any(core.stage_queues.values())
    assert sim.clock.next_at() is None  # no retry or timeout left behind
    assert folded_states(sim.fx.events, core) == {t.id: t.state for t in core.tasks}
    succeeded = [t.id for t in core.tasks if t.state is TaskState.SUCCEEDED]
    # A speculative success put back by a preemption is told again when it holds.
    undone = sum(
        1
        for e in sim.fx.events
        if e.kind is EventKind.TASK_REQUEUED and e.data.get("cause") == "preempted"
    )
    told = sum(1 for e in sim.fx.events if e.kind is EventKind.TASK_SUCCEEDED)
    assert len(succeeded) <= told <= len(succeeded) + undone
    # No success stands on an upstream that did not succeed (speculation undone).
    for node, task in enumerate(core.tasks):
        if task.state is TaskState.SUCCEEDED:
            assert all(core.tasks[d].state is TaskState.SUCCEEDED for d in core.dag.deps[node])
    assert not core.released


def folded_states(events: list[Event], core: Core) -> dict[str, TaskState]:
    """Each task's state as resume and the report read it from the events."""
    states = {task.id: TaskState.PENDING for task in core.tasks}
    for event in events:
        if event.task is not None:
            states[event.task] = next_state(states[event.task], event)
    return states


def announced_states(events: list[Event], core: Core) -> dict[str, TaskState]:
    """The core's states, but for a task whose attempt was launched and has not
    started yet: no event says so until it has (attempt_started), so the journal
    still reads it as it was, and resume finds the launch by its attempt row."""
    announced = {
        (event.task, event.data["stage"], event.data["attempt"])
        for event in events
        if event.kind is EventKind.ATTEMPT_STARTED
    }
    folded = folded_states(events, core)
    states = {task.id: task.state for task in core.tasks}
    for running in core.running.values():
        attempt = running.attempt
        if (attempt.task, attempt.stage, attempt.number) not in announced:
            states[attempt.task] = folded[attempt.task]
    return states


def _landing_sim() -> CoreSim:
    text = fleet_toml([{"id": "a", "retries": 0}]) + '\n[repo]\npath = "."\n'
    sim = CoreSim(text)
    sim.start()
    sim.end("a")  # its agent
    assert sim.launched() == [("a", "agent"), ("a", "merge")]
    return sim


def _wait(sim: CoreSim, reason: str = "target checked out with local changes to README") -> None:
    """The merge attempt of `a` ends saying it must wait (as the train does)."""
    sim.running("a").details = {"reason": reason}
    sim.end("a", exit_code=EXIT_WAIT)


def test_a_landing_that_must_wait_stays_in_the_train_and_needs_attention() -> None:
    sim = _landing_sim()
    core, node = sim.core, sim.core.node("a")
    sim.take()
    _wait(sim)
    task = core.tasks[node]
    assert task.state is TaskState.MERGE_QUEUED and task.failures == 0
    assert core.needs_attention(node)
    since = task.attention_since
    events = sim.take_events()
    assert [(str(e.kind), e.data.get("outcome") or e.data.get("reason")) for e in events] == [
        ("attempt_started", None),
        ("attempt_finished", "wait"),
        ("merge_queued", "target checked out with local changes to README"),
    ]
    assert folded_states(sim.fx.events, core) == {"a": TaskState.MERGE_QUEUED}
    # It tries again after the first retry's backoff, not before; and waits again.
    sim.advance(0.9)
    assert sim.launched() == []
    sim.advance(0.1)
    assert sim.launched() == [("a", "merge")]
    _wait(sim)
    assert core.needs_attention(node) and task.attention_since == since
    sim.advance(1.0)
    sim.end("a")  # the user committed their change: it lands
    assert task.state is TaskState.SUCCEEDED and task.agent_attempts == 1
    assert not core.needs_attention(node) and task.waiting_for is None
    assert folded_states(sim.fx.events, core) == {"a": TaskState.SUCCEEDED}
    assert sim.clock.next_at() is None


def test_a_task_waiting_to_land_can_be_cancelled() -> None:
    sim = _landing_sim()
    _wait(sim)
    commands.cancel(sim.core, "a")
    assert sim.state("a") is TaskState.CANCELLED
    assert not sim.core.needs_attention(sim.core.node("a"))
    assert sim.clock.next_at() is None  # its wait's timer went with it
    sim.advance(5.0)
    assert sim.launched() == []
