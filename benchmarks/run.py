"""fleetdeck's performance suite: every target of the performance issue, in one run.

    .venv/bin/python benchmarks/run.py [--quick] [--workdir DIR] [SECTION ...]
    make bench                       # the full suite (<= ~12 min with the UI section)
    make bench BENCH_ARGS=--quick    # ~2-3 min, plus the UI benchmark's own quick run

Sections (all by default; name some to run only those, or run a section's module
alone, e.g. `python benchmarks/overhead.py --quick`):

  overhead   1. N no-op tasks through `fleetdeck run --no-tui` against a raw asyncio
                loop and GNU parallel, both 2 at a time, and the same run with its
                state dir on tmpfs (benchmarks/overhead.py)
  makespan   2. random DAGs of sleeps (chains, fans, mixed) on 4 slots against their
                lower bound and an executor in waves with a barrier (makespan.py)
  scale      3. validating 20,000 tasks, the engine at 100,000 tasks, peak RSS of a
                2,000-task real run (scale.py, engine_scale.py)
  journal    5. what journal writes cost in the overhead run (journal_cost.py)
  simulate   6. the policy lab: simulated tasks/s on a 100,000-task DAG, the live
                what-if's cost, predicted against real makespans of config/ (simulate.py)
  landing    7. a git worktree per task and the merge train on a 10,000-file
                repository: worktree, commit, landing (ms), disk per worktree, and
                the train's throughput with a 1 s CI against CI's bound (landing.py)
  api        8. N chat completions against the local API server (6,000 requests a
                minute, 20 ms, 50 slots): makespan against max(N / rate, N x latency /
                slots), requests over the limit (server's count), CPU per request, side
                by side with a plain httpx loop and a semaphore (api.py, api_loop.py)
  attached   9. a 1,000-task background run alone and with a stalled client, side
                by side; attaching to a 10,000-task fleet, and a command's round
                trip through the socket, and over SSH beside it; an in-process run with
                its own socket served and no client against the same run without, per
                task (attached.py)
  ui         4. benchmarks/ui.py, run as its own process when it exists: key press to
                repaint in tmux and fleetdeck's CPU; its summary joins ours

Each section prints its tables as it completes; the summary at the end holds every
measure, the number measured, the target and whether it meets it. This machine is
small and noisy, so every timing is a ratio of things measured side by side in the
same run (contestants alternate within each repetition, medians are compared), or,
for the issue's absolute targets, printed with what ran beside it and the load
average. The targets are information: the exit code is 0 unless something crashed.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import api
import attached
import journal_cost
import landing
import makespan
import overhead
import scale
import simulate
from harness import (
    HERE,
    WORKDIR_HELP,
    BenchmarkError,
    Section,
    Settings,
    SummaryRow,
    banner,
    load_average,
    summary_table,
)

UI_SCRIPT = HERE / "ui.py"
# The UI benchmark is another process with its own length; past this it is stopped
# (SIGINT first, so it cleans up its tmux server and fleet) and the summary says so.
UI_TIME_LIMIT = {"quick": 480.0, "full": 720.0}
UI_GRACE = 90.0

SECTIONS: dict[str, Section] = {
    "overhead": overhead.measure,
    "makespan": makespan.measure,
    "scale": scale.measure,
    "journal": journal_cost.measure,
    "simulate": simulate.measure,
    "landing": landing.measure,
    "api": api.measure,
    "attached": attached.measure,
}
ORDER = ("overhead", "makespan", "scale", "journal", "simulate", "landing", "api", "attached", "ui")
# The issue's numbering; the summary follows it (the UI runs last: it is the longest).
NUMBERS = {
    "overhead": 1,
    "makespan": 2,
    "scale": 3,
    "ui": 4,
    "journal": 5,
    "simulate": 6,
    "landing": 7,
    "api": 8,
    "attached": 9,
}


# --- 4. the UI benchmark, another process -----------------------------------------------


def measure_ui(settings: Settings) -> list[SummaryRow]:
    """Run benchmarks/ui.py (if it exists) and turn its summary into ours."""
    print(f"\n== 4. UI: benchmarks/ui.py, its own process (load average {load_average():.2f}) ==")
    if not UI_SCRIPT.exists():
        print("note: benchmarks/ui.py does not exist (yet): the UI targets are not measured")
        return [SummaryRow("4. UI (benchmarks/ui.py)", "missing", "-", "not run")]
    argv = [sys.executable, str(UI_SCRIPT), "--workdir", str(settings.workdir)]
    if settings.quick:
        argv.append("--quick")
    limit = UI_TIME_LIMIT[settings.label]
    began = time.perf_counter()
    lines, code, timed_out = _stream(argv, limit)
    seconds = time.perf_counter() - began
    rows = ui_summary_rows(lines)
    if timed_out:
        rows.append(
            SummaryRow(
                "4. UI (benchmarks/ui.py)",
                "stopped",
                "-",
                "NOT MEASURED",
                f"over its {limit:.0f} s limit",
            )
        )
    elif code != 0:
        tail = [line for line in lines if line.strip()][-1:] or ["no output"]
        rows.append(
            SummaryRow(
                "4. UI (benchmarks/ui.py)",
                f"failed (exit {code})",
                "-",
                "NOT MEASURED",
                tail[0].strip()[:70],
            )
        )
    elif not rows:
        rows.append(
            SummaryRow("4. UI (benchmarks/ui.py)", "no summary", "-", "NOT MEASURED", "see above")
        )
    print(f"ui.py took {seconds:.0f} s; load average {load_average():.2f}")
    return rows


def _stream(argv: list[str], limit: float) -> tuple[list[str], int, bool]:
    """Run `argv`, echoing its output indented; its lines, exit code and whether it was
    stopped for running past `limit` seconds."""
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # ours alone to signal
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            print(f"  | {line}", end="", flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    timed_out = False
    try:
        process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        timed_out = True
        process.send_signal(signal.SIGINT)  # KeyboardInterrupt: ui.py cleans up
        try:
            process.wait(timeout=UI_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    reader.join(timeout=10)
    return lines, process.returncode, timed_out


def ui_summary_rows(lines: Sequence[str]) -> list[SummaryRow]:
    """The rows of ui.py's "== Summary" table (columns found by their header names)."""
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("== Summary"))
    except StopIteration:
        return []
    body = [line for line in lines[start + 1 :] if line.strip()]
    if len(body) < 2:
        return []
    header = re.split(r"\s{2,}", body[0].strip())
    wanted = {"measure", "value", "target", "meets"}
    if not wanted <= set(header):
        return []
    rows = []
    for line in body[2:]:
        if line.startswith(("total ", "==")):
            break
        cells = dict(zip(header, re.split(r"\s{2,}", line.strip()), strict=False))
        if not wanted <= set(cells):
            break
        source = cells.get("source", "")
        label = "" if source in ("", "installed") else f" ({source})"
        rows.append(
            SummaryRow(
                f"4. UI {cells['measure']}{label}",
                cells["value"],
                cells["target"],
                cells["meets"],
                "benchmarks/ui.py",
            )
        )
    return rows


