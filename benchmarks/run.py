"""fleetdeck benchmarks: supervisor overhead and DAG makespan, as ratios from one run.

    .venv/bin/python benchmarks/run.py [--quick]

This machine is small and noisy, so nothing here is pass/fail on a time. Every number
that matters is a ratio of things measured side by side in the same run: contestants
alternate within each repetition and the medians are compared.

1. Overhead. N no-op tasks (`true`, no dependencies, one agent with 2 slots, no CI)
   through the real CLI, `fleetdeck run CONFIG --no-tui --state-dir FRESH` with stdout
   to /dev/null, against two baselines doing the same work:
   - raw loop: a plain asyncio script (benchmarks/raw_loop.py, its own process) that
     starts N `true` with create_subprocess_exec under Semaphore(2);
   - GNU parallel: `parallel -j2 true` fed N lines (skipped, with a note, if absent).
   Read "fleetdeck / raw loop" as the price of supervision (journal, logs, events,
   process-tree care) over the least a Python supervisor can do; "per task" is
   (fleetdeck - raw loop) / N. The 1-task fleet row is fleetdeck's fixed start-up
   cost (interpreter, imports, config validation, journal), paid once per run.

2. Makespan. A seeded random DAG of `sleep` tasks (durations in the prompts, deps only
   to earlier tasks) on one agent with 4 slots, policy wave, through `fleetdeck run
   --json`. The lower bound is max(critical path, total work / slots) computed from
   the measured agent attempt durations in the `attempt_finished` events, so process
   start-up inside an attempt is not held against the scheduler; makespan is the
   run's own span (`run_started` to `run_finished`). "sim / LB" is what the wave rule
   (longest chain first) would get with zero overhead on the same durations: the gap
   between it and 1.00x belongs to the greedy rule, the gap between it and the
   measured ratio belongs to the engine. The same DAG under `--policy sequential` is
   shown for contrast ("seq / work": sequential makespan over the sum of its work).

The summary compares the ratios with the targets of the issue (overhead <= 1.5x the
raw loop, makespan <= 1.15x the lower bound), as information; the exit code is 0
unless something crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from fleets import (
    SleepDag,
    critical_path,
    list_schedule,
    lower_bound,
    random_sleep_dag,
    write_dag_fleet,
    write_noop_fleet,
)

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
OVERHEAD_TARGET = 1.5
MAKESPAN_TARGET = 1.15
NOOP_SLOTS = 2
DAG_SLOTS = 4
# No single process of this benchmark should come near this; if one does, it hangs.
PROCESS_TIMEOUT = 300.0


@dataclass(frozen=True)
class Settings:
    """How much to measure."""

    label: str
    noop_tasks: int
    repetitions: int
    warmup_tasks: int
    seeds: tuple[int, ...]
    dag_tasks: int


FULL = Settings("full", 1000, 5, 50, (1, 2, 3), 40)
QUICK = Settings("quick", 300, 2, 20, (1,), 20)


class BenchmarkError(RuntimeError):
    """A contestant did not do its work (non-zero exit); the numbers would be lies."""


# --- running things ---------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A process to run: its argv and what to feed its stdin."""

    argv: list[str]
    stdin: bytes = b""


def run_checked(command: Command, *, capture: bool = False) -> tuple[float, bytes]:
    """Run `command` to the end; its wall time and (with `capture`) its stdout."""
    started = time.perf_counter()
    done = subprocess.run(
        command.argv,
        input=command.stdin,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        shown = " ".join(command.argv)
        tail = done.stderr.decode(errors="replace").strip()[-2000:]
        raise BenchmarkError(f"`{shown}` exited with {done.returncode}\n{tail}")
    return elapsed, done.stdout or b""


def fleetdeck_argv() -> list[str]:
    """The installed `fleetdeck` command next to this interpreter, else `python -m`."""
    script = BIN / "fleetdeck"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "fleetdeck"]


