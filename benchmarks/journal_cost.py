"""5. Journal: what durability costs in the overhead benchmark.

    .venv/bin/python benchmarks/journal_cost.py [--quick]

fleetdeck journals every event and attempt in SQLite (WAL) and a success is durable
before it is reported or any dependent starts: tests/test_engine.py::
test_a_success_is_durable_before_any_dependent_starts reads the journal from outside
at the moment a dependent becomes ready and finds the success there. The target is
that this costs under 10% of the overhead benchmark.

Method: the overhead benchmark's fleet (N no-op tasks, 2 slots, `run --no-tui`,
stdout to /dev/null, fresh state dir in benchmarks/.work) through
benchmarks/cli_variant.py, alternating within each repetition:
- as-is: fleetdeck's command line untouched;
- no-journal-writes: the same, with the journal's batch commit replaced by one that
  writes nothing (the engine still encodes and buffers every row).
Both start through the same wrapper, so start-up is identical. After each run the
journal is read back: the as-is run must hold every event, the other none.
Cost = (with - without) / with, of the medians; per repetition too.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from fleets import write_noop_fleet
from harness import (
    HERE,
    BenchmarkError,
    Command,
    Contestant,
    Settings,
    SummaryRow,
    alternate,
    load_average,
    run_alone,
    run_checked,
    table,
    verdict,
)

TARGET = 0.10
SLOTS = 2


@dataclass(frozen=True)
class Size:
    """How much to measure."""

    tasks: int
    repetitions: int


FULL = Size(tasks=1000, repetitions=7)
QUICK = Size(tasks=500, repetitions=3)


def events_in(state: Path) -> int:
    """How many events the journal in `state` holds."""
    db = sqlite3.connect(f"file:{state / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        db.close()


def measure(settings: Settings) -> list[SummaryRow]:
    """Alternate the two variants; print the table; summary rows."""
    size = QUICK if settings.quick else FULL
    workdir, n = settings.workdir, size.tasks
    print(
        f"\n== 5. Journal cost: {n} no-op tasks, {SLOTS} slots, with and without journal "
        f"writes, {size.repetitions} repetitions (load average {load_average():.2f}) =="
    )
    config = workdir / f"journal-noop-{n}.toml"
    write_noop_fleet(config, n, SLOTS)
    numbers = count()
    states: dict[str, list[Path]] = {"as-is": [], "no-journal-writes": []}

    def variant(name: str) -> Contestant:
        def prepare(_tasks: int) -> Command:
            state = workdir / f"journal-state-{next(numbers)}"
            states[name].append(state)
            argv = [sys.executable, str(HERE / "cli_variant.py"), name, "run", str(config)]
            return Command([*argv, "--no-tui", "--state-dir", str(state)])

        return Contestant(f"fleetdeck, {name}", prepare)

    with_journal, without = variant("as-is"), variant("no-journal-writes")

    def check_and_clean() -> None:
        for name, paths in states.items():
            for state in paths:
                events = events_in(state)
                if (events == 0) != (name == "no-journal-writes"):
                    raise BenchmarkError(f"{name}: the journal in {state} holds {events} events")
                shutil.rmtree(state, ignore_errors=True)
            paths.clear()

    for contestant in (with_journal, without):  # warm-up, not recorded
        run_checked(contestant.prepare(n))
    check_and_clean()
    alternate(
        [with_journal, without], size.repetitions, lambda _c: n, after_each_rep=check_and_clean
    )

    cost = (with_journal.median - without.median) / with_journal.median
    per_rep = [(a - b) / a for a, b in zip(with_journal.times, without.times, strict=True)]
    rows = [
        [c.name, f"{c.median:.3f} s", c.spread(), f"{c.median / n * 1000:.2f} ms"]
        for c in (with_journal, without)
    ]
    print(table(["variant", "median", "range", "per task"], rows))
    per_task = (with_journal.median - without.median) / n * 1000
    print(
        f"journal cost (with - without) / with: {cost:.1%} (per repetition "
        f"{min(per_rep):.1%} to {max(per_rep):.1%}); {per_task:.2f} ms per task; "
        f"load average {load_average():.2f}"
    )
    print(
        "durability: a success is committed before it is reported or a dependent starts "
        "(tests/test_engine.py::test_a_success_is_durable_before_any_dependent_starts)"
    )
    return [
        SummaryRow(
            "5. journal cost in the overhead run",
            f"{cost:.1%}",
            f"< {TARGET:.0%}",
            verdict(cost, TARGET - 1e-9),
            f"(with - without) / with; per rep {min(per_rep):.1%} to {max(per_rep):.1%}",
        )
    ]


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__ or ""))
