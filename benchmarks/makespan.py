"""2. Makespan: how close fleetdeck packs a DAG of real tasks to what is possible.

    .venv/bin/python benchmarks/makespan.py [--quick]

A suite of seeded random DAGs of `sleep` tasks (0.2-1.5 s each) in three shapes
(benchmarks/fleets.py): long chains (the critical path is the bound), wide fans (total
work / slots is the bound: the slots must stay full to the end) and mixed (0-3
dependencies on earlier tasks). One agent with 4 slots, policy wave.

Each DAG runs three times, fleetdeck through the CLI with `--json`:
- run 1: a fresh state dir, no history: ready tasks ranked by the longest chain below
  them counted in tasks (hops);
- run 2: the SAME state dir, so the engine ranks by critical path weighted by the
  durations it learned from run 1 (Engine.estimated_durations). The target applies
  to run 2: makespan at most 1.05x the lower bound, on every DAG;
- barrier waves (benchmarks/barrier_waves.py): the gem-team article's executor, level
  by level with at most 4 at once and a barrier between levels, real `sleep`s too.
The barrier run goes before, between or after fleetdeck's runs, rotating per DAG.

How to read it. The lower bound of each run is max(critical path, total work / 4)
from the attempt durations measured in THAT run (`attempt_finished` events, or the
runner's own clock), so the time to start a process inside an attempt is not held
against the scheduler. Makespan is the run's own span (`run_started` to
`run_finished`; the barrier runner: first start to last end), interpreter start-up
excluded on both sides. "sim" is the same rule with zero overhead on the same
measured durations (hops for run 1, durations for run 2): the gap between sim and
1.00x belongs to the rule, the gap between sim and the measured ratio to the engine.
List scheduling is not monotone (Graham's anomalies): a few milliseconds' difference
in when a task ends can change what starts next, so a real run can beat its sim, or
miss it by more than the engine's overhead; read several DAGs, not one. Run 2 ranks
by durations learned in run 1, not by run 2's own, so its sim is a little optimistic.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fleets import (
    SleepDag,
    barrier_schedule,
    critical_path,
    dag_suite,
    levels,
    list_schedule,
    lower_bound,
    write_dag_fleet,
    write_dag_json,
)
from harness import (
    HERE,
    BenchmarkError,
    Command,
    Settings,
    SummaryRow,
    fleetdeck_argv,
    load_average,
    run_alone,
    run_checked,
    table,
    verdict,
)

TARGET = 1.05
SLOTS = 4
FULL_SEEDS, FULL_TASKS = (1, 2), 40
QUICK_SEEDS, QUICK_TASKS = (1,), 30


@dataclass(frozen=True)
class Run:
    """One run of a DAG: its makespan and each task's measured duration."""

    makespan: float
    durations: list[float]
    reported_lower_bound: float | None = None

    def lower_bound(self, dag: SleepDag) -> float:
        """max(critical path, work / slots) of this run's measured durations."""
        return lower_bound(self.durations, dag.deps, SLOTS)

    def ratio(self, dag: SleepDag) -> float:
        """Makespan / lower bound."""
        return self.makespan / self.lower_bound(dag)


@dataclass(frozen=True)
class DagResult:
    """One DAG: fleetdeck without and with history, and the barrier executor."""

    dag: SleepDag
    first: Run
    learned: Run
    barrier: Run

    @property
    def sim_hops(self) -> float:
        """Run 1's rule with zero overhead on run 1's durations, / its lower bound."""
        sim = list_schedule(self.first.durations, self.dag.deps, SLOTS, rank="hops")
        return sim / self.first.lower_bound(self.dag)

    @property
    def sim_durations(self) -> float:
        """Run 2's rule with zero overhead on run 2's durations, / its lower bound."""
        sim = list_schedule(self.learned.durations, self.dag.deps, SLOTS, rank="durations")
        return sim / self.learned.lower_bound(self.dag)

    @property
    def sim_barrier(self) -> float:
        """Waves with a barrier with zero overhead on the runner's durations, / bound."""
        sim = barrier_schedule(self.barrier.durations, self.dag.deps, SLOTS)
        return sim / self.barrier.lower_bound(self.dag)


