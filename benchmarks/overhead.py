"""1. Overhead: what supervision costs per task, against the least a supervisor can do.

    .venv/bin/python benchmarks/overhead.py [--quick]

N no-op tasks (`true`, no dependencies, one agent with 2 slots, no CI) through the
real CLI, `fleetdeck run CONFIG --no-tui --state-dir FRESH` with stdout to /dev/null,
against two baselines doing the same work:
- raw loop: a plain asyncio script (benchmarks/raw_loop.py, its own process) that
  starts N `true` with create_subprocess_exec under Semaphore(2);
- GNU parallel: `parallel -j2 true` fed N lines (skipped, with a note, if absent;
  `make bench` installs it).
The contestants alternate within each repetition (who goes first rotates), after an
unrecorded warm-up of each; medians are compared.

How to read it: "fleetdeck / raw loop" is the price of supervision (journal, logs,
events, process-tree care) over the least a Python supervisor can do; the target is
at most 1.2x. "per task" is (fleetdeck - raw loop) / N. The 1-task fleet is
fleetdeck's fixed start-up (interpreter, imports, config, journal), paid once per run;
"per task after start-up" is (fleetdeck - 1-task fleet) / (N - 1).

The state dirs live in the work directory (benchmarks/.work, on the project's disk,
where a fleet's own .fleetdeck would be); the target is judged there. Each attempt
has a log file of its own, which the raw loop does not create, and creating a file
costs some disks far more than others (on the development machine's virtual disk
15-690 us of kernel time, moving with what the disk did just before, against 9-15
us on tmpfs). So two things, as information,
show the file system's part apart from fleetdeck's own:
- the same fleetdeck run with its state dir on tmpfs (/dev/shm), a contestant of
  its own, alternating with the others (skipped, with a note, without a tmpfs);
- a probe, run between repetitions: the CPU time of creating a file in the work
  directory and on tmpfs, the same number of files in each, alternating.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from fleets import write_noop_fleet
from harness import (
    HERE,
    Command,
    Contestant,
    Settings,
    SummaryRow,
    alternate,
    fleetdeck_argv,
    load_average,
    paired_ratios,
    run_alone,
    run_checked,
    table,
    verdict,
)

TARGET = 1.2
SLOTS = 2
# Where the state dir goes for the tmpfs contestant, when it is a tmpfs.
TMPFS = Path("/dev/shm")
# Files the probe creates in each place, per repetition.
PROBE_FILES = 200


@dataclass(frozen=True)
class Size:
    """How much to measure."""

    tasks: int
    repetitions: int
    warmup_tasks: int


FULL = Size(tasks=1000, repetitions=5, warmup_tasks=50)
QUICK = Size(tasks=500, repetitions=3, warmup_tasks=20)


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


def tmpfs_root() -> tuple[Path | None, str]:
    """TMPFS when a tmpfs is mounted there and writable, else None and why not."""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            types = {fields[1]: fields[2] for fields in (line.split() for line in mounts)}
    except OSError as exc:
        return None, f"cannot read /proc/mounts: {exc.strerror}"
    if types.get(str(TMPFS)) != "tmpfs":
        return None, f"{TMPFS} is not a tmpfs"
    if not os.access(TMPFS, os.W_OK):
        return None, f"{TMPFS} is not writable"
    return TMPFS, f"{TMPFS} (tmpfs)"


@dataclass
class CreationProbe:
    """The CPU time of creating a file (as fleetdeck creates an attempt's log) in
    each of two directories, measured alternately."""

    places: dict[str, Path]
    seconds: dict[str, list[float]] = field(default_factory=dict)

    def run(self) -> None:
        """Create PROBE_FILES files in each place, then remove them."""
        for name, place in self.places.items():
            directory = Path(tempfile.mkdtemp(prefix="probe-", dir=place))
            began = time.thread_time()
            for i in range(PROBE_FILES):
                path = directory / f"t{i:05d}.1.agent.log"
                flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                os.close(os.open(path, flags, 0o600))
            spent = (time.thread_time() - began) / PROBE_FILES
            self.seconds.setdefault(name, []).append(spent)
            shutil.rmtree(directory, ignore_errors=True)

    def line(self) -> str:
        """Median microseconds per file in each place."""
        return ", ".join(
            f"{name} {statistics.median(times) * 1e6:.0f} us "
            f"({min(times) * 1e6:.0f}-{max(times) * 1e6:.0f})"
            for name, times in self.seconds.items()
        )


def noop_configs(workdir: Path, sizes: set[int]) -> dict[int, Path]:
    """A no-op fleet of each size, on SLOTS slots."""
    configs = {}
    for size in sizes:
        configs[size] = workdir / f"noop-{size}.toml"
        write_noop_fleet(configs[size], size, SLOTS)
    return configs


def measure(settings: Settings) -> list[SummaryRow]:
    """Alternate the contestants over the repetitions; print the table; summary rows."""
    size = QUICK if settings.quick else FULL
    workdir, n = settings.workdir, size.tasks
    print(
        f"\n== 1. Overhead: {n} no-op tasks (`true`), {SLOTS} slots, {size.repetitions} "
        f"repetitions (load average {load_average():.2f}) =="
    )
    configs = noop_configs(workdir, {n, size.warmup_tasks, 1})
    tmpfs, where = tmpfs_root()
    scratch = None if tmpfs is None else Path(tempfile.mkdtemp(prefix="overhead-", dir=tmpfs))
    try:
        return _measure(size, workdir, configs, scratch, where)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _measure(
    size: Size, workdir: Path, configs: dict[int, Path], scratch: Path | None, where: str
) -> list[SummaryRow]:
    n = size.tasks
    fleetdeck = fleetdeck_argv()
    states = count()

    def run_in(place: Path) -> Callable[[int], Command]:
        def fleetdeck_run(tasks: int) -> Command:
            state = place / f"state-{next(states)}"  # fresh, not yet created
            return Command(
                [*fleetdeck, "run", str(configs[tasks]), "--no-tui", "--state-dir", str(state)]
            )

        return fleetdeck_run

    fleetdeck_run = run_in(workdir)

    def raw_loop(tasks: int) -> Command:
        return Command([sys.executable, str(HERE / "raw_loop.py"), str(tasks), str(SLOTS)])

    contender = Contestant("fleetdeck run --no-tui", fleetdeck_run)
    raw = Contestant("raw asyncio loop", raw_loop)
    startup = Contestant("fleetdeck, 1-task fleet", fleetdeck_run)
    path, about = gnu_parallel()
    parallel = None
    if path is not None:

        def parallel_run(tasks: int) -> Command:
            lines = "".join(f"{i}\n" for i in range(tasks)).encode()
            return Command([path, "--will-cite", f"-j{SLOTS}", "true"], lines)

        parallel = Contestant(f"GNU parallel -j{SLOTS}", parallel_run)
    on_tmpfs = None
    probe = None
    if scratch is not None:
        on_tmpfs = Contestant("fleetdeck, state dir on tmpfs", run_in(scratch))
        probe = CreationProbe({"work directory": workdir, "tmpfs": scratch})
    everyone = [c for c in (contender, raw, parallel, startup, on_tmpfs) if c is not None]

    def between_reps() -> None:
        for place in (workdir, scratch):
            if place is not None:
                for state in place.glob("state-*"):
                    shutil.rmtree(state, ignore_errors=True)
        if probe is not None:  # after the clean-up, in the state the next rep starts in
            probe.run()

    # Warm the page cache and the .pyc files; not recorded.
    for contestant in everyone:
        run_checked(contestant.prepare(size.warmup_tasks))
    alternate(
        everyone,
        size.repetitions,
        lambda c: 1 if c is startup else n,
        after_each_rep=between_reps,
    )

    rows = []
    for contestant in everyone:
        tasks = 1 if contestant is startup else n
        rows.append(
            [
                contestant.name,
                f"{tasks}",
                f"{contestant.median:.3f} s",
                contestant.spread(),
                "-" if tasks == 1 else f"{contestant.median / tasks * 1000:.2f} ms",
                "-" if tasks == 1 else f"{contestant.median / raw.median:.2f}x",
            ]
        )
    print(table(["contestant", "tasks", "median", "range", "per task", "/ raw loop"], rows))
    if parallel is None:
        print(f"note: GNU parallel skipped: {about}")
    else:
        print(f"GNU parallel: {about}")
    extra = (contender.median - raw.median) / n * 1000
    marginal = (contender.median - startup.median) / (n - 1) * 1000
    print(
        f"fleetdeck over the raw loop: {extra:.2f} ms per task ((fleetdeck - raw) / N); "
        f"start-up (1-task fleet) {startup.median:.2f} s, then {marginal:.2f} ms per task "
        f"(raw loop, start-up included: {raw.median / n * 1000:.2f} ms per task)"
    )
    if on_tmpfs is None or probe is None:
        print(f"note: the tmpfs contestant and the file-creation probe skipped: {where}")
    else:
        disk_share = (contender.median - on_tmpfs.median) / n * 1000
        print(
            f"state dir in the work directory rather than on tmpfs: {disk_share:+.2f} ms per "
            f"task; creating a file, CPU time (median, range): {probe.line()}"
        )
    print(f"load average {load_average():.2f} at the end of the section")
    return summary(contender, raw, parallel, on_tmpfs)


def summary(
    contender: Contestant,
    raw: Contestant,
    parallel: Contestant | None,
    on_tmpfs: Contestant | None = None,
) -> list[SummaryRow]:
    """fleetdeck / raw loop against the target; on tmpfs and / GNU parallel as information."""
    ratio = contender.median / raw.median
    per_rep = paired_ratios(contender, raw)
    rows = [
        SummaryRow(
            "1. overhead: fleetdeck / raw loop",
            f"{ratio:.2f}x",
            f"<= {TARGET:.2f}x",
            verdict(ratio, TARGET),
            f"per rep {min(per_rep):.2f}-{max(per_rep):.2f}x",
        )
    ]
    if on_tmpfs is not None:
        per_rep = paired_ratios(on_tmpfs, raw)
        rows.append(
            SummaryRow(
                "1. overhead, state dir on tmpfs / raw loop",
                f"{on_tmpfs.median / raw.median:.2f}x",
                detail=f"per rep {min(per_rep):.2f}-{max(per_rep):.2f}x; files cheap to create",
            )
        )
    if parallel is None:
        rows.append(SummaryRow("1. overhead: fleetdeck / GNU parallel", "skipped", "-", "(absent)"))
    else:
        per_rep = paired_ratios(contender, parallel)
        rows.append(
            SummaryRow(
                "1. overhead: fleetdeck / GNU parallel",
                f"{contender.median / parallel.median:.2f}x",
                detail=f"per rep {min(per_rep):.2f}-{max(per_rep):.2f}x",
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__ or ""))
