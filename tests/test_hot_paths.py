"""The shortcuts of the core's hot paths decide exactly what the long ways did.

Each shortcut skips work the answer does not need (a decision with nothing
queued, a policy that hears nothing, events nobody reads, a lookup the caller
has already made); these tests hold each to the long way's answer.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

import pytest

from core_support import CoreSim, chain, fleet_toml
from fleetdeck.config import HostSpec, WorkerSpec
from fleetdeck.engine.clock import VirtualClock
from fleetdeck.engine.scheduler import Decision, ReadyQueue, decide, ready_order_key
from fleetdeck.engine.simulate import StageModel, simulate_makespan, simulate_run
from fleetdeck.model import Event, EventKind, Stage
from fleetdeck.policy import LaunchContext, Policy, Wave
from fleetdeck.slots import Capacity

AGENT = Stage.AGENT

# --- the node passed with each event ------------------------------------------------


def test_every_event_of_a_task_comes_with_its_own_node() -> None:
    """The effects trust the node the core passes: it must be the event's task's."""
    tasks = [
        *chain("a", "b", "c"),
        {"id": "d", "ci": "ci", "retries": 1},
        {"id": "e", "depends_on": ["d"]},
    ]
    sim = CoreSim(fleet_toml(tasks, slots=2))
    sim.start()
    sim.end("a")
    sim.end("d", exit_code=1)  # a retry, with its backoff
    sim.advance(10.0)
    sim.end("b")
    sim.end("d")  # CI queued, then CI running
    sim.end("d")
    sim.end("c")
    sim.end("e", exit_code=1)  # no retries left: failed
    index = sim.core.dag.index
    passed = 0
    for event, node in zip(sim.fx.events, sim.fx.nodes, strict=True):
        if node is not None:
            passed += 1
            assert event.task is not None and index[event.task] == node, event
        elif event.task is not None:
            # The core's hottest events always come with their node.
            assert event.kind not in {
                EventKind.TASK_READY,
                EventKind.ATTEMPT_STARTED,
                EventKind.ATTEMPT_FINISHED,
                EventKind.TASK_SUCCEEDED,
                EventKind.CI_QUEUED,
                EventKind.RETRY_SCHEDULED,
                EventKind.TASK_FAILED,
            }, event
    assert passed > 20


# --- policies that observe, and those that do not --------------------------------------


class Listening(Wave):
    """Wave, hearing every event."""

    observes = True

    def __init__(self) -> None:
        self.heard: list[EventKind] = []

    def observe(self, event: Event) -> None:
        self.heard.append(event.kind)


class Deaf(Wave):
    """Wave that says it observes nothing: being called would be a bug."""

    def observe(self, event: Event) -> None:
        raise AssertionError("a policy with observes = False was called")


def test_a_policy_hears_events_only_when_it_observes_them() -> None:
    sim = CoreSim(fleet_toml(chain("a", "b")))
    sim.core.policy = Deaf()
    sim.start()
    sim.end("a")
    listening = Listening()
    sim.core.policy = listening  # as set_policy does: the flag is read again
    sim.end("b")
    assert listening.heard == [
        EventKind.ATTEMPT_STARTED,
        EventKind.ATTEMPT_FINISHED,
        EventKind.TASK_SUCCEEDED,
    ]


class Recording(Wave):
    """Wave, writing down the context of each budget it is asked for."""

    name: Policy = "wave"

    def __init__(self, core_in_flight: Any) -> None:
        self.asked: list[tuple[int, int]] = []
        self._core_in_flight = core_in_flight

    def budget(self, context: LaunchContext) -> int:
        self.asked.append((context.in_flight, self._core_in_flight()))
        return 1  # one launch per decision: in flight changes between decisions


def test_the_budget_is_asked_with_the_in_flight_count_of_the_moment() -> None:
    """The context is reused while the count stays: never a stale count."""
    sim = CoreSim(fleet_toml([{"id": f"t{i}"} for i in range(6)], slots=3))
    policy = Recording(lambda: sim.core.in_flight)
    sim.core.policy = policy
    sim.start()
    sim.core.schedule()  # a second task in flight, then a third
    sim.core.schedule()
    for task in ("t0", "t1", "t2", "t3"):
        sim.end(task)
    assert len(policy.asked) >= 6
    assert all(seen == actual for seen, actual in policy.asked)
    assert {seen for seen, _ in policy.asked} >= {0, 1, 2}


def test_no_decision_is_taken_when_nothing_waits() -> None:
    """With nothing queued the policy is not asked, and nothing is held."""
    sim = CoreSim(fleet_toml(chain("a", "b"), max_in_flight=1))
    policy = Recording(lambda: sim.core.in_flight)
    sim.core.policy = policy
    sim.start()
    asked = len(policy.asked)
    sim.core.held_by_policy = True  # as a decision before it may have left it
    sim.core.schedule()  # a runs, b waits for a: nothing is queued
    assert len(policy.asked) == asked
    assert sim.core.held_by_policy is False


# --- a run without events -----------------------------------------------------------


@pytest.mark.parametrize("policy", ["wave", "sequential"])
def test_the_makespan_alone_is_the_makespan_of_the_full_run(policy: str) -> None:
    """Built without events (`Core(events=False)`), the run takes the same draws
    and ends at the same instant, retries, failures and CI queues included."""
    rng = random.Random(3)
    tasks: list[dict[str, Any]] = []
    for i in range(60):
        task: dict[str, Any] = {"id": f"t{i}", "retries": rng.choice((0, 1, 2))}
        parents = rng.sample(range(i), min(i, rng.choice((0, 1, 2))))
        if parents:
            task["depends_on"] = [f"t{p}" for p in parents]
        if rng.random() < 0.3:
            task["ci"] = "ci"
        tasks.append(task)
    sim = CoreSim(fleet_toml(tasks, slots=4, runner_slots=2))
    fleet = sim.fleet
    models = [
        {
            Stage.AGENT: StageModel((1.0, 2.5, 4.0), (0.5,), 0.25),
            Stage.CI: StageModel((0.5, 1.5), (0.2,), 0.1),
        }
        for _ in fleet.tasks
    ]
    estimates = [1.0] * len(fleet.tasks)
    for seed in range(4):
        run = simulate_run(fleet, policy, models, estimates=estimates, rng=random.Random(seed))
        alone = simulate_makespan(
            fleet, policy, models, estimates=estimates, rng=random.Random(seed)
        )
        assert run.report.retries > 0
        assert alone == run.makespan


# --- the decision with one agent waiting ------------------------------------------------


def _reference_decide(
    ready: ReadyQueue[int], capacity: Capacity, budget: int
) -> tuple[list[tuple[int, str]], bool]:
    """The general loop of `decide` (one list of candidate agents per launch)."""
    launches: list[tuple[int, str]] = []
    while budget > 0:
        free = [a for a in ready.agents_waiting() if capacity.free(AGENT, a) > 0]
        picked = ready.pop_best(free)
        if picked is None:
            return launches, False
        host = capacity.acquire(AGENT, picked[1])
        assert host is not None
        launches.append((picked[0], host))
        budget -= 1
    return launches, any(capacity.free(AGENT, a) > 0 for a in ready.agents_waiting())


def _board(seed: int) -> tuple[ReadyQueue[int], Capacity, int]:
    """One agent on up to three hosts (some down, some capped), tasks ready."""
    rng = random.Random(seed)
    hosts = ["local", "h1", "h2"][: rng.randint(1, 3)]
    remote = {h: HostSpec(address=h, max_sessions=rng.randint(1, 3)) for h in hosts[1:]}
    spec = WorkerSpec(command=("true",), slots=rng.randint(1, 3), hosts=tuple(hosts))
    capacity = Capacity({"coder": spec}, {}, remote)
    for host in hosts:
        if rng.random() < 0.2:
            capacity.set_host_up(host, False)
        for _ in range(rng.randint(0, 2)):
            capacity.take(AGENT, "coder", host)  # busy already, past its slots maybe
    ready: ReadyQueue[int] = ReadyQueue()
    for node in range(rng.randint(0, 8)):
        ready.push(node, "coder", ready_order_key(rng.randint(0, 2), rng.random(), node))
    for node in rng.sample(range(8), 2):
        ready.remove(node)  # tombstones in the heap
    return ready, capacity, rng.randint(-1, 6)


@pytest.mark.parametrize("seed", range(300))
def test_one_agent_decides_as_the_general_loop_does(seed: int) -> None:
    ready, capacity, budget = _board(seed)
    decision: Decision = decide(
        {}, deque(), ready, capacity, ["coder"] * 8, budget=budget, paused=False
    )
    expected = _reference_decide(*_board(seed)[:2], budget)
    launches = [(node, host) for node, _stage, host in decision.launches]
    assert (launches, decision.held) == expected


# --- the virtual clock --------------------------------------------------------------


def test_call_soon_keeps_its_place_among_timers_of_the_same_instant() -> None:
    """`call_soon` is `call_later(0.0)` without a handle; `run()` is `step()` repeated."""

    def plan(clock: VirtualClock, ran: list[str]) -> None:
        def note(name: str) -> None:
            ran.append(name)
            if name == "a":
                clock.call_soon(note, "a-soon")
                clock.call_later(0.0, note, "a-now")
                clock.call_later(1.0, note, "a-later")

        clock.call_later(1.0, note, "a")
        clock.call_later(1.0, note, "b")
        clock.call_soon(note, "first")
        clock.call_later(0.5, note, "cancelled").cancel()
        clock.call_later(-2.0, note, "negative")

    by_run: list[str] = []
    running = VirtualClock()
    plan(running, by_run)
    assert running.run() == 7
    by_step: list[str] = []
    stepping = VirtualClock()
    plan(stepping, by_step)
    while stepping.step():
        pass
    assert by_run == by_step == ["first", "negative", "a", "b", "a-soon", "a-now", "a-later"]
    assert running.now() == stepping.now() == 2.0


class Unsaid:
    """A policy written before `observes` existed: it must still hear everything."""

    name: Policy = "wave"

    def __init__(self) -> None:
        self.heard = 0

    def budget(self, context: LaunchContext) -> int:
        return 10

    def observe(self, event: Event) -> None:
        self.heard += 1

    def describe(self) -> str:
        return self.name


def test_a_policy_that_does_not_say_whether_it_observes_hears_every_event() -> None:
    sim = CoreSim(fleet_toml(chain("a", "b")))
    policy = Unsaid()
    sim.core.policy = policy  # type: ignore[assignment]  # (no `observes`, on purpose)
    sim.start()
    sim.end("a")
    assert policy.heard == len(sim.fx.events) > 5