def gnu_parallel() -> tuple[str | None, str]:
    """The path of GNU parallel and its version line, or None and why not."""
    path = shutil.which("parallel")
    if path is None:
        return None, "GNU parallel is not installed (apt-get install -y parallel)"
    try:
        done = subprocess.run([path, "--version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"`{path} --version` failed: {exc}"
    version = done.stdout.decode(errors="replace")
    if "GNU parallel" not in version:
        return None, f"{path} is not GNU parallel (moreutils' parallel takes other arguments)"
    return path, version.splitlines()[0]


# --- 1. overhead ------------------------------------------------------------------------


@dataclass
class Contestant:
    """One way of running N no-op tasks; `prepare(n)` gives the command for one run."""

    name: str
    prepare: Callable[[int], Command]
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall time over the repetitions."""
        return statistics.median(self.times)


@dataclass
class OverheadResult:
    """What the overhead benchmark measured."""

    tasks: int
    repetitions: int
    fleetdeck: Contestant
    raw: Contestant
    parallel: Contestant | None
    startup: Contestant
    parallel_note: str


def measure_overhead(settings: Settings, workdir: Path) -> OverheadResult:
    """Alternate the contestants over the repetitions (rotating who goes first)."""
    n = settings.noop_tasks
    configs: dict[int, Path] = {}
    for count in {n, settings.warmup_tasks, 1}:
        configs[count] = workdir / f"noop-{count}.toml"
        write_noop_fleet(configs[count], count, NOOP_SLOTS)
    fleetdeck = fleetdeck_argv()
    state_numbers = iter(range(1_000_000))

    def fleetdeck_run(count: int) -> Command:
        state = workdir / f"state-{next(state_numbers)}"  # fresh, not yet created
        return Command(
            [*fleetdeck, "run", str(configs[count]), "--no-tui", "--state-dir", str(state)]
        )

    def raw_loop(count: int) -> Command:
        return Command([sys.executable, str(HERE / "raw_loop.py"), str(count), str(NOOP_SLOTS)])

    contender = Contestant("fleetdeck run --no-tui", fleetdeck_run)
    raw = Contestant("raw asyncio loop", raw_loop)
    startup = Contestant("fleetdeck, 1-task fleet", fleetdeck_run)
    path, about = gnu_parallel()
    parallel = None
    if path is not None:

        def parallel_run(count: int) -> Command:
            lines = "".join(f"{i}\n" for i in range(count)).encode()
            return Command([path, "--will-cite", f"-j{NOOP_SLOTS}", "true"], lines)

        parallel = Contestant(f"GNU parallel -j{NOOP_SLOTS}", parallel_run)
    everyone = [c for c in (contender, raw, parallel, startup) if c is not None]

    # Warm the page cache and the .pyc files; not recorded.
    for contestant in everyone:
        run_checked(contestant.prepare(settings.warmup_tasks))
    for rep in range(settings.repetitions):
        shift = rep % len(everyone)
        for contestant in everyone[shift:] + everyone[:shift]:
            count = 1 if contestant is startup else n
            elapsed, _ = run_checked(contestant.prepare(count))
            contestant.times.append(elapsed)
            print(f"  rep {rep + 1}/{settings.repetitions}  {contestant.name:<24} {elapsed:6.2f} s")
        for state in workdir.glob("state-*"):
            shutil.rmtree(state, ignore_errors=True)
    return OverheadResult(n, settings.repetitions, contender, raw, parallel, startup, about)


def overhead_table(result: OverheadResult) -> str:
    """Per contestant: median and range of wall time, and the time per task."""
    rows = []
    for contestant in (result.fleetdeck, result.raw, result.parallel, result.startup):
        if contestant is None:
            continue
        tasks = 1 if contestant is result.startup else result.tasks
        rows.append(
            [
                contestant.name,
                f"{tasks}",
                f"{contestant.median:.3f} s",
                f"{min(contestant.times):.3f}-{max(contestant.times):.3f} s",
                "-" if tasks == 1 else f"{contestant.median / tasks * 1000:.2f} ms",
            ]
        )
    return table(["contestant", "tasks", "median", "range", "per task"], rows)


def paired_ratios(top: Contestant, bottom: Contestant) -> list[float]:
    """top / bottom within each repetition (same moment, same machine noise)."""
    return [a / b for a, b in zip(top.times, bottom.times, strict=True)]


# --- 2. makespan ------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetRun:
    """One `fleetdeck run --json` of a DAG fleet, read back from its events."""

    policy: str
    makespan: float  # run_started to run_finished, by the events' timestamps
    wall: float  # the whole process, interpreter start-up included
    durations: list[float]  # per task in config order: its agent attempts' durations
    reported_lower_bound: float


@dataclass(frozen=True)
class DagResult:
    """One seed: the DAG, its wave run and its sequential run."""

    dag: SleepDag
    wave: FleetRun
    sequential: FleetRun

    @property
    def critical_path(self) -> float:
        """Longest chain, by the wave run's measured durations."""
        return critical_path(self.wave.durations, self.dag.deps)

    @property
    def work(self) -> float:
        """Total measured agent time of the wave run."""
        return sum(self.wave.durations)

    @property
    def lower_bound(self) -> float:
        """max(critical path, work / slots) of the wave run."""
        return lower_bound(self.wave.durations, self.dag.deps, DAG_SLOTS)

    @property
    def ratio(self) -> float:
        """Measured makespan / lower bound (the number with the 1.15x target)."""
        return self.wave.makespan / self.lower_bound

    @property
    def simulated_ratio(self) -> float:
        """The wave rule with zero overhead on the same durations / lower bound."""
        return list_schedule(self.wave.durations, self.dag.deps, DAG_SLOTS) / self.lower_bound


def run_dag_fleet(config: Path, policy: str, state: Path, tasks: int) -> FleetRun:
    """Run a DAG fleet through the CLI with --json and read its events."""
    argv = [*fleetdeck_argv(), "run", str(config), "--json", "--policy", policy]
    wall, out = run_checked(Command([*argv, "--state-dir", str(state)]), capture=True)
    events: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines() if line.strip()]
    first = {event["event"]: event for event in reversed(events)}
    started, finished = first.get("run_started"), first.get("run_finished")
    if started is None or finished is None or finished.get("exit_code") != 0:
        raise BenchmarkError(f"{config} ({policy}): the run did not finish cleanly")
    index = {f"t{i:03d}": i for i in range(tasks)}
    durations = [0.0] * tasks
    for event in events:
        if event["event"] == "attempt_finished" and event.get("stage") == "agent":
            durations[index[event["task"]]] += float(event["duration"])
    return FleetRun(
        policy=policy,
        makespan=_timestamp(finished["ts"]) - _timestamp(started["ts"]),
        wall=wall,
        durations=durations,
        reported_lower_bound=float(finished["report"]["lower_bound"]),
    )


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def measure_makespan(settings: Settings, workdir: Path) -> list[DagResult]:
    """Each seed's DAG under wave and sequential (which goes first alternates)."""
    results = []
    for number, seed in enumerate(settings.seeds):
        dag = random_sleep_dag(seed, settings.dag_tasks)
        config = workdir / f"dag-{seed}.toml"
        write_dag_fleet(config, dag, DAG_SLOTS)
        order = ("wave", "sequential") if number % 2 == 0 else ("sequential", "wave")
        runs: dict[str, FleetRun] = {}
        for policy in order:
            state = workdir / f"dag-state-{seed}-{policy}"
            runs[policy] = run_dag_fleet(config, policy, state, settings.dag_tasks)
            shutil.rmtree(state, ignore_errors=True)
            print(f"  seed {seed}  {policy:<10}  makespan {runs[policy].makespan:6.2f} s")
        results.append(DagResult(dag, runs["wave"], runs["sequential"]))
    return results


def makespan_table(results: Sequence[DagResult]) -> str:
    """Per seed: the bound's parts, the wave makespan and ratios, sequential for contrast."""
    rows = []
    for r in results:
        seq = r.sequential
        rows.append(
            [
                f"{r.dag.seed}",
                f"{len(r.dag.durations)}",
                f"{r.work:.2f} s",
                f"{r.critical_path:.2f} s",
                f"{r.work / DAG_SLOTS:.2f} s",
                f"{r.lower_bound:.2f} s",
                f"{r.wave.makespan:.2f} s",
                f"{r.ratio:.3f}x",
                f"{r.simulated_ratio:.3f}x",
                f"{seq.makespan:.2f} s",
                f"{seq.makespan / sum(seq.durations):.3f}x",
                f"{seq.makespan / r.wave.makespan:.2f}x",
            ]
        )
    header = [
        "seed",
        "tasks",
        "work",
        "crit path",
        f"work/{DAG_SLOTS}",
        "LB",
        "wave",
        "wave/LB",
        "sim/LB",
        "sequential",
        "seq/work",
        "seq/wave",
    ]
    return table(header, rows)


def bound_cross_check(results: Sequence[DagResult]) -> list[str]:
    """Notes where fleetdeck's own reported lower bound disagrees with ours (> 1%)."""
    notes = []
    for r in results:
        ours, theirs = r.lower_bound, r.wave.reported_lower_bound
        if abs(ours - theirs) > 0.01 * ours:
            notes.append(
                f"note: seed {r.dag.seed}: fleetdeck reports lower bound {theirs:.3f} s, "
                f"this benchmark computes {ours:.3f} s"
            )
    return notes


# --- output -----------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table: first column left, the others right."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for number, row in enumerate([header, *rows]):
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def summary_table(overhead: OverheadResult, dags: Sequence[DagResult]) -> str:
    """The ratios against the issue's targets (information, not a verdict on exit)."""

    def verdict(value: float, target: float) -> str:
        return "yes" if value <= target else "NO"

    fd, raw = overhead.fleetdeck, overhead.raw
    vs_raw = fd.median / raw.median
    per_rep = paired_ratios(fd, raw)
    rows = [
        [
            "overhead: fleetdeck / raw loop",
            f"{vs_raw:.2f}x",
            f"per rep {min(per_rep):.2f}-{max(per_rep):.2f}x",
            f"<= {OVERHEAD_TARGET:.2f}x",
            verdict(vs_raw, OVERHEAD_TARGET),
        ]
    ]
    if overhead.parallel is not None:
        vs_parallel = fd.median / overhead.parallel.median
        per_rep = paired_ratios(fd, overhead.parallel)
        rows.append(
            [
                "overhead: fleetdeck / GNU parallel",
                f"{vs_parallel:.2f}x",
                f"per rep {min(per_rep):.2f}-{max(per_rep):.2f}x",
                "-",
                "(info)",
            ]
        )
    else:
        rows.append(["overhead: fleetdeck / GNU parallel", "skipped", "-", "-", "(absent)"])
    for r in dags:
        rows.append(
            [
                f"makespan / lower bound, seed {r.dag.seed}",
                f"{r.ratio:.3f}x",
                f"sim {r.simulated_ratio:.3f}x",
                f"<= {MAKESPAN_TARGET:.2f}x",
                verdict(r.ratio, MAKESPAN_TARGET),
            ]
        )
    worst = max(r.ratio for r in dags)
    rows.append(
        [
            "makespan / lower bound, worst seed",
            f"{worst:.3f}x",
            "-",
            f"<= {MAKESPAN_TARGET:.2f}x",
            verdict(worst, MAKESPAN_TARGET),
        ]
    )
    return table(["measure", "ratio", "detail", "target", "meets"], rows)


def _version() -> str:
    try:
        return metadata.version("fleetdeck")
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks and print their tables and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks, repetitions, seeds")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(__file__).resolve().parent / ".work",
        help="where configs and state dirs go (default: benchmarks/.work, inside the "
        "project like a fleet's own .fleetdeck; on some machines creating files under "
        "/tmp is several times slower, which shows here as fleetdeck overhead)",
    )
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    began = time.perf_counter()
    print(
        f"fleetdeck {_version()} benchmarks ({settings.label}): Python {platform.python_version()}"
        f", {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"working in {args.workdir}")
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.workdir) as temp:
        workdir = Path(temp)
        n, reps = settings.noop_tasks, settings.repetitions
        print(f"\n1. Overhead: {n} no-op tasks, {NOOP_SLOTS} slots, {reps} repetitions")
        try:
            overhead = measure_overhead(settings, workdir)
            print(f"\n2. Makespan: {settings.dag_tasks} sleep tasks, {DAG_SLOTS} slots")
            dags = measure_makespan(settings, workdir)
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1

    fd, raw = overhead.fleetdeck, overhead.raw
    print(f"\n== 1. Overhead: {overhead.tasks} no-op tasks, {NOOP_SLOTS} slots (wall time) ==")
    print(overhead_table(overhead))
    if overhead.parallel is None:
        print(f"note: GNU parallel column skipped: {overhead.parallel_note}")
    extra = (fd.median - raw.median) / overhead.tasks * 1000
    marginal = (fd.median - overhead.startup.median) / (overhead.tasks - 1) * 1000
    print(f"fleetdeck over the raw loop, per task: {extra:.2f} ms  ((fleetdeck - raw) / N)")
    print(
        f"fleetdeck start-up (1-task fleet): {overhead.startup.median:.2f} s; "
        f"fleetdeck per task after start-up: {marginal:.2f} ms "
        f"(raw loop, start-up included: {raw.median / overhead.tasks * 1000:.2f} ms)"
    )

    print(f"\n== 2. Makespan: random DAGs of {settings.dag_tasks} sleeps, {DAG_SLOTS} slots ==")
    print(makespan_table(dags))
    for note in bound_cross_check(dags):
        print(note)
    print(
        "LB = max(crit path, work/slots) from measured attempt durations; "
        "sim = wave rule with zero overhead"
    )

    print("\n== Summary (targets are information; exit code is 0 unless a run crashed) ==")
    print(summary_table(overhead, dags))
    print(
        f"\ntotal {time.perf_counter() - began:.0f} s, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
