"""7. Landing: what a worktree per task and the merge train add, on a large repository.

    .venv/bin/python benchmarks/landing.py [--quick]     # ~5 min; --quick ~2.5 min

A repository of 10,000 small files (100 directories of 100, generated once in the
work directory, one commit). Two measures, printed as figures and ratios, no
pass/fail:

a. Per task, the cost fleetdeck adds to an attempt, through the workspace and the
   train fleetdeck runs (`GitWorkspace`, `Train`), in this process: making the
   task's worktree at the target's tip (`prepare`), committing what its agent left
   (`after_attempt`: one file changed), landing it on the target (`Train.land`:
   candidate rebased in the train's scratch worktree, kept from one landing to
   the next, compare-and-swap of the ref, the user's checkout brought along),
   and removing the worktree and branch once it landed (`release`); median of N
   tasks, one after the other. Every other task lands by a train that makes a
   fresh scratch worktree for each landing (what it did before it kept one):
   the two landings side by side, with their ratio. Side by side in
   the same loop, alternating: a bare `git worktree add` + `git worktree remove`
   of the same repository, the floor git itself sets. Disk per worktree: `du` of
   one, against the checkout's own files (without .git).
b. The merge train's throughput: `fleetdeck run --no-tui` of 10 independent
   tasks, each writing its own file (the agent is `sh`, instant), a CI of
   `sleep 1` on 1 runner slot, landing by rebase. Tasks landed per minute from
   the first agent start to the last landing (journal timestamps), against the
   lower bound CI sets (60 a minute on 1 slot) and that bound with the measured
   landing added. A task whose CI ran before another landed has its CI run again
   on the rebased change (nothing lands untested): the CI attempts are counted.
c. On an SSH host's clone of the repository (landing_ssh.py; needs root for the
   test sshd, skipped with the reason otherwise): per task, what making its
   worktree there, bringing its work back, landing and release cost, beside a
   task done here in the same loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from harness import (
    Command,
    Settings,
    SummaryRow,
    fleetdeck_argv,
    load_average,
    run_alone,
    run_checked,
    table,
)
from landing_ssh import measure_ssh

from fleetdeck.config import build_fleet
from fleetdeck.model import Attempt, Stage, TaskState
from fleetdeck.workspace.checks import git_environment
from fleetdeck.workspace.train import Train
from fleetdeck.workspace.worktrees import GitWorkspace

DIRECTORIES = 100
FILES_PER_DIRECTORY = 100
CI_SECONDS = 1.0


@dataclass(frozen=True)
class Size:
    """How much to measure."""

    tasks: int  # per-task costs: how many tasks, one after the other
    train_tasks: int  # the throughput run
    train_runs: int


FULL = Size(tasks=16, train_tasks=10, train_runs=2)
QUICK = Size(tasks=8, train_tasks=10, train_runs=1)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` (raises on failure); its stdout."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        env=git_environment(),
    )
    return done.stdout


def make_repository(path: Path) -> Path:
    """The 10,000-file repository at `path` (made once; reused if it is there)."""
    if (path / ".git").is_dir():
        return path
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for key, value in (
        ("user.name", "bench"),
        ("user.email", "bench@fleetdeck.invalid"),
        ("commit.gpgsign", "false"),
    ):
        git(path, "config", key, value)
    for d in range(DIRECTORIES):
        directory = path / f"pkg{d:03d}"
        directory.mkdir()
        for f in range(FILES_PER_DIRECTORY):
            (directory / f"mod{f:03d}.py").write_text(
                f'"""Module {d}.{f}."""\n\n\ndef value() -> int:\n    return {d * 1000 + f}\n'
            )
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "10,000 files")
    return path


def du_kib(path: Path, *exclude: str) -> int:
    """Disk used under `path`, in KiB (`du -sk`)."""
    argv = ["du", "-sk", *(f"--exclude={name}" for name in exclude), str(path)]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0])


def fleet_data(repo: Path, tasks: list[dict[str, Any]], ci: bool) -> dict[str, Any]:
    """A landing fleet's config on `repo`: agents run their prompt with `sh`."""
    data: dict[str, Any] = {
        "fleet": {"name": "bench-land", "state_dir": "state", "policy": "wave"},
        "repo": {"path": str(repo), "target": "main", "land": "rebase"},
        "agents": {"sh": {"command": ["sh", "-c", "{prompt}"], "slots": 10}},
        "tasks": tasks,
    }
    if ci:
        data["runners"] = {"ci": {"command": ["sleep", f"{CI_SECONDS:g}"], "slots": 1}}
    return data


def _attempt(task: str, stage: Stage, number: int) -> Attempt:
    return Attempt(
        attempt_id=number,
        task=task,
        stage=stage,
        number=1,
        worker="sh",
        host="local",
        run_dir="",
    )


# --- a. per task ------------------------------------------------------------------------


