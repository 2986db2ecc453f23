"""The seeds' tables: each article's figures against what fleetdeck gives for its
fleet in config/, simulated and run for real, in the article's own units.

    .venv/bin/python scripts/seeds.py             # prints the README's Markdown tables
    .venv/bin/python scripts/seeds.py --no-real   # the simulator's column only (seconds)
    .venv/bin/python scripts/seeds.py --jobs 1    # one real run at a time

The "fleetdeck simulate" column comes from `fleetdeck simulate --json` on the
seed's fleet (fixed seed, so it repeats). The "fleetdeck run" column comes from
`fleetdeck run --no-tui --json --fresh` on the same fleet: real demo agent and CI
processes, the fleet's scaled durations, a few repetitions per policy (the demo
commands' `--seed` set to 1, 2, ... so each repetition meets other failures, and
both policies of one repetition meet the same ones), read from the run's report.
The fleets' durations are the articles' scaled down, and scaled back up here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = 1
# Real repetitions per policy: a handful, so the script stays a few minutes long.
# Orchastra's 100 posts run once per policy (the sequential run alone is ~40 s).
REPETITIONS = {"seed-operum": 8, "seed-gem-team": 4, "seed-orchastra": 3, "seed-orchastra-100": 1}
POLICIES = {
    "seed-operum": ("sequential", "pipelined"),
    "seed-gem-team": ("sequential", "wave"),
    "seed-orchastra": ("sequential", "wave"),
    "seed-orchastra-100": ("sequential", "wave"),
}
_DEMO_SEED = re.compile(r'("--seed",\s*")(\d+)(")')

Figures = dict[str, dict[str, Any]]  # policy -> figures named as `simulate --json` names them


def simulate(fleet: str, runs: int) -> Figures:
    """`fleetdeck simulate --json` of config/FLEET.toml: each policy's figures."""
    command = [
        sys.executable,
        "-m",
        "fleetdeck",
        "simulate",
        str(ROOT / "config" / f"{fleet}.toml"),
    ]
    command += ["--json", "--runs", str(runs), "--seed", str(SEED)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return {line["policy"]: line for line in map(json.loads, done.stdout.splitlines())}


def run_real(fleet: str, policy: str, seed: int, workdir: Path) -> dict[str, Any]:
    """One real `fleetdeck run` of config/FLEET.toml under POLICY, its demo commands
    seeded with SEED, in WORKDIR: the report of its `run_finished` event."""
    text = (ROOT / "config" / f"{fleet}.toml").read_text(encoding="utf-8")
    seeded, count = _DEMO_SEED.subn(rf"\g<1>{seed}\g<3>", text)
    if not count:
        raise SystemExit(f"config/{fleet}.toml: no demo command takes a --seed")
    config = workdir / f"{fleet}.toml"
    config.write_text(seeded, encoding="utf-8")
    command = [sys.executable, "-m", "fleetdeck", "run", str(config), "--no-tui", "--json"]
    command += ["--fresh", "--policy", policy, "--state-dir", str(workdir / "state")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in reversed(done.stdout.splitlines()):
        event = json.loads(line)
        if event.get("event") == "run_finished":
            report: dict[str, Any] = event["report"]
            return report
    raise SystemExit(
        f"fleetdeck run {fleet} --policy {policy} (seed {seed}) gave no report "
        f"(exit {done.returncode}): {done.stderr.strip()[-300:]}"
    )


def _median(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarise(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Real runs' reports as the figures `simulate --json` prints for its runs:
    medians of times and throughput, means of rates and rework (as lab.py does)."""
    return {
        "runs": len(reports),
        "makespan_median": _median(report["makespan"] for report in reports),
        "completion_rate": statistics.fmean(report["completion_rate"] for report in reports),
        "time_to_first_ci": _median(report["mean_time_to_first_ci"] for report in reports),
        "time_to_complete": _median(report["mean_time_to_complete"] for report in reports),
        "throughput_per_hour": _median(report["throughput_per_hour"] for report in reports),
        "compound_run_rate": statistics.fmean(
            1.0 if report["compound_failures"] else 0.0 for report in reports
        ),
        "compound_failures": statistics.fmean(report["compound_failures"] for report in reports),
        "rework": statistics.fmean(
            report["rework_agent"] + report["rework_ci"] for report in reports
        ),
    }


def run_all(jobs: int) -> dict[str, Figures]:
    """Every seed fleet under the policies its table compares, REPETITIONS times,
    JOBS runs at a time: fleet -> policy -> the runs' figures."""
    plan = [
        (fleet, policy, seed)
        for fleet, policies in POLICIES.items()
        for policy in policies
        for seed in range(1, REPETITIONS[fleet] + 1)
    ]
    # The longest runs first, so that the last ones to finish are short.
    plan.sort(key=lambda item: (item[0] != "seed-orchastra-100", item[1] != "sequential"))

    def one(item: tuple[str, str, int]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="fleetdeck-seed-") as workdir:
            report = run_real(*item, Path(workdir))
        # Each run on stderr as it ends: the tables' medians hide which runs failed.
        print(
            f"{item[0]} {item[1]} seed {item[2]}: {report['makespan']:.2f} s, "
            f"{report['attempts']} attempts, {report['compound_failures']} compound, "
            f"completion {report['completion_rate']:.0%}",
            file=sys.stderr,
            flush=True,
        )
        return report

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        reports = list(pool.map(one, plan))
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for (fleet, policy, _seed), report in zip(plan, reports, strict=True):
        grouped.setdefault(fleet, {}).setdefault(policy, []).append(report)
    return {
        fleet: {policy: summarise(runs) for policy, runs in by_policy.items()}
        for fleet, by_policy in grouped.items()
    }


def table(title: str, names: list[str], theirs: list[str], columns: dict[str, list[str]]) -> str:
    """A Markdown table: a figure a row, the article's then each of our columns."""
    heads = ["figure", "the article", *columns]
    lines = [f"**{title}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for i, name in enumerate(names):
        cells = [name, theirs[i], *(column[i] for column in columns.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _columns(
    fleets: list[str], simulated: dict[str, Figures], real: dict[str, Figures] | None,
    render: Callable[..., list[str]],
) -> dict[str, list[str]]:  # fmt: skip
    columns = {"fleetdeck simulate": render(*(simulated[fleet] for fleet in fleets))}
    if real is not None:
        columns["fleetdeck run"] = render(*(real[fleet] for fleet in fleets))
    return columns


def operum(real: dict[str, Figures] | None) -> str:
    # One article minute is 0.1 s in config/seed-operum.toml.
    simulated = {"seed-operum": simulate("seed-operum", 2000)}

    def minutes(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds / 0.1:.0f} min"

    def per_hour(figure: dict[str, Any]) -> str:
        # Tasks per scaled hour to tasks per article hour (an article hour is 6 s).
        return f"{figure['throughput_per_hour'] * 6 / 3600:.2f}/h"

    def net(figure: dict[str, Any]) -> str:
        # Throughput with the work thrown away charged: tasks over (makespan + rework).
        tasks = 4 * figure["completion_rate"]
        hours = (figure["makespan_median"] + figure["rework"]) / 6
        return f"{tasks / hours:.2f}/h"

    def render(figures: Figures) -> list[str]:
        seq, pipe = figures["sequential"], figures["pipelined"]
        return [
            f"{seq['completion_rate']:.1%} / {pipe['completion_rate']:.1%}",
            f"{minutes(seq['time_to_first_ci'])} / {minutes(pipe['time_to_first_ci'])}",
            f"{minutes(seq['time_to_complete'])} / {minutes(pipe['time_to_complete'])}",
            f"{minutes(seq['makespan_median'])} / {minutes(pipe['makespan_median'])}",
            f"{pipe['compound_run_rate']:.1%} / {seq['compound_run_rate']:.1%} "
            f"of {pipe['runs']} runs",
            f"{per_hour(seq)} / {per_hour(pipe)}",
            f"{net(seq)} / {net(pipe)}",
            f"{pipe['compound_failures']:.2f} tasks, {minutes(pipe['rework'])}",
        ]

    names = [
        "completion rate (sequential / pipelined)",
        "time to first CI (sequential / pipelined)",
        "time to complete, mean per task",
        "batch of 4, start to end (median)",
        "compound failure rate (batches of 4 at 5%)",
        "throughput (sequential / pipelined)",
        "throughput with rework charged",
        "rework per batch (pipelined)",
    ]
    theirs = [
        "99.2% / 92%", "2 min / 14 min", "44 min / 68 min", "60 min either way (CI-bound)",
        "16-18% (pipelined), 0% (sequential)", "1.4/h / 2.7/h", "1.39/h / 2.19-2.27/h",
        "16% of tasks, 30-120 min each",
    ]  # fmt: skip
    columns = _columns(["seed-operum"], simulated, real, render)
    title = "Operum: four dependent PRs, one CI runner of 15 minutes, 5% failures"
    return table(title, names, theirs, columns)


def gem_team(real: dict[str, Figures] | None) -> str:
    # One article second is 0.2 s in config/seed-gem-team.toml.
    simulated = {"seed-gem-team": simulate("seed-gem-team", 500)}

    def seconds(value: float) -> str:
        return f"{value / 0.2:.0f} s"

    def render(figures: Figures) -> list[str]:
        seq, wave = figures["sequential"], figures["wave"]
        return [
            f"{seconds(seq['makespan_median'])} / {seconds(wave['makespan_median'])}",
            f"{seq['makespan_median'] / wave['makespan_median']:.1f}x",
            f"{seq['completion_rate']:.0%} / {wave['completion_rate']:.0%} of {seq['runs']} runs",
        ]

    names = [
        "5 analyses then a merge, pipeline / DAG (ours: sequential / wave, merge included)",
        "speed-up",
        "runs that complete (7.5% failures a node, one retry alone)",
    ]
    theirs = ["45 s / 12 s", f"{45 / 12:.1f}x", "68% first run / 91%"]
    columns = _columns(["seed-gem-team"], simulated, real, render)
    return table("gem-team: five analyses, then a merge", names, theirs, columns)


def orchastra(real: dict[str, Figures] | None) -> str:
    # One article second is 0.2 s in config/seed-orchastra.toml; one minute 0.6 s in -100.
    simulated = {
        "seed-orchastra": simulate("seed-orchastra", 20),
        "seed-orchastra-100": simulate("seed-orchastra-100", 5),
    }

    def render(four: Figures, hundred: Figures) -> list[str]:
        return [
            f"{four['sequential']['makespan_median'] / 0.2:.0f} s / "
            f"{four['wave']['makespan_median'] / 0.2:.0f} s",
            f"{hundred['sequential']['makespan_median'] / 0.6:.0f} min / "
            f"{hundred['wave']['makespan_median'] / 0.6:.1f} min",
        ]

    names = [
        "4 generations, one after another / at once",
        "100 posts, sequential / parallel",
    ]
    theirs = ["45 s / 15 s", "45 min / 15 min"]
    columns = _columns(["seed-orchastra", "seed-orchastra-100"], simulated, real, render)
    return table("Orchastra: parallel AI calls", names, theirs, columns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--real",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run each seed fleet for real (a few minutes; default: on)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="real runs at a time (default 2)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: {args.jobs} is not a number of runs at a time (1 or more)")
    real = None
    if args.real:
        load_before, started = os.getloadavg()[0], time.monotonic()
        real = run_all(args.jobs)
        wall, load_after = time.monotonic() - started, os.getloadavg()[0]
    print("\n\n".join((operum(real), gem_team(real), orchastra(real))))
    if args.real:
        runs = ", ".join(
            f"{fleet.removeprefix('seed-')} {REPETITIONS[fleet]}" for fleet in REPETITIONS
        )
        print(
            f"\n_fleetdeck run: real runs per policy: {runs} (demo seeds 1 and up), "
            f"{args.jobs} at a time, {wall:.0f} s in all, on {os.cpu_count()} cores "
            f"at a load average of {load_before:.1f} before and {load_after:.1f} after._"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
