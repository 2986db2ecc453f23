"""The policy lab: `fleetdeck simulate`, and the what-if figure of a run under way.

Each policy runs the fleet `--runs` times in virtual time through the engine's
own core and policy objects (fleetdeck.engine.simulate), on durations and
outcomes drawn from the journal's history (fleetdeck.history). Run i of every
policy draws from the same seed, derived from `--seed` and i, so the policies
meet the same luck as far as they consume it in the same order, and a seed
repeats a whole comparison.

Per policy: makespan (median, p90), the report's lower bound and efficiency, CI
queue wait (mean and p95 over every CI attempt of every run), completion rate,
attempts, and the operator's cognitive load (peak and time-weighted mean, each the
median over runs).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TextIO

from fleetdeck.config import Fleet, printable
from fleetdeck.engine.core import Core
from fleetdeck.engine.shell import estimated_durations
from fleetdeck.engine.simulate import (
    SimulatedRun,
    TaskProgress,
    simulate_makespan,
    simulate_run,
)
from fleetdeck.history import History, HistoryError, Models, read_history, stage_models
from fleetdeck.journal import DB_NAME
from fleetdeck.metrics import mean, percentile
from fleetdeck.model import TaskState
from fleetdeck.policy import POLICIES
from fleetdeck.text import format_seconds, plural

if TYPE_CHECKING:
    from fleetdeck.snapshot import FleetSnapshot

EXIT_OK = 0
EXIT_USAGE = 2
DEFAULT_RUNS = 20


@dataclass(slots=True, frozen=True)
class PolicyFigures:
    """What the runs of one policy gave (seconds unless named otherwise)."""

    policy: str
    runs: int
    makespan_median: float
    makespan_p90: float
    lower_bound: float
    efficiency: float | None
    ci_wait_mean: float | None
    ci_wait_p95: float | None
    completion_rate: float
    attempts: float
    load_peak: float
    load_mean: float
    # Runs that ended with tasks nothing could run (0 unless the fleet is stuck).
    unsettled: int
    # Medians over runs of each run's mean time from a task's first agent start
    # to its first CI start and to its success, and of its throughput.
    time_to_first_ci: float | None = None
    time_to_complete: float | None = None
    throughput_per_hour: float | None = None
    # Speculation: the share of runs with a compound failure (a task preempted
    # because an upstream it started on failed), compound failures per run, and
    # the agent and CI seconds thrown away per run (means over runs).
    compound_run_rate: float = 0.0
    compound_failures: float = 0.0
    rework: float = 0.0

    def to_json_dict(self) -> dict[str, Any]:
        """The figures as plain JSON types."""
        return asdict(self)


def run_rng(seed: int, run: int) -> random.Random:
    """The random source of run `run` (the same for every policy)."""
    return random.Random(f"fleetdeck-simulate:{seed}:{run}")


def simulate_policies(
    fleet: Fleet,
    models: Models,
    history: History,
    policies: Sequence[str],
    *,
    runs: int,
    seed: int,
) -> list[PolicyFigures]:
    """Run the fleet `runs` times under each policy; their figures, in order."""
    estimates = estimated_durations(fleet, history.learned)
    figures: list[PolicyFigures] = []
    for policy in policies:
        results = [
            simulate_run(fleet, policy, models.stages, estimates=estimates, rng=run_rng(seed, run))
            for run in range(runs)
        ]
        figures.append(aggregate(policy, results))
    return figures


def aggregate(policy: str, results: Sequence[SimulatedRun]) -> PolicyFigures:
    """The figures of one policy over its runs."""
    makespans = [result.makespan for result in results]
    efficiencies = [
        result.report.lower_bound / result.makespan for result in results if result.makespan > 0
    ]
    waits = [wait for result in results for wait in result.ci_waits]
    return PolicyFigures(
        policy=policy,
        runs=len(results),
        makespan_median=statistics.median(makespans),
        makespan_p90=percentile(makespans, 0.9) or 0.0,
        lower_bound=statistics.median(result.report.lower_bound for result in results),
        efficiency=statistics.median(efficiencies) if efficiencies else None,
        ci_wait_mean=mean(waits),
        ci_wait_p95=percentile(waits, 0.95),
        completion_rate=statistics.fmean(result.report.completion_rate for result in results),
        attempts=statistics.fmean(result.report.attempts for result in results),
        load_peak=statistics.median(result.load_peak for result in results),
        load_mean=statistics.median(result.load_mean for result in results),
        unsettled=sum(1 for result in results if not result.settled),
        time_to_first_ci=_median(result.report.mean_time_to_first_ci for result in results),
        time_to_complete=_median(result.report.mean_time_to_complete for result in results),
        throughput_per_hour=_median(result.report.throughput_per_hour for result in results),
        compound_run_rate=statistics.fmean(
            1.0 if result.report.compound_failures else 0.0 for result in results
        ),
        compound_failures=statistics.fmean(result.report.compound_failures for result in results),
        rework=statistics.fmean(result.report.rework for result in results),
    )


def _median(values: Iterable[float | None]) -> float | None:
    """The median of the values there are (None: none)."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