@dataclass
class PerTask:
    """Milliseconds per step, one entry per task."""

    worktree: list[float]
    commit: list[float]
    land: list[float]
    # Landings by a train that makes a fresh scratch worktree each time (as it
    # did before it kept one), alternating with `land`'s.
    land_fresh: list[float]
    release: list[float]
    bare_add: list[float]
    bare_remove: list[float]
    disk_kib: int


async def per_task(repo: Path, state: Path, tasks: int) -> PerTask:
    """Worktree, commit, landing and release of `tasks` tasks, one after the other,
    alternating with a bare `git worktree add` + `remove`."""
    ids = [f"t{i:03d}" for i in range(tasks)]
    specs = [{"id": task, "agent": "sh", "prompt": task} for task in ids]
    fleet = build_fleet(fleet_data(repo, specs, ci=False), source="bench.toml", base_dir=state)
    kept = GitWorkspace(fleet, state / "kept")
    fresh = GitWorkspace(fleet, state / "fresh")  # its own scratch worktree
    trains = {
        id(kept): Train(fleet, kept),
        id(fresh): Train(fleet, fresh, reuse_scratch=False),
    }
    result = PerTask([], [], [], [], [], [], [], 0)
    bare = state / "bare-worktree"
    for number, task in enumerate(ids, start=1):
        # Every other task lands by the train that makes its scratch afresh.
        workspace = kept if number % 2 else fresh
        train = trains[id(workspace)]
        began = time.perf_counter()
        git(repo, "worktree", "add", "-q", "--detach", str(bare), "main")
        added = time.perf_counter()
        git(repo, "worktree", "remove", "--force", str(bare))
        result.bare_add.append((added - began) * 1000)
        result.bare_remove.append((time.perf_counter() - added) * 1000)

        agent = _attempt(task, Stage.AGENT, number)
        began = time.perf_counter()
        place = await workspace.prepare(task, agent)
        result.worktree.append((time.perf_counter() - began) * 1000)
        assert place.cwd is not None
        where = Path(place.cwd)
        if number == 1:
            result.disk_kib = du_kib(where)
        # The agent's change: one new file, one edited.
        (where / f"{task}.txt").write_text(f"{task}\n")
        with (where / "pkg000" / "mod000.py").open("a") as edited:
            edited.write(f"# {task}\n")
        began = time.perf_counter()
        stat = await workspace.after_attempt(task, agent)
        result.commit.append((time.perf_counter() - began) * 1000)
        assert stat["files"] == 2, stat

        log: list[str] = []
        began = time.perf_counter()
        code = await train.land(task, log)
        (result.land if train.reuse_scratch else result.land_fresh).append(
            (time.perf_counter() - began) * 1000
        )
        if code != 0:
            raise RuntimeError(f"{task} did not land: {log}")
        began = time.perf_counter()
        await workspace.release(task, TaskState.SUCCEEDED)
        result.release.append((time.perf_counter() - began) * 1000)
        # Blocking calls are fine here: nothing else runs on this loop, and each
        # step is timed alone.
        if where.exists():  # noqa: ASYNC240
            raise RuntimeError(f"the worktree of {task} is still there after it landed")
    return result


# --- b. the train's throughput ---------------------------------------------------------


@dataclass(frozen=True)
class TrainRun:
    """One run of the throughput fleet, read back from its journal."""

    seconds: float  # first agent start to last landing
    landed: int
    ci_attempts: int

    @property
    def per_minute(self) -> float:
        """Tasks landed per minute."""
        return self.landed / self.seconds * 60


