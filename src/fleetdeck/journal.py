"""The journal: every event and attempt of every run, in SQLite (WAL), plus logs.

Layout of a state directory (0700; the files fleetdeck writes are 0600):

    journal.sqlite3                  runs, events, attempts (this module's schema)
    lock                             held by the supervisor using the directory
    runs/RUN/TASK.N.STAGE.log        stdout+stderr of attempt N's stage (agent|ci)
    runs/RUN/TASK.N.STAGE.out        what the attempt wrote to $FLEETDECK_OUTPUT
    runs/RUN/TASK.N.STAGE.inputs.json  $FLEETDECK_INPUTS of that attempt
    runs/RUN/no-inputs.json          the (empty) inputs of tasks without dependencies

Writes are buffered and committed together (group commit): the engine calls
`commit()` once per turn of the event loop, and only then tells anyone what
happened, so nothing is ever reported that the journal does not hold. WAL with
synchronous=NORMAL survives the death of the supervisor process at any moment;
a power cut may lose the last commits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetdeck.model import Attempt, Event, EventKind

SCHEMA_VERSION = 1
DB_NAME = "journal.sqlite3"
LOCK_NAME = "lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY,
    fleet TEXT NOT NULL,
    config_path TEXT NOT NULL,
    config_json TEXT NOT NULL,      -- the validated config, to rebuild reports
    policy TEXT NOT NULL,
    supervisor_pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL DEFAULT 'running',  -- running|finished|interrupted
    exit_code INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    ts REAL NOT NULL,
    event TEXT NOT NULL,
    task TEXT,
    data TEXT NOT NULL              -- JSON object
);
CREATE INDEX IF NOT EXISTS events_by_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS attempts (
    attempt_id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    task TEXT NOT NULL,
    stage TEXT NOT NULL,
    number INTEGER NOT NULL,
    worker TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER,
    log_path TEXT NOT NULL,
    output_path TEXT NOT NULL,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    outcome TEXT,
    exit_code INTEGER,
    error TEXT
);
CREATE INDEX IF NOT EXISTS attempts_by_run ON attempts(run_id, task);
"""


class JournalError(Exception):
    """The journal cannot be opened or written; the message says where and why."""


class StateDirBusy(JournalError):
    """Another supervisor holds the state directory."""


@dataclass(slots=True, frozen=True)
class RunRecord:
    """One row of `runs`."""

    run_id: int
    fleet: str
    config_path: str
    config_json: str
    policy: str
    started_at: float
    finished_at: float | None
    status: str
    exit_code: int | None


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


