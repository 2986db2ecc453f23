"""Engine throughput and memory at scale: a DAG built in code, run in-process.

    .venv/bin/python benchmarks/engine_scale.py [--shape window|layered] [--tasks N]
        [--mode speed|memory|reference] [--json]

No processes: an instant executor whose attempts succeed as soon as they start, so
what is measured is the engine itself (scheduling, events, the journal in a real
SQLite file in benchmarks/.work, the report). Shapes:
- window: each task depends on up to 3 of the 50 tasks before it (deep, narrow);
- layered: levels of 1000 tasks, each depending on 1-3 tasks of the level before
  (100,000 tasks = 100 levels of 1000: wide).
One agent with 64 slots. Modes, each meant for its own fresh process:
- speed: completions per second over `Engine.run()` (building the fleet and the
  engine is timed apart), and the growth of the process's peak RSS per task;
- memory: the same run under tracemalloc (which slows Python about 2x, hence its
  own run): peak traced memory over building AND running, per task; the fleet's
  definition (config and DAG) is shown apart. SQLite's own memory is not traced.
- reference: the least an asyncio DAG runner can do on the same DAG (a ready heap
  by critical path, one asyncio task per attempt, no events, no journal), as a
  yardstick measured on the same machine at the same time: "engine / reference".
With --json the last line is the result as one JSON object (benchmarks/scale.py
reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetdeck.config import (
    Fleet,
    FleetConfig,
    FleetSection,
    TaskSpec,
    WorkerSpec,
    prepare_fleet,
)
from fleetdeck.engine import Engine
from fleetdeck.journal import Journal
from fleetdeck.testing import InstantExecutor

WORKDIR = Path(__file__).resolve().parent / ".work"
SLOTS = 64
LAYER_WIDTH = 1000


def window_deps(tasks: int, seed: int = 1) -> list[tuple[int, ...]]:
    """Each task depends on up to 3 of the 50 tasks before it."""
    rng = random.Random(seed)
    deps = []
    for i in range(tasks):
        window = range(max(0, i - 50), i)
        deps.append(tuple(sorted(rng.sample(window, min(len(window), rng.randint(0, 3))))))
    return deps


def layered_deps(tasks: int, seed: int = 1) -> list[tuple[int, ...]]:
    """Levels of LAYER_WIDTH tasks; each task depends on 1-3 of the level before."""
    rng = random.Random(seed)
    deps: list[tuple[int, ...]] = []
    for i in range(tasks):
        level_start = i - i % LAYER_WIDTH
        if level_start == 0:
            deps.append(())
            continue
        previous = range(level_start - LAYER_WIDTH, level_start)
        deps.append(tuple(sorted(rng.sample(previous, rng.randint(1, 3)))))
    return deps


SHAPES: dict[str, Callable[[int], list[tuple[int, ...]]]] = {
    "window": window_deps,
    "layered": layered_deps,
}


def build_fleet(deps: list[tuple[int, ...]], base_dir: Path) -> Fleet:
    """The DAG as a fleet built in code (no TOML), validated like any other."""
    ids = [f"t{i}" for i in range(len(deps))]
    specs = tuple(
        TaskSpec(id=ids[i], agent="a", prompt="", depends_on=tuple(ids[d] for d in parents))
        for i, parents in enumerate(deps)
    )
    config = FleetConfig(
        fleet=FleetSection(name="scale", state_dir="state"),
        agents={"a": WorkerSpec(command=("true",), slots=SLOTS)},
        tasks=specs,
    )
    return prepare_fleet(config, source="scale", base_dir=base_dir)


def _peak_rss() -> int:
    """The process's peak RSS so far, in bytes (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def run_engine(fleet: Fleet, state: Path) -> tuple[float, float]:
    """Seconds to build the engine, seconds of `Engine.run()`."""
    began = time.perf_counter()
    journal = Journal(state)
    engine = Engine(
        fleet, journal=journal, executors={"local": InstantExecutor()}, sample_interval=None
    )
    built = time.perf_counter()
    result = await engine.run()
    ran = time.perf_counter()
    journal.close()
    if result.exit_code != 0:
        raise RuntimeError(f"the run did not succeed: {result}")
    return built - began, ran - built


