"""fleetdeck's TUI under a flood: key-press-to-repaint latency, CPU and memory.

    .venv/bin/python benchmarks/ui.py [--quick] [--src LABEL=DIR ...]

The target (our performance issue): with 10,000 tasks and 50 agents each printing
200 lines a second, key-press-to-repaint p95 at most 50 ms and fleetdeck at most
half of one core.

How it measures. A fleet of 10,000 tasks (each depends on 0-2 of the 200 before
it, so there are several waves) on one agent with 50 slots, whose command is
benchmarks/chatty_agent.py: 200 lines a second of 80-120 characters for 60-120 s,
then exit 0. The same fleet with agents that print nothing is the baseline
("quiet"). The real `fleetdeck run CONFIG` runs in a detached tmux session of
200x60 cells with TERM=xterm-256color, so it renders to a real terminal emulator.

- Latency: send a key with `tmux send-keys` and poll `tmux capture-pane -p` until
  its effect is on the screen. Keys: `p` (the header toggles between "▶ running"
  and "⏸ paused") and, in the filter box, a digit then backspace (the queue's title
  gains and loses "N match '7'"; each keystroke refilters 10,000 tasks). Random
  gaps between presses. A latency runs from just before `tmux send-keys` starts
  to the end of the first capture that shows the change: it includes one tmux
  client start-up and up to one capture of polling, and nothing is subtracted;
  both are printed, so the reader knows the resolution.
- CPU: the fleetdeck process's own user+system time (psutil, not its children's)
  over a hands-off window, and over the key presses, as a fraction of one core;
  its RSS at the end of the window. The agents' output is measured too (bytes the
  logs grew by / 101, the mean line with its newline), to show the flood was real.
- Engine.snapshot(): the time of one call at 10,000 tasks, in this process (the
  TUI calls it for every refresh and every key that acts).

Quiet and chatty runs alternate (who goes first rotates per round), and with
`--src`, so do the source trees: `--src before=/tmp/old/src --src after=src` runs
fleetdeck from each tree (through PYTHONPATH) side by side. Nothing here is
pass/fail on exit: the summary compares with the targets, as information; the
exit code is 0 unless a run crashed or left processes behind.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import psutil
from fleets import write_chatty_fleet

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
AGENT = HERE / "chatty_agent.py"

TASKS = 10_000
SLOTS = 50
RATE = 200.0  # lines per second per chatty agent
AGENT_SECONDS = (60.0, 120.0)
MEAN_LINE_BYTES = 101  # chatty_agent.py: 80-120 characters and a newline
WIDTH, HEIGHT = 200, 60
LATENCY_TARGET = 0.050
CPU_TARGET = 0.5
KEY_TIMEOUT = 10.0
START_TIMEOUT = 180.0
QUIT_TIMEOUT = 60.0
FILTER_DIGIT = "7"


@dataclass(frozen=True)
class Settings:
    """How much to measure."""

    label: str
    presses: int  # per key series and run
    cpu_window: float  # seconds, hands off
    rounds: int


FULL = Settings("full", presses=40, cpu_window=20.0, rounds=2)
QUICK = Settings("quick", presses=20, cpu_window=10.0, rounds=1)


class BenchmarkError(RuntimeError):
    """Something did not run as it must; the numbers would be lies."""


# --- tmux ---------------------------------------------------------------------------------


class Tmux:
    """A private tmux server (its own socket, no user config) with one session."""

    def __init__(self, workdir: Path) -> None:
        path = shutil.which("tmux")
        if path is None:
            raise BenchmarkError("tmux is not installed (apt-get install -y tmux)")
        self.socket = f"fleetdeck-bench-{os.getpid()}-{random.randrange(1 << 30)}"
        self.config = workdir / "tmux.conf"
        # A pane whose program died stays, so its last screen can be shown.
        self.config.write_text("set -g remain-on-exit on\nset -g status off\n")
        self.base = [path, "-L", self.socket, "-f", str(self.config)]
        self.target = "bench"
        self.capture_times: list[float] = []
        self.send_times: list[float] = []

    def run(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, check=False, timeout=30)
        if done.returncode != 0:
            raise BenchmarkError(f"tmux {' '.join(args)}: {done.stderr.decode().strip()}")
        return done.stdout.decode(errors="replace")

    def start(self, command: str) -> int:
        """Start `command` in a WIDTHxHEIGHT session; the pid of the pane's process."""
        self.run(
            "new-session", "-d", "-s", self.target, "-x", str(WIDTH), "-y", str(HEIGHT), command
        )
        return int(self.run("display-message", "-p", "-t", self.target, "#{pane_pid}").strip())

    def send(self, *keys: str) -> None:
        started = time.perf_counter()
        self.run("send-keys", "-t", self.target, *keys)
        self.send_times.append(time.perf_counter() - started)

    def capture(self, first: int | None = None, last: int | None = None) -> str:
        """The pane's text (lines `first`..`last` only, when given)."""
        span = [] if first is None else ["-S", str(first), "-E", str(last)]
        started = time.perf_counter()
        text = self.run("capture-pane", "-p", "-t", self.target, *span)
        self.capture_times.append(time.perf_counter() - started)
        return text

    def kill(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, check=False, timeout=30)


