"""What the detach/attach tests share: a fleet file of real agents, the CLI in
a subprocess, and the supervisors a test started, stopped at its end (no orphans)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetdeck.cli import main


def write_fleet(tmp_path: Path, tasks: list[dict[str, object]], *, slots: int = 2) -> Path:
    """A fleet file whose agent runs each task's prompt as a shell script (its
    `script` key, default `true`)."""
    lines = [
        '[fleet]\nname = "bg"\nstate_dir = "state"\nretry_backoff = 0.0\n',
        "[agents.coder]\n"
        f'command = ["sh", "-c", "eval \\"$FLEETDECK_PROMPT\\""]\nslots = {slots}\n',
    ]
    for task in tasks:
        script = json.dumps(str(task.get("script", "true")))
        deps = json.dumps(task.get("depends_on", []))
        lines.append(
            f'[[tasks]]\nid = "{task["id"]}"\nagent = "coder"\nprompt = {script}\n'
            f"depends_on = {deps}\nretries = {task.get('retries', 0)}\n"
        )
    path = tmp_path / "fleet.toml"
    path.write_text("\n".join(lines))
    return path


def cli(
    *args: str, timeout: float = 60.0, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`fleetdeck ARGS` in a subprocess (the environment's registry)."""
    return subprocess.run(
        [sys.executable, "-m", "fleetdeck", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not in {timeout}s")
        time.sleep(0.05)


class Supervisors:
    """Supervisors started by a test (by `fleetdeck start`); stopped at the end."""

    def __init__(self) -> None:
        self.pids: list[int] = []

    def start(self, config: Path, *extra: str) -> int:
        result = cli("start", str(config), *extra)
        assert result.returncode == 0, result.stderr
        pid = int(result.stdout.split("supervisor pid ")[1].split(")")[0])
        self.pids.append(pid)
        return pid

    def note(self, pid: int) -> None:
        self.pids.append(pid)

    def finish(self) -> list[int]:
        """Stop what still runs: SIGTERM (the supervisor stops its attempts), then
        SIGKILL to its session; returns the pids that had to be stopped."""
        left = [pid for pid in self.pids if alive(pid)]
        for pid in left:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in left) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)
        return left


@pytest.fixture
def supervisors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Supervisors]:
    """A registry of this test's own ($XDG_RUNTIME_DIR), and its supervisors stopped after."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    kept = Supervisors()
    yield kept
    kept.finish()


def report(state_dir: Path) -> dict[str, object]:
    result = main_json(["report", str(state_dir), "--json"])
    return result


def main_json(args: list[str]) -> dict[str, object]:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


__all__ = [
    "Supervisors",
    "alive",
    "cli",
    "main",
    "report",
    "supervisors",
    "wait_until",
    "write_fleet",
]
