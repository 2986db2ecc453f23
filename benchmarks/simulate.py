"""6. The policy lab: how fast `fleetdeck simulate` simulates, and how right it is.

    .venv/bin/python benchmarks/simulate.py [--quick]

6a. Simulated tasks per second: one wave run of a seeded random DAG of 100,000 tasks
    (20,000 with --quick; each depends on 0-3 earlier ones, 0.2-1.5 s each, one agent
    with 64 slots), through the engine's core in virtual time
    (fleetdeck.engine.simulate). Timed twice, alternating: with the report and
    cognitive-load fold the lab prints (`simulate_run`), and the makespan alone
    (`simulate_makespan`, what the live what-if uses). Beside them, as a yardstick,
    the same ready rule with nothing else (benchmarks/fleets.py `list_schedule`: a
    heap of ready tasks and one of running ones), on the same DAG, which must also
    give the same makespan: the check that the simulator schedules as the rule says.
6b. The live what-if: `predict_remaining` on a 100-task fleet a third done, 5 runs
    under each of 2 policies, median of 30 calls.
6c. Simulation error: each example fleet in config/, and two seeded random DAGs of
    sleeps, is run for real under wave
    (`fleetdeck run --json`, its own state dir), then `fleetdeck simulate --from`
    that state dir predicts wave and sequential (20 runs, median), then the fleet is
    run for real under sequential in the same state dir (so the engine ranks tasks
    by the durations it learned, as the simulator did). The table compares the
    predicted makespans with the real ones. The demo fleets draw their own jitter
    and failures, so one real run is one draw of what the simulator spreads over 20.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine_scale import SLOTS
from engine_scale import build_fleet as build_scale_fleet
from fleets import list_schedule, random_sleep_dag, write_dag_fleet
from harness import (
    HERE,
    BenchmarkError,
    Settings,
    SummaryRow,
    fleetdeck_argv,
    load_average,
    run_alone,
    table,
)

from fleetdeck.engine.simulate import (
    StageModel,
    TaskProgress,
    simulate_makespan,
    simulate_run,
)
from fleetdeck.history import history_of
from fleetdeck.lab import predict_remaining
from fleetdeck.model import Stage, TaskState

TARGET_TASKS_PER_SECOND = 100_000
TARGET_PREDICT_MS = 50.0
EXAMPLES = ("demo", "code-review", "sequential-prs", "content")
QUICK_EXAMPLES = ("code-review", "content")
CONFIG_DIR = HERE.parent / "config"


# --- 6a. speed ------------------------------------------------------------------------


def measure_speed(tasks: int, workdir: Path, repetitions: int) -> list[SummaryRow]:
    """Simulated tasks per second, with and without the fold, against the bare rule."""
    print(
        f"\n-- 6a. Simulated tasks per second: a random DAG of {tasks:,} tasks, wave, "
        f"{SLOTS} slots, {repetitions} repetitions (load average {load_average():.2f}) --"
    )
    dag = random_sleep_dag(1, tasks)
    fleet = build_scale_fleet(list(dag.deps), workdir)
    models = [{Stage.AGENT: StageModel.fixed(seconds)} for seconds in dag.durations]
    estimates = list(dag.durations)
    times: dict[str, list[float]] = {"simulate_run": [], "simulate_makespan": [], "rule": []}
    makespans: dict[str, float] = {}
    for rep in range(repetitions):
        order = list(times) if rep % 2 == 0 else list(reversed(times))
        for name in order:
            began = time.perf_counter()
            if name == "simulate_run":
                run = simulate_run(
                    fleet, "wave", models, estimates=estimates, rng=random.Random(rep)
                )
                makespans[name] = run.makespan
                if not run.settled or run.report.completion_rate != 1.0:
                    raise BenchmarkError("the simulated run did not complete every task")
            elif name == "simulate_makespan":
                makespans[name] = simulate_makespan(
                    fleet, "wave", models, estimates=estimates, rng=random.Random(rep)
                )
            else:
                makespans[name] = list_schedule(dag.durations, dag.deps, SLOTS, rank="durations")
            times[name].append(time.perf_counter() - began)
    rows = []
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows.append(
            [
                name,
                f"{median:.3f} s",
                f"{tasks / median:,.0f}",
                f"{median / statistics.median(times['rule']):.1f}x",
                f"{makespans[name]:.2f} s",
            ]
        )
    print(table(["what", "median time", "tasks/s", "/ bare rule", "makespan"], rows))
    same = len({round(value, 6) for value in makespans.values()}) == 1
    print(
        "same makespan as the bare rule: "
        + ("yes" if same else "NO: the simulator does not schedule as the rule says")
    )
    best = tasks / statistics.median(times["simulate_run"])
    alone = tasks / statistics.median(times["simulate_makespan"])
    note = "" if tasks == 100_000 else f" ({tasks:,} tasks, quick)"
    return [
        SummaryRow(
            "6a. simulated tasks/s (report + load)",
            f"{best:,.0f}",
            f">= {TARGET_TASKS_PER_SECOND:,}",
            "yes" if best >= TARGET_TASKS_PER_SECOND else "NO",
            f"random DAG{note}, load {load_average():.2f}",
        ),
        SummaryRow(
            "6a. simulated tasks/s (makespan alone)",
            f"{alone:,.0f}",
            f">= {TARGET_TASKS_PER_SECOND:,}",
            "yes" if alone >= TARGET_TASKS_PER_SECOND else "NO",
            "same makespan as the rule" if same else "MAKESPAN DIFFERS from the rule",
        ),
    ]


def measure_policies(tasks: int, workdir: Path) -> list[SummaryRow]:
    """Simulated tasks per second under each policy, side by side with wave's: a
    policy's own cost (the adaptive window's context, the speculation's releases),
    on a random DAG whose tasks run an agent stage then CI, 5% of CI runs failing."""
    from fleetdeck.policy import POLICIES

    print(
        f"\n-- 6d. Each policy's cost: a random DAG of {tasks:,} tasks with CI, makespan alone --"
    )
    dag = random_sleep_dag(2, tasks)
    fleet = _with_ci(list(dag.deps), workdir)
    models = [
        {Stage.AGENT: StageModel.fixed(seconds), Stage.CI: StageModel.fixed(0.3, 0.05)}
        for seconds in dag.durations
    ]
    estimates = list(dag.durations)
    seconds: dict[str, float] = {}
    for policy in POLICIES:
        began = time.perf_counter()
        simulate_makespan(fleet, policy, models, estimates=estimates, rng=random.Random(1))
        seconds[policy] = time.perf_counter() - began
    rows = [
        [policy, f"{took:.3f} s", f"{tasks / took:,.0f}", f"{took / seconds['wave']:.2f}x"]
        for policy, took in seconds.items()
    ]
    print(table(["policy", "time", "tasks/s", "/ wave"], rows))
    slowest = max(seconds, key=lambda policy: seconds[policy])
    return [
        SummaryRow(
            "6d. slowest policy / wave (simulated)",
            f"{seconds[slowest] / seconds['wave']:.2f}x",
            "-",
            "-",
            f"{slowest}, {tasks:,} tasks",
        )
    ]


def _with_ci(deps: list[tuple[int, ...]], base_dir: Path) -> Any:
    """The DAG as a fleet whose tasks each run CI on one runner of 16 slots."""
    from fleetdeck.config import FleetConfig, FleetSection, TaskSpec, WorkerSpec, prepare_fleet

    ids = [f"t{i}" for i in range(len(deps))]
    specs = tuple(
        TaskSpec(id=ids[i], agent="a", ci="ci", depends_on=tuple(ids[d] for d in parents))
        for i, parents in enumerate(deps)
    )
    config = FleetConfig(
        fleet=FleetSection(name="policies", state_dir="state"),
        agents={"a": WorkerSpec(command=("true",), slots=SLOTS)},
        runners={"ci": WorkerSpec(command=("true",), slots=16)},
        tasks=specs,
    )
    return prepare_fleet(config, source="policies", base_dir=base_dir)


# --- 6b. the live what-if -------------------------------------------------------------


def measure_predict(workdir: Path, calls: int) -> list[SummaryRow]:
    """predict_remaining on 100 tasks, 5 runs x 2 policies."""
    print(f"\n-- 6b. predict_remaining: 100 tasks, 5 runs x 2 policies, {calls} calls --")
    dag = random_sleep_dag(2, 100, shortest=20.0, longest=300.0)
    fleet = build_scale_fleet(list(dag.deps), workdir)
    # Three observed durations per task (the scale fleet's ids are t0, t1, ...).
    history = history_of(
        [
            (f"t{i}", "agent", "ok", seconds * factor)
            for i, seconds in enumerate(dag.durations)
            for factor in (0.8, 1.0, 1.3)
        ]
    )
    progress = {f"t{i}": TaskProgress(TaskState.SUCCEEDED, attempts=1) for i in range(33)}
    progress.update({f"t{i}": TaskProgress(TaskState.RUNNING, 1, 0, 10.0) for i in range(33, 40)})
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        predicted = predict_remaining(fleet, progress, history, ["sequential", "wave"])
        times.append(time.perf_counter() - began)
    median = statistics.median(times) * 1000
    print(
        f"median {median:.1f} ms, range {min(times) * 1000:.1f}-{max(times) * 1000:.1f} ms "
        f"(load average {load_average():.2f}); predicted: "
        + ", ".join(f"{policy} {seconds:.0f} s" for policy, seconds in predicted.items())
    )
    return [
        SummaryRow(
            "6b. predict_remaining, 100 tasks, 5x2 runs",
            f"{median:.1f} ms",
            f"< {TARGET_PREDICT_MS:.0f} ms",
            "yes" if median < TARGET_PREDICT_MS else "NO",
            f"load {load_average():.2f}",
        )
    ]


# --- 6c. simulation error -------------------------------------------------------------


def _run_fleet(config: Path, policy: str, state: Path) -> float:
    """Run an example fleet for real; its makespan (as its report says)."""
    argv = [*fleetdeck_argv(), "run", str(config), "--json", "--fresh"]
    argv += ["--policy", policy, "--state-dir", str(state)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode not in (0, 1):  # 1: a task of the example fails on purpose
        raise BenchmarkError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr[-500:]}")
    for line in reversed(done.stdout.splitlines()):
        event = json.loads(line)
        if event.get("event") == "run_finished":
            return float(event["report"]["makespan"])
    raise BenchmarkError(f"`{' '.join(argv)}` printed no run_finished")


def _predict(config: Path, state: Path) -> dict[str, dict[str, Any]]:
    argv = [*fleetdeck_argv(), "simulate", str(config), "--from", str(state), "--json"]
    argv += ["--runs", "20", "--seed", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise BenchmarkError(f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr[-500:]}")
    return {line["policy"]: line for line in map(json.loads, done.stdout.splitlines())}


# The seeded random DAGs 6c runs beside the examples: 12 sleeps of 0.2-1.5 s on 3 slots.
RANDOM_DAG_SEEDS = (11, 12)
RANDOM_DAG_TASKS = 12
RANDOM_DAG_SLOTS = 3


def measure_error(examples: tuple[str, ...], workdir: Path) -> list[SummaryRow]:
    """Predicted against real makespans of the example fleets."""
    print(
        f"\n-- 6c. Simulation error: {', '.join(examples)}, real wave -> simulate --from -> "
        f"real sequential (load average {load_average():.2f}) --"
    )
    rows: list[list[str]] = []
    errors: list[float] = []
    fleets = [(name, CONFIG_DIR / f"{name}.toml") for name in examples]
    for seed in RANDOM_DAG_SEEDS:
        # Seeded random DAGs of sleeps on 3 slots: no jitter of their own, so the
        # error is the simulator's and the machine's, not the example's dice.
        dag = random_sleep_dag(seed, RANDOM_DAG_TASKS)
        config = workdir / f"simulate-random-{seed}.toml"
        write_dag_fleet(config, dag, RANDOM_DAG_SLOTS)
        fleets.append((f"random-{seed}", config))
    for name, config in fleets:
        state = workdir / f"simulate-{name}"
        real = {"wave": _run_fleet(config, "wave", state)}
        predicted = _predict(config, state)
        real["sequential"] = _run_fleet(config, "sequential", state)
        for policy in ("wave", "sequential"):
            figures = predicted[policy]
            error = (figures["makespan_median"] - real[policy]) / real[policy]
            errors.append(abs(error))
            rows.append(
                [
                    name,
                    policy,
                    f"{real[policy]:.2f} s",
                    f"{figures['makespan_median']:.2f} s",
                    f"{figures['makespan_p90']:.2f} s",
                    f"{error:+.1%}",
                    f"{figures['completion_rate']:.0%}",
                ]
            )
            print(f"  {name:<15} {policy:<10} real {real[policy]:6.2f} s  {rows[-1][5]}")
    print(
        table(
            ["fleet", "policy", "real", "predicted p50", "p90", "error", "completion (sim)"],
            rows,
        )
    )
    return [
        SummaryRow(
            "6c. simulation error, median |error|",
            f"{statistics.median(errors):.1%}",
            "-",
            "(info)",
            f"worst {max(errors):.1%}, {len(errors)} predictions",
        )
    ]


def measure(settings: Settings) -> list[SummaryRow]:
    """Section 6: simulation speed, the what-if's cost, the simulation error."""
    tasks = 20_000 if settings.quick else 100_000
    rows = measure_speed(tasks, settings.workdir, repetitions=1 if settings.quick else 3)
    rows += measure_policies(tasks // 5, settings.workdir)
    rows += measure_predict(settings.workdir, calls=30)
    rows += measure_error(QUICK_EXAMPLES if settings.quick else EXAMPLES, settings.workdir)
    return rows


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__ or "", sys.argv[1:]))
