"""`fleetdeck report STATE_DIR`: a run's table and report, read back from its journal.

The figures are rebuilt from the journaled events by the same `ReportBuilder` the
engine feeds live, and printed by the same functions as the headless view's
end-of-run summary, so a report read afterwards is the one the run printed (or
would have printed, for a run that never got to its end).

Reading never writes: the state directory may belong to a supervisor that is
running now (SQLite's WAL lets us read beside it), or sit on a read-only disk,
and nothing is created in it. SQLite's read-only mode still creates the `-wal`
and `-shm` files of a journal whose supervisor closed it cleanly (they are gone
then), so such a journal is opened `immutable` instead; since that mode trusts
the file not to change, the read is repeated in read-only mode when a supervisor
turned up meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fleetdeck.attempts import UNHAPPY, AttemptLine, attempt_json, attempt_lines, format_attempts
from fleetdeck.config import ConfigError, Fleet, build_fleet, load_fleet
from fleetdeck.headless import format_policies, format_report, format_task_table
from fleetdeck.journal import (
    DB_NAME,
    LOCK_NAME,
    AttemptRecordRow,
    RunRecord,
    read_attempts,
    run_dir_in,
)
from fleetdeck.metrics import Report, ReportBuilder, TaskSummary
from fleetdeck.model import Event, EventKind, iso_timestamp
from fleetdeck.redact import Redactor
from fleetdeck.text import format_seconds, plural

# How a run ended, as the report says it (the journal's own `status` says only
# running|finished|interrupted; a killed supervisor leaves `running` behind).
FINISHED = "finished"
INTERRUPTED = "interrupted"
RUNNING = "running"

_KINDS = {str(kind): kind for kind in EventKind}


class ReportError(Exception):
    """The report cannot be made; the message (one line) names the path and why."""


@dataclass(slots=True, frozen=True)
class RunReplay:
    """One run as its journal tells it: the fleet it ran, the table, the report."""

    state_dir: Path
    run: RunRecord
    run_ids: tuple[int, ...]  # every run in the journal, oldest first
    fleet: Fleet
    tasks: list[TaskSummary]
    report: Report
    status: str  # FINISHED, INTERRUPTED or RUNNING
    # Why an interrupted run ended, for the operator.
    reason: str | None
    ended_at: float | None
    attempts: tuple[AttemptLine, ...] = ()

    @property
    def unfinished(self) -> list[TaskSummary]:
        """Tasks that had not ended when the run stopped, with their last state."""
        return [task for task in self.tasks if not task.state.is_terminal]


def load_run(state_dir: str | Path, run_id: int | None = None) -> RunReplay:
    """Read run `run_id` (the latest by default) of the journal in `state_dir`.

    Raises ReportError for a missing or foreign directory, an unreadable or empty
    journal, or a run number the journal does not hold.
    """
    directory = Path(state_dir)
    if not directory.exists():
        raise ReportError(f"{directory}: no such directory")
    if not directory.is_dir():
        raise ReportError(f"{directory}: not a state directory{_config_hint(directory)}")
    path = directory / DB_NAME
    if not path.exists():
        raise ReportError(f"{directory}: not a fleetdeck state directory (no {DB_NAME})")
    runs, events, record, pid, rows = _read(path, directory, run_id)
    fleet = _fleet_of(record, path)
    builder = ReportBuilder(fleet)
    try:
        for event in events:
            builder.feed(event)
    except (TypeError, ValueError, KeyError) as exc:
        # Only a damaged journal holds events the engine never wrote.
        raise ReportError(f"{path}: run {record.run_id} has a damaged event: {exc!r}") from None
    status, reason = _status(directory, record, pid, latest=record.run_id == runs[-1].run_id)
    # A run still going has lasted until now, not until its last event.
    report = builder.report(until=time.time() if status == RUNNING else None)
    ended_at = builder.finished_at
    if ended_at is None and status == INTERRUPTED:
        # The supervisor died: as far as anyone knows, the run ended with the
        # last event it journaled (the report measures it so too).
        ended_at = events[-1].ts if events else record.started_at
    return RunReplay(
        state_dir=directory,
        run=record,
        run_ids=tuple(run.run_id for run in runs),
        fleet=fleet,
        tasks=builder.summaries(),
        report=report,
        status=status,
        reason=reason,
        ended_at=ended_at,
        attempts=attempt_lines(
            rows,
            events,
            run_dir_in(directory, record.run_id),
            live=status == RUNNING,
            redactor=Redactor.for_fleet(fleet),
        ),
    )


def _config_hint(path: Path) -> str:
    """For a fleet's config given instead of its state directory: which one to read."""
    try:
        fleet = load_fleet(path)
    except ConfigError:
        return ""
    state = fleet.state_dir
    if state.is_relative_to(Path.cwd()):
        state = Path(os.path.relpath(state))
    return f": a fleet's config; its runs are in {state} (`fleetdeck report {state}`)"


