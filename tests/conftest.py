"""Shared helpers: fleets built in code, engines run with real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from fleetdeck.config import Fleet, build_fleet
from fleetdeck.engine import Engine, RunResult
from fleetdeck.executors import build_executors
from fleetdeck.journal import Journal
from fleetdeck.model import Event, EventKind
from sshd import processes_matching

PYTHON = sys.executable


def make_fleet(
    base_dir: Path,
    tasks: list[dict[str, Any]],
    *,
    agents: dict[str, dict[str, Any]] | None = None,
    runners: dict[str, dict[str, Any]] | None = None,
    **fleet: Any,
) -> Fleet:
    """A validated fleet from plain dicts (the shape of the TOML file)."""
    settings = {"name": "test", "state_dir": "state", "grace_period": 0.5, "retry_backoff": 0.05}
    settings.update(fleet)
    data = {
        "fleet": settings,
        "agents": agents or {"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 4}},
        "runners": runners or {},
        "tasks": tasks,
    }
    return build_fleet(data, source="test.toml", base_dir=base_dir)


@dataclass
class Run:
    """A finished engine run: its result, events and journal directory."""

    result: RunResult
    events: list[Event]
    state_dir: Path
    engine: Engine

    def of(self, kind: EventKind, task: str | None = None, **data: Any) -> list[Event]:
        """Events of `kind` (for `task`, with these data values), in order."""
        return [
            e
            for e in self.events
            if e.kind is kind
            and (task is None or e.task == task)
            and all(e.data.get(k) == v for k, v in data.items())
        ]

    def index(self, kind: EventKind, task: str | None = None, **data: Any) -> int:
        """Position in the stream of the first matching event."""
        for i, e in enumerate(self.events):
            if (
                e.kind is kind
                and (task is None or e.task == task)
                and all(e.data.get(k) == v for k, v in data.items())
            ):
                return i
        raise AssertionError(f"no {kind} event for {task} {data}")

    def state(self, task: str) -> str:
        """The task's final state in the engine."""
        return str(self.engine.task(task).state)

    def story(self, task: str) -> str:
        """The task's events, one a line: what an assertion about it shows when
        it fails (a failure seen only on a loaded machine needs its story)."""
        return "\n".join(f"{e.kind} {dict(e.data)}" for e in self.events if e.task == task)


@dataclass
class EngineHarness:
    """Builds engines on a temp state dir; tests call `run` or drive `start`."""

    tmp_path: Path
    journals: list[Journal] = field(default_factory=list)

    def engine(self, fleet: Fleet, **kwargs: Any) -> Engine:
        journal = Journal(self.tmp_path / "state")
        self.journals.append(journal)
        executors = kwargs.pop("executors", None) or build_executors(fleet)
        return Engine(fleet, journal=journal, executors=executors, **kwargs)

    async def run(
        self,
        fleet: Fleet,
        *,
        during: Callable[[Engine, Event], None] | None = None,
        until_settled: bool = True,
        **kwargs: Any,
    ) -> Run:
        """Run `fleet` to the end; `during(engine, event)` sees every event as it comes."""
        engine = self.engine(fleet, **kwargs)
        events: list[Event] = []

        def listen(event: Event) -> None:
            events.append(event)
            if during is not None:
                during(engine, event)

        engine.subscribe(listen)
        result = await engine.run(until_settled=until_settled)
        return Run(result=result, events=events, state_dir=self.tmp_path / "state", engine=engine)

    def close(self) -> None:
        for journal in self.journals:
            journal.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[EngineHarness]:
    h = EngineHarness(tmp_path)
    yield h
    h.close()


def wait_for_file(path: Path, timeout: float = 10.0) -> str:
    """Poll until `path` exists and is non-empty; return its text."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            text = path.read_text()
            if text.endswith("\n"):
                return text
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout}s")


def alive(pid: int) -> bool:
    """True when `pid` runs (a zombie is dead: only its parent has yet to reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_dead(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of `pids` is alive; return those still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


# A Python agent that builds the process tree supervisors lose: a child that
# ignores SIGTERM, a child that called setsid() (so it left the process group)
# and also ignores SIGTERM, and a grandchild under that one. It writes every pid
# to $PIDFILE, then waits forever.
TREE_AGENT = r"""
import os, signal, sys, time
pidfile = sys.argv[1]
def spawn(setsid, depth):
    pid = os.fork()
    if pid == 0:
        if setsid:
            os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if depth > 0:
            child = spawn(False, depth - 1)
            with open(pidfile, "a") as f:
                f.write(f"{child}\n")
        while True:
            time.sleep(1)
    return pid
a = spawn(False, 0)
b = spawn(True, 1)
with open(pidfile, "a") as f:
    f.write(f"{os.getpid()}\n{a}\n{b}\n")
time.sleep(0.2)
with open(pidfile + ".ready", "w") as f:
    f.write("ready\n")
while True:
    time.sleep(1)
"""


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@pytest.fixture
def tree_agent(tmp_path: Path) -> Path:
    script = tmp_path / "tree_agent.py"
    script.write_text(TREE_AGENT)
    return script


def env_without_fleetdeck() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLEETDECK_")}


def must_have(reason: str | None) -> None:
    """Skip for `reason` (a missing tool), or fail in CI, which must run everything."""
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"SSH tests must run in CI: {reason}")
        pytest.skip(reason)


async def wait_for_text(path: Path, text: str, timeout: float = 30.0) -> str:
    """Poll `path` (a local attempt log) until it holds `text`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            content = path.read_text()
            if text in content:
                return content
        await asyncio.sleep(0.05)
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout}s")


async def wait_gone(marker: str, timeout: float = 20.0) -> list[str]:
    """Wait until `ps` on the host (this machine) shows no process with `marker`;
    return what is left."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not processes_matching(marker):
            return []
        await asyncio.sleep(0.1)
    return processes_matching(marker)


def tree_script(marker: str) -> str:
    """An attempt (a sh script) that builds the trees supervisors lose, all ignoring SIGTERM:
    a child in the group, a child that left it with setsid (and its child), and a
    daemon orphaned by a setsid'ed parent that exits at once. Pids go to stdout."""
    return f"""
trap '' TERM
sleep {marker} & echo "pid $!"
setsid sh -c 'sleep {marker} & echo "pid $!"; echo "pid $$"; wait' &
setsid sh -c 'sleep {marker} & echo "pid $!"' &
echo "pid $$"
sleep 0.5
echo ready
wait
"""