def wait_for(
    tmux: Tmux,
    seen: Callable[[str], bool],
    timeout: float,
    what: str,
    lines: tuple[int, int] | None = None,
) -> float:
    """Poll the screen until `seen(text)`; the perf_counter time of the capture's end."""
    deadline = time.perf_counter() + timeout
    while True:
        text = tmux.capture(*lines) if lines else tmux.capture()
        now = time.perf_counter()
        if seen(text):
            return now
        if now > deadline:
            screen = tmux.capture()
            raise BenchmarkError(f"timed out waiting for {what}; the screen:\n{screen}")


# --- one run of fleetdeck ------------------------------------------------------------------


@dataclass
class RunResult:
    """What one fleetdeck session measured."""

    source: str
    fleet: str
    startup: float = 0.0
    cpu_idle: float = 0.0  # fraction of one core, hands off
    cpu_keys: float = 0.0  # fraction of one core while keys were pressed
    rss: int = 0
    lines_per_second: float = 0.0
    load: float = 0.0
    quit_seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    timeouts: int = 0
    leftovers: list[str] = field(default_factory=list)
    capture: float = 0.0  # median seconds per `tmux capture-pane`
    send: float = 0.0  # median seconds per `tmux send-keys`


@dataclass(frozen=True)
class Contestant:
    """A source tree of fleetdeck (None: the installed one) on a fleet config."""

    source: str
    src: Path | None
    fleet: str
    config: Path


def fleetdeck_command(contestant: Contestant, state: Path) -> str:
    """The shell command tmux runs: fleetdeck, exec'd, so the pane's pid is fleetdeck's."""
    script = BIN / "fleetdeck"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "fleetdeck"]
    env = ["TERM=xterm-256color", "COLORTERM=truecolor"]
    if contestant.src is not None:
        env.append(f"PYTHONPATH={contestant.src}")
    words = ["exec", "env", *env, *argv, "run", str(contestant.config), "--state-dir", str(state)]
    return " ".join(shlex.quote(word) for word in words)


def log_bytes(state: Path) -> int:
    """Total size of the attempt logs under `state`."""
    total = 0
    for root, _, files in os.walk(state):
        for name in files:
            if name.endswith(".log"):
                with contextlib.suppress(OSError):  # gone meanwhile
                    total += os.stat(os.path.join(root, name)).st_size
    return total


def cpu_seconds(process: psutil.Process) -> float:
    """The process's own CPU time (user + system), children excluded."""
    times = process.cpu_times()
    return times.user + times.system


def ended(process: psutil.Process, timeout: float) -> bool:
    """Wait until `process` has exited (a zombie counts: tmux reaps it when it likes)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def agents_of(marker: str) -> list[psutil.Process]:
    """Every live chatty agent started for this run (its argv holds `marker`)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if str(AGENT) in cmdline and any(marker in part for part in cmdline):
            found.append(proc)
    return found


