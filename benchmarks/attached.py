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
   in-process TUI, where the same command is a method call), p50 and p95; the
   same over SSH (`ssh://root@127.0.0.1:PORT/...` through a test sshd, when one
   can run here), side by side.
C. Every `fleetdeck run` serves the control socket: a 1,000-task in-process
   run of no-op agents with its socket, registry entry and notifier served and
   no client (`HostedRun`, as the CLI runs it) against the same run without
   them (`RunLifecycle` alone), alternating. Measured: the time per task.
   Target: the socket costs under 5% per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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


def _figures(target: str | Path, tasks: int, presses: int) -> dict[str, float]:
    attaches = []
    for _ in range(3):
        began = time.perf_counter()
        client = SocketClient.connect(target)
        attaches.append(time.perf_counter() - began)
        assert len(client.snapshot().tasks) == tasks
        client.close()
    client = SocketClient.connect(target)
    trips = []
    for i in range(presses):
        began = time.perf_counter()
        client.pause() if i % 2 == 0 else client.resume()
        trips.append(time.perf_counter() - began)
    client.close()
    trips.sort()
    return {
        "attach": statistics.median(attaches),
        "p50": trips[len(trips) // 2],
        "p95": trips[int(len(trips) * 0.95) - 1],
    }


@contextlib.contextmanager
def _over_ssh(workdir: Path) -> Iterator[Callable[[Path], str] | str]:
    """A function giving a state dir's ssh:// URL through a test sshd on 127.0.0.1
    (tests/sshd.py, a root login with the lab's key, $HOME's ~/.ssh set up for it),
    or why there is none here."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from sshd import SshLab, ensure_test_user, missing_tools

    missing = missing_tools()
    if missing is not None:
        yield missing
        return
    ensure_test_user()
    lab = SshLab.create()
    home = Path(tempfile.mkdtemp(prefix="home-", dir=workdir))
    saved = {name: os.environ.get(name) for name in ("HOME", "SSH_AUTH_SOCK")}
    try:
        server = lab.start_server("attach")
        (home / ".ssh").mkdir(mode=0o700)
        shutil.copy(lab.client_key, home / ".ssh" / "id_ed25519")
        shutil.copy(lab.known_hosts, home / ".ssh" / "known_hosts")
        os.environ["HOME"] = str(home)
        os.environ.pop("SSH_AUTH_SOCK", None)
        yield lambda state: f"ssh://root@127.0.0.1:{server.port}{state.resolve()}"
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        lab.close()


def attach_figures(
    workdir: Path, tasks: int, presses: int, env: dict[str, str]
) -> dict[str, dict[str, float] | str]:
    """Connect-to-first-snapshot and command round trips on a fleet of `tasks`
    running: through its socket here, and over SSH (127.0.0.1) if sshd can run."""
    run = Path(tempfile.mkdtemp(prefix="attach10k-", dir=workdir))
    config = run / "fleet.toml"
    write_noop_fleet(config, tasks, slots=2)
    config.write_text(
        config.read_text().replace('command = ["true"]', 'command = ["sleep", "600"]')
    )
    state = run / ".fleetdeck"
    pid = _pid_of(_cli("start", str(config), env=env))
    figures: dict[str, dict[str, float] | str] = {}
    try:
        figures["socket"] = _figures(state, tasks, presses)
        with _over_ssh(workdir) as ssh:
            figures["ssh"] = ssh if isinstance(ssh, str) else _figures(ssh(state), tasks, presses)
    finally:
        _cli("stop", str(state), "--now", env=env)
        _wait_exit(pid)
    return figures


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
    found = attach_figures(workdir, big, 40 if settings.quick else 100, env)
    figures = found["socket"]
    assert isinstance(figures, dict)
    ssh = found["ssh"]
    if isinstance(ssh, str):
        print(f"over SSH: not measured ({ssh})")

    def over_ssh(key: str, digits: int) -> str:
        return "-" if isinstance(ssh, str) else f"{ssh[key] * 1000:.{digits}f} ms"

    print(
        table(
            [f"{big} tasks", "socket: median or p50", "p95", "over SSH: median or p50", "p95"],
            [
                [
                    "connect to first snapshot",
                    f"{figures['attach'] * 1000:.0f} ms",
                    "-",
                    over_ssh("attach", 0),
                    "-",
                ],
                [
                    "command round trip (pause/resume)",
                    f"{figures['p50'] * 1000:.1f} ms",
                    f"{figures['p95'] * 1000:.1f} ms",
                    over_ssh("p50", 1),
                    over_ssh("p95", 1),
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
    rows = []
    if not isinstance(ssh, str):
        rows.append(
            SummaryRow(
                "9e. over SSH",
                f"attach {ssh['attach'] * 1000:.0f} ms, p95 {ssh['p95'] * 1000:.1f} ms",
                detail=f"{big} tasks, 127.0.0.1 sshd; socket here: attach "
                f"{figures['attach'] * 1000:.0f} ms, p95 {figures['p95'] * 1000:.1f} ms",
            )
        )
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
        *rows,
    ]


if __name__ == "__main__":
    args = parse_settings(__doc__ or "", sys.argv[1:])
    rows = measure(Settings(quick=args.quick, workdir=args.workdir))
    for row in rows:
        print(row)
