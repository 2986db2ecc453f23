"""Policies as pure functions, and the ready queue they draw from."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetdeck.engine.scheduler import ReadyQueue, ready_order_key
from fleetdeck.policy import (
    POLICIES,
    POLICY_NAMES,
    LaunchContext,
    Policy,
    launch_budget,
    next_policy,
    parse_policy,
)

# Any budget at least this large is "no limit" for a fleet.
HUGE = 10**9


# --- launch_budget ----------------------------------------------------------------------


@pytest.mark.parametrize("cap", [None, 1, 3, 100])
def test_sequential_starts_one_only_when_nothing_is_in_flight(cap: int | None) -> None:
    assert launch_budget("sequential", LaunchContext(in_flight=0, max_in_flight=cap)) == 1
    for in_flight in (1, 2, 7):
        assert launch_budget("sequential", LaunchContext(in_flight, max_in_flight=cap)) == 0


def test_wave_without_a_cap_is_unlimited() -> None:
    assert launch_budget("wave", LaunchContext(in_flight=0)) >= HUGE
    assert launch_budget("wave", LaunchContext(in_flight=5_000)) >= HUGE


@pytest.mark.parametrize(
    ("in_flight", "expected"), [(0, 4), (1, 3), (3, 1), (4, 0), (6, 0), (100, 0)]
)
def test_wave_fills_up_to_max_in_flight_and_never_goes_negative(
    in_flight: int, expected: int
) -> None:
    assert launch_budget("wave", LaunchContext(in_flight, max_in_flight=4)) == expected


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("cap", [None, 1, 8])
@pytest.mark.parametrize("in_flight", [0, 1, 5])
def test_paused_starts_nothing(policy: Policy, cap: int | None, in_flight: int) -> None:
    context = LaunchContext(in_flight=in_flight, max_in_flight=cap, paused=True)
    assert launch_budget(policy, context) == 0


def test_unknown_policy_raises() -> None:
    with pytest.raises(ValueError, match="adaptive"):
        launch_budget("zuul", LaunchContext(in_flight=0))


@settings(max_examples=200, deadline=None, database=None)
@given(
    policy=st.sampled_from(POLICY_NAMES),
    in_flight=st.integers(min_value=0, max_value=1_000),
    cap=st.none() | st.integers(min_value=1, max_value=50),
)
def test_budget_never_exceeds_the_window(policy: Policy, in_flight: int, cap: int | None) -> None:
    """Starting the whole budget never takes in-flight work past the policy's window."""
    budget = launch_budget(policy, LaunchContext(in_flight, max_in_flight=cap))
    assert budget >= 0
    window = 1 if policy == "sequential" else cap
    if policy == "adaptive":  # its window starts at 2 (the default `window`)
        window = 2 if cap is None else min(2, cap)
    if window is not None:
        assert in_flight + budget <= max(window, in_flight)
        assert budget == max(0, window - in_flight)
    else:
        assert budget >= HUGE


# --- parse_policy / next_policy ---------------------------------------------------------


def test_policy_names() -> None:
    assert POLICY_NAMES == ("sequential", "wave", "pipelined", "adaptive")


@pytest.mark.parametrize("name", ["sequential", "wave", "pipelined", "adaptive"])
def test_parse_policy_accepts_each_name(name: str) -> None:
    assert parse_policy(name) == name


@pytest.mark.parametrize("name", ["wav", "", "Wave", "zuul", " wave"])
def test_parse_policy_rejects_others_and_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(
        ValueError, match="choose one of sequential, wave, pipelined, adaptive"
    ) as caught:
        parse_policy(name)
    assert repr(name) in str(caught.value)


def test_next_policy_cycles_through_the_registry() -> None:
    assert next_policy("sequential") == "wave"
    assert next_policy("wave") == "pipelined"
    assert next_policy("adaptive") == "sequential"
    seen = {POLICY_NAMES[0]}
    policy = POLICY_NAMES[0]
    for _ in POLICIES:
        policy = next_policy(policy)
        seen.add(policy)
    assert seen == set(POLICIES)