# --- the driver -------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen sections, then print the summary."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="less work, fewer repetitions")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=HERE / ".work",
        help=WORKDIR_HELP,
    )
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=", ".join(ORDER))
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in ORDER]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    chosen = [name for name in ORDER if name in (args.sections or ORDER)]
    args.workdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    rows: list[SummaryRow] = []
    crashed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.workdir) as temp:
        settings = Settings(quick=args.quick, workdir=Path(temp))
        print(banner("performance suite", settings))
        print(f"sections: {', '.join(chosen)}; working in {args.workdir}")
        for name in chosen:
            section = measure_ui if name == "ui" else SECTIONS[name]
            section_began = time.perf_counter()
            try:
                rows += section(settings)
            except (BenchmarkError, OSError, ValueError) as exc:
                crashed.append(name)
                print(f"section {name} crashed: {exc}", file=sys.stderr)
                label = f"{NUMBERS[name]}. {name}"
                rows.append(SummaryRow(label, "crashed", "-", "NOT MEASURED", str(exc)[:70]))
            print(f"({name}: {time.perf_counter() - section_began:.0f} s)")
    if any(row.measure.startswith("4. UI") and row.meets == "NOT MEASURED" for row in rows):
        crashed.append("ui")
    print(
        f"\n== Summary ({settings.label}; targets are information; exit code 0 unless "
        "something crashed) =="
    )
    # In the issue's order: "1. ...", "3a. ...", "4. ...": by the leading number
    # (a stable sort keeps 3a, 3b, 3c as the sections produced them).
    rows.sort(key=_issue_order)
    print(summary_table(rows))
    print(
        f"\ntotal {time.perf_counter() - began:.0f} s, load average {load_average():.2f} at "
        f"the end (2 cores: above 2 means others ran beside these numbers)"
    )
    if crashed:
        print(f"crashed or not measured: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


def _issue_order(row: SummaryRow) -> int:
    """The leading number of a measure ("3a. validate" -> 3); unnumbered rows last."""
    number = re.match(r"\d+", row.measure)
    return int(number[0]) if number else 99


if __name__ == "__main__":
    sys.exit(main())