class Session:
    """One fleetdeck in tmux: start, measure, quit, check nothing is left."""

    def __init__(self, contestant: Contestant, workdir: Path, settings: Settings) -> None:
        self.contestant = contestant
        self.settings = settings
        self.state = workdir / f"state-{contestant.source}-{contestant.fleet}-{time.time_ns()}"
        self.tmux = Tmux(workdir)
        self.result = RunResult(contestant.source, contestant.fleet)
        self.rng = random.Random()
        self.process: psutil.Process | None = None
        self.queue_title_line = -1

    def run(self) -> RunResult:
        try:
            self._start()
            self._measure_cpu()
            started = time.perf_counter()
            assert self.process is not None
            cpu_before = cpu_seconds(self.process)
            self.result.latencies["p"] = self._pause_presses()
            self.result.latencies["filter"] = self._filter_presses()
            self.result.cpu_keys = (cpu_seconds(self.process) - cpu_before) / (
                time.perf_counter() - started
            )
            self._quit()
        finally:
            self._clean_up()
        self.result.capture = statistics.median(self.tmux.capture_times)
        self.result.send = statistics.median(self.tmux.send_times)
        return self.result

    def _start(self) -> None:
        began = time.perf_counter()
        pid = self.tmux.start(fleetdeck_command(self.contestant, self.state))
        self.process = psutil.Process(pid)
        # The pane's shell execs fleetdeck: on a busy machine, not yet.
        deadline = time.perf_counter() + KEY_TIMEOUT
        while not any("fleetdeck" in part for part in self.process.cmdline()):
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"pid {pid} is not fleetdeck: {self.process.cmdline()}")
            time.sleep(0.01)
        wait_for(
            self.tmux,
            lambda text: "▶ running" in text and f"In flight · {SLOTS} agent" in text,
            START_TIMEOUT,
            f"{SLOTS} agents in flight",
        )
        self.result.startup = time.perf_counter() - began
        screen = self.tmux.capture().splitlines()
        self.queue_title_line = next(i for i, line in enumerate(screen) if "Queue ·" in line)
        time.sleep(3.0)  # let the launches settle

    def _measure_cpu(self) -> None:
        assert self.process is not None
        logs_before, cpu_before = log_bytes(self.state), cpu_seconds(self.process)
        started = time.perf_counter()
        time.sleep(self.settings.cpu_window)
        elapsed = time.perf_counter() - started
        self.result.cpu_idle = (cpu_seconds(self.process) - cpu_before) / elapsed
        self.result.rss = self.process.memory_info().rss
        self.result.lines_per_second = (
            (log_bytes(self.state) - logs_before) / MEAN_LINE_BYTES / elapsed
        )
        self.result.load = os.getloadavg()[0]

    def _press(self, keys: Sequence[str], seen: Callable[[str], bool], lines: int) -> float:
        """Send `keys`, wait until `seen` on screen line `lines`: the latency in seconds."""
        time.sleep(self.rng.uniform(0.2, 1.0))
        started = time.perf_counter()
        self.tmux.send(*keys)
        try:
            shown = wait_for(self.tmux, seen, KEY_TIMEOUT, f"keys {keys}", (lines, lines))
        except BenchmarkError:
            self.result.timeouts += 1
            return KEY_TIMEOUT
        return shown - started

    def _pause_presses(self) -> list[float]:
        """`p` pauses, `p` resumes: the header line says which (an even count: ends running)."""
        latencies = []
        for number in range(self.settings.presses + self.settings.presses % 2):
            wanted = "⏸ paused" if number % 2 == 0 else "▶ running"
            latencies.append(self._press(["p"], lambda text, w=wanted: w in text, 0))
        return latencies

    def _filter_presses(self) -> list[float]:
        """In the filter box, type a digit, erase it, again: the queue's title follows."""
        line = self.queue_title_line
        self.tmux.send("/")
        wait_for(self.tmux, lambda text: "filter: task" in text, KEY_TIMEOUT, "the filter box")
        latencies = []
        match = f"match '{FILTER_DIGIT}'"
        for number in range(self.settings.presses + self.settings.presses % 2):
            if number % 2 == 0:
                latencies.append(self._press([FILTER_DIGIT], lambda text: match in text, line))
            else:
                latencies.append(self._press(["BSpace"], lambda text: "match" not in text, line))
        self.tmux.send("Escape")
        wait_for(
            self.tmux, lambda text: "filter: task" not in text, KEY_TIMEOUT, "the filter to close"
        )
        return latencies

    def _quit(self) -> None:
        assert self.process is not None
        started = time.perf_counter()
        self.tmux.send("q")
        wait_for(self.tmux, lambda text: "Quit?" in text, KEY_TIMEOUT, "the quit question")
        self.tmux.send("y")
        if not ended(self.process, QUIT_TIMEOUT):
            raise BenchmarkError(f"fleetdeck did not quit within {QUIT_TIMEOUT:.0f} s")
        self.result.quit_seconds = time.perf_counter() - started

    def _clean_up(self) -> None:
        if self.process is not None and not ended(self.process, 0):
            with contextlib.suppress(psutil.Error):  # ours: started above, through tmux
                self.process.terminate()
                if not ended(self.process, QUIT_TIMEOUT):
                    self.process.kill()
        left = agents_of(str(self.contestant.config))
        self.result.leftovers = [f"{p.pid} {' '.join(p.cmdline())}" for p in left]
        for proc in left:  # started by this run's fleetdeck: ours to stop
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.tmux.kill()
        shutil.rmtree(self.state, ignore_errors=True)


