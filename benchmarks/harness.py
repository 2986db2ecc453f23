"""What every section of the performance suite shares: running processes, alternating
contestants, tables, summary rows, and the entry point of a section run alone.

House rule: timings are ratios of things measured side by side in one run (several
alternating repetitions, medians), never absolute times alone, and every section says
the load average next to its numbers: the machine is small and noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
# Where configs and state dirs go. Inside the project, like a fleet's own .fleetdeck,
# so the runs create their files (the journal, one log file per attempt) on the disk
# a fleet would use: what that costs differs a lot between file systems (section 1
# measures it against tmpfs).
DEFAULT_WORKDIR = HERE / ".work"
WORKDIR_HELP = (
    "where configs and state dirs go (default: benchmarks/.work, inside the project like "
    "a fleet's own .fleetdeck; creating files costs some file systems far more than others, "
    "which shows here as fleetdeck overhead)"
)
# No single process of the suite should come near this; if one does, it hangs.
PROCESS_TIMEOUT = 600.0


class BenchmarkError(RuntimeError):
    """A contestant did not do its work (non-zero exit); the numbers would be lies."""


# --- running things ---------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """A process to run: its argv, what to feed its stdin, extra environment."""

    argv: list[str]
    stdin: bytes = b""
    env: dict[str, str] | None = None


def run_checked(command: Command, *, capture: bool = False) -> tuple[float, bytes]:
    """Run `command` to the end; its wall time and (with `capture`) its stdout."""
    env = None if command.env is None else {**os.environ, **command.env}
    started = time.perf_counter()
    done = subprocess.run(
        command.argv,
        input=command.stdin,
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=PROCESS_TIMEOUT,
        check=False,
        env=env,
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


@dataclass
class Contestant:
    """One way of doing the work; `prepare(n)` gives the command for one run of size n."""

    name: str
    prepare: Callable[[int], Command]
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median wall time over the repetitions."""
        return statistics.median(self.times)

    def spread(self) -> str:
        """min-max of the times, for the tables."""
        return f"{min(self.times):.3f}-{max(self.times):.3f} s"


def alternate(
    contestants: Sequence[Contestant],
    repetitions: int,
    size: Callable[[Contestant], int],
    *,
    after_each_rep: Callable[[], None] | None = None,
) -> None:
    """Run every contestant once per repetition, rotating who goes first, and record
    wall times; `size(c)` is the work given to contestant c."""
    for rep in range(repetitions):
        shift = rep % len(contestants)
        for contestant in [*contestants[shift:], *contestants[:shift]]:
            elapsed, _ = run_checked(contestant.prepare(size(contestant)))
            contestant.times.append(elapsed)
            print(f"  rep {rep + 1}/{repetitions}  {contestant.name:<34} {elapsed:7.3f} s")
        if after_each_rep is not None:
            after_each_rep()


def paired_ratios(top: Contestant, bottom: Contestant) -> list[float]:
    """top / bottom within each repetition (same moment, same machine noise)."""
    return [a / b for a, b in zip(top.times, bottom.times, strict=True)]


def load_average() -> float:
    """The 1-minute load average (the machine has 2 cores)."""
    return os.getloadavg()[0]


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


def verdict(value: float, target: float) -> str:
    """yes when `value` is at most `target`."""
    return "yes" if value <= target else "NO"


@dataclass(frozen=True)
class SummaryRow:
    """One line of the final summary: a measure against its target."""

    measure: str
    measured: str
    target: str = "-"
    meets: str = "(info)"
    detail: str = ""


@dataclass(frozen=True)
class Settings:
    """How much a section measures: full, or --quick."""

    quick: bool
    workdir: Path

    @property
    def label(self) -> str:
        """quick or full."""
        return "quick" if self.quick else "full"


# A section prints its tables as it goes and returns its summary rows.
Section = Callable[[Settings], list[SummaryRow]]


def summary_table(rows: Sequence[SummaryRow]) -> str:
    """The summary: measure, measured, target, meets, detail."""
    return table(
        ["measure", "measured", "target", "meets", "detail"],
        [[r.measure, r.measured, r.target, r.meets, r.detail] for r in rows],
    )


def version() -> str:
    """fleetdeck's installed version."""
    try:
        return metadata.version("fleetdeck")
    except metadata.PackageNotFoundError:
        return "?"


def banner(what: str, settings: Settings) -> str:
    """The first line of a run: versions, CPUs, load."""
    return (
        f"fleetdeck {version()} {what} ({settings.label}): Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load_average():.2f} at start"
    )


def parse_settings(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """--quick and --workdir, for run.py and for each section run alone."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="less work, fewer repetitions")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=WORKDIR_HELP)
    return parser.parse_args(argv)


def run_alone(section: Section, doc: str, argv: Sequence[str] | None = None) -> int:
    """The entry point of a section run alone: its tables, then its summary rows."""
    args = parse_settings(doc.split("\n\n")[0], argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-", dir=args.workdir) as temp:
        settings = Settings(quick=args.quick, workdir=Path(temp))
        print(banner("benchmark", settings))
        try:
            rows = section(settings)
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print("\n== Summary (targets are information; exit code is 0 unless a run crashed) ==")
    print(summary_table(rows))
    print(f"\ntotal {time.perf_counter() - began:.0f} s, load average {load_average():.2f}")
    return 0
