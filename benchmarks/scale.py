"""3. Scale: big configs, big DAGs, many real processes.

    .venv/bin/python benchmarks/scale.py [--quick]

(a) Validation. A realistic 20,000-task config (fleets.write_big_fleet: three agents,
    two CI runners, one-to-two-sentence prompts, CI on most tasks, retries, timeouts,
    each task depending on 0-3 of the 300 before it) checked by the whole command,
    `fleetdeck validate BIG.toml`, interpreter start-up and TOML parsing included;
    target under 1.5 s. It alternates with `python -c "import fleetdeck.cli"` (the
    start-up and imports alone) so the config's own share shows. In this process,
    `load_fleet` is timed apart, split into reading + TOML parsing and the rest
    (schema, references, DAG).
(b) Engine. A 100,000-task DAG built in code, run in-process with an instant executor
    (benchmarks/engine_scale.py, a fresh process per run), in two shapes: "window"
    (each task depends on up to 3 of the 50 before it) and "layered" (100 levels of
    1000). Targets: at least 20,000 completions/s, under 1 KiB (1,024 bytes) per task.
    Speed runs alternate with a minimal asyncio DAG runner on the same DAG (the
    yardstick: "engine / reference"); memory is measured with tracemalloc in a
    separate run, since tracemalloc slows Python about 2x.
(c) Processes. A 2,000-task fleet of `true` on 8 slots through `fleetdeck run
    --no-tui`; the fleetdeck process's RSS sampled with psutil every 20 ms (the
    kernel's high-water mark, VmHWM, read at each sample too, catches peaks between
    samples); target a peak under 150 MB (10^6 bytes). The raw asyncio loop with 8
    slots is sampled the same way, for contrast.

Absolute targets (seconds, rates, bytes) are printed with what ran beside them and
the load average: on a noisy 2-core machine they are information, not verdicts.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from fleets import write_big_fleet, write_noop_fleet
from harness import (
    HERE,
    PROCESS_TIMEOUT,
    BenchmarkError,
    Command,
    Contestant,
    Settings,
    SummaryRow,
    alternate,
    fleetdeck_argv,
    load_average,
    run_alone,
    run_checked,
    table,
    verdict,
)

VALIDATE_TASKS = 20_000
VALIDATE_TARGET = 1.5  # seconds
RATE_TARGET = 20_000.0  # completions per second
MEMORY_TARGET = 1024.0  # bytes per task
RSS_TASKS = 2000
RSS_SLOTS = 8
RSS_TARGET = 150e6  # bytes
SAMPLE_EVERY = 0.02


@dataclass(frozen=True)
class Size:
    """How much to measure."""

    validate_repetitions: int
    engine_tasks: int
    engine_repetitions: int
    rss_repetitions: int


FULL = Size(validate_repetitions=5, engine_tasks=100_000, engine_repetitions=2, rss_repetitions=2)
QUICK = Size(validate_repetitions=3, engine_tasks=20_000, engine_repetitions=1, rss_repetitions=1)


# --- (a) validation ---------------------------------------------------------------------


def measure_validation(size: Size, workdir: Path) -> list[SummaryRow]:
    """`fleetdeck validate` of a 20,000-task config, against start-up alone."""
    config = workdir / "big-20k.toml"
    write_big_fleet(config, VALIDATE_TASKS)
    megabytes = config.stat().st_size / 1e6
    print(
        f"\n-- 3a. Validate a realistic {VALIDATE_TASKS:,}-task config ({megabytes:.1f} MB, "
        f"{config.stat().st_size / VALIDATE_TASKS:.0f} bytes per task), "
        f"{size.validate_repetitions} repetitions (load average {load_average():.2f}) --"
    )
    validate = Contestant(
        "fleetdeck validate (whole command)",
        lambda _n: Command([*fleetdeck_argv(), "validate", str(config)]),
    )
    imports = Contestant(
        "python -c 'import fleetdeck.cli'",
        lambda _n: Command([sys.executable, "-c", "import fleetdeck.cli"]),
    )
    run_checked(validate.prepare(0))  # warm the page cache; not recorded
    alternate([validate, imports], size.validate_repetitions, lambda _c: 0)
    parse, rest = time_load_fleet(config, size.validate_repetitions)
    rows = [
        [validate.name, f"{validate.median:.3f} s", validate.spread()],
        [imports.name, f"{imports.median:.3f} s", imports.spread()],
        ["in process: load_fleet", f"{parse + rest:.3f} s", "-"],
        ["  of which read + TOML parsing", f"{parse:.3f} s", "-"],
        ["  of which schema, references, DAG", f"{rest:.3f} s", "-"],
    ]
    print(table(["what", "median", "range"], rows))
    share = (validate.median - imports.median) / validate.median
    print(
        f"the config's share of the command: {share:.0%} ((validate - start-up) / validate); "
        f"load average {load_average():.2f}"
    )
    return [
        SummaryRow(
            f"3a. validate {VALIDATE_TASKS:,} tasks, whole command",
            f"{validate.median:.2f} s",
            f"< {VALIDATE_TARGET:.1f} s",
            verdict(validate.median, VALIDATE_TARGET - 1e-9),
            f"start-up+imports {imports.median:.2f} s; in-process load_fleet {parse + rest:.2f} s",
        ),
        SummaryRow(
            f"3a. load_fleet {VALIDATE_TASKS:,} tasks, in process",
            f"{parse + rest:.2f} s",
            detail=f"TOML {parse:.2f} s + schema/refs/DAG {rest:.2f} s",
        ),
    ]


def time_load_fleet(config: Path, repetitions: int) -> tuple[float, float]:
    """Median seconds of read + TOML parsing, and of the rest of load_fleet."""
    # The parser the config module uses (tomli when installed, else tomllib).
    from fleetdeck.config import load_fleet
    from fleetdeck.config import tomllib as toml_parser

    parses, totals = [], []
    for _ in range(repetitions):
        began = time.perf_counter()
        toml_parser.loads(config.read_text())
        parses.append(time.perf_counter() - began)
        began = time.perf_counter()
        load_fleet(config)
        totals.append(time.perf_counter() - began)
    parse, total = statistics.median(parses), statistics.median(totals)
    return parse, max(0.0, total - parse)


# --- (b) the engine ---------------------------------------------------------------------


def engine_run(shape: str, tasks: int, mode: str, workdir: Path) -> dict[str, Any]:
    """One engine_scale.py process; its JSON result."""
    argv = [
        sys.executable,
        str(HERE / "engine_scale.py"),
        "--shape",
        shape,
        "--tasks",
        str(tasks),
        "--mode",
        mode,
        "--workdir",
        str(workdir),
        "--json",
    ]
    _, out = run_checked(Command(argv), capture=True)
    lines = out.decode().strip().splitlines()
    print(f"  {lines[0]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure_engine(size: Size, workdir: Path) -> list[SummaryRow]:
    """Completions/s (alternating with the reference) and memory per task, per shape."""
    tasks = size.engine_tasks
    note = "" if tasks == 100_000 else " (quick: the targets are set at 100,000)"
    print(
        f"\n-- 3b. Engine with an instant executor: {tasks:,} tasks{note}, "
        f"{size.engine_repetitions} speed repetition(s) per shape (load average "
        f"{load_average():.2f}) --"
    )
    table_rows, summary = [], []
    for shape in ("window", "layered"):
        speeds: list[dict[str, Any]] = []
        references: list[dict[str, Any]] = []
        for rep in range(size.engine_repetitions):
            modes = ("speed", "reference") if rep % 2 == 0 else ("reference", "speed")
            for mode in modes:
                result = engine_run(shape, tasks, mode, workdir)
                (speeds if mode == "speed" else references).append(result)
        mem = engine_run(shape, tasks, "memory", workdir)
        rate = statistics.median(r["per_second"] for r in speeds)
        yardstick = statistics.median(r["per_second"] for r in references)
        rss = statistics.median(r["rss_growth_per_task"] for r in speeds)
        table_rows.append(
            [
                shape,
                f"{tasks:,}",
                f"{rate:,.0f}/s",
                f"{yardstick:,.0f}/s",
                f"{rate / yardstick:.3f}x",
                f"{mem['peak_per_task']:,.0f} B",
                f"{mem['fleet_per_task']:,.0f} B",
                f"{rss:,.0f} B",
            ]
        )
        summary += [
            SummaryRow(
                f"3b. engine completions/s, {shape}",
                f"{rate:,.0f}/s",
                f">= {RATE_TARGET:,.0f}/s",
                "yes" if rate >= RATE_TARGET else "NO",
                f"{tasks:,} tasks; {rate / yardstick:.3f}x the minimal asyncio runner",
            ),
            SummaryRow(
                f"3b. engine memory per task, {shape}",
                f"{mem['peak_per_task']:,.0f} B",
                f"< {MEMORY_TARGET:,.0f} B",
                verdict(mem["peak_per_task"], MEMORY_TARGET - 1e-9),
                f"tracemalloc peak; fleet definition {mem['fleet_per_task']:,.0f} B",
            ),
        ]
    header = [
        "shape",
        "tasks",
        "engine",
        "reference",
        "engine/ref",
        "peak/task",
        "fleet/task",
        "RSS growth/task",
    ]
    print(table(header, table_rows))
    print(
        "engine = completions/s over Engine.run() (median); reference = a minimal asyncio DAG "
        "runner on the same DAG;\npeak/task = tracemalloc peak over building and running (own "
        "process), fleet/task = the fleet's definition alone;\nRSS growth/task = the speed "
        f"run's peak RSS growth (SQLite's memory included); load average {load_average():.2f}"
    )
    return summary


# --- (c) peak RSS of a real run ---------------------------------------------------------


@dataclass(frozen=True)
class Peak:
    """One sampled run."""

    sampled: int  # the largest RSS seen, bytes
    high_water: int  # the largest VmHWM seen, bytes
    samples: int
    seconds: float


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def sample_peak(command: Command) -> Peak:
    """Run `command`, sampling its process's RSS every SAMPLE_EVERY seconds."""
    with tempfile.TemporaryFile() as errors:
        began = time.perf_counter()
        process = subprocess.Popen(command.argv, stdout=subprocess.DEVNULL, stderr=errors)
        watched = psutil.Process(process.pid)
        sampled = high_water = samples = 0
        while process.poll() is None:
            try:
                sampled = max(sampled, watched.memory_info().rss)
            except psutil.Error:  # exited between poll() and the sample
                break
            high_water = max(high_water, _vm_hwm(process.pid))
            samples += 1
            if time.perf_counter() - began > PROCESS_TIMEOUT:
                process.kill()
                raise BenchmarkError(f"`{shlex.join(command.argv)}` did not finish")
            time.sleep(SAMPLE_EVERY)
        code = process.wait()
        seconds = time.perf_counter() - began
        if code != 0:
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-2000:]
            raise BenchmarkError(f"`{shlex.join(command.argv)}` exited with {code}\n{tail}")
    return Peak(sampled, high_water, samples, seconds)


