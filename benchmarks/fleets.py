"""Fleets the benchmarks run, and the scheduling arithmetic to judge them by.

Everything here is pure (no processes, no clocks): config generation as TOML, a
seeded random DAG of sleep tasks, the makespan lower bound, and a zero-overhead
simulation of fleetdeck's wave rule for comparison.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

AGENT = "worker"


@dataclass(frozen=True)
class SleepDag:
    """A random DAG of sleep tasks: `deps[i]` only name tasks before `i`."""

    seed: int
    durations: tuple[float, ...]
    deps: tuple[tuple[int, ...], ...]

    @property
    def ids(self) -> list[str]:
        """Task ids in config order."""
        return [f"t{i:03d}" for i in range(len(self.durations))]


def random_sleep_dag(
    seed: int, tasks: int, *, shortest: float = 0.2, longest: float = 1.5
) -> SleepDag:
    """`tasks` sleeps of `shortest`..`longest` seconds, each depending on 0-3 earlier ones."""
    rng = random.Random(seed)
    durations: list[float] = []
    deps: list[tuple[int, ...]] = []
    for i in range(tasks):
        durations.append(round(rng.uniform(shortest, longest), 2))
        # Mostly one or two parents, some roots, a few joins of three.
        wanted = min(i, rng.choice((0, 1, 1, 1, 2, 2, 3)))
        deps.append(tuple(sorted(rng.sample(range(i), wanted))))
    return SleepDag(seed=seed, durations=tuple(durations), deps=tuple(deps))


def write_noop_fleet(path: Path, tasks: int, slots: int) -> None:
    """`tasks` independent tasks running `true`, one agent with `slots` slots, no CI."""
    config: dict[str, Any] = {
        "fleet": {"name": "bench-noop", "policy": "wave"},
        "agents": {AGENT: {"command": ["true"], "slots": slots}},
        "tasks": [{"id": f"t{i:05d}", "agent": AGENT} for i in range(tasks)],
    }
    path.write_text(tomli_w.dumps(config))


def write_dag_fleet(path: Path, dag: SleepDag, slots: int) -> None:
    """The DAG as a fleet: `sleep {prompt}` where each prompt is the task's duration."""
    ids = dag.ids
    config: dict[str, Any] = {
        "fleet": {"name": f"bench-dag-{dag.seed}", "policy": "wave"},
        "agents": {AGENT: {"command": ["sleep", "{prompt}"], "slots": slots}},
        "tasks": [
            {
                "id": ids[i],
                "agent": AGENT,
                "prompt": f"{seconds:.2f}",
                "depends_on": [ids[dep] for dep in dag.deps[i]],
            }
            for i, seconds in enumerate(dag.durations)
        ],
    }
    path.write_text(tomli_w.dumps(config))


def critical_path(durations: Sequence[float], deps: Sequence[Sequence[int]]) -> float:
    """The longest chain of `durations` through the DAG (deps point to earlier tasks)."""
    finish: list[float] = []
    for i, seconds in enumerate(durations):
        finish.append(seconds + max((finish[dep] for dep in deps[i]), default=0.0))
    return max(finish, default=0.0)


def lower_bound(durations: Sequence[float], deps: Sequence[Sequence[int]], slots: int) -> float:
    """No schedule beats max(critical path, total work / slots)."""
    return max(critical_path(durations, deps), sum(durations) / slots)


def hop_priority(deps: Sequence[Sequence[int]]) -> list[int]:
    """Tasks on the longest chain to a sink, counted in tasks (fleetdeck's default rank)."""
    below = [1] * len(deps)
    for i in reversed(range(len(deps))):
        for dep in deps[i]:
            below[dep] = max(below[dep], below[i] + 1)
    return below


def list_schedule(durations: Sequence[float], deps: Sequence[Sequence[int]], slots: int) -> float:
    """Makespan of the wave rule with zero overhead: whenever a slot is free, start the
    ready task with the longest chain below it (in tasks), ties by config order."""
    n = len(durations)
    rank = hop_priority(deps)
    waiting = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in range(n)]
    for i, parents in enumerate(deps):
        for dep in parents:
            dependents[dep].append(i)
    ready = [(-rank[i], i) for i in range(n) if waiting[i] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    clock = 0.0
    while ready or running:
        while ready and len(running) < slots:
            _, task = heapq.heappop(ready)
            heapq.heappush(running, (clock + durations[task], task))
        clock = running[0][0]
        while running and running[0][0] <= clock:
            _, task = heapq.heappop(running)
            for child in dependents[task]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    heapq.heappush(ready, (-rank[child], child))
    return clock
