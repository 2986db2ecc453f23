"""The journal on its own: what a commit writes, and what a failed one keeps."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import fleetdeck.journal
from fleetdeck.journal import Journal, JournalError
from fleetdeck.model import Attempt, Event, EventKind, Outcome, Stage


def rows(state: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(state / "journal.sqlite3")
    found = db.execute(
        "SELECT attempt_id, pid, finished_at, outcome, exit_code, log_path, status_path"
        " FROM attempts ORDER BY attempt_id"
    ).fetchall()
    db.close()
    return found


def test_an_attempt_row_follows_the_attempt_through_failed_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Launch, start and end each journal the attempt; a later record updates the
    committed row, and a commit that fails keeps its rows for the next one."""
    state = tmp_path / "state"
    journal = Journal(state)
    run_id = journal.begin_run(
        fleet="f", config_path="f.toml", config_json="{}", policy="wave", started_at=1.0
    )
    run_dir = str(journal.run_dir(run_id))
    attempt = Attempt(
        attempt_id=1, task="t", stage=Stage.AGENT, number=1, worker="w", host="local",
        run_dir=run_dir, started_at=2.0,
    )  # fmt: skip
    journal.record_attempt(run_id, attempt)  # launched
    journal.commit()
    assert rows(state) == [
        (1, None, None, None, None, f"{run_dir}/t.1.agent.log", f"{run_dir}/status")
    ]

    attempt.pid = 4242  # started
    journal.record_attempt(run_id, attempt)
    write_rows = fleetdeck.journal._write_rows

    def disk_full(db: sqlite3.Connection, batch: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(fleetdeck.journal, "_write_rows", disk_full)
    with pytest.raises(JournalError, match="disk is full"):
        journal.commit()
    assert journal.pending == 1  # kept
    monkeypatch.setattr(fleetdeck.journal, "_write_rows", write_rows)
    attempt.finished_at, attempt.outcome, attempt.exit_code = 3.0, Outcome.OK, 0  # ended
    journal.record_attempt(run_id, attempt)
    journal.commit()
    assert journal.pending == 0
    assert journal.committed == journal.recorded
    assert rows(state) == [(1, 4242, 3.0, "ok", 0, f"{run_dir}/t.1.agent.log", f"{run_dir}/status")]
    journal.close()


def test_many_rows_commit_within_old_sqlites_limit_of_999_values(tmp_path: Path) -> None:
    """SQLite before 3.32 takes at most 999 values a statement: 100 attempt rows
    (18 values each) still go in, in statements small enough."""
    journal = Journal(tmp_path / "state")
    journal._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    run_id = journal.begin_run(
        fleet="f", config_path="f.toml", config_json="{}", policy="wave", started_at=1.0
    )
    run_dir = str(journal.run_dir(run_id))
    for number in range(1, 101):
        attempt = Attempt(
            attempt_id=number, task=f"t{number}", stage=Stage.AGENT, number=1, worker="w",
            host="local", run_dir=run_dir, started_at=2.0,
        )  # fmt: skip
        journal.record_attempt(run_id, attempt)
    journal.commit()
    assert len(rows(tmp_path / "state")) == 100
    journal.close()


def test_a_row_sqlite_cannot_take_fails_the_commit_and_is_kept(tmp_path: Path) -> None:
    """Not only SQLite's own errors: an integer too large for it (OverflowError)
    fails the commit as a JournalError, and the batch is kept, not lost."""
    journal = Journal(tmp_path / "state")
    run_id = journal.begin_run(
        fleet="f", config_path="f.toml", config_json="{}", policy="wave", started_at=1.0
    )
    attempt = Attempt(
        attempt_id=1, task="t", stage=Stage.AGENT, number=1, worker="w", host="local",
        run_dir=str(journal.run_dir(run_id)), pid=2**64,
    )  # fmt: skip
    journal.record_attempt(run_id, attempt)
    with pytest.raises(JournalError, match="cannot write the journal"):
        journal.commit()
    assert journal.pending == 1
    assert journal.committed < journal.recorded
    assert rows(tmp_path / "state") == []
    with pytest.raises(JournalError):
        journal.close()  # its last commit fails the same way, and says so (then closes)
    assert not (tmp_path / "state" / "journal.sqlite3-wal").exists()


def test_the_write_ahead_log_starts_over_after_each_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of short tasks commits once per task; the log must not grow with the
    run (it did: 57 MB for 3,000 tasks). The checkpointer thread stops short of
    what is committed while it works; the writer copies that itself before its
    next commit, which then writes the log from its start again."""
    # Only this test's nudges: each cycle is then the same, whatever the timing.
    monkeypatch.setattr(fleetdeck.journal, "CHECKPOINT_COMMITS", 10**9)
    state = tmp_path / "state"
    journal = Journal(state)
    run_id = journal.begin_run(
        fleet="f", config_path="f.toml", config_json="{}", policy="wave", started_at=1.0
    )
    checkpointer = journal._checkpointer  # white box: the thread and when it is done

    def commit_one(task: str) -> None:
        journal.append(run_id, Event(1.0, EventKind.TASK_READY, task, {"wave": 0}))
        journal.commit()

    log = state / "journal.sqlite3-wal"
    sizes = []
    for cycle in range(8):
        for number in range(20):
            commit_one(f"t{cycle}-{number}")
        # Commits that come while the thread works: a reader's snapshot taken
        # before them stops the thread's checkpoint short of them, as surely as
        # the thread being slow would.
        reader = sqlite3.connect(state / "journal.sqlite3", isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM events").fetchone()
        commit_one(f"t{cycle}-late-1")
        commit_one(f"t{cycle}-late-2")
        checkpointer.nudge()
        deadline = time.monotonic() + 10
        while not checkpointer._done.is_set():
            assert time.monotonic() < deadline, "the checkpoint did not finish in 10 s"
            time.sleep(0.005)
        reader.execute("COMMIT")
        reader.close()
        sizes.append(log.stat().st_size)
    journal.close()
    # The file keeps its largest size (SQLite overwrites it, it does not shrink it):
    # one cycle's commits. Without the writer's catch-up it grows by a cycle's
    # commits each time (1.5 MB after 8 cycles, against 0.25 MB).
    assert sizes[-1] < 2 * sizes[0], f"the log grew with every cycle: {sizes}"
    db = sqlite3.connect(state / "journal.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 8 * 22
    db.close()


def set_schema_version(state: Path, value: str) -> None:
    db = sqlite3.connect(state / "journal.sqlite3")
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    db.close()


def test_a_journal_of_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    """A newer fleetdeck's journal may mean other things by the same tables: it is
    neither read nor altered, and the state directory is not kept locked."""
    state = tmp_path / "state"
    Journal(state).close()
    newer = fleetdeck.journal.SCHEMA_VERSION + 1
    set_schema_version(state, str(newer))
    db = sqlite3.connect(state / "journal.sqlite3")
    db.execute("ALTER TABLE attempts DROP COLUMN status_path")  # as a newer schema might
    db.close()
    message = (
        f"{state}: the journal has schema version {newer}, newer than this fleetdeck's "
        f"{fleetdeck.journal.SCHEMA_VERSION}: upgrade fleetdeck, or use another --state-dir"
    )
    for _ in range(2):  # the second time: the lock was released, not held
        with pytest.raises(JournalError) as caught:
            Journal(state)
        assert str(caught.value) == message
    db = sqlite3.connect(state / "journal.sqlite3")
    columns = [row[1] for row in db.execute("PRAGMA table_info(attempts)")]
    db.close()
    assert "status_path" not in columns


def test_a_journal_of_this_schema_or_an_unreadable_one(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Journal(state).close()
    Journal(state).close()  # the version it recorded itself
    set_schema_version(state, "two")
    with pytest.raises(JournalError) as caught:
        Journal(state)
    assert str(caught.value) == (
        f"cannot open the journal in {state}: schema version 'two' is not a number"
    )
