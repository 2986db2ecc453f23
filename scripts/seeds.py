"""The seeds' tables: each article's figures against what `fleetdeck simulate`
gives for its fleet in config/, in the article's own units.

    .venv/bin/python scripts/seeds.py          # prints the README's Markdown tables

Every figure of ours comes from running `fleetdeck simulate --json` on the seed's
fleet (fixed seed, so the tables repeat); the fleets' durations are the
articles' scaled down, and scaled back up here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SEED = 1


def simulate(fleet: str, runs: int) -> dict[str, dict[str, Any]]:
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


def table(title: str, rows: list[tuple[str, str, str]]) -> str:
    lines = [f"**{title}**", "", "| figure | the article | fleetdeck simulate |", "|---|---|---|"]
    lines += [f"| {name} | {theirs} | {ours} |" for name, theirs, ours in rows]
    return "\n".join(lines)


def operum() -> str:
    # One article minute is 0.1 s in config/seed-operum.toml.
    runs = 2000
    figures = simulate("seed-operum", runs)
    seq, pipe = figures["sequential"], figures["pipelined"]

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

    rows = [
        ("completion rate (sequential / pipelined)", "99.2% / 92%",
         f"{seq['completion_rate']:.1%} / {pipe['completion_rate']:.1%}"),
        ("time to first CI (sequential / pipelined)", "2 min / 14 min",
         f"{minutes(seq['time_to_first_ci'])} / {minutes(pipe['time_to_first_ci'])}"),
        ("time to complete, mean per task", "44 min / 68 min",
         f"{minutes(seq['time_to_complete'])} / {minutes(pipe['time_to_complete'])}"),
        ("batch of 4, start to end (median)", "60 min either way (CI-bound)",
         f"{minutes(seq['makespan_median'])} / {minutes(pipe['makespan_median'])}"),
        ("compound failure rate (batches of 4 at 5%)", "16-18% (pipelined), 0% (sequential)",
         f"{pipe['compound_run_rate']:.1%} / {seq['compound_run_rate']:.1%} of {runs} runs"),
        ("throughput (sequential / pipelined)", "1.4/h / 2.7/h",
         f"{per_hour(seq)} / {per_hour(pipe)}"),
        ("throughput with rework charged", "1.39/h / 2.19-2.27/h",
         f"{net(seq)} / {net(pipe)}"),
        ("rework per batch (pipelined)", "16% of tasks, 30-120 min each",
         f"{pipe['compound_failures']:.2f} tasks, {minutes(pipe['rework'])}"),
    ]  # fmt: skip
    return table("Operum: four dependent PRs, one CI runner of 15 minutes, 5% failures", rows)


def gem_team() -> str:
    # One article second is 0.2 s in config/seed-gem-team.toml.
    figures = simulate("seed-gem-team", 500)
    seq, wave = figures["sequential"], figures["wave"]

    def seconds(value: float) -> str:
        return f"{value / 0.2:.0f} s"

    rows = [
        ("5 analyses then a merge, pipeline / DAG (median)", "45 s / 12 s",
         f"{seconds(seq['makespan_median'])} / {seconds(wave['makespan_median'])} "
         "(sequential / wave, merge included)"),
        ("speed-up", f"{45 / 12:.1f}x", f"{seq['makespan_median'] / wave['makespan_median']:.1f}x"),
        ("runs that complete (7.5% failures a node, one retry alone)", "68% first run / 91%",
         f"{seq['completion_rate']:.0%} / {wave['completion_rate']:.0%}"),
    ]  # fmt: skip
    return table("gem-team: five analyses, then a merge", rows)


def orchastra() -> str:
    # One article second is 0.2 s in config/seed-orchastra.toml; one minute 0.6 s in -100.
    four = simulate("seed-orchastra", 20)
    hundred = simulate("seed-orchastra-100", 5)
    rows = [
        ("4 generations, one after another / at once", "45 s / 15 s",
         f"{four['sequential']['makespan_median'] / 0.2:.0f} s / "
         f"{four['wave']['makespan_median'] / 0.2:.0f} s"),
        ("100 posts, sequential / parallel", "45 min / 15 min",
         f"{hundred['sequential']['makespan_median'] / 0.6:.0f} min / "
         f"{hundred['wave']['makespan_median'] / 0.6:.1f} min"),
    ]  # fmt: skip
    return table("Orchastra: parallel AI calls", rows)


def main() -> int:
    print("\n\n".join((operum(), gem_team(), orchastra())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
