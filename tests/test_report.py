"""`fleetdeck report STATE_DIR`: real runs, read back from their journals."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import alive, read_pids, wait_dead
from fleetdeck import attempts as attempts_module
from fleetdeck.attempts import attempt_lines, format_attempts
from fleetdeck.cli import main
from fleetdeck.journal import AttemptRecordRow, Journal
from fleetdeck.redact import Redactor
from fleetdeck.report import load_run
from test_cli_run import TWO_TASKS, _start_tree_fleet, fleetdeck, write_config

FAILING = """
[[tasks]]
id = "build"
prompt = "echo building"
agent = "sh"
ci = "ci"

[[tasks]]
id = "flaky"
prompt = "echo giving up; exit 3"
agent = "sh"
retries = 1

[[tasks]]
id = "docs"
prompt = "echo docs"
agent = "sh"
depends_on = ["build", "flaky"]
"""


def summary(stdout: str) -> str:
    """The per-task table and the report: everything after the first blank line."""
    return stdout.split("\n\n", 1)[1]


def listing(directory: Path) -> list[tuple[str, int]]:
    """Every path under `directory` with its size (to see that nothing changed)."""
    return sorted(
        (str(path.relative_to(directory)), path.stat().st_size) for path in directory.rglob("*")
    )


def test_report_repeats_the_end_of_run_summary_and_changes_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path, FAILING)
    done = fleetdeck("run", str(config), "--no-tui")
    assert done.returncode == 1, done.stderr
    state = tmp_path / "state"
    before = listing(state)
    report = fleetdeck("report", str(state))
    assert report.returncode == 0, report.stderr
    assert report.stderr == ""
    head, rest = report.stdout.split("\n\n", 1)
    assert head.splitlines()[0] == (
        f"run 1 (of 1) in {state}: fleet 'cli-test' ({config}), policy wave"
    )
    assert "finished after" in head and "exit code 1" in head
    # The same rebuilt figures, printed by the same code, as the run printed at its end;
    # then the attempts that did not succeed.
    table_and_report, attempts = rest.split("\n\n2 attempts that did not succeed:\n")
    assert table_and_report + "\n" == summary(done.stdout)
    assert "flaky  failed" in rest and "docs   blocked" in rest
    # task, #, stage, outcome, duration, host, error: the error of a bare exit is its code.
    first = attempts.splitlines()[1].split()
    assert first[:4] == ["flaky", "1", "agent", "failed"]
    assert first[5:] == ["local", "exit", "3"]
    # Read only: no -wal or -shm appears, nothing grows.
    assert listing(state) == before


def test_report_json_is_one_object(tmp_path: Path) -> None:
    config = write_config(tmp_path, FAILING)
    assert fleetdeck("run", str(config), "--no-tui").returncode == 1
    report = fleetdeck("report", str(tmp_path / "state"), "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)  # one object, nothing else on stdout
    assert (data["run_id"], data["status"], data["exit_code"]) == (1, "finished", 1)
    assert {t["task"]: (t["state"], t["attempts"]) for t in data["tasks"]} == {
        "build": ("succeeded", 1),
        "flaky": ("failed", 2),
        "docs": ("blocked", 0),
    }
    assert data["unfinished"] == []
    assert data["report"]["retries"] == 1
    assert data["report"]["states"] == {"succeeded": 1, "failed": 1, "blocked": 1}
    assert data["report"]["completion_rate"] == pytest.approx(1 / 3)
    # Every attempt, with its log; those that failed with their last lines and
    # their exit code as the error.
    state = tmp_path / "state"
    attempts = {(a["task"], a["attempt"], a["stage"]): a for a in data["attempts"]}
    assert set(attempts) == {
        ("build", 1, "agent"),
        ("build", 1, "ci"),
        ("flaky", 1, "agent"),
        ("flaky", 2, "agent"),
    }
    flaky = attempts["flaky", 2, "agent"]
    assert (flaky["outcome"], flaky["exit_code"], flaky["error"]) == ("failed", 3, "exit 3")
    assert flaky["log"] == f"{state}/runs/1/flaky.2.agent.log"
    assert flaky["tail"] == ["giving up"]
    build = attempts["build", 1, "ci"]
    assert (build["outcome"], build["error"], build["tail"]) == ("ok", None, None)


def test_a_report_reads_and_lists_only_the_latest_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of many failed tasks: the logs read and the attempts listed are bounded."""
    monkeypatch.setattr(attempts_module, "MAX_TAILS", 3)
    rows = []
    for n in range(25):
        (tmp_path / f"t{n}.1.agent.log").write_text(f"task {n} broke\n")
        rows.append(
            AttemptRecordRow(
                *(n, f"t{n}", "agent", 1, "sh", "local", None, None, 1.0, 2.0),
                *("failed", 1, None, None, None),
            )
        )
    lines = attempt_lines(rows, [], tmp_path, live=False, redactor=Redactor())
    assert [line.tail for line in lines[-4:]] == [
        None,
        ("task 22 broke",),
        ("task 23 broke",),
        ("task 24 broke",),
    ]
    text = format_attempts(list(lines))
    assert text.splitlines()[0] == (
        "25 attempts that did not succeed: the latest 20 (`--json` lists every attempt)"
    )
    assert "t4 " not in text and "t5 #1 agent: log" in text


