"""Scheduling policies as pure functions, and the ready queue they draw from.

A policy answers one question: how many new tasks may start now? The engine then
takes that many from the ready queue, best first, as slots allow. Both policies
share one ordering of the ready queue: priority (higher first), then critical path
(longest estimated remaining chain first), then config order.

- `sequential`: one task in flight, from its agent start to its CI result.
- `wave`: eager; any ready task with a free slot starts, up to `max_in_flight`.

Everything here is pure or a plain data structure, so a simulator can share it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

Policy = Literal["sequential", "wave"]
POLICY_NAMES: tuple[Policy, ...] = get_args(Policy)

# "No limit" for a budget: larger than any fleet.
UNLIMITED = 1 << 62


@dataclass(slots=True, frozen=True)
class LaunchContext:
    """What a policy needs to know to size the next launch decision.

    `in_flight` counts tasks between their first launch and their end (running,
    waiting for or running CI, waiting to retry).
    """

    in_flight: int
    max_in_flight: int | None = None
    paused: bool = False


def launch_budget(policy: Policy, context: LaunchContext) -> int:
    """How many new tasks may start now under `policy`."""
    if policy not in POLICY_NAMES:
        raise ValueError(f"unknown policy {policy!r}")
    if context.paused:
        return 0
    cap = UNLIMITED if context.max_in_flight is None else context.max_in_flight
    if policy == "sequential":
        cap = min(cap, 1)
    return max(0, cap - context.in_flight)


def parse_policy(name: str) -> Policy:
    """`name` as a Policy, or ValueError naming the valid ones."""
    for policy in POLICY_NAMES:
        if policy == name:
            return policy
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")


def other_policy(policy: Policy) -> Policy:
    """The policy the `s` key switches to."""
    return "wave" if policy == "sequential" else "sequential"


def ready_order_key(priority: int, critical_path: float, order: int) -> tuple[int, float, int]:
    """Sort key of a ready task: smaller starts first."""
    return (-priority, -critical_path, order)


class ReadyQueue:
    """Ready tasks, one heap per agent, ordered by `ready_order_key`.

    One heap per agent lets the engine pick the best task among agents that have a
    free slot without walking past tasks of busy agents: O(agents + log n) per
    launch however long the queue grows. Removal is lazy (a tombstone), so
    cancelling a ready task is O(1).
    """

    __slots__ = ("_heaps", "_live", "_waiting")

    def __init__(self) -> None:
        self._heaps: dict[str, list[tuple[tuple[int, float, int], str]]] = {}
        # task -> (agent, key) for tasks really in the queue (not tombstones).
        self._live: dict[str, tuple[str, tuple[int, float, int]]] = {}
        self._waiting: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, task: object) -> bool:
        return task in self._live

    def push(self, task: str, agent: str, key: tuple[int, float, int]) -> None:
        """Add `task` (to run on `agent`); a task already queued is left as is."""
        if task in self._live:
            return
        self._live[task] = (agent, key)
        heapq.heappush(self._heaps.setdefault(agent, []), (key, task))
        self._waiting[agent] = self._waiting.get(agent, 0) + 1

    def remove(self, task: str) -> bool:
        """Take `task` out of the queue; False when it was not queued."""
        entry = self._live.pop(task, None)
        if entry is None:
            return False
        self._waiting[entry[0]] -= 1
        return True

    def waiting(self, agent: str) -> int:
        """How many ready tasks wait for a slot of `agent`."""
        return self._waiting.get(agent, 0)

    def agents_waiting(self) -> list[str]:
        """Agents with at least one ready task."""
        return [agent for agent, count in self._waiting.items() if count > 0]

    def pop_best(self, agents: Iterable[str]) -> tuple[str, str] | None:
        """Remove and return `(task, agent)` of the best task among `agents`."""
        best: tuple[tuple[int, float, int], str, str] | None = None
        for agent in agents:
            head = self._head(agent)
            if head is not None and (best is None or head[0] < best[0]):
                best = (head[0], head[1], agent)
        if best is None:
            return None
        _key, task, agent = best
        heapq.heappop(self._heaps[agent])
        self.remove(task)
        return task, agent

    def ordered(self) -> list[str]:
        """Every queued task, best first (for views; O(n log n))."""
        return [task for task, _ in sorted(self._live.items(), key=lambda item: item[1][1])]

    def _head(self, agent: str) -> tuple[tuple[int, float, int], str] | None:
        heap = self._heaps.get(agent)
        while heap:
            key, task = heap[0]
            live = self._live.get(task)
            if live is not None and live[1] == key and live[0] == agent:
                return key, task
            heapq.heappop(heap)  # a tombstone left by remove()
        return None