def measure_rss(size: Size, workdir: Path) -> list[SummaryRow]:
    """fleetdeck's peak RSS over a 2,000-task run, the raw loop's for contrast."""
    print(
        f"\n-- 3c. Peak RSS: {RSS_TASKS:,} tasks of `true` on {RSS_SLOTS} slots, sampled "
        f"every {SAMPLE_EVERY * 1000:.0f} ms, {size.rss_repetitions} repetition(s) "
        f"(load average {load_average():.2f}) --"
    )
    config = workdir / f"noop-{RSS_TASKS}-{RSS_SLOTS}.toml"
    write_noop_fleet(config, RSS_TASKS, RSS_SLOTS)
    commands = {
        "fleetdeck run --no-tui": lambda rep: Command(
            [
                *fleetdeck_argv(),
                "run",
                str(config),
                "--no-tui",
                "--state-dir",
                str(workdir / f"rss-state-{rep}"),
            ]
        ),
        "raw asyncio loop": lambda rep: Command(
            [sys.executable, str(HERE / "raw_loop.py"), str(RSS_TASKS), str(RSS_SLOTS)]
        ),
    }
    peaks: dict[str, list[Peak]] = {name: [] for name in commands}
    names = list(commands)
    for rep in range(size.rss_repetitions):
        for name in names[rep % 2 :] + names[: rep % 2]:
            peak = sample_peak(commands[name](rep))
            peaks[name].append(peak)
            print(
                f"  rep {rep + 1}/{size.rss_repetitions}  {name:<24} peak RSS "
                f"{peak.sampled / 1e6:6.1f} MB (VmHWM {peak.high_water / 1e6:6.1f} MB), "
                f"{peak.samples} samples in {peak.seconds:.1f} s"
            )
    rows = []
    for name, runs in peaks.items():
        rows.append(
            [
                name,
                f"{max(p.sampled for p in runs) / 1e6:.1f} MB",
                f"{max(p.high_water for p in runs) / 1e6:.1f} MB",
                f"{statistics.median(p.samples for p in runs):.0f}",
            ]
        )
    print(table(["process", "peak RSS (sampled)", "VmHWM", "samples"], rows))
    mine = max(max(p.sampled, p.high_water) for p in peaks["fleetdeck run --no-tui"])
    raw = max(max(p.sampled, p.high_water) for p in peaks["raw asyncio loop"])
    print(f"MB = 10^6 bytes; load average {load_average():.2f}")
    return [
        SummaryRow(
            f"3c. peak RSS, {RSS_TASKS:,} real tasks on {RSS_SLOTS} slots",
            f"{mine / 1e6:.1f} MB",
            f"< {RSS_TARGET / 1e6:.0f} MB",
            verdict(mine, RSS_TARGET - 1),
            f"{mine / raw:.1f}x the raw loop's {raw / 1e6:.1f} MB",
        )
    ]


def measure(settings: Settings) -> list[SummaryRow]:
    """All three parts; summary rows."""
    size = QUICK if settings.quick else FULL
    print(f"\n== 3. Scale (load average {load_average():.2f}) ==")
    rows = measure_validation(size, settings.workdir)
    rows += measure_engine(size, settings.workdir)
    rows += measure_rss(size, settings.workdir)
    return rows


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__ or ""))