# --- ready_order_key ---------------------------------------------------------------------


def test_ready_order_priority_then_critical_path_then_config_order() -> None:
    tasks = {
        # name: (priority, critical path, config order)
        "urgent-short": (5, 1.0, 9),
        "normal-long": (0, 10.0, 8),
        "normal-mid-early": (0, 4.0, 1),
        "normal-mid-late": (0, 4.0, 2),
        "normal-short": (0, 1.0, 0),
        "deferred-long": (-1, 50.0, 3),
    }
    ranked = sorted(tasks, key=lambda name: ready_order_key(*tasks[name]))
    assert ranked == [
        "urgent-short",  # priority beats everything
        "normal-long",  # then the longer remaining chain
        "normal-mid-early",  # then config order
        "normal-mid-late",
        "normal-short",
        "deferred-long",  # negative priority goes after the default 0
    ]


# --- ReadyQueue ------------------------------------------------------------------------------


def key(order: int, priority: int = 0, critical_path: float = 1.0) -> tuple[int, float, int]:
    return ready_order_key(priority, critical_path, order)


def test_empty_queue() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    assert len(queue) == 0
    assert queue.pop_best(["coder"]) is None
    assert queue.waiting("coder") == 0
    assert queue.agents_waiting() == []
    assert queue.ordered() == []


def test_pop_best_takes_the_best_task_across_the_given_agents() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    queue.push("c1", "coder", key(0))
    queue.push("c2", "coder", key(1, priority=3))
    queue.push("w1", "writer", key(2, critical_path=9.0))
    queue.push("w2", "writer", key(3, priority=1))
    agents = ["coder", "writer"]
    popped = [queue.pop_best(agents) for _ in range(4)]
    assert popped == [("c2", "coder"), ("w2", "writer"), ("w1", "writer"), ("c1", "coder")]
    assert queue.pop_best(agents) is None
    assert len(queue) == 0


def test_pop_best_only_considers_the_agents_passed() -> None:
    """An agent with no free slot is left out: its better tasks must wait."""
    queue: ReadyQueue[str] = ReadyQueue()
    queue.push("best", "busy", key(0, priority=10))
    queue.push("ok", "free", key(1))
    assert queue.pop_best(["free"]) == ("ok", "free")
    assert queue.pop_best(["free"]) is None
    assert queue.pop_best(["nobody", "free"]) is None
    assert "best" in queue
    assert queue.pop_best(iter(["busy"])) == ("best", "busy")


def test_push_of_a_queued_task_is_ignored() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    queue.push("t", "coder", key(5))
    queue.push("t", "writer", key(0, priority=9))
    assert len(queue) == 1
    assert queue.waiting("coder") == 1
    assert queue.waiting("writer") == 0
    assert queue.pop_best(["writer"]) is None
    assert queue.pop_best(["coder"]) == ("t", "coder")


def test_remove_is_lazy_but_invisible() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    queue.push("a", "coder", key(0))
    queue.push("b", "coder", key(1))
    assert queue.remove("a") is True
    assert queue.remove("a") is False
    assert queue.remove("never-queued") is False
    assert "a" not in queue
    assert len(queue) == 1
    assert queue.waiting("coder") == 1
    assert queue.ordered() == ["b"]
    # The tombstone of "a" is at the head of the heap; it must be skipped.
    assert queue.pop_best(["coder"]) == ("b", "coder")
    assert queue.pop_best(["coder"]) is None


def test_repush_after_remove_uses_the_new_agent_and_key() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    queue.push("a", "coder", key(0, priority=5))
    queue.push("b", "coder", key(1))
    queue.remove("a")
    # Back with a worse key: the stale, better entry must not resurrect it early.
    queue.push("a", "coder", key(0, priority=-5))
    assert queue.ordered() == ["b", "a"]
    assert queue.pop_best(["coder"]) == ("b", "coder")
    assert queue.pop_best(["coder"]) == ("a", "coder")
    assert queue.pop_best(["coder"]) is None

    # Re-pushed to another agent: only that agent sees it.
    queue.push("c", "coder", key(2))
    queue.remove("c")
    queue.push("c", "writer", key(2))
    assert queue.pop_best(["coder"]) is None
    assert queue.waiting("coder") == 0
    assert queue.pop_best(["coder", "writer"]) == ("c", "writer")


