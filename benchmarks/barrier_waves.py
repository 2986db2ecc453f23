"""The makespan benchmark's other contestant: a DAG executor in waves with a barrier.

The gem-team article's algorithm (its DAG executor runs waves level by level): the tasks
whose dependencies are all done form a wave; run the whole wave, wait for all of it,
then compute the next wave. Here with at most SLOTS at once (an asyncio.Semaphore,
started in config order), each task a real `sleep SECONDS` subprocess. Since a task
is ready once the previous waves are done, the waves are the DAG's levels.

    python benchmarks/barrier_waves.py DAG.json SLOTS

DAG.json holds {"durations": [...], "deps": [[...], ...]} (fleets.write_dag_json).
Prints one JSON object: the makespan (first start to last end, so interpreter
start-up is not counted, as with fleetdeck's run_started..run_finished) and each
task's measured duration (its process's start to its exit).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence

from fleets import levels


async def run_waves(
    durations: Sequence[float], deps: Sequence[Sequence[int]], slots: int
) -> tuple[float, list[float]]:
    """Run the DAG level by level; the makespan and each task's measured duration."""
    level = levels(deps)
    measured = [0.0] * len(durations)
    gate = asyncio.Semaphore(slots)

    async def one(task: int) -> None:
        async with gate:
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec("sleep", f"{durations[task]:.2f}")
            code = await process.wait()
            measured[task] = time.perf_counter() - started
            if code != 0:
                raise RuntimeError(f"task {task}: sleep exited with {code}")

    began = time.perf_counter()
    for wave in range(max(level, default=-1) + 1):
        await asyncio.gather(*(one(i) for i in range(len(durations)) if level[i] == wave))
    return time.perf_counter() - began, measured


def main() -> int:
    """Entry point: `barrier_waves.py DAG.json SLOTS`."""
    with open(sys.argv[1]) as handle:
        dag = json.load(handle)
    makespan, measured = asyncio.run(run_waves(dag["durations"], dag["deps"], int(sys.argv[2])))
    print(json.dumps({"makespan": makespan, "durations": measured}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
