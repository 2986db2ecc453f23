"""Crash the supervisor with SIGKILL again and again: the fleet still ends right.

A seeded 40-task DAG of short sleeps runs through the real CLI. The supervisor is
killed at seeded random moments and started again each time, until the run ends.
Every task's command writes `start ID` and `end ID` (its attempt id) to a marker
file of its own, so the test sees what really ran, whatever the journal says.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import PYTHON

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
    marker = f"fleetdeck-crash-test-{tmp_path.name}"
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
