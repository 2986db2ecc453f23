"""The journal: every event and attempt of every run, in SQLite (WAL), plus logs.

Layout of a state directory (0700; the files fleetdeck writes are 0600):

    journal.sqlite3                  runs, events, attempts (this module's schema)
    lock                             held by the supervisor using the directory
    runs/RUN/TASK.N.STAGE.log        stdout+stderr of attempt N's stage (agent|ci)
    runs/RUN/TASK.N.STAGE.out        what the attempt wrote to $FLEETDECK_OUTPUT
    runs/RUN/TASK.N.STAGE.inputs.json  $FLEETDECK_INPUTS of that attempt
    runs/RUN/no-inputs.json          the (empty) inputs of tasks without dependencies

Writes are buffered and committed together (group commit): the engine commits
whatever it recorded since the last commit, at once when a launch waits for it,
else within a few milliseconds, and only then tells anyone what happened, so
nothing is ever reported that the journal does not hold. A commit appends the
batch to the write-ahead log with a few write() calls and no fsync (WAL with
synchronous=NORMAL), several rows per statement. That survives the death of the
supervisor process at any moment; a power cut may lose the last commits.

Commits run on the caller's thread, in the event loop. A writer thread was
tried: under load, SQLite's many short GIL releases (one per row) and the
thread hand-offs made every commit wait for the loop, and the loop for the
commit (measured: 4,500-4,800 completions/s with the thread, see the README's
Performance section). What does take time, the checkpoint that copies the log
into the database and fsyncs it, runs on a thread of its own with its own
connection (`_Checkpointer`). Once after each of its checkpoints, a commit
first copies the pages committed meanwhile itself, so that the log starts over
instead of growing for the whole run: that one waits for the disk (two fsyncs,
1-2 ms on the development machine, more on a slow disk).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fleetdeck.model import Attempt, Event, EventKind

SCHEMA_VERSION = 1
# The write-ahead log is copied into the database once this many rows, or this many
# commits, were committed since the last time. A commit appends every page it
# changed (4 KiB each, about four for one task's rows) whatever its row count, so
# a run of one small commit per task reaches 250 commits first: about 4 MB of
# log, SQLite's own default (1000 pages).
CHECKPOINT_ROWS = 5000
CHECKPOINT_COMMITS = 250


def _encode(data: dict[str, Any]) -> str:
    """An event's details as compact JSON (orjson: this runs four times per task)."""
    return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


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
    error TEXT,
    pid_started REAL,               -- the process's start time: a reused pid is not ours
    status_path TEXT                -- where the shim records the exit status
);
CREATE INDEX IF NOT EXISTS attempts_by_run ON attempts(run_id, task);
"""

# Columns added after the first schema, for journals written before them.
_ADDED_ATTEMPT_COLUMNS = (("pid_started", "REAL"), ("status_path", "TEXT"))
_ATTEMPT_COLUMNS = (
    "attempt_id, run_id, task, stage, number, worker, host, pid, log_path, output_path,"
    " queued_at, started_at, finished_at, outcome, exit_code, error, pid_started, status_path"
)


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
    # mkdir(parents=True) gives the parents it creates the default mode (0755 with
    # the usual umask): what leads up to the directory is the user's business,
    # but the directory itself is private.
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:  # something that is not a directory is in the way
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(path)) from None


# Events, attempt rows written whole, updates of attempt rows (see _write_rows).
_Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


class _Checkpointer:
    """Copies the write-ahead log into the database when asked, off the loop.

    The writing connection does not checkpoint on its own (wal_autocheckpoint=0):
    this thread does, with its own connection, in PASSIVE mode (it never blocks
    the writer). The last checkpoint is made when the journal closes.

    A checkpoint alone does not keep the log short: SQLite writes the log from its
    start again only when a transaction begins with every frame copied, and the
    commits that come while this thread works always leave a few behind. So the
    log grew by every commit for the whole run (57 MB for 3,000 one-task commits,
    measured, beside a 2.6 MB database). Once this thread is done, the writer
    copies those few itself (`Journal._catch_up`), and its next transaction
    starts the log over, on disk blocks it already has.
    """

    def __init__(self, db_path: Path) -> None:
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._wanted = threading.Event()
        self._done = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="fleetdeck-checkpoint", daemon=True)
        self._thread.start()

    def nudge(self) -> None:
        """Checkpoint what is committed, soon."""
        self._wanted.set()

    def take_done(self) -> bool:
        """True once after each checkpoint this thread finished."""
        if not self._done.is_set():
            return False
        self._done.clear()
        return True

    def close(self) -> None:
        """Stop the thread (after the checkpoint in progress, if any)."""
        self._closing = True
        self._wanted.set()
        self._thread.join()
        with contextlib.suppress(sqlite3.Error):
            self._db.close()

    def _work(self) -> None:
        while True:
            self._wanted.wait()
            # Cleared before looking at _closing: a close() in between sets the
            # event again instead of being cleared away (the thread would then
            # wait forever and close() with it).
            self._wanted.clear()
            if self._closing:
                return
            # A failed checkpoint loses nothing (the log keeps every commit): the
            # next one, or the close, tries again.
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._done.set()


class Journal:
    """The SQLite journal of one state directory, open for writing.

    Holds an exclusive lock on the directory for as long as it is open, so a
    second supervisor is refused instead of interleaving its writes.
    """

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self._lock_fd: int | None = None
        self._events: list[tuple[int, float, str, str | None, str]] = []
        # Attempt rows to write whole, and updates of rows written before.
        self._attempts: dict[int, tuple[Any, ...]] = {}
        self._updates: dict[int, tuple[Any, ...]] = {}
        # Attempts whose row is committed and that have not ended.
        self._open_attempts: set[int] = set()
        self._rows_since_checkpoint = 0
        self._commits_since_checkpoint = 0
        # Rows buffered since the journal opened, and how many of them are
        # committed: a caller that noted `recorded` knows when its rows are durable.
        self.recorded = 0
        self.committed = 0
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
            self._db.execute("PRAGMA wal_autocheckpoint=0")  # _Checkpointer does it
            # Checked before anything is added to the schema: a newer fleetdeck's
            # journal may mean other things by the same tables.
            found = _schema_version(self._db)
            if found is not None and found > SCHEMA_VERSION:
                self._db.close()
                self._unlock()
                raise JournalError(
                    f"{self.state_dir}: the journal has schema version {found}, newer than "
                    f"this fleetdeck's {SCHEMA_VERSION}: upgrade fleetdeck, or use another "
                    "--state-dir"
                )
            self._db.executescript(_SCHEMA)
            _add_missing_columns(self._db)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            self._checkpointer = _Checkpointer(db_path)
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

    def _write_error(self, exc: BaseException) -> JournalError:
        return JournalError(f"cannot write the journal in {self.state_dir}: {_reason(exc)}")

    def begin_run(
        self, *, fleet: str, config_path: str, config_json: str, policy: str, started_at: float
    ) -> int:
        """Record the start of a run and return its id."""
        self.commit()
        try:
            run_id = self._db.execute(
                "INSERT INTO runs(fleet, config_path, config_json, policy, supervisor_pid,"
                " started_at) VALUES (?, ?, ?, ?, ?, ?)",
                (fleet, config_path, config_json, policy, os.getpid(), started_at),
            ).lastrowid
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None
        assert run_id is not None
        try:
            _private_dir(self.state_dir / "runs")
            _private_dir(self.run_dir(run_id))
        except OSError as exc:
            where = exc.filename or self.run_dir(run_id)
            raise JournalError(f"cannot create {where}: {_reason(exc)}") from None
        return run_id

    def next_attempt_id(self) -> int:
        """The first attempt id not used by any run in this journal."""
        row = self._db.execute("SELECT COALESCE(MAX(attempt_id), 0) FROM attempts").fetchone()
        return int(row[0]) + 1

    def append(self, run_id: int, event: Event) -> None:
        """Buffer an event; it is written by the next commit."""
        data = _encode(event.data) if event.data else "{}"
        # Enum members are strings already: sqlite3 stores them as their value.
        self._events.append((run_id, event.ts, event.kind, event.task, data))
        self.recorded += 1

    def record_attempt(self, run_id: int, attempt: Attempt) -> None:
        """Buffer the attempt's current row (written, or updated, by the next commit).

        An attempt is recorded when it is launched, when its process starts and
        when it ends. A row this journal committed already is brought up to date
        with an UPDATE of what can change, half the cost of writing it whole again
        (measured); any other goes in whole (INSERT OR REPLACE).
        """
        self.recorded += 1
        attempt_id = attempt.attempt_id
        # The columns that change after the launch (but the pid), in table order.
        changing = (
            attempt.queued_at,
            attempt.started_at,
            attempt.finished_at,
            attempt.outcome,
            attempt.exit_code,
            attempt.error,
            attempt.pid_started,
        )
        if attempt_id in self._open_attempts and attempt_id not in self._attempts:
            self._updates[attempt_id] = (attempt.pid, *changing, attempt_id)
            return
        stem = attempt.stem
        self._attempts[attempt_id] = (
            attempt_id,
            run_id,
            attempt.task,
            attempt.stage,
            attempt.number,
            attempt.worker,
            attempt.host,
            attempt.pid,
            stem + ".log",
            stem + ".out",
            *changing,
            attempt.status_path,
        )

    @property
    def pending(self) -> int:
        """Rows buffered and not yet committed."""
        return len(self._events) + len(self._attempts) + len(self._updates)

    def _take(self) -> _Rows:
        rows: _Rows = (self._events, list(self._attempts.values()), list(self._updates.values()))
        self._events, self._attempts, self._updates = [], {}, {}
        return rows

    def _give_back(self, rows: _Rows) -> None:
        """A batch that could not be written goes back in front of what came since."""
        events, attempts, updates = rows
        self._events = events + self._events
        newer = self._attempts
        self._attempts = {row[0]: row for row in attempts}
        self._attempts.update(newer)
        newer = self._updates
        self._updates = {row[-1]: row for row in updates}
        self._updates.update(newer)

    def _committed(self, rows: _Rows) -> None:
        """Note which attempts have a row that later records can UPDATE: those
        written and not ended (an ended attempt is rarely recorded again)."""
        for row in rows[1]:
            if row[_ROW_FINISHED_AT] is None:
                self._open_attempts.add(row[0])
        for update in rows[2]:
            if update[_UPDATE_FINISHED_AT] is not None:
                self._open_attempts.discard(update[-1])

    def commit(self) -> None:
        """Write everything buffered in one transaction. Raises JournalError, and
        then keeps the rows, to be written by the next commit that succeeds."""
        recorded = self.recorded
        if not self.pending:
            return
        # Before the rows are taken: whatever happens in it, they stay buffered.
        if self._checkpointer.take_done():
            self._catch_up()
        rows = self._take()
        try:
            _write_rows(self._db, rows)
        except Exception as exc:
            # SQLite's errors (a full disk), and any a row can raise on the way
            # in (an integer too large for SQLite raises OverflowError): the batch
            # is rolled back and kept, and the caller stops cleanly.
            self._give_back(rows)
            raise self._write_error(exc) from None
        self._committed(rows)
        self.committed = recorded
        self._rows_since_checkpoint += len(rows[0]) + len(rows[1]) + len(rows[2])
        self._commits_since_checkpoint += 1
        if (
            self._rows_since_checkpoint >= CHECKPOINT_ROWS
            or self._commits_since_checkpoint >= CHECKPOINT_COMMITS
        ):
            self._rows_since_checkpoint = self._commits_since_checkpoint = 0
            self._checkpointer.nudge()

    def _catch_up(self) -> None:
        """Copy into the database what was committed while the checkpointer worked,
        so that the next transaction writes the log from its start (see
        `_Checkpointer`). On the loop's thread: it waits for two fsyncs (1-2 ms
        here, more on a slow disk) and copies whatever the thread left, usually a
        few pages."""
        # PASSIVE never waits for a lock. A process reading the journal at that
        # moment (`fleetdeck report` during the run) makes it stop short, silently,
        # and the log grows until a later catch-up finds no reader; nothing is lost.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def finish_run(self, run_id: int, *, status: str, exit_code: int, finished_at: float) -> None:
        """Commit what is buffered and mark the run finished or interrupted."""
        self.commit()
        try:
            self._db.execute(
                "UPDATE runs SET status = ?, exit_code = ?, finished_at = ? WHERE run_id = ?",
                (status, exit_code, finished_at, run_id),
            )
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None

    def resume_run(self, run_id: int, *, config_json: str, policy: str) -> None:
        """Take over run `run_id` again: it is running, under this process, with
        this config (which may differ from the one it started with)."""
        self.commit()
        try:
            self._db.execute(
                "UPDATE runs SET status = 'running', exit_code = NULL, finished_at = NULL,"
                " supervisor_pid = ?, config_json = ?, policy = ? WHERE run_id = ?",
                (os.getpid(), config_json, policy, run_id),
            )
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None
        _private_dir(self.run_dir(run_id))

    def close(self) -> None:
        """Commit what is left, close the database and release the lock."""
        try:
            self.commit()
        finally:
            self._checkpointer.close()
            # The last connection to close checkpoints what is left.
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._unlock()

    # --- files --------------------------------------------------------------------

    def run_dir(self, run_id: int) -> Path:
        """Where the files of run `run_id` live."""
        return run_dir_in(self.state_dir, run_id)

    # --- reading ------------------------------------------------------------------

    def learned_durations(self) -> dict[str, float]:
        """How long each task took in earlier runs: per task, the mean duration of
        its successful agent attempts plus that of its successful CI attempts."""
        return read_learned_durations(self._db)

    def runs(self) -> list[RunRecord]:
        """Every run in this journal, oldest first."""
        return read_runs(self._db)

    def events(self, run_id: int) -> list[Event]:
        """The committed events of run `run_id`, in order."""
        return list(read_events(self._db, run_id))

    def added_tasks(self, run_id: int) -> list[dict[str, Any]]:
        """The tables of the tasks added to run `run_id` while it ran (its
        committed `task_added` events), in order."""
        cursor = self._db.execute(
            "SELECT data FROM events WHERE run_id = ? AND event = ? ORDER BY seq",
            (run_id, str(EventKind.TASK_ADDED)),
        )
        specs = (json.loads(data).get("spec") for (data,) in cursor)
        return [spec for spec in specs if isinstance(spec, dict)]

    def latest_run(self) -> RunRecord | None:
        """The most recent run in this journal, if any."""
        runs = read_runs(self._db, "WHERE run_id = (SELECT MAX(run_id) FROM runs)")
        return runs[0] if runs else None

    def attempts(self, run_id: int) -> list[AttemptRecordRow]:
        """Every attempt of run `run_id`, oldest first."""
        return read_attempts(self._db, run_id)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _write_rows(db: sqlite3.Connection, rows: _Rows) -> None:
    events, attempts, updates = rows
    with _transaction(db):
        _insert(db, "INSERT INTO events(run_id, ts, event, task, data) VALUES", 5, events)
        _insert(db, f"INSERT OR REPLACE INTO attempts({_ATTEMPT_COLUMNS}) VALUES", 18, attempts)
        if updates:
            db.executemany(_UPDATE_ATTEMPT, updates)


# What changes in an attempt's row after its launch (Journal.record_attempt).
_UPDATE_ATTEMPT = (
    "UPDATE attempts SET pid = ?, queued_at = ?, started_at = ?, finished_at = ?,"
    " outcome = ?, exit_code = ?, error = ?, pid_started = ? WHERE attempt_id = ?"
)
# Where finished_at is in a whole row (_ATTEMPT_COLUMNS) and in an update's
# values (_UPDATE_ATTEMPT), which end with the attempt id.
_ROW_FINISHED_AT = _ATTEMPT_COLUMNS.split(", ").index("finished_at")
_UPDATE_FINISHED_AT = 3


# Rows per INSERT statement: one statement of many rows costs SQLite a quarter
# to a half less than as many statements of one row (measured: 4 events in one
# statement 14 us, in four 27 us), and few distinct sizes keep the statements
# in sqlite3's cache. A task's batch is typically 4 events and 2 attempt rows.
_CHUNKS = (64, 32, 16, 4, 2, 1)
# SQLite before 3.32 takes at most 999 values per statement (newer ones 32,766):
# attempt rows (18 values) go at most 32 to a statement.
_MAX_VALUES = 999


def _insert(db: sqlite3.Connection, head: str, width: int, rows: list[tuple[Any, ...]]) -> None:
    """INSERT `rows` (each of `width` values) with `head`, several rows a statement."""
    done = 0
    while done < len(rows):
        size = next(
            size for size in _CHUNKS if size <= len(rows) - done and size * width <= _MAX_VALUES
        )
        chunk = rows[done : done + size]
        db.execute(_insert_sql(head, width, size), [value for row in chunk for value in row])
        done += size


@functools.cache
def _insert_sql(head: str, width: int, size: int) -> str:
    placeholders = "(" + ", ".join("?" * width) + ")"
    return head + " " + ", ".join([placeholders] * size)


def read_learned_durations(db: sqlite3.Connection) -> dict[str, float]:
    """Per task id: mean successful agent attempt + mean successful CI attempt."""
    rows = db.execute(
        "SELECT task, stage, AVG(finished_at - started_at) FROM attempts"
        " WHERE outcome = 'ok' AND finished_at IS NOT NULL AND started_at IS NOT NULL"
        " GROUP BY task, stage"
    ).fetchall()
    learned: dict[str, float] = {}
    for task, _stage, seconds in rows:
        learned[task] = learned.get(task, 0.0) + max(0.0, float(seconds))
    return learned


def read_runs(db: sqlite3.Connection, where: str = "") -> list[RunRecord]:
    """Every run recorded in `db` (or those `where` selects), oldest first."""
    rows = db.execute(
        "SELECT run_id, fleet, config_path, config_json, policy, started_at, finished_at,"
        f" status, exit_code FROM runs {where} ORDER BY run_id"
    ).fetchall()
    return [RunRecord(*row) for row in rows]


@dataclass(slots=True, frozen=True)
class AttemptRecordRow:
    """One row of `attempts`: what a later supervisor needs to find the attempt again."""

    attempt_id: int
    task: str
    stage: str
    number: int
    worker: str
    host: str
    pid: int | None
    queued_at: float | None
    started_at: float | None
    finished_at: float | None
    outcome: str | None
    exit_code: int | None
    error: str | None
    pid_started: float | None
    status_path: str | None


def run_dir_in(state_dir: Path, run_id: int) -> Path:
    """Where the files of run `run_id` of the journal in `state_dir` live (its
    attempts' logs: RUN_DIR/TASK.N.STAGE.log)."""
    return state_dir / "runs" / str(run_id)


def read_attempts(db: sqlite3.Connection, run_id: int) -> list[AttemptRecordRow]:
    """The attempts of run `run_id` in `db`, oldest first."""
    rows = db.execute(
        "SELECT attempt_id, task, stage, number, worker, host, pid, queued_at, started_at,"
        " finished_at, outcome, exit_code, error, pid_started, status_path"
        " FROM attempts WHERE run_id = ? ORDER BY attempt_id",
        (run_id,),
    ).fetchall()
    return [AttemptRecordRow(*row) for row in rows]


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a journal written by an older fleetdeck up to this schema."""
    present = {row[1] for row in db.execute("PRAGMA table_info(attempts)")}
    for name, kind in _ADDED_ATTEMPT_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE attempts ADD COLUMN {name} {kind}")


def _schema_version(db: sqlite3.Connection) -> int | None:
    """The schema version recorded in the journal `db`; None for a new journal."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            try:
                return int(row[0])
            except ValueError:
                raise sqlite3.DatabaseError(f"schema version {row[0]!r} is not a number") from None
    return None


def read_events(db: sqlite3.Connection, run_id: int) -> Iterator[Event]:
    """The events of run `run_id` in `db`, in order."""
    cursor = db.execute(
        "SELECT ts, event, task, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    )
    for ts, kind, task, data in cursor:
        yield Event(ts=ts, kind=EventKind(kind), task=task, data=json.loads(data))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
