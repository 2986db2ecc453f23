"""Fleets the benchmarks run, and the scheduling arithmetic to judge them by.

Everything here is pure (no processes, no clocks): configs as TOML, seeded random
DAGs of sleep tasks in three shapes (long chains, wide fans, mixed), a realistic
20,000-task config, the makespan lower bound, and zero-overhead simulations of
fleetdeck's ready rule (by hop count or by duration) and of waves with a barrier.
"""

from __future__ import annotations

import heapq
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w

AGENT = "worker"


@dataclass(frozen=True)
class SleepDag:
    """A DAG of sleep tasks: `deps[i]` only name tasks before `i` (config order)."""

    shape: str
    seed: int
    durations: tuple[float, ...]
    deps: tuple[tuple[int, ...], ...]

    @property
    def name(self) -> str:
        """shape-seed, as the tables show it."""
        return f"{self.shape}-{self.seed}"

    @property
    def ids(self) -> list[str]:
        """Task ids in config order."""
        return [f"t{i:03d}" for i in range(len(self.durations))]


def _duration(rng: random.Random, shortest: float, longest: float) -> float:
    return round(rng.uniform(shortest, longest), 2)


def random_sleep_dag(
    seed: int, tasks: int, *, shortest: float = 0.2, longest: float = 1.5
) -> SleepDag:
    """Mixed: `tasks` sleeps, each depending on 0-3 earlier ones (mostly 1 or 2)."""
    rng = random.Random(seed)
    durations: list[float] = []
    deps: list[tuple[int, ...]] = []
    for i in range(tasks):
        durations.append(_duration(rng, shortest, longest))
        # Mostly one or two parents, some roots, a few joins of three.
        wanted = min(i, rng.choice((0, 1, 1, 1, 2, 2, 3)))
        deps.append(tuple(sorted(rng.sample(range(i), wanted))))
    return SleepDag("mixed", seed, tuple(durations), tuple(deps))


def chains_dag(
    seed: int, tasks: int, *, chains: int = 5, shortest: float = 0.2, longest: float = 1.5
) -> SleepDag:
    """Long chains: `chains` chains of unequal length (one holds about a third of the
    tasks), interleaved at random in config order, with a cross-link from another
    chain's latest task now and then. The critical path is the bound: the longest
    chain must never wait for a slot."""
    rng = random.Random(seed)
    shares = [3.0] + [rng.uniform(1.0, 2.0) for _ in range(chains - 1)]
    lengths = [max(1, round(tasks * share / sum(shares))) for share in shares]
    lengths[0] += tasks - sum(lengths)
    rng.shuffle(lengths)  # the longest chain is not first in config order
    left = list(lengths)
    last: list[int | None] = [None] * chains
    durations: list[float] = []
    deps: list[tuple[int, ...]] = []
    for i in range(tasks):
        chain = rng.choice([c for c in range(chains) if left[c] > 0])
        parents = {last[chain]} if last[chain] is not None else set()
        others = [last[c] for c in range(chains) if c != chain and last[c] is not None]
        if others and rng.random() < 0.1:
            parents.add(rng.choice(others))
        durations.append(_duration(rng, shortest, longest))
        deps.append(tuple(sorted(p for p in parents if p is not None)))
        last[chain] = i
        left[chain] -= 1
    return SleepDag("chains", seed, tuple(durations), tuple(deps))


def fans_dag(
    seed: int, tasks: int, *, roots: int = 4, shortest: float = 0.2, longest: float = 1.5
) -> SleepDag:
    """Wide fans: `roots` roots, every other task depends on one of them (a few on
    two). Total work / slots is the bound: the slots must stay full to the end, which
    the order of the last tasks decides. No fan-in at the end: a join that runs alone
    leaves 3 of 4 slots idle, and no schedule could come near the bound."""
    rng = random.Random(seed)
    durations = [_duration(rng, shortest, longest) for _ in range(tasks)]
    deps: list[tuple[int, ...]] = [() for _ in range(roots)]
    for _ in range(roots, tasks):
        wanted = 2 if rng.random() < 0.15 else 1
        deps.append(tuple(sorted(rng.sample(range(roots), wanted))))
    return SleepDag("fans", seed, tuple(durations), tuple(deps))


