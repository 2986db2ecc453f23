"""The adaptive policy in virtual time: its window's arithmetic, its two
admissions (the operator's load, the CI queue's wait), and its events."""

from __future__ import annotations

import pytest

from core_support import CoreSim, fleet_toml
from fleetdeck.engine import commands
from fleetdeck.model import Event, EventKind, Outcome
from fleetdeck.policy import Adaptive, LaunchContext, make_policy


def _finished(task: str, outcome: Outcome, stage: str = "agent", duration: float = 1.0) -> Event:
    data = {"stage": stage, "outcome": outcome, "duration": duration}
    return Event(0.0, EventKind.ATTEMPT_FINISHED, task, data)


def _succeeded(task: str) -> Event:
    return Event(0.0, EventKind.TASK_SUCCEEDED, task, {})


def test_window_grows_by_one_per_success_and_halves_per_failure_within_its_bounds() -> None:
    policy = Adaptive(window=3, window_min=2)
    policy.budget(LaunchContext(in_flight=0, max_in_flight=6))
    seen = []
    for event in [
        _succeeded("a"),  # 4
        _succeeded("b"),  # 5
        _succeeded("c"),  # 6
        _succeeded("d"),  # 6: max_in_flight
        _finished("e", Outcome.FAILED),  # 3
        _finished("f", Outcome.TIMEOUT, "ci"),  # 1 -> window_min 2
        _finished("g", Outcome.FAILED),  # still 2
        _finished("h", Outcome.PREEMPTED),  # not a failure
        _finished("i", Outcome.OK),  # an attempt's success is not a task's
        _succeeded("j"),  # 3
    ]:
        policy.observe(event)
        seen.append(policy.window)
    assert seen == [4, 5, 6, 6, 3, 2, 2, 2, 2, 3]
    changes = [(data["previous"], data["window"], data["reason"]) for _, data in policy.events]
    assert changes == [
        (3, 4, "'a' succeeded"),
        (4, 5, "'b' succeeded"),
        (5, 6, "'c' succeeded"),
        (6, 3, "'e' failed in agent"),
        (3, 2, "'f' failed in ci"),
        (2, 3, "'j' succeeded"),
    ]
    assert policy.describe() == "adaptive 3"


def test_budget_is_the_windows_room() -> None:
    policy = Adaptive(window=3, load=False)
    assert policy.budget(LaunchContext(in_flight=0)) == 3
    assert policy.budget(LaunchContext(in_flight=2)) == 1
    assert policy.budget(LaunchContext(in_flight=5)) == 0
    assert policy.budget(LaunchContext(in_flight=0, paused=True)) == 0


def test_a_window_over_max_in_flight_is_clamped_and_told() -> None:
    policy = Adaptive(window=5)
    assert policy.budget(LaunchContext(in_flight=0, max_in_flight=2)) == 2
    assert policy.window == 2
    assert [data["reason"] for _, data in policy.events] == ["max_in_flight"]


@pytest.mark.parametrize(
    ("in_flight", "attention", "distinct", "agent_running", "capacity", "expected"),
    [
        # Nothing in flight: a first launch adds 1 and its state (running): load 1 each.
        (0, 0, 0, False, 7, 4),  # the window (4) binds: load 4 is within 7
        (0, 0, 0, False, 2, 2),  # load after 2 launches: 2 + 0 + 0 = 2
        # 3 in flight in 2 states (running among them), 1 needs attention:
        # 3 + 2*1 + 1 = 6; each launch adds 1: only 1 fits under 7.
        (3, 1, 2, True, 7, 1),
        # The same without an agent running: the launch adds a kind of state too.
        (3, 1, 2, False, 7, 0),
        (3, 3, 1, True, 7, 0),  # already over: 3 + 6 = 9
        # Nothing in flight, 4 need attention (8 > 7): one starts all the same,
        # or a run nobody attends would never end.
        (0, 4, 0, False, 7, 1),
    ],
)
def test_no_launch_takes_the_load_over_its_capacity(
    in_flight: int, attention: int, distinct: int, agent_running: bool, capacity: int, expected: int
) -> None:
    policy = Adaptive(window=4 + in_flight)
    context = LaunchContext(
        in_flight=in_flight,
        needs_attention=attention,
        distinct_states=distinct,
        agent_running=agent_running,
        load_capacity=capacity,
    )
    assert policy.budget(context) == expected
    assert (policy.held is not None) == (expected < 4)


