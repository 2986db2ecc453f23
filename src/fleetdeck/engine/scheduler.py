"""The launch decision: what starts now, given the queues, the slots and the budget.

Everything here is pure (no I/O, no clock): the engine and the simulator both
call `decide` whenever something may have become launchable. Order of the
decision, the same in both:

1. Later stages (CI, and any stage after the first) of tasks already in
   flight: first come, first served per pool, as slots free up. They hold
   their place in flight, so no policy budget applies.
2. Unless paused, retries of tasks already in flight (the retry lane), in the
   order they became due, as their agent has a free slot; no budget either.
3. Unless paused, new tasks from the ready queue, best first (priority, then
   critical path, then config order) among agents with a free slot, as many
   as the policy's budget allows.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from fleetdeck.model import Stage
from fleetdeck.slots import Capacity

# What the ready queue holds: task nodes in the core, anything orderable in tests.
T = TypeVar("T", int, str)

# Looked up once: an enum member costs a metaclass lookup each time on Python
# 3.11 (see engine/core.py), and every launch names it.
_AGENT = Stage.AGENT

# A queue of a later stage: (stage, pool name) -> the task nodes waiting, oldest first.
StageQueues = Mapping[tuple[Stage, str], deque[int]]


@dataclass(slots=True)
class Decision:
    """The launches decided: (task node, stage, host) each, in launch order.

    `held` is True when the policy's budget, not the slots, kept a ready task
    from starting: views then say the task waits for the policy, not a slot.
    """

    launches: list[tuple[int, Stage, str]]
    held: bool = False


def decide(
    stage_queues: StageQueues,
    retry_lane: deque[int],
    ready: ReadyQueue[int],
    capacity: Capacity,
    agent_of: list[str],
    *,
    budget: int,
    paused: bool,
) -> Decision:
    """Take from the queues what may start now, acquiring a slot for each.

    `agent_of[node]` names each task's agent. The queues and `capacity` are
    updated as launches are decided (a task taken is no longer queued, its slot
    is held); nothing else is touched.
    """
    launches: list[tuple[int, Stage, str]] = []
    for (stage, pool), queue in stage_queues.items():
        # acquire() is None exactly when free() is 0: one look at the slots, not two.
        while queue and (host := capacity.acquire(stage, pool)) is not None:
            launches.append((queue.popleft(), stage, host))
    if paused:
        return Decision(launches)
    for _ in range(len(retry_lane)):
        node = retry_lane.popleft()
        host = capacity.acquire(_AGENT, agent_of[node])
        if host is None:
            retry_lane.append(node)
        else:
            launches.append((node, _AGENT, host))
    agents = ready.agents_waiting()
    if len(agents) == 1:
        # One agent has ready tasks (every fleet of one agent, most decisions of
        # others): its heap alone, without a list of candidate agents per launch.
        # Each launch takes exactly one of the agent's free slots, so how many
        # start is known at once. The same launches and the same `held` as the
        # general loop below.
        agent = agents[0]
        free = capacity.free(_AGENT, agent)
        count = max(0, min(budget, ready.waiting(agent), free))
        for _ in range(count):
            host = capacity.acquire(_AGENT, agent)
            assert host is not None
            launches.append((ready.pop(agent), _AGENT, host))
        held = ready.waiting(agent) > 0 and free > count
        return Decision(launches, held=held)
    while budget > 0:
        free_agents = [
            agent for agent in ready.agents_waiting() if capacity.free(_AGENT, agent) > 0
        ]
        picked = ready.pop_best(free_agents)
        if picked is None:
            return Decision(launches)
        task_node, agent = picked
        host = capacity.acquire(_AGENT, agent)
        assert host is not None
        launches.append((task_node, _AGENT, host))
        budget -= 1
    held = any(capacity.free(_AGENT, agent) > 0 for agent in ready.agents_waiting())
    return Decision(launches, held=held)


def ready_order_key(priority: int, critical_path: float, order: int) -> tuple[int, float, int]:
    """Sort key of a ready task: smaller starts first."""
    return (-priority, -critical_path, order)


class ReadyQueue(Generic[T]):
    """Ready tasks (by DAG node), one heap per agent, ordered by `ready_order_key`.

    One heap per agent lets the engine pick the best task among agents that have a
    free slot without walking past tasks of busy agents: O(agents + log n) per
    launch however long the queue grows. Removal is lazy (a tombstone), so
    cancelling a ready task is O(1).
    """

    __slots__ = ("_heaps", "_live", "_waiting")

    def __init__(self) -> None:
        self._heaps: dict[str, list[tuple[tuple[int, float, int], T]]] = {}
        # task -> (agent, key) for tasks really in the queue (not tombstones).
        self._live: dict[T, tuple[str, tuple[int, float, int]]] = {}
        self._waiting: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, task: object) -> bool:
        return task in self._live

    def push(self, task: T, agent: str, key: tuple[int, float, int]) -> None:
        """Add `task` (to run on `agent`); a task already queued is left as is."""
        if task in self._live:
            return
        self._live[task] = (agent, key)
        heapq.heappush(self._heaps.setdefault(agent, []), (key, task))
        self._waiting[agent] = self._waiting.get(agent, 0) + 1

    def remove(self, task: T) -> bool:
        """Take `task` out of the queue; False when it was not queued."""
        entry = self._live.pop(task, None)
        if entry is None:
            return False
        agent = entry[0]
        left = self._waiting[agent] - 1
        # An agent with none left is forgotten: `agents_waiting` is then its keys.
        if left:
            self._waiting[agent] = left
        else:
            del self._waiting[agent]
        return True

    def waiting(self, agent: str) -> int:
        """How many ready tasks wait for a slot of `agent`."""
        return self._waiting.get(agent, 0)

    def agents_waiting(self) -> list[str]:
        """Agents with at least one ready task."""
        return list(self._waiting)

    def pop_best(self, agents: Iterable[str]) -> tuple[T, str] | None:
        """Remove and return `(task, agent)` of the best task among `agents`."""
        best: tuple[tuple[int, float, int], T, str] | None = None
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

    def pop(self, agent: str) -> T:
        """Remove and return the best task of `agent` (which has one waiting)."""
        head = self._head(agent)
        assert head is not None
        heapq.heappop(self._heaps[agent])
        self.remove(head[1])
        return head[1]

    def ordered(self) -> list[T]:
        """Every queued task, best first (for views; O(n log n))."""
        return [task for task, _ in sorted(self._live.items(), key=lambda item: item[1][1])]

    def _head(self, agent: str) -> tuple[tuple[int, float, int], T] | None:
        heap = self._heaps.get(agent)
        while heap:
            key, task = heap[0]
            live = self._live.get(task)
            if live is not None and live[1] == key and live[0] == agent:
                return key, task
            heapq.heappop(heap)  # a tombstone left by remove()
        return None