# --- what is left of a run under way ---------------------------------------------------


def predict_remaining(
    fleet: Fleet,
    state: Core | FleetSnapshot | Mapping[str, TaskProgress],
    history: History,
    policies: Sequence[str],
    runs: int = 5,
    *,
    seed: int = 0,
    models: Models | None = None,
) -> dict[str, float]:
    """Seconds each policy would take to finish the work left, from the state of a
    run under way (its engine's core, a snapshot of it, or its progress per task),
    median over `runs` simulations. Tasks done stay done; running attempts keep
    the time they have run. The same seed gives the same answer for the same
    state, so a figure shown live does not flicker while nothing changes.
    `models` are `stage_models(fleet, history)`, if the caller has them already."""
    progress = state if isinstance(state, Mapping) else progress_of(state)
    models = models if models is not None else stage_models(fleet, history)
    estimates = estimated_durations(fleet, history.learned)
    return {
        policy: statistics.median(
            simulate_makespan(
                fleet,
                policy,
                models.stages,
                estimates=estimates,
                rng=run_rng(seed, run),
                progress=progress,
            )
            for run in range(runs)
        )
        for policy in policies
    }


def progress_of(state: Core | FleetSnapshot) -> dict[str, TaskProgress]:
    """Each started task's progress, from an engine's core or a snapshot of it."""
    if isinstance(state, Core):
        now = state.clock.now()
        progress: dict[str, TaskProgress] = {}
        for node, task in enumerate(state.tasks):
            if task.state in (TaskState.PENDING, TaskState.READY) and not task.in_flight:
                continue
            running = state.running_for(node)
            started = running.attempt.started_at if running is not None else None
            progress[task.id] = TaskProgress(
                state=task.state,
                attempts=task.agent_attempts,
                failures=task.failures,
                elapsed=0.0 if started is None else now - started,
                retry_in=0.0 if task.retry_at is None else max(0.0, task.retry_at - now),
            )
        return progress
    started_at = {attempt.task: attempt.started_at for attempt in state.running}
    progress = {}
    for view in state.tasks:
        if view.state in (TaskState.PENDING, TaskState.READY) and not view.in_flight:
            continue
        # Past its agent stage (or in it): every earlier attempt failed.
        active = view.state in (TaskState.RUNNING, TaskState.CI_RUNNING, TaskState.CI_QUEUED)
        since = started_at.get(view.id)
        progress[view.id] = TaskProgress(
            state=view.state,
            attempts=view.attempts,
            # The snapshot does not count failures: lost attempts count as failed here.
            failures=max(0, view.attempts - 1) if active else view.attempts,
            elapsed=0.0 if since is None else state.now - since,
            retry_in=0.0 if view.retry_at is None else max(0.0, view.retry_at - state.now),
        )
    return progress


# --- the command -----------------------------------------------------------------------