def dag_suite(seeds: Sequence[int], tasks: int) -> list[SleepDag]:
    """One DAG of each shape per seed."""
    return [
        make(seed, tasks) for seed in seeds for make in (chains_dag, fans_dag, random_sleep_dag)
    ]


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
        "fleet": {"name": f"bench-dag-{dag.name}", "policy": "wave"},
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


def write_dag_json(path: Path, dag: SleepDag) -> None:
    """The DAG for benchmarks/barrier_waves.py: durations and deps by position."""
    path.write_text(json.dumps({"durations": dag.durations, "deps": dag.deps}))


# --- a big, realistic config ----------------------------------------------------------------

_AREAS = ("api", "billing", "auth", "search", "ui", "infra", "docs", "payments", "data", "cli")
_VERBS = ("Fix", "Refactor", "Add tests for", "Migrate", "Document", "Speed up", "Type-check")
_WHATS = (
    "the retry logic",
    "the session cache",
    "error handling on timeouts",
    "the pagination of list endpoints",
    "the CSV export",
    "input validation",
    "the feature flag checks",
    "logging of failed requests",
)
_ASKS = (
    "Keep the public interface unchanged.",
    "Run the unit tests before you finish.",
    "Write a short summary of the change to $FLEETDECK_OUTPUT.",
    "Follow the style of the surrounding code.",
    "Do not touch generated files.",
)


def write_big_fleet(path: Path, tasks: int, seed: int = 1) -> None:
    """A realistic large fleet: three agents and two CI runners with their options,
    `tasks` tasks with one-to-two-sentence prompts naming a file and an issue, CI on
    most tasks, some retries, timeouts and priorities, and each task depending on 0-3
    of the 300 tasks before it."""
    rng = random.Random(seed)
    agents = {
        "claude": {
            "command": ["claude", "-p", "{prompt}", "--output-format", "json"],
            "slots": 8,
            "timeout": 1800.0,
            "env": {"CLAUDE_CODE_MAX_TURNS": "40"},
            "workdir": "..",
        },
        "codex": {"command": ["codex", "exec", "{prompt}"], "slots": 6, "timeout": 1800.0},
        "aider": {
            "command": ["aider", "--yes-always", "--message", "{prompt}"],
            "slots": 4,
            "env": {"AIDER_AUTO_COMMITS": "false"},
        },
    }
    runners = {
        "pytest": {"command": ["sh", "-c", "pytest -x -q"], "slots": 4, "timeout": 900.0},
        "lint": {"command": ["sh", "-c", "ruff check . && mypy src"], "slots": 2},
    }
    ids: list[str] = []
    specs: list[dict[str, Any]] = []
    for i in range(tasks):
        area = rng.choice(_AREAS)
        task_id = f"{area}-{i:05d}"
        ids.append(task_id)
        prompt = (
            f"{rng.choice(_VERBS)} {rng.choice(_WHATS)} in src/{area}/module_{rng.randrange(60)}"
            f".py (issue #{rng.randrange(1000, 99999)})."
        )
        if rng.random() < 0.6:
            prompt += " " + rng.choice(_ASKS)
        spec: dict[str, Any] = {"id": task_id, "agent": rng.choice(tuple(agents)), "prompt": prompt}
        if rng.random() < 0.8:
            spec["ci"] = rng.choice(("pytest", "pytest", "lint"))
        earlier = range(max(0, i - 300), i)
        wanted = min(len(earlier), rng.choice((0, 1, 1, 1, 2, 2, 3)))
        if wanted:
            spec["depends_on"] = [ids[j] for j in sorted(rng.sample(earlier, wanted))]
        if rng.random() < 0.3:
            spec["retries"] = rng.choice((1, 2))
        if rng.random() < 0.1:
            spec["timeout"] = 600.0
        if rng.random() < 0.05:
            spec["priority"] = rng.choice((1, 2, 5))
        specs.append(spec)
    config: dict[str, Any] = {
        "fleet": {
            "name": "big-realistic",
            "policy": "wave",
            "max_in_flight": 16,
            "state_dir": ".fleetdeck/big",
            "grace_period": 10.0,
            "retry_backoff": 5.0,
        },
        "agents": agents,
        "runners": runners,
        "tasks": specs,
    }
    path.write_text(tomli_w.dumps(config))


# --- scheduling arithmetic ------------------------------------------------------------------


