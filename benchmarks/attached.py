"""8. Attached: a stalled client against a 1,000-task run; attaching to a 10,000-task fleet.

    .venv/bin/python benchmarks/attached.py [--quick]

A. A 1,000-task run of no-op agents (2 slots) started in the background
   (`fleetdeck start`), alternating within each repetition:
   - alone: nobody attached;
   - reading client: an attached view's client (SocketClient), reading all;
   - stalled client: a client that takes the stream (snapshots and events) and
     never reads a byte, connected as soon as the socket listens.
   Measured: the run's makespan from its journal (run started to run finished).
   Target: the stalled client costs under 10% (the supervisor's writes never wait;
   its buffer for that client is bounded, then it is dropped).
B. A 10,000-task fleet running (agents that sleep): the time from connecting to
   the first whole snapshot decoded (what `fleetdeck attach` waits for before its
   first screen), and the round trip of a command through the socket (`pause`,
   answered after the snapshot that shows it: what a key costs on top of the
   in-process TUI, where the same command is a method call), p50 and p95.
C. Every `fleetdeck run` serves the control socket: a 1,000-task in-process
   run of no-op agents with its socket, registry entry and notifier served and
   no client (`HostedRun`, as the CLI runs it) against the same run without
   them (`RunLifecycle` alone), alternating. Measured: the time per task.
   Target: the socket costs under 5% per task.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from fleets import write_noop_fleet
from harness import Settings, SummaryRow, banner, load_average, parse_settings, table, verdict

from fleetdeck.remote.protocol import encode
from fleetdeck.remote.socket_client import SocketClient

TARGET = 0.10
SERVED_TARGET = 0.05


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetdeck", *args], capture_output=True, text=True, env=env
    )


def _pid_of(started: subprocess.CompletedProcess[str]) -> int:
    if started.returncode != 0:
        raise RuntimeError(f"fleetdeck start failed: {started.stderr}")
    return int(started.stdout.split("supervisor pid ")[1].split(")")[0])


def _wait_exit(pid: int, limit: float = 600.0) -> None:
    deadline = time.monotonic() + limit
    while Path(f"/proc/{pid}").exists():
        stat = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        if stat == "Z" or time.monotonic() > deadline:
            break
        time.sleep(0.05)


def _makespan(state: Path, env: dict[str, str]) -> float:
    report = json.loads(_cli("report", str(state), "--json", env=env).stdout)
    if report["status"] != "finished":
        raise RuntimeError(f"the run did not finish: {report['status']}")
    began = datetime.fromisoformat(report["started_at"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(report["ended_at"].replace("Z", "+00:00"))
    return (ended - began).total_seconds()


def one_run(workdir: Path, tasks: int, *, mode: str, env: dict[str, str]) -> float:
    """The makespan of one background run of `tasks` no-op tasks."""
    run = Path(tempfile.mkdtemp(prefix="attached-", dir=workdir))
    config = run / "fleet.toml"
    write_noop_fleet(config, tasks, slots=2)
    state = run / ".fleetdeck"
    pid = _pid_of(_cli("start", str(config), env=env))
    client = None
    reader = SocketClient.connect(state) if mode == "reading" else None
    if mode == "stalled":
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(state / "control.sock"))
        client.sendall(encode({"type": "hello", "protocol": 1, "stream": True}))
    if client is not None:
        # The run's end, from its log (cheap to read); then the stalled client
        # leaves, rather than wait for the supervisor to drop it.
        log = state / "supervisor.log"
        while "run_finished" not in log.read_text():
            time.sleep(0.2)
        client.close()
    if reader is not None:
        reader.close()
    _wait_exit(pid)
    return _makespan(state, env)


def attach_figures(
    workdir: Path, tasks: int, presses: int, env: dict[str, str]
) -> dict[str, float]:
    """Connect-to-first-snapshot and command round trips on a fleet of `tasks` running."""
    run = Path(tempfile.mkdtemp(prefix="attach10k-", dir=workdir))
    config = run / "fleet.toml"
    write_noop_fleet(config, tasks, slots=2)
    config.write_text(
        config.read_text().replace('command = ["true"]', 'command = ["sleep", "600"]')
    )
    state = run / ".fleetdeck"
    pid = _pid_of(_cli("start", str(config), env=env))
    try:
        attaches = []
        for _ in range(3):
            began = time.perf_counter()
            client = SocketClient.connect(state)
            attaches.append(time.perf_counter() - began)
            assert len(client.snapshot().tasks) == tasks
            client.close()
        client = SocketClient.connect(state)
        trips = []
        for i in range(presses):
            began = time.perf_counter()
            client.pause() if i % 2 == 0 else client.resume()
            trips.append(time.perf_counter() - began)
        client.close()
    finally:
        _cli("stop", str(state), "--now", env=env)
        _wait_exit(pid)
    trips.sort()
    return {
        "attach": statistics.median(attaches),
        "p50": trips[len(trips) // 2],
        "p95": trips[int(len(trips) * 0.95) - 1],
    }


def served_run(workdir: Path, tasks: int, *, served: bool) -> float:
    """Seconds of one in-process run of `tasks` no-op tasks, headless, with the
    control socket served (no client) or without it."""
    from fleetdeck.config import load_fleet
    from fleetdeck.engine import Engine
    from fleetdeck.executors import build_executors
    from fleetdeck.inprocess import InProcessClient
    from fleetdeck.journal import Journal
    from fleetdeck.lifecycle import RunLifecycle
    from fleetdeck.remote.hosted import HostedRun

    run = Path(tempfile.mkdtemp(prefix="served-", dir=workdir))
    config = run / "fleet.toml"
    write_noop_fleet(config, tasks, slots=2)
    fleet = load_fleet(config)
    journal = Journal(fleet.state_dir)
    engine = Engine(fleet, journal=journal, executors=build_executors(fleet))
    client = InProcessClient(engine)
    lifecycle = RunLifecycle(engine)
    hosted = HostedRun(client, lifecycle, state_dir=fleet.state_dir, config=str(config))

    async def whole_run() -> float:
        handle = hosted if served else lifecycle
        began = time.perf_counter()
        handle.start()
        await handle.wait()
        elapsed = time.perf_counter() - began
        if served and hosted.server is None:
            raise RuntimeError(f"the socket was not served: {hosted.problem}")
        await handle.close()
        return elapsed

    try:
        return asyncio.run(whole_run())
    finally:
        client.close()
        journal.close()


def served_figures(workdir: Path, tasks: int, repetitions: int) -> dict[str, list[float]]:
    """Per-task seconds of in-process runs with the socket and without, alternating."""
    times: dict[str, list[float]] = {"without": [], "served": []}
    for _ in range(repetitions):
        for mode, kept in times.items():
            kept.append(served_run(workdir, tasks, served=mode == "served") / tasks)
    return times


def measure(settings: Settings) -> list[SummaryRow]:
    """Section 8."""
    print(banner("attached", settings))
    workdir = settings.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    runtime = Path(tempfile.mkdtemp(prefix="runtime-", dir=workdir))
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    tasks, repetitions = (1000, 5) if not settings.quick else (300, 2)
    times: dict[str, list[float]] = {"alone": [], "reading": [], "stalled": []}
    for _ in range(repetitions):
        for mode, kept in times.items():
            kept.append(one_run(workdir, tasks, mode=mode, env=env))
    a, r, s = (statistics.median(times[mode]) for mode in ("alone", "reading", "stalled"))
    cost = (s - a) / a
    print(
        table(
            ["run", f"{tasks} tasks: makespan median", "each"],
            [
                [
                    f"{mode} client" if mode != "alone" else mode,
                    f"{m:.2f} s",
                    " ".join(f"{x:.2f}" for x in times[mode]),
                ]
                for mode, m in (("alone", a), ("reading", r), ("stalled", s))
            ],
        )
    )
    print(f"reading client cost: {(r - a) / a:+.1%}")
    print(f"stalled client cost: {cost:+.1%} (load average {load_average():.2f})")
    big = 10_000 if not settings.quick else 2_000
    figures = attach_figures(workdir, big, 40 if settings.quick else 100, env)
    print(
        table(
            [f"{big} tasks", "median or p50", "p95"],
            [
                ["connect to first snapshot", f"{figures['attach'] * 1000:.0f} ms", "-"],
                [
                    "command round trip (pause/resume)",
                    f"{figures['p50'] * 1000:.1f} ms",
                    f"{figures['p95'] * 1000:.1f} ms",
                ],
            ],
        )
    )
    served = served_figures(workdir, tasks, repetitions)
    w, v = (statistics.median(served[mode]) for mode in ("without", "served"))
    socket_cost = (v - w) / w
    print(
        table(
            ["in-process run", f"{tasks} tasks: per task, median", "each (ms)"],
            [
                [label, f"{m * 1000:.2f} ms", " ".join(f"{x * 1000:.2f}" for x in served[mode])]
                for label, mode, m in (
                    ("without the socket", "without", w),
                    ("socket served, no client", "served", v),
                )
            ],
        )
    )
    print(f"socket served, no client: {socket_cost:+.1%} per task")
    return [
        SummaryRow(
            "9a. stalled client",
            f"{cost:+.1%}",
            f"< {TARGET:.0%}",
            verdict(cost, TARGET),
            f"{tasks} tasks, {a:.2f} s alone vs {s:.2f} s",
        ),
        SummaryRow(
            "9b. attach",
            f"{figures['attach'] * 1000:.0f} ms",
            detail=f"{big} tasks: connect to the first whole snapshot",
        ),
        SummaryRow(
            "9c. command round trip",
            f"p95 {figures['p95'] * 1000:.1f} ms",
            "< 10 ms",
            verdict(figures["p95"], 0.010),
            f"{big} tasks, p50 {figures['p50'] * 1000:.1f} ms (socket; in-process: a call)",
        ),
        SummaryRow(
            "9d. run's own socket",
            f"{socket_cost:+.1%}",
            f"< {SERVED_TARGET:.0%}",
            verdict(socket_cost, SERVED_TARGET),
            f"{tasks} tasks in-process, {w * 1000:.2f} ms/task without vs {v * 1000:.2f} served",
        ),
    ]


if __name__ == "__main__":
    args = parse_settings(__doc__ or "", sys.argv[1:])
    rows = measure(Settings(quick=args.quick, workdir=args.workdir))
    for row in rows:
        print(row)