# --- the engine's snapshot, in process -----------------------------------------------------


def time_snapshot(config: Path, workdir: Path, calls: int) -> list[float]:
    """Seconds per Engine.snapshot() on the fleet at `config` (before its run starts)."""
    from fleetdeck.config import load_fleet
    from fleetdeck.engine import Engine
    from fleetdeck.journal import Journal

    journal = Journal(workdir / "snapshot-state")
    try:
        engine = Engine(load_fleet(config), journal=journal, executors={}, sample_interval=None)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            engine.snapshot()
            times.append(time.perf_counter() - started)
        return times
    finally:
        journal.close()


# --- output -------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table: first columns left, the others right."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for number, row in enumerate([header, *rows]):
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: p95 of 40 values is the 38th smallest."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def group(results: Sequence[RunResult]) -> dict[tuple[str, str], list[RunResult]]:
    grouped: dict[tuple[str, str], list[RunResult]] = {}
    for result in results:
        grouped.setdefault((result.source, result.fleet), []).append(result)
    return grouped


def samples(runs: Sequence[RunResult], key: str) -> list[float]:
    """The latencies of `key` ("all": every key) over `runs`."""
    return [v for r in runs for k, vs in r.latencies.items() if key in ("all", k) for v in vs]


def latency_table(results: Sequence[RunResult]) -> str:
    rows = []
    for (source, fleet), runs in group(results).items():
        for key in ("p", "filter", "all"):
            values = samples(runs, key)
            if not values:
                continue
            per_run = [percentile(samples([r], key), 0.95) for r in runs]
            rows.append(
                [
                    source,
                    fleet,
                    key,
                    f"{len(values)}",
                    ms(statistics.median(values)),
                    ms(percentile(values, 0.95)),
                    ms(max(values)),
                    " ".join(ms(v) for v in per_run),
                ]
            )
    header = ["source", "fleet", "key", "n", "p50", "p95", "max", "p95 per run"]
    return table(header, rows)


def process_table(results: Sequence[RunResult]) -> str:
    rows = []
    for (source, fleet), runs in group(results).items():
        idle = [r.cpu_idle for r in runs]
        rows.append(
            [
                source,
                fleet,
                f"{statistics.median(idle):.2f}",
                " ".join(f"{v:.2f}" for v in idle),
                f"{statistics.median(r.cpu_keys for r in runs):.2f}",
                f"{statistics.median(r.rss for r in runs) / 2**20:.0f} MiB",
                f"{statistics.median(r.lines_per_second for r in runs):,.0f}",
                f"{statistics.median(r.startup for r in runs):.1f} s",
                f"{statistics.median(r.quit_seconds for r in runs):.1f} s",
                " ".join(f"{r.load:.2f}" for r in runs),
            ]
        )
    header = [
        "source",
        "fleet",
        "cpu hands off",
        "per run",
        "cpu keys",
        "rss",
        "agent lines/s",
        "startup",
        "quit",
        "load avg",
    ]
    return table(header, rows)


def summary_table(results: Sequence[RunResult]) -> str:
    def verdict(ok: bool) -> str:
        return "yes" if ok else "NO"

    rows = []
    for (source, fleet), runs in group(results).items():
        if fleet != "chatty":
            continue
        p95 = percentile(samples(runs, "all"), 0.95)
        cpu = statistics.median(r.cpu_idle for r in runs)
        rows.append(
            [
                source,
                "key p95, every key",
                f"{ms(p95)} ms",
                f"<= {ms(LATENCY_TARGET)} ms",
                verdict(p95 <= LATENCY_TARGET),
            ]
        )
        rows.append(
            [
                source,
                "cpu, hands off",
                f"{cpu:.2f} core",
                f"<= {CPU_TARGET:.2f}",
                verdict(cpu <= CPU_TARGET),
            ]
        )
    return table(["source", "measure", "value", "target", "meets"], rows)


def _version() -> str:
    try:
        return metadata.version("fleetdeck")
    except metadata.PackageNotFoundError:
        return "?"