def test_run_picks_an_earlier_run(tmp_path: Path) -> None:
    config = write_config(tmp_path, TWO_TASKS)
    assert fleetdeck("run", str(config), "--no-tui").returncode == 0
    failing = write_config(tmp_path, '[[tasks]]\nid = "bad"\nprompt = "exit 4"\nagent = "sh"\n')
    assert fleetdeck("run", str(failing), "--no-tui").returncode == 1
    state = str(tmp_path / "state")
    first = json.loads(fleetdeck("report", state, "--run", "1", "--json").stdout)
    latest = json.loads(fleetdeck("report", state, "--json").stdout)
    assert (first["run_id"], first["runs"], first["exit_code"]) == (1, [1, 2], 0)
    assert [t["task"] for t in first["tasks"]] == ["build", "docs"]
    assert (latest["run_id"], [t["task"] for t in latest["tasks"]]) == (2, ["bad"])


def test_a_killed_supervisor_leaves_a_readable_interrupted_run(
    tmp_path: Path, tree_agent: Path
) -> None:
    process, pidfile = _start_tree_fleet(tmp_path, tree_agent, grace=0.3)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    # The attempt's tree survives its supervisor (nothing can stop it then).
    orphans = read_pids(pidfile)
    try:
        report = fleetdeck("report", str(tmp_path / "state"))
        assert report.returncode == 0, report.stderr
        lines = report.stdout.splitlines()
        assert lines[1].startswith("started ")
        assert "interrupted after" in lines[1]
        assert f"the supervisor (pid {process.pid}) ended without finishing the run" in lines[1]
        assert lines[2:5] == [
            "2 tasks unfinished (last state):",
            "  tree   running",
            "  later  pending",
        ]
        data = json.loads(fleetdeck("report", str(tmp_path / "state"), "--json").stdout)
        assert data["status"] == "interrupted" and data["exit_code"] is None
        assert data["unfinished"] == [
            {"task": "tree", "state": "running"},
            {"task": "later", "state": "pending"},
        ]
        # Its attempt never ended, but nothing runs it any more: not `running`.
        (tree,) = data["attempts"]
        assert (tree["task"], tree["outcome"], tree["finished_at"]) == ("tree", "interrupted", None)
        assert data["report"]["partial"] and data["report"]["efficiency"] is None
    finally:
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert wait_dead(orphans) == []


def test_a_stopped_run_says_so_and_a_live_one_is_read_beside_its_supervisor(
    tmp_path: Path, tree_agent: Path
) -> None:
    process, _pidfile = _start_tree_fleet(tmp_path, tree_agent, grace=0.3)
    state = tmp_path / "state"
    try:
        # The supervisor holds the lock and writes the journal: WAL lets us read.
        live = fleetdeck("report", str(state))
        assert live.returncode == 0, live.stderr
        assert "still running" in live.stdout.splitlines()[1]
        assert "tasks not yet ended (last state):" in live.stdout
        assert "  tree   running" in live.stdout
        # The run has lasted until now, not until its last event (the tree's start).
        time.sleep(0.5)
        asked = time.time()
        replay = load_run(state)
        assert replay.status == "running"
        assert replay.report.makespan >= asked - replay.run.started_at
        assert replay.attempts[0].outcome == "running"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 130
    stopped = fleetdeck("report", str(state), "--json")
    data = json.loads(stopped.stdout)
    assert data["status"] == "interrupted" and data["exit_code"] == 130
    # Not "Ctrl-C": the journal does not say how (q in the TUI, a signal), only who.
    assert data["reason"] == "stopped by the operator before every task ended"
    # The attempt the stop ended is `interrupted`, and the figures are partial.
    (tree,) = data["attempts"]
    assert (tree["task"], tree["outcome"]) == ("tree", "interrupted")
    assert data["report"]["partial"]
    assert (data["report"]["efficiency"], data["report"]["throughput_per_hour"]) == (None, None)
    text = fleetdeck("report", str(state)).stdout
    assert ": stopped by the operator before every task ended" in text.splitlines()[1]
    assert "1 attempt that did not succeed:" in text
    assert {t["task"] for t in data["unfinished"]} == {"tree", "later"}


