"""What a change costs per task (here: the shim and journaling attempts before they start):

    .venv/bin/python benchmarks/shim_overhead.py [--before REV] [--tasks 1000] [--reps 3]

Both contestants run `fleetdeck run CONFIG --no-tui` on N no-op tasks (`true`, one
agent with 2 slots, no CI) with a fresh state directory each time, alternating
within each repetition; the earlier revision is exported with `git archive` and
put first on PYTHONPATH, so both use this interpreter and these packages. Prints
the median wall time of each and the difference per task. Nothing is pass/fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleets import write_noop_fleet

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path, state: Path, pythonpath: str | None) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetdeck",
            "run",
            str(config),
            "--no-tui",
            "--state-dir",
            str(state),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        timeout=600,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"fleetdeck exited with {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="HEAD~1", help="the revision to compare with")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetdeck-shim-bench-") as scratch:
        base = Path(scratch)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.before, "src"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        config = base / "noop.toml"
        write_noop_fleet(config, args.tasks, 2)
        times: dict[str, list[float]] = {"before": [], "after": []}
        for rep in range(args.reps):
            for label, path in (("before", str(base / "src")), ("after", None)):
                state = base / f"state-{label}-{rep}"
                times[label].append(run(config, state, path))
                print(f"rep {rep + 1}: {label:6} {times[label][-1]:.2f}s", flush=True)
        before = statistics.median(times["before"])
        after = statistics.median(times["after"])
        per_task = (after - before) / args.tasks * 1000
        print(
            f"{args.tasks} tasks on 2 slots: before ({args.before}) {before:.2f}s, "
            f"after {after:.2f}s, ratio {after / before:.2f}x, {per_task:+.2f} ms per task"
        )


if __name__ == "__main__":
    main()
