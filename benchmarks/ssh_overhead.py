"""Per-task overhead on an SSH host: fleetdeck against plain `ssh host true`.

Starts its own sshd on 127.0.0.1 (tests/sshd.py: throwaway keys, the
`fleetdeck-test` user; run it as root, like the SSH tests), then, alternating
the contenders within each repetition:

- fleetdeck: `fleetdeck run --no-tui` of N no-op tasks (`true`) on that host,
  with 1 slot and with 4 slots. One process start, one SSH connection, then a
  channel per task (the remote wrapper runs each `true`).
- ssh: `ssh -p PORT -i KEY -o BatchMode=yes fleetdeck-test@127.0.0.1 true`, N
  times one after the other, and N times 4 at a time. A connection per task.

Per-task overhead is wall time / N (a no-op task costs nothing but overhead);
for fleetdeck also the marginal cost, (T(N) - T(10)) / (N - 10), which leaves
out its start-up (interpreter, imports, journal, the first connection).
Medians over the repetitions.

    python benchmarks/ssh_overhead.py [--tasks 200] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sshd import TEST_USER, SshLab, SshServer, ensure_test_user, missing_tools  # noqa: E402


def fleet_config(directory: Path, server: SshServer, tasks: int, slots: int) -> Path:
    """A fleet of `tasks` no-op tasks on the lab's host, `slots` at a time."""
    lab = server.lab
    lines = [
        "[fleet]",
        f'name = "ssh-overhead-{tasks}-{slots}"',
        'state_dir = "state"',
        "grace_period = 1",
        "",
        "[hosts.box]",
        'address = "127.0.0.1"',
        f"port = {server.port}",
        f'user = "{TEST_USER}"',
        f'identity = "{lab.client_key}"',
        f'known_hosts = "{lab.known_hosts}"',
        "",
        "[agents.noop]",
        'command = ["true"]',
        'host = "box"',
        f"slots = {slots}",
        "",
    ]
    for i in range(tasks):
        lines += ["[[tasks]]", f'id = "t{i}"', 'agent = "noop"', ""]
    path = directory / f"fleet-{tasks}-{slots}.toml"
    path.write_text("\n".join(lines))
    return path


def time_fleetdeck(config: Path) -> float:
    """Wall time of one `fleetdeck run --no-tui` (fails loudly unless every task succeeded)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fleetdeck", "run", str(config), "--no-tui"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"fleetdeck run failed ({done.returncode}): {done.stderr}")
    return elapsed


def time_ssh(server: SshServer, tasks: int, parallel: int) -> float:
    """Wall time of `tasks` runs of `ssh ... true`, `parallel` at a time."""
    argv = server.ssh_argv("true")

    def one(_: int) -> None:
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, range(tasks)))
    return time.perf_counter() - started


def main() -> int:
    """Run the benchmark and print per-task overheads and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    reason = missing_tools()
    if reason is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    ensure_test_user()
    lab = SshLab.create()
    n = args.tasks
    small = 10
    times: dict[str, list[float]] = {}
    try:
        server = lab.start_server("box")
        with tempfile.TemporaryDirectory(prefix="fleetdeck-bench-") as scratch:
            directory = Path(scratch)
            contenders = {
                "fleetdeck slots=1": lambda: time_fleetdeck(fleet_config(directory, server, n, 1)),
                "ssh sequential": lambda: time_ssh(server, n, 1),
                "fleetdeck slots=4": lambda: time_fleetdeck(fleet_config(directory, server, n, 4)),
                "ssh 4 parallel": lambda: time_ssh(server, n, 4),
                f"fleetdeck slots=1, {small} tasks": lambda: time_fleetdeck(
                    fleet_config(directory, server, small, 1)
                ),
                f"fleetdeck slots=4, {small} tasks": lambda: time_fleetdeck(
                    fleet_config(directory, server, small, 4)
                ),
            }
            # Warm up caches (sshd's, the interpreter's) before measuring anything.
            time_ssh(server, 5, 1)
            time_fleetdeck(fleet_config(directory, server, small, 1))
            for rep in range(args.reps):
                for name, measure in contenders.items():
                    times.setdefault(name, []).append(measure())
                print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    finally:
        lab.close()

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"{n} no-op tasks on one SSH host (127.0.0.1), median of {args.reps} repetitions")
    print(f"{'':28} {'wall s':>8} {'per task ms':>12}")
    for name in ("fleetdeck slots=1", "ssh sequential", "fleetdeck slots=4", "ssh 4 parallel"):
        print(f"{name:28} {median[name]:8.2f} {1000 * median[name] / n:12.1f}")
    for slots, ssh_name in ((1, "ssh sequential"), (4, "ssh 4 parallel")):
        whole = median[f"fleetdeck slots={slots}"]
        marginal = (whole - median[f"fleetdeck slots={slots}, {small} tasks"]) / (n - small)
        ssh_each = median[ssh_name] / n
        print(
            f"slots={slots}: fleetdeck {1000 * whole / n:.1f} ms/task "
            f"({1000 * marginal:.1f} ms marginal, start-up excluded) vs "
            f"{ssh_name} {1000 * ssh_each:.1f} ms/task: ssh costs "
            f"{ssh_each / (whole / n):.1f}x fleetdeck ({ssh_each / marginal:.1f}x marginal)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