def _read(
    path: Path, directory: Path, run_id: int | None
) -> tuple[list[RunRecord], list[Event], RunRecord, int | None, list[AttemptRecordRow]]:
    for attempt in range(3):
        # A journal nobody has open has no -wal file; read it without creating one.
        quiet = not _wal_path(path).exists()
        before = _signature(path)
        with _connect(path, immutable=quiet) as db:
            rows = _runs(db, path)
            if not rows:
                raise ReportError(f"{directory}: the journal holds no runs yet")
            runs = [record for record, _pid in rows]
            record, pid = _pick(rows, run_id, directory)
            events = list(_events(db, path, record.run_id))
            attempts = _attempt_rows(db, path, record.run_id)
        # An immutable read is only good if no supervisor wrote meanwhile.
        if not quiet or (not _wal_path(path).exists() and _signature(path) == before):
            return runs, events, record, pid, attempts
        if attempt == 2:
            break
    raise ReportError(f"{path}: the journal kept changing while it was read; try again")


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@contextlib.contextmanager
def _connect(path: Path, *, immutable: bool) -> Iterator[sqlite3.Connection]:
    mode = "immutable=1" if immutable else "mode=ro"
    uri = f"file:{quote(str(path.resolve()))}?{mode}"
    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot open the journal: {_one_line(exc)}") from None
    # A damaged page can hold bytes that are not UTF-8: show them, do not fail.
    db.text_factory = lambda data: data.decode("utf-8", errors="replace")
    try:
        yield db
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path}: cannot read the journal: {_one_line(exc)}") from None
    except UnicodeDecodeError:
        # sqlite3 decodes names and messages itself, before any text_factory.
        raise ReportError(f"{path}: cannot read the journal: it is damaged") from None
    finally:
        db.close()


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An error message on one line, cut to a readable length (SQLite quotes whole
    schema statements, newlines and all, when one is damaged)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _runs(db: sqlite3.Connection, path: Path) -> list[tuple[RunRecord, int | None]]:
    """Every run, oldest first, with the pid of its supervisor."""
    try:
        rows = db.execute(
            "SELECT run_id, fleet, config_path, config_json, policy, started_at, finished_at,"
            " status, exit_code, supervisor_pid FROM runs ORDER BY run_id"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise ReportError(f"{path}: not a fleetdeck journal (no runs table)") from None
        raise
    for row in rows:
        run_id, started_at = row[0], row[5]
        if not isinstance(run_id, int) or not isinstance(started_at, int | float):
            raise ReportError(f"{path}: cannot read the journal: a damaged row in runs")
    return [(RunRecord(*row[:-1]), row[-1]) for row in rows]


def _pick(
    runs: list[tuple[RunRecord, int | None]], run_id: int | None, directory: Path
) -> tuple[RunRecord, int | None]:
    if run_id is None:
        return runs[-1]
    for run in runs:
        if run[0].run_id == run_id:
            return run
    ids = [run.run_id for run, _pid in runs]
    held = f"run {ids[0]}" if len(ids) == 1 else f"runs {_ranges(ids)}"
    raise ReportError(f"{directory}: no run {run_id} in the journal (it holds {held})")


def _ranges(ids: list[int]) -> str:
    """`1-3, 5` for [1, 2, 3, 5]."""
    parts: list[str] = []
    start = previous = ids[0]
    for value in [*ids[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ", ".join(parts)


def _events(db: sqlite3.Connection, path: Path, run_id: int) -> Iterator[Event]:
    cursor = db.execute(
        "SELECT ts, event, task, data FROM events WHERE run_id = ? ORDER BY seq", (run_id,)
    )
    for ts, kind, task, data in cursor:
        known = _KINDS.get(kind)
        if known is None:
            continue  # an event a newer fleetdeck wrote: not part of the report
        try:
            details = json.loads(data)
        except (TypeError, ValueError):
            raise ReportError(f"{path}: a {kind} event of run {run_id} is not JSON") from None
        yield Event(ts=ts, kind=known, task=task, data=details if isinstance(details, dict) else {})


def _attempt_rows(db: sqlite3.Connection, path: Path, run_id: int) -> list[AttemptRecordRow]:
    try:
        rows = read_attempts(db, run_id)
    except sqlite3.OperationalError as exc:
        raise ReportError(f"{path}: cannot read the attempts: {_one_line(exc)}") from None
    if not all(map(_sound, rows)):
        raise ReportError(f"{path}: cannot read the journal: a damaged row in attempts")
    return rows


def _sound(row: AttemptRecordRow) -> bool:
    """True when the row's values have the types the engine writes."""
    times = (row.started_at, row.finished_at)
    return (
        isinstance(row.task, str)
        and isinstance(row.number, int)
        and isinstance(row.stage, str)
        and isinstance(row.host, str)
        and isinstance(row.worker, str)
        and all(value is None or isinstance(value, int | float) for value in times)
        and (row.exit_code is None or isinstance(row.exit_code, int))
        and (row.outcome is None or isinstance(row.outcome, str))
        and (row.error is None or isinstance(row.error, str))
    )


def _fleet_of(run: RunRecord, path: Path) -> Fleet:
    """The fleet as it was validated when the run started (the journal keeps it)."""
    source = run.config_path
    try:
        data = json.loads(run.config_json)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return build_fleet(data, source=source, base_dir=Path(source).parent)
    except (ValueError, ConfigError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReportError(
            f"{path}: cannot rebuild the fleet of run {run.run_id} from its journal: {first}"
        ) from None


# --- how the run ended ----------------------------------------------------------------


def _status(
    directory: Path, run: RunRecord, pid: int | None, *, latest: bool
) -> tuple[str, str | None]:
    if run.status == FINISHED:
        return FINISHED, None
    if run.status == INTERRUPTED:
        # The journal does not say how (q in the TUI, Ctrl-C, a signal): only who.
        return INTERRUPTED, "stopped by the operator before every task ended"
    # `running` in the journal: true only while its supervisor still holds the lock.
    # Only the latest run can be live: a supervisor holds the directory alone.
    if latest and _lock_held(directory / LOCK_NAME):
        return RUNNING, None
    return INTERRUPTED, f"the supervisor (pid {pid}) ended without finishing the run"


def _lock_held(lock: Path) -> bool:
    """True when some process holds the state directory's flock.

    Read from /proc/locks rather than by trying the lock ourselves, which would,
    for an instant, refuse a supervisor that starts then.
    """
    try:
        stat = lock.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return False
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5456194 0 EOF" (a "->" marks waiters)
        if "FLOCK" in fields and "->" not in fields and device in fields:
            return True
    return False


# --- printing ---------------------------------------------------------------------------


def format_replay(replay: RunReplay) -> str:
    """The text report: which run, how it ended, what is unfinished, the table, the report."""
    run = replay.run
    lines = [
        f"run {run.run_id} (of {len(replay.run_ids)}) in {replay.state_dir}: "
        f"fleet '{run.fleet}' ({run.config_path}), "
        f"policy {format_policies(replay.report) if replay.report.policies else run.policy}",
        f"started {_local(run.started_at)}, {_ending(replay)}",
    ]
    unfinished = replay.unfinished
    if replay.status != FINISHED and unfinished:
        width = max(len(task.task) for task in unfinished)
        verb = "not yet ended" if replay.status == RUNNING else "unfinished"
        lines.append(f"{plural(len(unfinished), 'task')} {verb} (last state):")
        lines += [f"  {task.task:<{width}}  {task.state}" for task in unfinished]
    lines += ["", format_task_table(replay.tasks), "", format_report(replay.report)]
    unhappy = [line for line in replay.attempts if line.outcome in UNHAPPY]
    if unhappy:
        lines += ["", format_attempts(unhappy)]
    return "\n".join(lines)


def _ending(replay: RunReplay) -> str:
    elapsed = format_seconds(replay.report.makespan)  # until now, for a live run
    if replay.status == RUNNING:
        return f"still running ({elapsed} so far)"
    if replay.status == FINISHED:
        return f"finished after {elapsed}, exit code {replay.run.exit_code}"
    return f"interrupted after {elapsed}: {replay.reason}"


def _local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def replay_json(replay: RunReplay) -> dict[str, Any]:
    """The report as one JSON object (`fleetdeck report --json`)."""
    run = replay.run
    return {
        "state_dir": str(replay.state_dir),
        "run_id": run.run_id,
        "runs": list(replay.run_ids),
        "fleet": run.fleet,
        "config_path": run.config_path,
        "policy": run.policy,
        "status": replay.status,
        "reason": replay.reason,
        "exit_code": run.exit_code,
        "started_at": iso_timestamp(run.started_at),
        "ended_at": None if replay.ended_at is None else iso_timestamp(replay.ended_at),
        "tasks": [
            {
                "task": task.task,
                "state": str(task.state),
                "attempts": task.attempts,
                "duration": task.duration,
                "ci_wait": task.ci_wait,
                **({} if task.usage is None else {"usage": task.usage.to_json_dict()}),
            }
            for task in replay.tasks
        ],
        "unfinished": [{"task": task.task, "state": str(task.state)} for task in replay.unfinished],
        "attempts": [attempt_json(line) for line in replay.attempts],
        "report": replay.report.to_json_dict(),
    }