def speed(shape: str, tasks: int, workdir: Path) -> dict[str, Any]:
    """Completions per second over Engine.run(), and peak RSS growth per task."""
    rss_before = _peak_rss()
    deps = SHAPES[shape](tasks)
    with tempfile.TemporaryDirectory(prefix="scale-", dir=workdir) as temp:
        began = time.perf_counter()
        fleet = build_fleet(deps, Path(temp))
        fleet_seconds = time.perf_counter() - began
        engine_seconds, run_seconds = asyncio.run(run_engine(fleet, Path(temp) / "state"))
    return {
        "mode": "speed",
        "shape": shape,
        "tasks": tasks,
        "fleet_seconds": fleet_seconds,
        "engine_seconds": engine_seconds,
        "run_seconds": run_seconds,
        "per_second": tasks / run_seconds,
        "rss_growth_per_task": (_peak_rss() - rss_before) / tasks,
    }


def memory(shape: str, tasks: int, workdir: Path) -> dict[str, Any]:
    """Peak traced memory per task, building and running; the fleet's share apart."""
    with tempfile.TemporaryDirectory(prefix="scale-", dir=workdir) as temp:
        tracemalloc.start()
        fleet = build_fleet(SHAPES[shape](tasks), Path(temp))
        fleet_bytes, _ = tracemalloc.get_traced_memory()
        asyncio.run(run_engine(fleet, Path(temp) / "state"))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "mode": "memory",
        "shape": shape,
        "tasks": tasks,
        "peak_per_task": peak / tasks,
        "fleet_per_task": fleet_bytes / tasks,
    }


async def _instant_attempt() -> int:
    """The reference's attempt: done as soon as awaited, as InstantExecutor's are."""
    return 0


async def run_reference(deps: list[tuple[int, ...]]) -> float:
    """The least an asyncio DAG runner does: seconds to complete every task."""
    n = len(deps)
    dependents: list[list[int]] = [[] for _ in range(n)]
    for node, parents in enumerate(deps):
        for dep in parents:
            dependents[dep].append(node)
    below = [1.0] * n
    for node in reversed(range(n)):
        for child in dependents[node]:
            below[node] = max(below[node], 1.0 + below[child])
    waiting = [len(parents) for parents in deps]
    ready = [(-below[node], node) for node in range(n) if waiting[node] == 0]
    heapq.heapify(ready)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    state = {"running": 0, "left": n}
    in_flight: set[asyncio.Task[None]] = set()  # the loop keeps only weak references

    async def attempt(node: int) -> None:
        await _instant_attempt()
        state["running"] -= 1
        state["left"] -= 1
        for child in dependents[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (-below[child], child))
        if state["left"] == 0:
            finished.set_result(None)
        else:
            schedule()

    def schedule() -> None:
        while ready and state["running"] < SLOTS:
            _, node = heapq.heappop(ready)
            state["running"] += 1
            task = loop.create_task(attempt(node))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)

    began = time.perf_counter()
    schedule()
    await finished
    return time.perf_counter() - began


def reference(shape: str, tasks: int, workdir: Path) -> dict[str, Any]:
    """Completions per second of the minimal runner on the same DAG."""
    seconds = asyncio.run(run_reference(SHAPES[shape](tasks)))
    return {"mode": "reference", "shape": shape, "tasks": tasks, "per_second": tasks / seconds}


def describe(result: dict[str, Any]) -> str:
    """One line for a person."""
    head = f"{result['shape']}, {result['tasks']:,} tasks, {result['mode']}: "
    if result["mode"] == "speed":
        return head + (
            f"{result['per_second']:,.0f} completions/s (run {result['run_seconds']:.2f} s; "
            f"fleet built in {result['fleet_seconds']:.2f} s, engine in "
            f"{result['engine_seconds']:.2f} s); peak RSS grew "
            f"{result['rss_growth_per_task']:,.0f} bytes per task"
        )
    if result["mode"] == "memory":
        return head + (
            f"peak {result['peak_per_task']:,.0f} bytes per task (tracemalloc), of which the "
            f"fleet's definition {result['fleet_per_task']:,.0f}"
        )
    return head + f"{result['per_second']:,.0f} completions/s"


MODES: dict[str, Callable[[str, int, Path], dict[str, Any]]] = {
    "speed": speed,
    "memory": memory,
    "reference": reference,
}


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="window")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--mode", choices=sorted(MODES), default="speed")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    parser.add_argument("--json", action="store_true", help="end with the result as JSON")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = MODES[args.mode](args.shape, args.tasks, args.workdir)
    print(describe(result))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
