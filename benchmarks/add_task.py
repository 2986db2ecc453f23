"""What `fleetdeck add` holds the engine's loop for, against building the core.

    .venv/bin/python benchmarks/add_task.py

An added task is checked with the config's own checks against the whole fleet
(the config with it appended goes through `prepare_fleet`, and the DAG and its
critical path are built again), on the engine's loop. Side by side, for fleets
of 1,000 and 10,000 tasks (chains of ten): one `commands.add` of one task and of
100 tasks at once, and the core built from the same fleet (what a start costs),
medians of 5 in virtual time (no processes: the core alone).
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

from fleetdeck.config import Fleet, build_fleet
from fleetdeck.engine import commands
from fleetdeck.engine.clock import VirtualClock
from fleetdeck.engine.core import Core, Running
from fleetdeck.model import Attempt, Event
from fleetdeck.policy import make_policy


class _Quiet:
    """Effects that do nothing: the core's own cost only."""

    def emit(self, event: Event, node: int | None = None) -> None: ...
    def record(self, attempt: Attempt) -> None: ...
    def start(self, running: Running) -> None: ...
    def stop(self, running: Running, grace: float | None) -> None: ...
    def schedule_soon(self) -> None: ...


def _fleet(n: int) -> Fleet:
    tasks = [
        {"id": f"t{i}", "agent": "a", **({"depends_on": [f"t{i - 1}"]} if i % 10 else {})}
        for i in range(n)
    ]
    data = {"agents": {"a": {"command": ["true"], "slots": 8}}, "tasks": tasks}
    return build_fleet(data, source="bench.toml", base_dir=Path("/nonexistent"))


def _core(fleet: Fleet) -> Core:
    core = Core(
        fleet,
        clock=VirtualClock(),
        effects=_Quiet(),
        policy=make_policy("wave"),
        estimates=[1.0] * len(fleet.tasks),
        rng=random.Random(1),
    )
    core.start()
    return core


def _median_ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1000


def main() -> None:
    print(f"{'tasks':>7}  {'build core':>11}  {'add 1':>8}  {'add 100':>8}  add 1 / build")
    for n in (1_000, 10_000):
        fleet = _fleet(n)
        build, one, hundred = [], [], []
        for _ in range(5):
            began = time.perf_counter()
            core = _core(fleet)
            build.append(time.perf_counter() - began)
            began = time.perf_counter()
            commands.add(core, [{"id": "x", "agent": "a", "depends_on": ["t5"]}])
            one.append(time.perf_counter() - began)
            tables = [{"id": f"y{i}", "agent": "a", "depends_on": ["t5"]} for i in range(100)]
            began = time.perf_counter()
            commands.add(core, tables)
            hundred.append(time.perf_counter() - began)
        b, o, h = _median_ms(build), _median_ms(one), _median_ms(hundred)
        print(f"{n:>7}  {b:>9.1f}ms  {o:>6.1f}ms  {h:>6.1f}ms  {o / b:.2f}x")


if __name__ == "__main__":
    main()
