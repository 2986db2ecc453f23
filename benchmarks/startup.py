"""Start-up: what fleetdeck costs before it does any work, against an earlier revision.

    .venv/bin/python benchmarks/startup.py [--before REV] [--reps 9] [--big] [--no-bytecode]

Every run of `fleetdeck run` pays its start-up once (interpreter, imports, pydantic's
schema, the journal), which is the whole of a 1-task fleet and part of the overhead
benchmark (section 1). Contestants, alternating within each repetition (who goes
first rotates), each a fresh process:

- floor: `python -c "import asyncio"`, the least a Python supervisor loads;
- before: REV's `src` (exported with `git archive`), first on PYTHONPATH;
- after: this working tree's `src` (copied, uncommitted changes included).

Both trees run with this interpreter and these packages, on three commands:
`run` (`fleetdeck run ONE.toml --no-tui --state-dir FRESH`, one `true` task),
`validate` (`fleetdeck validate ONE.toml`), and with --big `validate 20k` (the
realistic 20,000-task config of benchmarks/fleets.py, TOML parsing included).

Both trees are compiled with compileall first, as pip does when it installs a wheel;
--no-bytecode runs them with PYTHONDONTWRITEBYTECODE=1 instead, so every start
compiles fleetdeck's own sources (an editable install that cannot write its cache).

Prints medians of wall time and of CPU time (user + system of the process and its
children: steadier than wall time on a shared machine), and after / before per
repetition (median and range). Nothing is pass/fail.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleets import write_big_fleet, write_noop_fleet
from harness import DEFAULT_WORKDIR, PROCESS_TIMEOUT, WORKDIR_HELP, load_average, table

ROOT = Path(__file__).resolve().parent.parent
BIG_TASKS = 20_000


@dataclass
class Contestant:
    """One tree (or the floor); its wall and CPU times per command."""

    name: str
    pythonpath: str | None
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `argv` to the end; wall seconds and CPU seconds (it and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"`{' '.join(argv)}` exited with {done.returncode}\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def export_trees(base: Path, before: str) -> tuple[Path, Path]:
    """REV's src and the working tree's src, side by side under `base`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", before, "src"], capture_output=True, check=True
    )
    (base / "before").mkdir()
    subprocess.run(["tar", "-x", "-C", str(base / "before")], input=archive.stdout, check=True)
    shutil.copytree(
        ROOT / "src", base / "after" / "src", ignore=shutil.ignore_patterns("__pycache__")
    )
    return base / "before" / "src", base / "after" / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--before", default="main", help="the revision to compare with")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--big", action="store_true", help="also validate 20,000 tasks")
    parser.add_argument(
        "--no-bytecode", action="store_true", help="compile the sources at every start"
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=WORKDIR_HELP)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="startup-", dir=args.workdir) as scratch:
        base = Path(scratch)
        before_src, after_src = export_trees(base, args.before)
        env = dict(os.environ)
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            for src in (before_src, after_src):
                subprocess.run(
                    [sys.executable, "-m", "compileall", "-q", str(src)],
                    stdout=subprocess.DEVNULL,
                    check=True,
                )
        one = base / "noop-1.toml"
        write_noop_fleet(one, 1, 2)
        commands: dict[str, list[str]] = {
            "run": ["run", str(one), "--no-tui", "--state-dir"],  # + a fresh directory
            "validate": ["validate", str(one)],
        }
        if args.big:
            big = base / "big-20k.toml"
            write_big_fleet(big, BIG_TASKS)
            commands["validate 20k"] = ["validate", str(big)]
        floor = Contestant("floor", None)
        trees = [Contestant("before", str(before_src)), Contestant("after", str(after_src))]
        print(
            f"start-up: before = {args.before}, after = this working tree; "
            f"{'no bytecode cache' if args.no_bytecode else 'compiled first'}; "
            f"{args.reps} repetitions; load average {load_average():.2f}"
        )
        runs = 0
        for rep in range(args.reps):
            floor_wall, floor_cpu = timed([sys.executable, "-c", "import asyncio"], env)
            floor.wall.setdefault("", []).append(floor_wall)
            floor.cpu.setdefault("", []).append(floor_cpu)
            for name, command in commands.items():
                order = trees if rep % 2 == 0 else trees[::-1]
                for tree in order:
                    argv = [sys.executable, "-m", "fleetdeck", *command]
                    if name == "run":
                        runs += 1
                        argv.append(str(base / f"state-{runs}"))
                    wall, cpu = timed(argv, {**env, "PYTHONPATH": tree.pythonpath or ""})
                    tree.wall.setdefault(name, []).append(wall)
                    tree.cpu.setdefault(name, []).append(cpu)
            print(f"  rep {rep + 1}/{args.reps} done (load average {load_average():.2f})")
        before, after = trees
        rows = []
        for name in commands:
            ratios = [a / b for a, b in zip(after.wall[name], before.wall[name], strict=True)]
            cpu_ratios = [a / b for a, b in zip(after.cpu[name], before.cpu[name], strict=True)]
            rows.append(
                [
                    f"fleetdeck {name}",
                    f"{statistics.median(before.wall[name]):.3f} s",
                    f"{statistics.median(after.wall[name]):.3f} s",
                    f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
                    f"{statistics.median(before.cpu[name]):.3f} s",
                    f"{statistics.median(after.cpu[name]):.3f} s",
                    f"{statistics.median(cpu_ratios):.2f}x",
                ]
            )
        header = ["command", "before", "after", "after/before", "CPU before", "CPU after", "CPU"]
        print(table(header, rows))
        print(
            f"the floor, python -c 'import asyncio': {statistics.median(floor.wall['']):.3f} s "
            f"(CPU {statistics.median(floor.cpu['']):.3f} s)\n"
            "medians of wall and CPU time; after/before: median of the per-repetition ratios "
            f"(range); load average {load_average():.2f}"
        )


if __name__ == "__main__":
    main()