def run_fleetdeck(config: Path, state: Path, dag: SleepDag) -> Run:
    """Run a DAG fleet through the CLI with --json and read its events."""
    argv = [*fleetdeck_argv(), "run", str(config), "--json", "--state-dir", str(state)]
    _, out = run_checked(Command(argv), capture=True)
    events: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines() if line.strip()]
    first = {event["event"]: event for event in reversed(events)}
    started, finished = first.get("run_started"), first.get("run_finished")
    if started is None or finished is None or finished.get("exit_code") != 0:
        raise BenchmarkError(f"{config}: the run did not finish cleanly")
    index = {task_id: i for i, task_id in enumerate(dag.ids)}
    durations = [0.0] * len(dag.ids)
    for event in events:
        if event["event"] == "attempt_finished" and event.get("stage") == "agent":
            durations[index[event["task"]]] += float(event["duration"])
    return Run(
        makespan=_timestamp(finished["ts"]) - _timestamp(started["ts"]),
        durations=durations,
        reported_lower_bound=float(finished["report"]["lower_bound"]),
    )


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run_barrier(dag_json: Path) -> Run:
    """Run the DAG through benchmarks/barrier_waves.py."""
    argv = [sys.executable, str(HERE / "barrier_waves.py"), str(dag_json), str(SLOTS)]
    _, out = run_checked(Command(argv), capture=True)
    result = json.loads(out)
    return Run(makespan=float(result["makespan"]), durations=list(result["durations"]))


def measure_dag(dag: SleepDag, number: int, workdir: Path) -> DagResult:
    """fleetdeck run 1 and run 2 in one state dir, the barrier runner in a rotating place."""
    config = workdir / f"dag-{dag.name}.toml"
    write_dag_fleet(config, dag, SLOTS)
    dag_json = workdir / f"dag-{dag.name}.json"
    write_dag_json(dag_json, dag)
    state = workdir / f"dag-state-{dag.name}"
    runs: dict[str, Run] = {}
    order = ["run 1", "run 2"]
    order.insert(number % 3, "barrier")
    for name in order:
        if name == "barrier":
            runs[name] = run_barrier(dag_json)
        else:
            runs[name] = run_fleetdeck(config, state, dag)
        run = runs[name]
        print(
            f"  {dag.name:<9} {name:<8} makespan {run.makespan:6.2f} s  "
            f"/ lower bound {run.ratio(dag):.3f}x"
        )
    shutil.rmtree(state, ignore_errors=True)
    return DagResult(dag, runs["run 1"], runs["run 2"], runs["barrier"])


def dags_table(results: list[DagResult]) -> str:
    """The DAGs themselves, by their nominal durations."""
    rows = []
    for r in results:
        d = r.dag
        work = sum(d.durations)
        path = critical_path(d.durations, d.deps)
        rows.append(
            [
                d.name,
                f"{len(d.durations)}",
                f"{max(levels(d.deps)) + 1}",
                f"{work:.1f} s",
                f"{path:.1f} s",
                f"{work / SLOTS:.1f} s",
                "crit path" if path >= work / SLOTS else f"work/{SLOTS}",
            ]
        )
    header = ["dag", "tasks", "levels", "work", "crit path", f"work/{SLOTS}", "bound by"]
    return table(header, rows)