def critical_path(durations: Sequence[float], deps: Sequence[Sequence[int]]) -> float:
    """The longest chain of `durations` through the DAG (deps point to earlier tasks)."""
    finish: list[float] = []
    for i, seconds in enumerate(durations):
        finish.append(seconds + max((finish[dep] for dep in deps[i]), default=0.0))
    return max(finish, default=0.0)


def lower_bound(durations: Sequence[float], deps: Sequence[Sequence[int]], slots: int) -> float:
    """No schedule beats max(critical path, total work / slots)."""
    return max(critical_path(durations, deps), sum(durations) / slots)


def levels(deps: Sequence[Sequence[int]]) -> list[int]:
    """The wave of each task: 0 without dependencies, else one more than its deepest."""
    level: list[int] = []
    for parents in deps:
        level.append(1 + max((level[dep] for dep in parents), default=-1))
    return level


def chain_below(weights: Sequence[float], deps: Sequence[Sequence[int]]) -> list[float]:
    """Per task: the heaviest chain from it to a sink, itself included."""
    below = list(weights)
    for i in reversed(range(len(deps))):
        for dep in deps[i]:
            below[dep] = max(below[dep], weights[dep] + below[i])
    return below


def hop_priority(deps: Sequence[Sequence[int]]) -> list[int]:
    """Tasks on the longest chain to a sink, counted in tasks (fleetdeck's rank when it
    has no history)."""
    return [round(hops) for hops in chain_below([1.0] * len(deps), deps)]


Rank = Literal["hops", "durations"]


def list_schedule(
    durations: Sequence[float],
    deps: Sequence[Sequence[int]],
    slots: int,
    *,
    rank: Rank = "hops",
) -> float:
    """Makespan of fleetdeck's ready rule with zero overhead: whenever a slot is free,
    start the ready task with the longest chain below it, ties by config order. The
    chain is counted in tasks (`rank="hops"`, a first run) or weighted by the
    durations themselves (`rank="durations"`, a run that learned them)."""
    n = len(durations)
    weights = [1.0] * n if rank == "hops" else list(durations)
    priority = chain_below(weights, deps)
    waiting = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in range(n)]
    for i, parents in enumerate(deps):
        for dep in parents:
            dependents[dep].append(i)
    ready = [(-priority[i], i) for i in range(n) if waiting[i] == 0]
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
                    heapq.heappush(ready, (-priority[child], child))
    return clock


def barrier_schedule(
    durations: Sequence[float], deps: Sequence[Sequence[int]], slots: int
) -> float:
    """Makespan of waves with a barrier, with zero overhead: each level's tasks in config
    order, at most `slots` at once, and the next level only when the whole level is done."""
    level = levels(deps)
    total = 0.0
    for wave in range(max(level, default=-1) + 1):
        free = [0.0] * slots
        for i, seconds in enumerate(durations):
            if level[i] == wave:
                start = heapq.heappop(free)
                heapq.heappush(free, start + seconds)
        total += max(free)
    return total


def write_chatty_fleet(
    path: Path,
    agent_argv: Sequence[str],
    *,
    tasks: int,
    slots: int,
    rate: float,
    seconds: tuple[float, float],
    seed: int = 1,
    window: int = 200,
) -> None:
    """`tasks` tasks on one agent with `slots` slots whose attempts print `rate` lines a
    second for `seconds` (a range, drawn per task) and exit 0.

    Each task depends on 0-2 of the `window` tasks before it (about a third each),
    which makes a DAG of several waves. The agent is `agent_argv` followed by the
    task's duration (its prompt), the rate and the task id (a seed for its lines).
    """
    rng = random.Random(seed)
    ids = [f"t{i:05d}" for i in range(tasks)]
    specs = []
    for i in range(tasks):
        earlier = range(max(0, i - window), i)
        wanted = min(len(earlier), rng.choice((0, 1, 2)))
        specs.append(
            {
                "id": ids[i],
                "agent": AGENT,
                "prompt": f"{rng.uniform(*seconds):.1f}",
                "depends_on": [ids[dep] for dep in sorted(rng.sample(earlier, wanted))],
            }
        )
    config: dict[str, Any] = {
        "fleet": {"name": f"bench-ui-{'chatty' if rate else 'quiet'}", "policy": "wave"},
        "agents": {
            AGENT: {
                "command": [*agent_argv, "{prompt}", f"{rate:g}", "{task}"],
                "slots": slots,
            }
        },
        "tasks": specs,
    }
    path.write_text(tomli_w.dumps(config))