class Journal:
    """The SQLite journal of one state directory, open for writing.

    Holds an exclusive lock on the directory for as long as it is open, so a
    second supervisor is refused instead of interleaving its writes.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self._lock_fd: int | None = None
        self._events: list[tuple[int, float, str, str | None, str]] = []
        self._attempts: dict[int, tuple[Any, ...]] = {}
        try:
            _private_dir(self.state_dir)
            self._lock()
            db_path = self.state_dir / DB_NAME
            # Create the file 0600 ourselves: SQLite would use 0644, and gives its
            # -wal and -shm files the database file's mode.
            os.close(os.open(db_path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        except StateDirBusy:
            raise
        except (OSError, sqlite3.Error) as exc:
            self._unlock()
            raise JournalError(
                f"cannot open the journal in {self.state_dir}: {_reason(exc)}"
            ) from None

    # --- locking ------------------------------------------------------------------

    def _lock(self) -> None:
        path = self.state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(
                f"{self.state_dir} is in use by another fleetdeck (pid {holder}); "
                "wait for it to finish, or use another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # --- writing ------------------------------------------------------------------

    def begin_run(
        self, *, fleet: str, config_path: str, config_json: str, policy: str, started_at: float
    ) -> int:
        """Record the start of a run and return its id."""
        self.commit()
        try:
            cursor = self._db.execute(
                "INSERT INTO runs(fleet, config_path, config_json, policy, supervisor_pid,"
                " started_at) VALUES (?, ?, ?, ?, ?, ?)",
                (fleet, config_path, config_json, policy, os.getpid(), started_at),
            )
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot write the journal in {self.state_dir}: {_reason(exc)}"
            ) from None
        run_id = cursor.lastrowid
        assert run_id is not None
        _private_dir(self.run_dir(run_id))
        return run_id

    def next_attempt_id(self) -> int:
        """The first attempt id not used by any run in this journal."""
        row = self._db.execute("SELECT COALESCE(MAX(attempt_id), 0) FROM attempts").fetchone()
        return int(row[0]) + 1

    def append(self, run_id: int, event: Event) -> None:
        """Buffer an event; it is written at the next `commit()`."""
        data = json.dumps(event.data, separators=(",", ":"), default=str) if event.data else "{}"
        self._events.append((run_id, event.ts, str(event.kind), event.task, data))

    def record_attempt(self, run_id: int, attempt: Attempt) -> None:
        """Buffer the attempt's current row (insert or replace at `commit()`)."""
        self._attempts[attempt.attempt_id] = (
            attempt.attempt_id,
            run_id,
            attempt.task,
            str(attempt.stage),
            attempt.number,
            attempt.worker,
            attempt.host,
            attempt.pid,
            attempt.log_path,
            attempt.output_path,
            attempt.queued_at,
            attempt.started_at,
            attempt.finished_at,
            None if attempt.outcome is None else str(attempt.outcome),
            attempt.exit_code,
            attempt.error,
        )

    @property
    def pending(self) -> int:
        """Rows buffered and not yet committed."""
        return len(self._events) + len(self._attempts)

    def commit(self) -> None:
        """Write everything buffered in one transaction."""
        if not self._events and not self._attempts:
            return
        events, self._events = self._events, []
        attempts, self._attempts = list(self._attempts.values()), {}
        try:
            with self._transaction():
                if events:
                    self._db.executemany(
                        "INSERT INTO events(run_id, ts, event, task, data) VALUES (?, ?, ?, ?, ?)",
                        events,
                    )
                if attempts:
                    self._db.executemany(
                        "INSERT OR REPLACE INTO attempts VALUES"
                        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        attempts,
                    )
        except sqlite3.Error as exc:
            # Keep what we could not write, so a later commit may still save it.
            self._events = events + self._events
            for row in attempts:
                self._attempts.setdefault(row[0], row)
            raise JournalError(
                f"cannot write the journal in {self.state_dir}: {_reason(exc)}"
            ) from None

    def finish_run(self, run_id: int, *, status: str, exit_code: int, finished_at: float) -> None:
        """Commit what is buffered and mark the run finished or interrupted."""
        self.commit()
        try:
            with self._transaction():
                self._db.execute(
                    "UPDATE runs SET status = ?, exit_code = ?, finished_at = ? WHERE run_id = ?",
                    (status, exit_code, finished_at, run_id),
                )
        except sqlite3.Error as exc:
            raise JournalError(
                f"cannot write the journal in {self.state_dir}: {_reason(exc)}"
            ) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Commit what is left, close the database and release the lock."""
        try:
            self.commit()
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._unlock()

    # --- files --------------------------------------------------------------------

    def run_dir(self, run_id: int) -> Path:
        """Where the files of run `run_id` live."""
        return self.state_dir / "runs" / str(run_id)

    # --- reading ------------------------------------------------------------------

    def runs(self) -> list[RunRecord]:
        """Every run in this journal, oldest first."""
        return read_runs(self._db)

    def events(self, run_id: int) -> Iterator[Event]:
        """The committed events of run `run_id`, in order."""
        return read_events(self._db, run_id)


def read_runs(db: sqlite3.Connection) -> list[RunRecord]:
    """Every run recorded in `db`, oldest first."""
    rows = db.execute(
        "SELECT run_id, fleet, config_path, config_json, policy, started_at, finished_at,"
        " status, exit_code FROM runs ORDER BY run_id"
    ).fetchall()
    return [RunRecord(*row) for row in rows]


def read_events(db: sqlite3.Connection, run_id: int) -> Iterator[Event]:
    """The events of run `run_id` in `db`, in order."""
    cursor = db.execute(
        "SELECT ts, event, task, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    )
    for ts, kind, task, data in cursor:
        yield Event(ts=ts, kind=EventKind(kind), task=task, data=json.loads(data))


def open_readonly(state_dir: str | Path) -> sqlite3.Connection:
    """Open a state directory's journal for reading, without taking its lock."""
    path = Path(state_dir) / DB_NAME
    if not path.is_file():
        raise JournalError(f"no journal in {state_dir} (expected {path})")
    try:
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise JournalError(f"cannot read the journal {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
