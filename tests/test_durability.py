"""Durability: the journal holds every launch before its process starts, and a
supervisor killed again and again still ends the fleet right.

The crash test: a seeded 40-task DAG of short sleeps runs through the real CLI. The supervisor is
killed at seeded random moments and started again each time, until the run ends.
Every task's command writes `start ID` and `end ID` (its attempt id) to a marker
file of its own, so the test sees what really ran, whatever the journal says.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import PYTHON
from fleetdeck.config import Fleet, build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors.base import AttemptProcess, Executor, LaunchRequest
from fleetdeck.journal import DB_NAME, Journal, JournalError
from fleetdeck.model import Attempt, Stage

TASKS = 40
KILLS = 8
SEED = 20261123


def write_fleet(tmp_path: Path, marks: Path, marker: str) -> Path:
    rng = random.Random(SEED)
    lines = [
        "[fleet]",
        'name = "crash"',
        'state_dir = "state"',
        "grace_period = 0.3",
        "",
        "[agents.sh]",
        'command = ["sh", "-c", "{prompt}"]',
        "slots = 4",
    ]
    for i in range(TASKS):
        duration = round(rng.uniform(0.2, 0.9), 2)
        deps = sorted(rng.sample(range(i), min(i, rng.choice((0, 1, 1, 2)))))
        # `: MARKER` names the test's processes for the final scan.
        script = (
            f": {marker}; echo start $FLEETDECK_ATTEMPT_ID >> {marks}/t{i:02d}; "
            f"sleep {duration}; echo end $FLEETDECK_ATTEMPT_ID >> {marks}/t{i:02d}"
        )
        lines += [
            "",
            "[[tasks]]",
            f'id = "t{i:02d}"',
            f'prompt = "{script}"',
            'agent = "sh"',
            f"depends_on = {[f't{d:02d}' for d in deps]}".replace("'", '"'),
        ]
    config = tmp_path / "fleet.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def leftovers(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{proc.pid}: {cmdline}")
    return found


@pytest.mark.slow
def test_sigkilled_supervisors_resume_to_a_complete_run(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # Unique to this test process: a copy of the suite running beside it (another
    # checkout) must not count, or kill, our attempts as its leftovers.
    marker = f"fleetdeck-crash-test-{os.getpid()}-{tmp_path.name}"
    config = write_fleet(tmp_path, marks, marker)
    rng = random.Random(SEED)
    argv = [PYTHON, "-m", "fleetdeck", "run", str(config), "--no-tui"]
    outputs: list[str] = []
    kills = 0
    final: subprocess.CompletedProcess[str] | None = None
    process: subprocess.Popen[str] | None = None
    try:
        while final is None:
            process = subprocess.Popen(
                argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            if kills < KILLS:
                try:
                    process.wait(timeout=rng.uniform(0.3, 1.2))
                except subprocess.TimeoutExpired:
                    process.send_signal(signal.SIGKILL)
                    kills += 1
                    # Now and then no supervisor for a while: some attempts end
                    # unwatched, and only their recorded status tells how.
                    time.sleep(rng.choice((0.0, 0.0, 0.6)))
            out, err = process.communicate(timeout=60)
            outputs.append(out)
            assert "Traceback" not in err, err
            if process.returncode != -signal.SIGKILL:
                final = subprocess.CompletedProcess(argv, process.returncode, out, err)
    finally:
        if process is not None and process.poll() is None:
            # A failed test leaves no supervisor behind: SIGTERM stops its attempts.
            process.terminate()
            process.communicate(timeout=30)
        left = leftovers(marker)
        for line in left:
            psutil.Process(int(line.split(":")[0])).kill()
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr
    assert kills >= 5, "the run ended before the supervisor could be killed often"

    # Every task ran to its end exactly once; no attempt overlapped another of the
    # same task (rerun while it lived), and nothing ran after the task's end.
    for i in range(TASKS):
        lines = (marks / f"t{i:02d}").read_text().split("\n")[:-1]
        ends = [n for n, line in enumerate(lines) if line.startswith("end ")]
        assert len(ends) == 1, (i, lines)
        (end,) = ends
        assert end == len(lines) - 1, (i, lines)
        assert lines[end - 1] == "start " + lines[end].split()[1], (i, lines)

    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert db.execute("SELECT run_id, status FROM runs").fetchall() == [(1, "finished")]
    succeeded = db.execute("SELECT COUNT(*) FROM events WHERE event = 'task_succeeded'")
    assert succeeded.fetchone() == (TASKS,)
    assert left == [], left
    # What the restarts did with the attempts they found, for the README's figures.
    tally = db.execute(
        "SELECT SUM(json_extract(data, '$.reattached')), SUM(json_extract(data, '$.recovered')),"
        " SUM(json_extract(data, '$.lost')) FROM events WHERE event = 'run_resumed'"
    ).fetchone()
    print(f"{kills} kills: reattached, recovered, lost = {tally}")


# --- no process before its launch is durable ------------------------------------------
#
# The invariant: an attempt's process starts only once its own attempt row, and the
# success of each of its dependencies, are committed to the journal. The executor
# below looks, at each start, through a connection of its own (read only, as a
# second process would) into the journal's database file.


class _Ended(AttemptProcess):
    """An attempt whose process ends at once, successfully."""

    async def wait(self) -> int:
        return 0

    async def stop(self, grace: float) -> None:
        return None


class WitnessExecutor(Executor):
    """Starts nothing; at each start, checks what the journal holds on disk."""

    host = "local"

    def __init__(self, db_path: Path, deps: dict[str, tuple[str, ...]]) -> None:
        self.db_path = db_path
        self.deps = deps
        self.started: list[tuple[str, str]] = []
        self.violations: list[str] = []
        # At the last agent start: the tasks started before it, and those of them
        # whose end the journal did not hold yet.
        self.earlier: set[str] = set()
        self.unended: set[str] = set()

    async def start(self, request: LaunchRequest) -> AttemptProcess:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT task, stage FROM attempts WHERE attempt_id = ?", (request.attempt_id,)
            ).fetchone()
            ended = {
                task
                for (task,) in db.execute(
                    "SELECT task FROM events WHERE event IN ('task_succeeded', 'task_failed')"
                )
            }
            succeeded = {
                task
                for (task,) in db.execute("SELECT task FROM events WHERE event = 'task_succeeded'")
            }
        finally:
            db.close()
        launch = f"{request.task} ({request.stage}, attempt {request.attempt_id})"
        if row != (request.task, str(request.stage)):
            self.violations.append(f"{launch} started before its attempt row was committed")
        for dep in self.deps[request.task]:
            if dep not in succeeded:
                self.violations.append(f"{launch} started before {dep}'s success was committed")
        if request.stage is Stage.AGENT:
            # What started before it has ended, durably, under sequential (and
            # for dependencies under any policy: checked above).
            self.earlier = {task for task, _ in self.started} - {request.task}
            self.unended = self.earlier - ended
        self.started.append((request.task, str(request.stage)))
        return _Ended()


class FailingOnceJournal(Journal):
    """A journal whose first commit holding `target`'s launch fails (a full disk):
    its rows stay buffered, and the next commit writes them."""

    def __init__(self, state_dir: Path, target: tuple[str, str]) -> None:
        super().__init__(state_dir)
        self.target = target
        self.failed = False
        self._launches: set[tuple[str, str]] = set()

    def record_attempt(self, run_id: int, attempt: Attempt) -> None:
        if attempt.pid is None and attempt.finished_at is None:
            self._launches.add((attempt.task, str(attempt.stage)))
        super().record_attempt(run_id, attempt)

    def commit(self) -> None:
        if not self.failed and self.target in self._launches:
            self.failed = True
            raise JournalError("cannot write the journal: disk full (test)")
        super().commit()
        self._launches.clear()


def witness_fleet(tmp_path: Path, policy: str = "wave") -> Fleet:
    """a (with CI) -> b -> c; d after a and c; e on its own."""
    return build_fleet(
        {
            "fleet": {"name": "witness", "state_dir": "state", "policy": policy},
            "agents": {"coder": {"command": ["true"], "slots": 3}},
            "runners": {"ci": {"command": ["true"], "slots": 1}},
            "tasks": [
                {"id": "a", "agent": "coder", "ci": "ci"},
                {"id": "b", "agent": "coder", "depends_on": ["a"]},
                {"id": "c", "agent": "coder", "depends_on": ["b"]},
                {"id": "d", "agent": "coder", "depends_on": ["a", "c"]},
                {"id": "e", "agent": "coder"},
            ],
        },
        source="witness.toml",
        base_dir=tmp_path,
    )


def witness_for(fleet: Fleet, journal: Journal) -> WitnessExecutor:
    deps = {task.id: task.depends_on for task in fleet.tasks}
    return WitnessExecutor(journal.state_dir / DB_NAME, deps)


@pytest.mark.parametrize("policy", ["wave", "sequential"])
async def test_no_attempt_starts_before_its_launch_is_committed(
    tmp_path: Path, policy: str
) -> None:
    fleet = witness_fleet(tmp_path, policy)
    journal = Journal(tmp_path / "state")
    witness = witness_for(fleet, journal)
    engine = Engine(fleet, journal=journal, executors={"local": witness}, sample_interval=None)
    try:
        result = await engine.run()
    finally:
        journal.close()
    assert result.exit_code == 0
    assert sorted(witness.started) == sorted(
        [
            ("a", "agent"),
            ("a", "ci"),
            ("b", "agent"),
            ("c", "agent"),
            ("d", "agent"),
            ("e", "agent"),
        ]
    )
    assert witness.violations == []
    if policy == "sequential":
        # The last task's start saw every earlier task's end committed.
        assert witness.earlier == {"a", "b", "c", "d"} and witness.unended == set()


@pytest.mark.parametrize("target", [("a", "agent"), ("a", "ci"), ("b", "agent"), ("d", "agent")])
async def test_no_attempt_starts_on_a_launch_whose_commit_failed(
    tmp_path: Path, target: tuple[str, str]
) -> None:
    """The commit holding the launch of `target` (and, for b and d, the success of
    their last dependency, decided in the same turn) fails: the run stops, and no
    process may start on rows the journal does not hold."""
    fleet = witness_fleet(tmp_path)
    journal = FailingOnceJournal(tmp_path / "state", target)
    witness = witness_for(fleet, journal)
    engine = Engine(fleet, journal=journal, executors={"local": witness}, sample_interval=None)
    try:
        result = await engine.run()
    finally:
        journal.close()
    assert journal.failed, f"no commit held the launch of {target}"
    assert engine.journal_error is not None
    # The run stopped on the error (d is the last task: it may end before the stop).
    assert result.interrupted or target == ("d", "agent")
    assert witness.violations == []