def results_table(results: list[DagResult]) -> str:
    """Per DAG and contestant: makespan, / its lower bound, / the zero-overhead sim."""
    rows = []
    for r in results:
        d = r.dag
        rows.append(
            [
                d.name,
                f"{r.learned.lower_bound(d):.2f} s",
                f"{r.first.makespan:.2f} s",
                f"{r.first.ratio(d):.3f}x",
                f"{r.sim_hops:.3f}x",
                f"{r.learned.makespan:.2f} s",
                f"{r.learned.ratio(d):.3f}x",
                f"{r.sim_durations:.3f}x",
                f"{r.barrier.makespan:.2f} s",
                f"{r.barrier.ratio(d):.3f}x",
                f"{r.sim_barrier:.3f}x",
                f"{r.barrier.makespan / r.learned.makespan:.2f}x",
            ]
        )
    header = [
        "dag",
        "LB run 2",
        "run 1",
        "/LB",
        "sim",
        "run 2",
        "/LB",
        "sim",
        "barrier",
        "/LB",
        "sim",
        "barrier/run 2",
    ]
    return table(header, rows)


def cross_check(results: list[DagResult]) -> list[str]:
    """Notes where fleetdeck's own reported lower bound disagrees with ours (> 1%)."""
    notes = []
    for r in results:
        for name, run in (("run 1", r.first), ("run 2", r.learned)):
            ours, theirs = run.lower_bound(r.dag), run.reported_lower_bound
            if theirs is not None and abs(ours - theirs) > 0.01 * ours:
                notes.append(
                    f"note: {r.dag.name} {name}: fleetdeck reports a lower bound of "
                    f"{theirs:.3f} s, this benchmark computes {ours:.3f} s"
                )
    return notes


def measure(settings: Settings) -> list[SummaryRow]:
    """Run the suite of DAGs; print the tables; summary rows."""
    seeds, tasks = (QUICK_SEEDS, QUICK_TASKS) if settings.quick else (FULL_SEEDS, FULL_TASKS)
    dags = dag_suite(seeds, tasks)
    print(
        f"\n== 2. Makespan: {len(dags)} DAGs of {tasks} sleep tasks (0.2-1.5 s), {SLOTS} slots "
        f"(load average {load_average():.2f}) =="
    )
    results = [measure_dag(dag, number, settings.workdir) for number, dag in enumerate(dags)]
    print("\nThe DAGs (nominal durations):")
    print(dags_table(results))
    print(
        "\nMakespans: run 1 = fleetdeck, fresh state dir (hop-count priority); run 2 = "
        "fleetdeck, same state dir\n(durations learned from run 1); barrier = waves with a "
        "barrier. /LB = makespan / max(crit path, work/4)\nof that run's measured durations; "
        "sim = the same rule with zero overhead. The target (<= 1.05x) is run 2's."
    )
    print(results_table(results))
    for note in cross_check(results):
        print(note)
    print(f"load average {load_average():.2f} at the end of the section")
    return summary(results)


def summary(results: list[DagResult]) -> list[SummaryRow]:
    """Run 2 / lower bound per DAG against the target; the rest as information."""
    rows = []
    for r in results:
        d = r.dag
        ratio = r.learned.ratio(d)
        rows.append(
            SummaryRow(
                f"2. makespan run 2 / LB, {d.name}",
                f"{ratio:.3f}x",
                f"<= {TARGET:.2f}x",
                verdict(ratio, TARGET),
                f"sim {r.sim_durations:.3f}x; run 1 {r.first.ratio(d):.3f}x "
                f"(sim {r.sim_hops:.3f}x)",
            )
        )
    worst = max(results, key=lambda r: r.learned.ratio(r.dag))
    ratio = worst.learned.ratio(worst.dag)
    rows.append(
        SummaryRow(
            "2. makespan run 2 / LB, worst DAG",
            f"{ratio:.3f}x",
            f"<= {TARGET:.2f}x",
            verdict(ratio, TARGET),
            worst.dag.name,
        )
    )
    first_worst = max(r.first.ratio(r.dag) for r in results)
    rows.append(SummaryRow("2. makespan run 1 (no history) / LB, worst", f"{first_worst:.3f}x"))
    speedups = [r.barrier.makespan / r.learned.makespan for r in results]
    rows.append(
        SummaryRow(
            "2. barrier waves / fleetdeck run 2",
            f"{min(speedups):.2f}-{max(speedups):.2f}x",
            detail="makespan of the article's executor over fleetdeck's, per DAG",
        )
    )
    return rows


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__ or ""))
