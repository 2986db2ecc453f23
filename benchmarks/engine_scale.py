"""Engine throughput and memory at scale: a DAG built in code, run in-process.

    .venv/bin/python benchmarks/engine_scale.py [--tasks N]

No processes: an instant executor whose attempts succeed as soon as they start,
so what is measured is the engine itself (scheduling, events, journal, report).
Prints completions per second and memory per task (tracemalloc, peak over the
run divided by the number of tasks, the fleet's own definition included).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

from fleetdeck.config import FleetConfig, FleetSection, TaskSpec, WorkerSpec, prepare_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors.base import AttemptProcess, Executor, LaunchRequest
from fleetdeck.journal import Journal


class _Done(AttemptProcess):
    """An attempt that has already succeeded."""

    async def wait(self) -> int:
        return 0

    async def stop(self, grace: float) -> None:
        return None


_DONE = _Done()


class InstantExecutor(Executor):
    """Every attempt succeeds at once, in-process: the engine is all that runs."""

    host = "local"

    async def start(self, request: LaunchRequest) -> AttemptProcess:
        return _DONE


def big_fleet(tasks: int, seed: int = 1) -> FleetConfig:
    """A random DAG: each task depends on up to 3 of the 50 tasks before it."""
    rng = random.Random(seed)
    specs = []
    for i in range(tasks):
        window = range(max(0, i - 50), i)
        deps = tuple(
            sorted({f"t{j}" for j in rng.sample(window, min(len(window), rng.randint(0, 3)))})
        )
        specs.append(TaskSpec(id=f"t{i}", agent="a", prompt="", depends_on=deps))
    return FleetConfig(
        fleet=FleetSection(name="scale", state_dir="state"),
        agents={"a": WorkerSpec(command=("true",), slots=64)},
        tasks=tuple(specs),
    )


async def run(tasks: int) -> None:
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent / ".work") as temp:
        tracemalloc.start()
        config = big_fleet(tasks)
        fleet = prepare_fleet(config, source="scale", base_dir=Path(temp))
        journal = Journal(Path(temp) / "state")
        engine = Engine(
            fleet, journal=journal, executors={"local": InstantExecutor()}, sample_interval=None
        )
        began = time.perf_counter()
        result = await engine.run()
        elapsed = time.perf_counter() - began
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        journal.close()
    assert result.exit_code == 0, result
    print(
        f"{tasks} tasks in {elapsed:.2f} s: {tasks / elapsed:,.0f} completions/s; "
        f"peak memory {peak / tasks:,.0f} bytes per task (tracemalloc)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    (Path(__file__).parent / ".work").mkdir(exist_ok=True)
    asyncio.run(run(args.tasks))


if __name__ == "__main__":
    main()