def simulate_command(
    fleet: Fleet, args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """`fleetdeck simulate`: every policy asked for, `--runs` times each, printed
    (to `out`, errors to `err`: stdout and stderr by default)."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        history = _history(fleet, args.state_dir)
    except HistoryError as exc:
        err.write(f"fleetdeck: {printable(str(exc))}\n")
        return EXIT_USAGE
    policies = list(dict.fromkeys(args.policy or POLICIES))
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    models = stage_models(fleet, history)
    figures = simulate_policies(fleet, models, history, policies, runs=args.runs, seed=seed)
    if args.json:
        for figure in figures:
            line = {"fleet": fleet.name, "seed": seed, **figure.to_json_dict()}
            line["no_history"] = {"estimated": models.estimated, "defaulted": models.defaulted}
            out.write(json.dumps(line) + "\n")
    else:
        out.write(format_lab(fleet, history, models, figures, seed=seed) + "\n")
    return EXIT_OK


def _history(fleet: Fleet, state_dir: str | None) -> History:
    """The history of `--from`, else of the fleet's own state dir if it has a journal."""
    if state_dir is not None:
        return read_history(state_dir)
    if (fleet.state_dir / DB_NAME).is_file():
        return read_history(fleet.state_dir)
    return History()


def format_lab(
    fleet: Fleet, history: History, models: Models, figures: Sequence[PolicyFigures], *, seed: int
) -> str:
    """The lab's text output: where the durations came from, then a row per policy."""
    runs = figures[0].runs if figures else 0
    lines = [
        f"fleet '{fleet.name}': {plural(len(fleet.tasks), 'task')}, "
        f"{plural(runs, 'simulated run')} per policy, seed {seed}"
    ]
    if history.source is None:
        lines.append(f"history: none (no journal in {fleet.state_dir})")
    else:
        lines.append(
            f"history: {history.source}: {plural(history.runs, 'run')}, "
            f"{plural(history.attempts, 'attempt')}"
        )
    if models.estimated:
        lines.append(f"no history, by their estimate: {_names(models.estimated)}")
    if models.defaulted:
        # Built-in defaults only when nothing at all was observed; else what others took.
        how = "a default duration" if models.builtin else "the mean of what others took"
        lines.append(f"no history and no estimate ({how}): {_names(models.defaulted)}")
    header = [
        "policy", "makespan p50", "p90", "lower bound", "efficiency", "CI wait mean", "p95",
        "completed", "attempts", "load peak", "mean",
    ]  # fmt: skip
    rows = [
        [
            figure.policy,
            format_seconds(figure.makespan_median),
            format_seconds(figure.makespan_p90),
            format_seconds(figure.lower_bound),
            "-" if figure.efficiency is None else f"{figure.efficiency:.0%}",
            format_seconds(figure.ci_wait_mean),
            format_seconds(figure.ci_wait_p95),
            f"{figure.completion_rate:.0%}",
            f"{figure.attempts:.1f}",
            f"{figure.load_peak:g}",
            f"{figure.load_mean:.1f}",
        ]
        for figure in figures
    ]
    lines += ["", *_table(header, rows)]
    header = [
        "policy", "first CI", "complete", "throughput", "compound failures", "per run",
        "rework",
    ]  # fmt: skip
    rows = [
        [
            figure.policy,
            format_seconds(figure.time_to_first_ci),
            format_seconds(figure.time_to_complete),
            "-" if figure.throughput_per_hour is None else f"{figure.throughput_per_hour:.1f}/h",
            f"{figure.compound_run_rate:.0%} of runs",
            f"{figure.compound_failures:.2f}",
            format_seconds(figure.rework),
        ]
        for figure in figures
    ]
    lines += ["", *_table(header, rows)]
    stuck = [f"{figure.policy} ({figure.unsettled})" for figure in figures if figure.unsettled]
    if stuck:
        lines.append(f"runs that left tasks nothing could run: {', '.join(stuck)}")
    return "\n".join(printable(line) for line in lines)


def _names(names: Sequence[str], shown: int = 10) -> str:
    more = len(names) - shown
    listed = ", ".join(names[:shown])
    return f"{listed} and {more} more" if more > 0 else listed


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a table: first column left, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *rows]
    ]