def test_repush_with_the_same_key_pops_once() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    queue.push("a", "coder", key(0))
    queue.remove("a")
    queue.push("a", "coder", key(0))  # an identical entry sits beside the tombstone
    assert queue.pop_best(["coder"]) == ("a", "coder")
    assert queue.pop_best(["coder"]) is None
    assert len(queue) == 0
    assert queue.waiting("coder") == 0


def test_waiting_counts_and_agents_waiting() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    for i in range(3):
        queue.push(f"c{i}", "coder", key(i))
    queue.push("w0", "writer", key(10))
    assert (queue.waiting("coder"), queue.waiting("writer"), queue.waiting("ci")) == (3, 1, 0)
    assert sorted(queue.agents_waiting()) == ["coder", "writer"]
    queue.remove("w0")
    assert queue.agents_waiting() == ["coder"]
    queue.pop_best(["coder"])
    assert queue.waiting("coder") == 2


def test_ordered_is_best_first_across_agents_and_does_not_consume() -> None:
    queue: ReadyQueue[str] = ReadyQueue()
    queue.push("late", "coder", key(3))
    queue.push("long", "writer", key(2, critical_path=7.0))
    queue.push("urgent", "coder", key(4, priority=2))
    queue.push("early", "writer", key(1))
    assert queue.ordered() == ["urgent", "long", "early", "late"]
    assert len(queue) == 4
    assert all(task in queue for task in ("urgent", "long", "early", "late"))
    assert "missing" not in queue


AGENTS = ("coder", "writer", "ci")
TASKS = tuple(f"t{i}" for i in range(8))

operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.sampled_from(TASKS),
            st.sampled_from(AGENTS),
            st.integers(-2, 2),  # priority
            st.sampled_from([0.0, 1.0, 2.5, 10.0]),  # critical path
        ),
        st.tuples(st.just("remove"), st.sampled_from(TASKS)),
        st.tuples(st.just("pop"), st.frozensets(st.sampled_from(AGENTS))),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, database=None)
@given(operations)
def test_ready_queue_matches_a_sorted_list_model(ops: list[tuple[object, ...]]) -> None:
    """Whatever the sequence of pushes, removals and pops, the queue behaves like the
    obvious (slow) model: a dict of live tasks, popped by minimum key."""
    queue: ReadyQueue[str] = ReadyQueue()
    model: dict[str, tuple[str, tuple[int, float, int]]] = {}
    for op in ops:
        if op[0] == "push":
            _, task, agent, priority, critical_path = op
            # Config order is fixed per task, as in a real fleet: keys never tie.
            entry = (agent, ready_order_key(priority, critical_path, TASKS.index(task)))
            queue.push(task, agent, entry[1])
            model.setdefault(task, entry)
        elif op[0] == "remove":
            _, task = op
            assert queue.remove(task) is (model.pop(task, None) is not None)
        else:
            _, agents = op
            candidates = sorted(
                (entry[1], task, entry[0]) for task, entry in model.items() if entry[0] in agents
            )
            expected = None
            if candidates:
                _, task, agent = candidates[0]
                expected = (task, agent)
                del model[task]
            assert queue.pop_best(sorted(agents)) == expected

        assert len(queue) == len(model)
        for task in TASKS:
            assert (task in queue) == (task in model)
        for agent in AGENTS:
            assert queue.waiting(agent) == sum(1 for a, _ in model.values() if a == agent)
        assert set(queue.agents_waiting()) == {a for a, _ in model.values()}
        assert queue.ordered() == sorted(model, key=lambda t: model[t][1])