def train_run(repo: Path, where: Path, tasks: int) -> TrainRun:
    """`fleetdeck run --no-tui` of `tasks` independent tasks with a 1 s CI."""
    tag = where.name
    where.mkdir(parents=True)
    specs = [
        # A file of its own, new in each run (the repository keeps what landed before).
        {"id": f"w{i:02d}", "agent": "sh", "ci": "ci", "prompt": f"echo {i} > pkg{i:03d}/{tag}.txt"}
        for i in range(tasks)
    ]
    config = where / "train.toml"
    config.write_text(tomli_w.dumps(fleet_data(repo, specs, ci=True)))
    run_checked(Command([*fleetdeck_argv(), "run", str(config), "--no-tui"]))
    db = sqlite3.connect(f"file:{where / 'state' / 'journal.sqlite3'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT ts, event, data FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    starts = [ts for ts, kind, _ in rows if kind == "attempt_started"]
    landings = [ts for ts, kind, _ in rows if kind == "task_landed"]
    ci = sum(
        1
        for _, kind, data in rows
        if kind == "attempt_started" and json.loads(data).get("stage") == "ci"
    )
    if len(landings) != tasks:
        raise RuntimeError(f"{len(landings)} of {tasks} tasks landed (see {where})")
    return TrainRun(seconds=max(landings) - min(starts), landed=len(landings), ci_attempts=ci)


# --- the section -------------------------------------------------------------------------


def measure(settings: Settings) -> list[SummaryRow]:
    """Both measures; their tables; summary rows."""
    size = QUICK if settings.quick else FULL
    print(
        f"\n== 7. Landing: a repository of {DIRECTORIES * FILES_PER_DIRECTORY:,} files, "
        f"{size.tasks} tasks one after the other, then {size.train_tasks} tasks through the "
        f"train with a {CI_SECONDS:g} s CI on 1 slot (load average {load_average():.2f}) =="
    )
    began = time.perf_counter()
    repo = make_repository(settings.workdir / "landing-repo")
    print(f"repository made in {time.perf_counter() - began:.1f} s")
    state = settings.workdir / "landing-state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    costs = asyncio.run(per_task(repo, state, size.tasks))
    checkout = du_kib(repo, ".git")

    def row(name: str, values: list[float]) -> list[str]:
        return [name, f"{statistics.median(values):.0f} ms", f"{min(values):.0f}-{max(values):.0f}"]

    rows = [
        row("worktree (prepare: fresh worktree at the tip)", costs.worktree),
        row("  bare `git worktree add`, side by side", costs.bare_add),
        row("commit of the agent's change (after_attempt)", costs.commit),
        row("landing (Train.land, rebase + ref CAS + checkout)", costs.land),
        row("  landing with a fresh scratch worktree (before)", costs.land_fresh),
        row("removal once landed (release)", costs.release),
        row("  bare `git worktree remove`, side by side", costs.bare_remove),
    ]
    print(table(["step, per task", "median", "range ms"], rows))
    worktree = statistics.median(costs.worktree)
    bare_add = statistics.median(costs.bare_add)
    per_task_total = sum(
        statistics.median(values)
        for values in (costs.worktree, costs.commit, costs.land, costs.release)
    )
    print(
        f"worktree / bare git worktree add: {worktree / bare_add:.2f}x; all four steps "
        f"{per_task_total:.0f} ms per task ({per_task_total / (CI_SECONDS * 1000):.0%} of a "
        f"{CI_SECONDS:g} s CI); disk per worktree {costs.disk_kib / 1024:.1f} MiB "
        f"(the checkout's files: {checkout / 1024:.1f} MiB)"
    )
    land = statistics.median(costs.land) / 1000
    land_fresh = statistics.median(costs.land_fresh) / 1000
    print(
        f"landing: {land * 1000:.0f} ms with the scratch worktree kept, "
        f"{land_fresh * 1000:.0f} ms with a fresh one each time (before): "
        f"{land / land_fresh:.2f}x"
    )
    runs = [
        train_run(repo, settings.workdir / f"landing-train-{i}", size.train_tasks)
        for i in range(size.train_runs)
    ]
    bound = 60 / CI_SECONDS
    with_landing = 60 / (CI_SECONDS + land)
    train_rows = [
        [
            f"run {i + 1}",
            f"{r.seconds:.1f} s",
            f"{r.per_minute:.1f}/min",
            f"{r.per_minute / bound:.2f}",
            f"{r.ci_attempts}",
        ]
        for i, r in enumerate(runs)
    ]
    print(
        table(
            ["train run", "first start to last landing", "landed", "/ CI bound", "CI runs"],
            train_rows,
        )
    )
    best = max(r.per_minute for r in runs)
    median = statistics.median(r.per_minute for r in runs)
    ci_runs = statistics.median(r.ci_attempts for r in runs)
    print(
        f"throughput {median:.1f} tasks/min (best {best:.1f}); lower bound CI sets "
        f"{bound:.0f}/min on 1 slot, {with_landing:.1f}/min with the measured landing "
        f"({land * 1000:.0f} ms); median {ci_runs:g} CI runs for {size.train_tasks} tasks "
        f"(reruns on a moved target); load average {load_average():.2f}"
    )
    shutil.rmtree(state, ignore_errors=True)
    ssh = measure_ssh(repo, settings.workdir, size.tasks)
    if isinstance(ssh, str):
        print(f"7c. an SSH host's clone: not measured: {ssh}")
    else:
        print(
            table(
                ["7c. per task, median", "on an SSH host's clone", "here", "the host adds"],
                ssh,
            )
        )
    return [
        SummaryRow(
            "7a. worktree per task, 10,000 files",
            f"{worktree:.0f} ms",
            detail=f"{worktree / bare_add:.2f}x a bare git worktree add; "
            f"{costs.disk_kib / 1024:.0f} MiB",
        ),
        SummaryRow("7a. commit of the agent's change", f"{statistics.median(costs.commit):.0f} ms"),
        SummaryRow(
            "7a. landing (rebase, ref CAS)",
            f"{land * 1000:.0f} ms",
            detail=f"{land / land_fresh:.2f}x a fresh scratch worktree per landing "
            f"(before: {land_fresh * 1000:.0f} ms)",
        ),
        SummaryRow(
            "7b. train throughput, 1 s CI on 1 slot",
            f"{median:.1f}/min",
            f"<= {bound:.0f}/min",
            detail=f"{median / bound:.2f} of the CI bound; {ci_runs:g} CI runs per "
            f"{size.train_tasks} tasks",
        ),
    ]


if __name__ == "__main__":
    sys.exit(run_alone(measure, __doc__ or ""))