def test_no_agent_starts_while_the_ci_queue_waits_too_long() -> None:
    policy = Adaptive(window=4, ci_wait_max=100.0, load=False)
    # No CI duration known yet (no estimate, none seen): nothing to hold on.
    assert policy.budget(LaunchContext(in_flight=0, ci_queued=9, ci_slots=1)) == 4
    # The runners' estimate: 3 queued * 40 s / 2 slots = 60 s, under 100.
    context = LaunchContext(in_flight=0, ci_queued=3, ci_slots=2, ci_estimate=40.0)
    assert policy.budget(context) == 4
    # 6 queued: 120 s, over: nothing starts.
    context = LaunchContext(in_flight=0, ci_queued=6, ci_slots=2, ci_estimate=40.0)
    assert policy.budget(context) == 0
    assert policy.held == "CI queue wait 120s > 100s"
    # What CI took in this run wins over the estimate: 10 s each, 30 s.
    policy.observe(_finished("a", Outcome.OK, "ci", 10.0))
    assert policy.budget(context) == 4


def test_parameters_are_checked() -> None:
    policy = make_policy("adaptive", {"window": 3, "window_min": 2, "ci_wait_max": 90})
    assert isinstance(policy, Adaptive)
    assert (policy.window, policy.window_min, policy.ci_wait_max) == (3, 2, 90.0)
    for params, message in [
        ({"windw": 3}, "takes window, window_min, ci_wait_max, load"),
        ({"window": 0}, "window must be a whole number of 1 or more"),
        ({"window": 2, "window_min": 3}, "below window_min"),
        ({"ci_wait_max": "soon"}, "ci_wait_max must be seconds"),
        ({"load": 1}, "load must be true or false"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_policy("adaptive", params)


def test_in_the_core_window_changes_are_events_and_bound_the_launches() -> None:
    tasks = [{"id": f"t{i}"} for i in range(6)]
    sim = CoreSim(fleet_toml(tasks, slots=6, load_capacity=20))
    sim.core.policy = make_policy("adaptive", {"window": 2})
    sim.start()
    assert sim.launched() == [("t0", "agent"), ("t1", "agent")]
    sim.take_events()
    sim.end("t0")  # success: window 3, two start
    events = sim.take_events()
    changed = [e for e in events if e.kind is EventKind.WINDOW_CHANGED]
    assert [(e.data["previous"], e.data["window"]) for e in changed] == [(2, 3)]
    assert changed[0].data["reason"] == "'t0' succeeded"
    # Told right after what caused it.
    kinds = [e.kind for e in events]
    assert kinds.index(EventKind.WINDOW_CHANGED) == kinds.index(EventKind.TASK_SUCCEEDED) + 1
    assert sorted(sim.launched()) == [("t2", "agent"), ("t3", "agent")]
    sim.end("t1", exit_code=1)  # failure: window 1, three in flight: nothing starts
    assert sim.core.policy.describe() == "adaptive 1"
    assert sim.launched() == []
    assert sim.core.held_by_policy


def test_in_the_core_the_load_admission_counts_tasks_needing_attention() -> None:
    """Each failed task weighs 2 on the load: with capacity 5, launches wait for
    room, and an acknowledgment makes some."""
    tasks = [{"id": f"t{i}"} for i in range(7)]
    sim = CoreSim(fleet_toml(tasks, slots=7, load_capacity=5))
    sim.core.policy = make_policy("adaptive", {"window": 7, "window_min": 7})
    sim.start()
    assert len(sim.launched()) == 5  # load 5 (5 running): at capacity, not over
    sim.end("t0", exit_code=1)  # 4 in flight + 2 * 1 = 6: nothing starts
    sim.end("t1", exit_code=1)  # 3 + 4 = 7
    sim.end("t2")  # 2 + 4 = 6
    sim.end("t3")  # 1 + 4 = 5: one more would be 6
    assert sim.launched() == []
    assert sim.core.held_by_policy
    sim.end("t4")  # 0 + 4: one fits (5), not two
    assert sim.launched() == [("t5", "agent")]
    commands.acknowledge(sim.core, "t0")  # 1 + 2 = 3: t6 fits
    sim.settle()
    assert sim.launched() == [("t6", "agent")]
