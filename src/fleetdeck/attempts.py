"""The attempts of a run as `fleetdeck report` shows them: how each ended, in words,
and for those that did not succeed, where their log is and its last lines.

An attempt's log is RUN_DIR/TASK.N.STAGE.log (`Attempt.log_path`); its outcome
is in the journal's attempts table, and why it ended in its `attempt_finished`
event (`interrupted` for the attempts a stopping run ended).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleetdeck.logtail import last_lines
from fleetdeck.model import Event, EventKind, Outcome, iso_timestamp
from fleetdeck.text import format_seconds, plural

if TYPE_CHECKING:
    from pathlib import Path

    from fleetdeck.journal import AttemptRecordRow
    from fleetdeck.redact import Redactor

# How many of its log's last lines an attempt that did not succeed shows.
TAIL_LINES = 5
# Logs read for a report, and attempts listed in its text: the latest that did not
# succeed (a run of 100,000 failed tasks would otherwise read 100,000 logs).
MAX_TAILS = 200
MAX_LISTED = 20


def log_path(run_dir: str, task: str, number: object, stage: object) -> str:
    """The log of attempt `number` of `task`'s `stage`, as the engine names it
    (`Attempt.log_path`): RUN_DIR/TASK.N.STAGE.log."""
    return f"{run_dir}/{task}.{number}.{stage}.log"


@dataclass(slots=True, frozen=True)
class AttemptLine:
    """One attempt as the report shows it: how it ended in words, and its log."""

    row: AttemptRecordRow
    outcome: str  # ok, failed, timeout, cancelled, lost, interrupted or running
    error: str | None
    log: str
    # The log's last lines, for an attempt that did not succeed (None: not read,
    # for one that succeeded or past the MAX_TAILS latest).
    tail: tuple[str, ...] | None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, once ended."""
        started, finished = self.row.started_at, self.row.finished_at
        return None if started is None or finished is None else finished - started


# Outcomes that say something went wrong, for which the log's tail is kept.
UNHAPPY = frozenset({Outcome.FAILED, Outcome.TIMEOUT, Outcome.LOST, "interrupted"})


def attempt_outcome(outcome: str | None, *, reason: str | None, live: bool) -> str:
    """How an attempt ended, in one word: its outcome, `interrupted` for one the
    run's stop ended (or that never ended, the supervisor gone), `running` only
    while the run is live."""
    if outcome is None:
        return "running" if live else "interrupted"
    if outcome == Outcome.CANCELLED and reason == "interrupted":
        return "interrupted"
    return outcome


def attempt_error(error: str | None, exit_code: int | None) -> str | None:
    """The attempt's error, or `exit 3` for a command that just exited non-zero."""
    if error:
        return error
    if exit_code:
        return f"exit {exit_code}"
    return None


def attempt_lines(
    rows: list[AttemptRecordRow],
    events: list[Event],
    run_dir: Path,
    *,
    live: bool,
    redactor: Redactor,
) -> tuple[AttemptLine, ...]:
    """Each attempt of the journal's `rows` in words, with the last lines of the
    log of those that did not succeed (`live`: the run is still going)."""
    # The reason an attempt ended is in its attempt_finished event, not its row.
    reasons: dict[tuple[str | None, Any, Any], str] = {}
    for event in events:
        if event.kind is EventKind.ATTEMPT_FINISHED and "reason" in event.data:
            data = event.data
            reasons[event.task, data.get("attempt"), data.get("stage")] = str(data["reason"])
    outcomes = [
        attempt_outcome(
            row.outcome, reason=reasons.get((row.task, row.number, row.stage)), live=live
        )
        for row in rows
    ]
    unhappy = [index for index, outcome in enumerate(outcomes) if outcome in UNHAPPY]
    tailed = set(unhappy[-MAX_TAILS:])
    lines = []
    for index, (row, outcome) in enumerate(zip(rows, outcomes, strict=True)):
        log = log_path(str(run_dir), row.task, row.number, row.stage)
        tail = last_lines(log, TAIL_LINES, redact=redactor) if index in tailed else None
        lines.append(
            AttemptLine(
                row=row,
                outcome=outcome,
                error=attempt_error(row.error, row.exit_code),
                log=log,
                tail=None if tail is None else tuple(tail),
            )
        )
    return tuple(lines)


def format_attempts(unhappy: list[AttemptLine]) -> str:
    """The attempts that did not succeed (the MAX_LISTED latest): a table, then each
    one's log and last lines."""
    attempts = unhappy[-MAX_LISTED:]
    header = ("task", "#", "stage", "outcome", "duration", "host", "error")
    rows = [
        (
            a.row.task,
            str(a.row.number),
            a.row.stage,
            a.outcome,
            format_seconds(a.duration),
            a.row.host,
            a.error or "",
        )
        for a in attempts
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{plural(len(unhappy), 'attempt')} that did not succeed:"]
    if len(unhappy) > len(attempts):
        lines[0] += f" the latest {len(attempts)} (`--json` lists every attempt)"
    for row in [header, *rows]:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for a in attempts:
        lines.append("")
        shown = ", last lines:" if a.tail else " (empty or missing)"
        lines.append(f"{a.row.task} #{a.row.number} {a.row.stage}: log {a.log}{shown}")
        lines += [f"  | {line}" for line in a.tail or ()]
    return "\n".join(lines)


def attempt_json(line: AttemptLine) -> dict[str, Any]:
    """One attempt in `fleetdeck report --json`."""
    row = line.row
    return {
        "task": row.task,
        "attempt": row.number,
        "stage": row.stage,
        "worker": row.worker,
        "host": row.host,
        "outcome": line.outcome,
        "exit_code": row.exit_code,
        "error": line.error,
        "started_at": None if row.started_at is None else iso_timestamp(row.started_at),
        "finished_at": None if row.finished_at is None else iso_timestamp(row.finished_at),
        "duration": line.duration,
        "log": line.log,
        "tail": None if line.tail is None else list(line.tail),
    }