def parse_source(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=DIR, got {text!r}")
    src = Path(path).resolve()
    if not (src / "fleetdeck" / "__init__.py").exists():
        raise argparse.ArgumentTypeError(f"{src} has no fleetdeck package")
    return label, src


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer presses, one round")
    parser.add_argument(
        "--src",
        type=parse_source,
        action="append",
        metavar="LABEL=DIR",
        help="run fleetdeck from this source tree (repeat to compare trees side by side)",
    )
    parser.add_argument(
        "--fleet",
        choices=("quiet", "chatty"),
        action="append",
        help="only this fleet (default: both)",
    )
    parser.add_argument("--workdir", type=Path, default=HERE / ".work")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    settings = QUICK if args.quick else FULL
    sources: list[tuple[str, Path | None]] = args.src or [("installed", None)]
    fleets = args.fleet or ["quiet", "chatty"]
    began = time.perf_counter()
    print(
        f"fleetdeck {_version()} UI benchmark ({settings.label}): Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start; tmux {WIDTH}x{HEIGHT}, TERM=xterm-256color"
    )
    args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-", dir=args.workdir) as temp:
        workdir = Path(temp)
        agent = [sys.executable, "-S", str(AGENT)]
        configs = {}
        for fleet in ("quiet", "chatty"):
            configs[fleet] = workdir / f"{fleet}.toml"
            rate = RATE if fleet == "chatty" else 0.0
            write_chatty_fleet(
                configs[fleet], agent, tasks=TASKS, slots=SLOTS, rate=rate, seconds=AGENT_SECONDS
            )
        print(
            f"fleet: {TASKS:,} tasks (each depends on 0-2 of the 200 before it), one agent "
            f"with {SLOTS} slots; chatty agents print {RATE:.0f} lines/s of 80-120 chars for "
            f"{AGENT_SECONDS[0]:.0f}-{AGENT_SECONDS[1]:.0f} s, quiet ones print nothing"
        )
        snapshot_times = time_snapshot(configs["chatty"], workdir, 20)
        contestants = [
            Contestant(label, src, fleet, configs[fleet])
            for label, src in sources
            for fleet in fleets
        ]
        results: list[RunResult] = []
        failed = False
        for round_number in range(settings.rounds):
            shift = round_number % len(contestants)
            for contestant in contestants[shift:] + contestants[:shift]:
                session = Session(contestant, workdir, settings)
                try:
                    result = session.run()
                except BenchmarkError as exc:
                    print(f"benchmark failed: {exc}", file=sys.stderr)
                    return 1
                results.append(result)
                every = samples([result], "all")
                print(
                    f"  round {round_number + 1}/{settings.rounds}  {contestant.source:<10} "
                    f"{contestant.fleet:<6}  cpu {result.cpu_idle:.2f} (keys "
                    f"{result.cpu_keys:.2f})  rss {result.rss / 2**20:.0f} MiB  keys p50 "
                    f"{ms(statistics.median(every))} p95 {ms(percentile(every, 0.95))} max "
                    f"{ms(max(every))} ms  {result.lines_per_second:,.0f} lines/s  load "
                    f"{result.load:.2f}"
                )
                if result.timeouts:
                    print(f"  note: {result.timeouts} key(s) not seen within {KEY_TIMEOUT:.0f} s")
                if result.leftovers:
                    failed = True
                    print(f"  LEFT BEHIND after quitting ({len(result.leftovers)} killed):")
                    for line in result.leftovers[:5]:
                        print(f"    {line}")

    print("\n== Key press to repaint (ms) ==")
    print(latency_table(results))
    capture = statistics.median(r.capture for r in results)
    send = statistics.median(r.send for r in results)
    print(
        f"from just before `tmux send-keys` to the end of the first `capture-pane` showing the "
        f"change; one capture takes {capture * 1000:.1f} ms and one send-keys "
        f"{send * 1000:.1f} ms (medians): the resolution, not subtracted"
    )
    print("\n== The fleetdeck process (its own CPU, not its agents'; fraction of one core) ==")
    print(process_table(results))
    print(
        f"\n== Engine.snapshot() at {TASKS:,} tasks, in process: median "
        f"{statistics.median(snapshot_times) * 1000:.1f} ms, min "
        f"{min(snapshot_times) * 1000:.1f} ms over {len(snapshot_times)} calls =="
    )
    print("\n== Summary (information; the exit code is 0 unless a run crashed) ==")
    print(summary_table(results))
    print(
        f"\ntotal {time.perf_counter() - began:.0f} s, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
