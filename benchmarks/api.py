"""8. API agents: N chat completions against the local server, within its rate limit.

    .venv/bin/python benchmarks/api.py [--quick]

The issue's measure: N API tasks against the local fake server
(`python -m fleetdeck.demo.api`, 20 ms to the first token, a 6,000
requests-per-minute limit) with an agent of 50 slots that knows the limit;
makespan against the bound max(N / rate, N x latency / slots) (target: within
5%), requests over the limit as the server counts them (target: 0), and
fleetdeck's CPU per request (user + system of the `fleetdeck run` process, from
its rusage). Side by side, alternating within each repetition: the same N calls
by a plain httpx asyncio loop with a semaphore of 50 (benchmarks/api_loop.py),
which learns the limit from its 429s.

N is 2,000 in the full run (the issue's figure: 20 s of requests at 100 a
second, 3 repetitions), 500 with --quick. Each run starts with the server's
bucket full (a pause of 2 s between runs) and its counters reset.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    HERE,
    BenchmarkError,
    Settings,
    SummaryRow,
    fleetdeck_argv,
    load_average,
    run_alone,
    table,
    verdict,
)

LATENCY = 0.02
RPM = 6000
SLOTS = 50
TARGET = 0.05


@dataclass(frozen=True)
class Size:
    tasks: int
    repetitions: int


FULL = Size(tasks=2000, repetitions=3)
QUICK = Size(tasks=500, repetitions=2)


@dataclass
class Tally:
    """One contestant's runs: wall times, requests over the limit, CPU seconds."""

    name: str
    times: list[float] = field(default_factory=list)
    over: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


class Server:
    """The local API server, started for the section and stopped after it."""

    def __init__(self) -> None:
        argv = [sys.executable, "-m", "fleetdeck.demo.api", "--port", "0"]
        argv += ["--latency", str(LATENCY), "--chunk-delay", "0", "--words", "8"]
        argv += ["--rpm", str(RPM)]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().split()[-1]

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/stats", timeout=10) as answer:
            result: dict[str, int] = json.load(answer)
            return result

    def reset(self) -> None:
        time.sleep(2.0)  # the bucket refills: every run starts alike
        request = urllib.request.Request(self.url + "/stats/reset", data=b"", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def write_fleet(path: Path, base_url: str, n: int) -> None:
    lines = [
        "[fleet]",
        'name = "api-bench"',
        "",
        "[agents.model]",
        'kind = "openai"',
        'model = "local"',
        f'base_url = "{base_url}/v1"',
        "max_tokens = 64",
        f"slots = {SLOTS}",
        f"requests_per_minute = {RPM}",
    ]
    for i in range(n):
        lines += ["", "[[tasks]]", f'id = "t{i}"', 'agent = "model"', f'prompt = "item {i}"']
    path.write_text("\n".join(lines) + "\n")


def timed(argv: list[str]) -> float:
    """Run `argv` to its end; its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, timeout=900, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise BenchmarkError(f"`{' '.join(argv)}` exited with {done.returncode}\n{tail}")
    return elapsed


def measure(settings: Settings) -> list[SummaryRow]:
    """Alternate fleetdeck and the plain loop; print the table; summary rows."""
    import resource

    size = QUICK if settings.quick else FULL
    n = size.tasks
    bound = max(n / (RPM / 60.0), n * LATENCY / SLOTS)
    print(
        f"\n== 8. API agents: {n} calls, {SLOTS} slots, {RPM} requests/min, "
        f"{LATENCY * 1000:.0f} ms latency, {size.repetitions} repetitions "
        f"(load average {load_average():.2f}); bound {bound:.2f} s =="
    )
    server = Server()
    fleetdeck = Tally("fleetdeck run --no-tui")
    plain = Tally("httpx loop + semaphore")
    try:
        config = settings.workdir / f"api-bench-{n}.toml"
        write_fleet(config, server.url, n)
        for rep in range(size.repetitions):
            order = [fleetdeck, plain] if rep % 2 == 0 else [plain, fleetdeck]
            for tally in order:
                server.reset()
                state = settings.workdir / f"api-state-{rep}"
                if tally is fleetdeck:
                    argv = [*fleetdeck_argv(), "run", str(config), "--no-tui", "--fresh"]
                    argv += ["--state-dir", str(state)]
                else:
                    argv = [sys.executable, str(HERE / "api_loop.py"), server.url + "/v1"]
                    argv += [str(n), str(SLOTS)]
                # CPU of the contestant's process: what its rusage adds to our children's.
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                elapsed = timed(argv)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                stats = server.stats()
                if stats["completed"] != n:
                    raise BenchmarkError(f"{tally.name}: {stats['completed']} of {n} completed")
                tally.times.append(elapsed)
                tally.over.append(stats["over_limit"])
                tally.cpu.append(cpu)
                print(
                    f"  rep {rep + 1}/{size.repetitions}  {tally.name:<26} {elapsed:7.2f} s  "
                    f"over limit {stats['over_limit']:5d}  cpu {cpu:6.2f} s"
                )
                if tally is fleetdeck:
                    subprocess.run(["rm", "-rf", str(state)], check=False)
    finally:
        server.close()
    rows = []
    for tally in (fleetdeck, plain):
        cpu_ms = statistics.median(tally.cpu) * 1000 / n
        rows.append(
            [
                tally.name,
                f"{tally.median:.2f} s",
                f"{tally.median / bound:.3f}",
                str(max(tally.over)),
                f"{cpu_ms:.2f} ms",
            ]
        )
    print(table(["contestant", "makespan", "/ bound", "over limit (max)", "cpu/request"], rows))
    ratio = fleetdeck.median / bound
    return [
        SummaryRow(
            "8a API makespan / bound",
            f"{ratio:.3f}",
            f"<= {1 + TARGET:.2f}",
            verdict(ratio, 1 + TARGET),
            f"{n} calls; plain loop {plain.median / bound:.3f}",
        ),
        SummaryRow(
            "8b API requests over the limit",
            str(max(fleetdeck.over)),
            "0",
            verdict(max(fleetdeck.over), 0),
            f"server's count; plain loop {max(plain.over)}",
        ),
        SummaryRow(
            "8c fleetdeck CPU per API request",
            f"{statistics.median(fleetdeck.cpu) * 1000 / n:.2f} ms",
            detail=f"plain loop {statistics.median(plain.cpu) * 1000 / n:.2f} ms (with the server"
            f" on the same {os.cpu_count()} cores)",
        ),
    ]


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__ or ""))
