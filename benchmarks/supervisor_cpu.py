"""Where the supervisor's own CPU goes, per task, in the overhead benchmark's run.

    .venv/bin/python benchmarks/supervisor_cpu.py [--tasks 1000] [--slots 2]

A profile, not a ratio: it runs `fleetdeck run CONFIG --no-tui` in this process on
the overhead benchmark's fleet (N `true` tasks, one agent, 2 slots), with the
functions below wrapped to add up the CPU time of the thread that calls them
(`time.thread_time`: the supervisor's own, children excluded, precise, unlike
sampling profilers, which here count the time the supervisor waits in posix_spawn
for the child to exec as if it were working). The wrappers cost about a
microsecond per call; nested entries (an event emitted inside a launch) are counted
in both. Use it to find what to work on, then measure the change side by side with
the overhead benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleets import write_noop_fleet
from harness import DEFAULT_WORKDIR, WORKDIR_HELP, load_average, table

import fleetdeck.cli
import fleetdeck.engine.core
import fleetdeck.engine.launch
import fleetdeck.engine.shell
import fleetdeck.executors.local
import fleetdeck.headless
import fleetdeck.journal

# (owner, attribute, label): what is timed. A name that no longer exists is
# reported as missing rather than silently left out.
WATCHED: list[tuple[Any, str, str]] = [
    (fleetdeck.journal.Journal, "commit", "journal: commit (SQLite)"),
    (fleetdeck.journal.Journal, "append", "journal: buffer an event"),
    (os, "posix_spawn", "executor: posix_spawn (parent side)"),
    (os, "open", "executor: open files (the log, the output)"),
    (fleetdeck.executors.local.LocalExecutor, "_check_command", "executor: look up the command"),
    (fleetdeck.executors.local, "LocalProcess", "executor: watch the process"),
    (fleetdeck.executors.local.LocalProcess, "_on_exit", "executor: exit handling"),
    (fleetdeck.engine.core.Core, "schedule", "core: schedule and launch"),
    (fleetdeck.engine.launch.RequestBuilder, "request_for", "engine: build the launch request"),
    (fleetdeck.engine.core.Core, "attempt_ended", "core: attempt ended (+ success)"),
    (fleetdeck.engine.core.Core, "attempt_started", "core: attempt started"),
    (fleetdeck.engine.shell.Engine, "emit", "engine: journal an event"),
    (fleetdeck.headless.HeadlessView, "__call__", "headless view: format a line"),
    (fleetdeck.headless.HeadlessView, "_flush", "headless view: write a batch"),
]


class Tally:
    """Calls and thread CPU seconds per label."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def wrap(self, function: Callable[..., Any], label: str) -> Callable[..., Any]:
        """`function`, adding its callers' thread CPU time to `label`."""
        if hasattr(function, "__code__") and function.__code__.co_flags & 0x80:  # coroutine
            raise TypeError(f"{label}: a coroutine function cannot be timed this way")

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.calls[label] = self.calls.get(label, 0) + 1
                self.seconds[label] = self.seconds.get(label, 0.0) + time.thread_time() - began

        return timed

    def install(self) -> list[str]:
        """Wrap everything in WATCHED; the labels of what was not found."""
        missing = []
        for owner, name, label in WATCHED:
            function = getattr(owner, name, None)
            if function is None:
                missing.append(label)
                continue
            setattr(owner, name, self.wrap(function, label))
        return missing


def main() -> None:
    """Run the fleet under the tally and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help=WORKDIR_HELP)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    missing = tally.install()
    with tempfile.TemporaryDirectory(prefix="supervisor-cpu-", dir=args.workdir) as temp:
        config = Path(temp) / "fleet.toml"
        write_noop_fleet(config, args.tasks, args.slots)
        began = time.thread_time()
        with contextlib.redirect_stdout(io.StringIO()):
            code = fleetdeck.cli.main(
                ["run", str(config), "--no-tui", "--state-dir", str(Path(temp) / "state")]
            )
        total = time.thread_time() - began
    if code != 0:
        sys.exit(f"the run failed (exit {code})")
    per_task = 1e6 / args.tasks
    rows = [
        [label, str(tally.calls[label]), f"{tally.seconds[label] * per_task:.1f}"]
        for _owner, _name, label in WATCHED
        if label in tally.calls
    ]
    print(
        f"{args.tasks} `true` tasks on {args.slots} slots; load average {load_average():.2f};"
        f" the supervisor's main thread: {total:.3f} s of CPU after its imports,"
        f" {total * per_task:.0f} us per task (wrapping included)"
    )
    print(table(["what (nested entries count in both)", "calls", "us of CPU per task"], rows))
    for label in missing:
        print(f"not found, not timed: {label}")


if __name__ == "__main__":
    main()
