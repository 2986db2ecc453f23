"""`decide()`, the launch decision, on its own: queues, retry lane, budget, pause, held."""

from __future__ import annotations

from collections import deque

from fleetdeck.config import WorkerSpec
from fleetdeck.engine.scheduler import ReadyQueue, decide, ready_order_key
from fleetdeck.model import Stage
from fleetdeck.slots import Capacity

AGENT = Stage.AGENT
CI = Stage.CI


class Board:
    """The decision's inputs: agent `coder` (tasks 0-9) and `writer` (10-19), runner `ci`."""

    def __init__(self, *, coder: int = 2, writer: int = 1, ci: int = 1) -> None:
        self.capacity = Capacity(
            {
                "coder": WorkerSpec(command=("true",), slots=coder),
                "writer": WorkerSpec(command=("true",), slots=writer),
            },
            {"ci": WorkerSpec(command=("true",), slots=ci)},
            {},
        )
        self.agent_of = ["coder"] * 10 + ["writer"] * 10
        self.ci: deque[int] = deque()
        self.retry_lane: deque[int] = deque()
        self.ready: ReadyQueue[int] = ReadyQueue()

    def make_ready(self, *nodes: int, priority: int = 0) -> None:
        for node in nodes:
            self.ready.push(node, self.agent_of[node], ready_order_key(priority, 1.0, node))

    def decide(
        self, *, budget: int = 100, paused: bool = False
    ) -> tuple[list[tuple[int, str]], bool]:
        decision = decide(
            {(CI, "ci"): self.ci},
            self.retry_lane,
            self.ready,
            self.capacity,
            self.agent_of,
            budget=budget,
            paused=paused,
        )
        assert all(host == "local" for _, _, host in decision.launches)
        return [(node, str(stage)) for node, stage, _ in decision.launches], decision.held


def test_later_stages_go_first_first_come_first_served() -> None:
    board = Board(ci=2)
    board.ci.extend([7, 3, 5])
    board.make_ready(0)
    launches, held = board.decide()
    assert launches == [(7, "ci"), (3, "ci"), (0, "agent")]
    assert list(board.ci) == [5]
    assert board.capacity.free(CI, "ci") == 0
    assert held is False


def test_later_stages_take_no_budget() -> None:
    board = Board(ci=2)
    board.ci.extend([1, 2])
    board.make_ready(0)
    launches, _ = board.decide(budget=1)
    assert launches == [(1, "ci"), (2, "ci"), (0, "agent")]


def test_retry_lane_goes_before_new_tasks_and_takes_no_budget() -> None:
    board = Board(coder=3)
    board.retry_lane.extend([4, 2])
    board.make_ready(0, 1, priority=10)
    launches, held = board.decide(budget=1)
    assert launches == [(4, "agent"), (2, "agent"), (0, "agent")]
    assert not board.retry_lane
    assert 1 in board.ready
    assert held is False  # every coder slot is taken: the slots hold task 1


def test_retry_lane_waits_in_order_for_its_agents_slot() -> None:
    board = Board(coder=1, writer=1)
    board.retry_lane.extend([1, 12, 2])
    launches, _ = board.decide()
    assert launches == [(1, "agent"), (12, "agent")]
    assert list(board.retry_lane) == [2]  # still first in line for the next coder slot
    board.capacity.release(AGENT, "coder", "local")
    board.retry_lane.append(3)
    launches, _ = board.decide()
    assert launches == [(2, "agent")]
    assert list(board.retry_lane) == [3]


def test_budget_is_honoured_and_held_says_the_policy_holds_back() -> None:
    board = Board(coder=3, writer=2)
    board.make_ready(0, 1, 2, 10)
    launches, held = board.decide(budget=2)
    assert launches == [(0, "agent"), (1, "agent")]
    assert held is True  # free slots and ready tasks: the budget kept them waiting
    launches, held = board.decide(budget=0)
    assert launches == []
    assert held is True
    launches, held = board.decide(budget=5)
    assert launches == [(2, "agent"), (10, "agent")]
    assert held is False  # nothing left waiting


def test_best_ready_task_first_across_agents_with_a_free_slot() -> None:
    board = Board(coder=1, writer=1)
    board.make_ready(0)
    board.make_ready(1, priority=2)
    board.make_ready(10, priority=1)
    launches, _ = board.decide()
    assert launches == [(1, "agent"), (10, "agent")]
    assert 0 in board.ready


def test_held_is_false_when_the_slots_are_what_is_missing() -> None:
    board = Board(coder=1, writer=1)
    board.make_ready(0, 1, 2)
    launches, held = board.decide(budget=1)
    assert launches == [(0, "agent")]
    assert held is False  # the budget is spent too, but no coder slot is free anyway


def test_paused_holds_agents_but_not_later_stages() -> None:
    board = Board(coder=2, ci=1)
    board.ci.append(5)
    board.retry_lane.append(3)
    board.make_ready(0)
    launches, held = board.decide(paused=True)
    assert launches == [(5, "ci")]
    assert list(board.retry_lane) == [3]
    assert 0 in board.ready
    assert board.capacity.free(AGENT, "coder") == 2
    assert held is False  # paused by the operator, not held by the policy


def test_a_host_down_gives_no_launch() -> None:
    board = Board()
    board.capacity.set_host_up("local", False)
    board.ci.append(1)
    board.retry_lane.append(2)
    board.make_ready(0)
    launches, held = board.decide()
    assert launches == []
    assert list(board.ci) == [1] and list(board.retry_lane) == [2] and 0 in board.ready
    assert held is False