def report_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run `fleetdeck report ARGS` in process; it must fail with one clear line."""
    code = main(["report", *args])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_errors_are_one_line_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert report_error([str(missing)], capsys) == f"fleetdeck: {missing}: no such directory"
    a_file = tmp_path / "fleet.toml"
    a_file.write_text("")
    assert report_error([str(a_file)], capsys) == f"fleetdeck: {a_file}: not a state directory"
    # A fleet's config instead of its state directory: which directory to read.
    config = write_config(tmp_path, TWO_TASKS)
    assert report_error([str(config)], capsys) == (
        f"fleetdeck: {config}: not a state directory: a fleet's config; its runs are in "
        f"{tmp_path / 'state'} (`fleetdeck report {tmp_path / 'state'}`)"
    )
    assert report_error([str(tmp_path)], capsys) == (
        f"fleetdeck: {tmp_path}: not a fleetdeck state directory (no journal.sqlite3)"
    )
    empty = tmp_path / "empty"
    Journal(empty).close()
    assert (
        report_error([str(empty)], capsys) == f"fleetdeck: {empty}: the journal holds no runs yet"
    )
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "journal.sqlite3").write_bytes(b"this is not SQLite\n" * 100)
    line = report_error([str(garbage)], capsys)
    assert line.startswith(f"fleetdeck: {garbage / 'journal.sqlite3'}: cannot read the journal: ")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    sqlite3.connect(foreign / "journal.sqlite3").execute("CREATE TABLE t (x)").connection.close()
    assert report_error([str(foreign)], capsys) == (
        f"fleetdeck: {foreign / 'journal.sqlite3'}: not a fleetdeck journal (no runs table)"
    )


def test_a_run_number_the_journal_does_not_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, TWO_TASKS)
    assert fleetdeck("run", str(config), "--no-tui").returncode == 0
    state = tmp_path / "state"
    assert report_error([str(state), "--run", "7"], capsys) == (
        f"fleetdeck: {state}: no run 7 in the journal (it holds run 1)"
    )
    usage = fleetdeck("report", str(state), "--run", "0")
    assert usage.returncode == 2
    assert "argument --run: expected a run number (1, 2, ...), got '0'" in usage.stderr


def test_a_damaged_journal_is_one_line_never_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by flipping random bytes of a real journal: text that is not UTF-8,
    SQLite messages quoting a damaged schema over several lines, rows of the
    wrong type."""
    config = write_config(tmp_path, FAILING)
    assert fleetdeck("run", str(config), "--no-tui").returncode == 1
    state = tmp_path / "state"
    journal = state / "journal.sqlite3"
    pristine = journal.read_bytes()
    rng = random.Random(6)
    for flips in [1, 3, 20, 200, 2000] * 8:
        damaged = bytearray(pristine)
        for _ in range(flips):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        journal.write_bytes(bytes(damaged))
        code = main(["report", str(state), "--json"])
        out, err = capsys.readouterr()
        assert code in (0, 2), err
        if code == 2:
            assert len(err.splitlines()) == 1 and err.startswith(f"fleetdeck: {state}"), err
        else:
            json.loads(out)
    for damage, message in [
        ("UPDATE runs SET started_at = 'noon'", "cannot read the journal: a damaged row in runs"),
        (
            "UPDATE events SET data = '{\"duration\": \"long\"}' WHERE event = 'attempt_finished'",
            "run 1 has a damaged event: ValueError",
        ),
    ]:
        journal.write_bytes(pristine)
        db = sqlite3.connect(journal)
        db.execute(damage)
        db.commit()
        db.close()
        assert message in report_error([str(state)], capsys)
    journal.write_bytes(pristine)
    db = sqlite3.connect(journal)
    db.execute("UPDATE runs SET fleet = CAST(X'66FF6F' AS TEXT)")
    db.commit()
    db.close()
    assert main(["report", str(state)]) == 0
    assert "fleet 'f\ufffdo'" in capsys.readouterr().out
