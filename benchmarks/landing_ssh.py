"""7c. Landing from an SSH host: a task's worktree in the host's clone.

Part of section 7 (landing.py), when an sshd can be started here (root, as the
SSH tests: tests/sshd.py on 127.0.0.1, the `fleetdeck-test` user). The same
10,000-file repository, cloned once for that user (the host's clone). Per task,
one after the other, through the workspace and train fleetdeck runs: making the
task's worktree there (`prepare`: its local worktree, the target's tip sent to
the clone as a bundle over the connection, `git worktree add` there), bringing
the agent's work back (`after_attempt`: committed there, a bundle back, the
local worktree moved to it), landing it here, and removing both worktrees
(`release`). Beside it, in the same loop, a task done here: the difference is
what the host adds.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleetdeck.config import build_fleet
from fleetdeck.executors import build_executors
from fleetdeck.executors.base import HostHealth, HostState
from fleetdeck.model import TRAIN_HOST, Attempt, Stage, TaskState
from fleetdeck.workspace.train import Train
from fleetdeck.workspace.worktrees import GitWorkspace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from sshd import TEST_USER, SshLab, ensure_test_user, missing_tools

STEPS = ("worktree", "work back", "landing", "release")


def _attempt(task: str, stage: Stage, number: int, host: str) -> Attempt:
    return Attempt(
        attempt_id=number, task=task, stage=stage, number=1, worker="sh", host=host, run_dir=""
    )


async def _tasks(repo: Path, state: Path, clone: Path, lab: SshLab, tasks: int) -> dict[str, Any]:
    server = lab.servers[0]
    data = {
        "fleet": {"name": "bench-land-ssh", "state_dir": "state"},
        "repo": {"path": str(repo), "target": "main", "land": "rebase"},
        "hosts": {"box": server.host(repo=str(clone))},
        "agents": {"sh": {"command": ["true"], "hosts": ["local", "box"]}},
        "tasks": [{"id": f"s{i:03d}", "agent": "sh"} for i in range(tasks)],
    }
    fleet = build_fleet(data, source="bench.toml", base_dir=state)
    executors = build_executors(fleet)
    up = asyncio.Event()

    def heard(health: HostHealth) -> None:
        if health.state is HostState.UP:
            up.set()

    await executors["box"].open(heard)
    await asyncio.wait_for(up.wait(), 30)
    workspace = GitWorkspace(fleet, state, executors)
    train = Train(fleet, workspace)
    executors[TRAIN_HOST] = train
    times: dict[str, dict[str, list[float]]] = {
        host: {step: [] for step in STEPS} for host in ("box", "local")
    }
    try:
        for number in range(1, tasks + 1):
            # Alternating: a task on the host, a task here.
            host = "box" if number % 2 else "local"
            task = f"s{number - 1:03d}"
            agent = _attempt(task, Stage.AGENT, number, host)
            began = time.perf_counter()
            place = await workspace.prepare(task, agent)
            times[host]["worktree"].append((time.perf_counter() - began) * 1000)
            assert place.cwd is not None
            # The agent's change: a new file (root writes it; the host's git reads it).
            (Path(place.cwd) / f"{task}.txt").write_text(f"{task}\n")
            began = time.perf_counter()
            await workspace.after_attempt(task, agent)
            times[host]["work back"].append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            if await train.land(task, []) != 0:
                raise RuntimeError(f"{task} did not land")
            times[host]["landing"].append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            await workspace.release(task, TaskState.SUCCEEDED)
            times[host]["release"].append((time.perf_counter() - began) * 1000)
    finally:
        await train.aclose()
        await executors["box"].aclose()
    return times


def measure_ssh(repo: Path, workdir: Path, tasks: int) -> list[list[str]] | str:
    """The table's rows (step, on the host, here, difference), or why it cannot run."""
    missing = missing_tools()
    if missing is not None:
        return missing
    ensure_test_user()
    lab = SshLab.create()
    where = Path(tempfile.mkdtemp(prefix="fleetdeck-bench-clone-"))
    try:
        lab.start_server("box")
        where.chmod(0o755)
        clone = where / "clone"
        subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
        subprocess.run(["chown", "-R", f"{TEST_USER}:", str(where)], check=True)
        state = workdir / "landing-ssh-state"
        shutil.rmtree(state, ignore_errors=True)
        state.mkdir()
        times = asyncio.run(_tasks(repo, state, clone, lab, tasks))
        shutil.rmtree(state, ignore_errors=True)
    finally:
        lab.close()
        shutil.rmtree(where, ignore_errors=True)
    rows = []
    for step in STEPS:
        there = statistics.median(times["box"][step])
        here = statistics.median(times["local"][step])
        rows.append([step, f"{there:.0f} ms", f"{here:.0f} ms", f"{there - here:+.0f} ms"])
    return rows
