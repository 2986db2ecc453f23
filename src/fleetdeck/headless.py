"""The --no-tui view: one line per event, then the per-task table and the report.

`run_headless` shows a run to its end through a client (fleetdeck.client), as
`fleetdeck.tui.run_tui` does with the TUI; the run itself, and the signals that
stop it (SIGINT among them here), are its `RunHandle`'s (fleetdeck.lifecycle).

Text lines read `HH:MM:SS.mmm  task  event  details` (local time); `--json` prints
one JSON object per event with a UTC timestamp instead, for scripts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fleetdeck.attempts import TAIL_LINES, log_path
from fleetdeck.client import CommandError
from fleetdeck.metrics import Report, TaskSummary, TokenUsage
from fleetdeck.model import Event, EventKind, Outcome
from fleetdeck.text import format_seconds, plural

if TYPE_CHECKING:
    from fleetdeck.client import EngineClient, RunHandle

_FAILED_OUTCOMES = frozenset({Outcome.FAILED, Outcome.TIMEOUT})
# Under an event line, aligned with its task column (after `HH:MM:SS.mmm  `).
_UNDER = " " * 14

# Keys shown first, in this order, when they are present in an event's details.
_DETAIL_ORDER = (
    "reused_from",
    "stage",
    "attempt",
    "agent",
    "runner",
    "host",
    "pid",
    "outcome",
    "exit_code",
    "duration",
    "delay",
    "reason",
    "error",
)
_SECONDS_KEYS = frozenset({"duration", "delay", "retry_after"})
_HIDDEN_KEYS = frozenset({"report", "attention"})
# Where a key goes among an event's details: the usual ones in _DETAIL_ORDER's
# order, then any other in alphabetical order (see format_details).
_DETAIL_RANK = {key: rank for rank, key in enumerate(_DETAIL_ORDER)}
_OTHER_KEYS = len(_DETAIL_ORDER)
# A value that must be quoted to read as one value: empty, or with white space.
_NEEDS_QUOTES = re.compile(r"\A\Z|\s").search


def run_headless(
    client: EngineClient,
    lifecycle: RunHandle,
    *,
    task_ids: Iterable[str] = (),
    json_lines: bool = False,
    run_dirs: Callable[[int], Path] | None = None,
) -> int:
    """Run the run `lifecycle` holds to the end, printing its events from `client`;
    returns the exit code.

    `task_ids` size the task column; `run_dirs` gives a run's directory (the
    journal's), where a failed attempt's log is found to show its last lines.
    """
    width = min(24, max(map(len, task_ids), default=4))
    return asyncio.run(
        _run(client, lifecycle, json_lines=json_lines, task_width=width, run_dirs=run_dirs)
    )


async def _run(
    client: EngineClient,
    lifecycle: RunHandle,
    *,
    json_lines: bool,
    task_width: int,
    run_dirs: Callable[[int], Path] | None,
) -> int:
    view = HeadlessView(
        json_lines=json_lines, task_width=task_width, run_dirs=run_dirs, logs=client
    )
    client.subscribe(view)
    lifecycle.start()
    try:
        result = await lifecycle.wait()
    finally:
        await lifecycle.close()
    view.finish(result.tasks, result.report)
    return result.exit_code


class HeadlessView:
    """Prints events as they are journaled; `finish()` prints the summary.

    Under a failed attempt it prints its log's path and last lines (read by
    `logs`, which masks secrets), when it knows the run's directory (`run_dirs`);
    `--json` adds them to the event's object as `log` and `tail`.
    """

    def __init__(
        self,
        out: TextIO | None = None,
        *,
        json_lines: bool = False,
        task_width: int = 16,
        run_dirs: Callable[[int], Path] | None = None,
        logs: EngineClient | None = None,
    ):
        self._out = out or sys.stdout
        self._json = json_lines
        self._task_width = task_width
        self._run_dirs = run_dirs
        self._logs = logs
        self._run_dir: str | None = None
        self._broken = False
        # Lines of this turn of the loop, written together by _flush().
        self._pending: list[str] = []
        # The attention items already printed (each is printed once).
        self._attention_told: set[str] = set()

    def __call__(self, event: Event) -> None:
        """Print one event (an engine listener)."""
        kind = event.kind
        failed_log = None
        if kind is EventKind.ATTEMPT_FINISHED:
            if event.data.get("outcome") in _FAILED_OUTCOMES and self._logs is not None:
                failed_log = self._log_of(event)
        elif kind is EventKind.RUN_STARTED or kind is EventKind.RUN_RESUMED:
            self._learn_run_dir(event)
        if self._json:
            out = event.to_json_dict()
            if failed_log is not None:
                out["log"] = failed_log
                out["tail"] = self._tail(failed_log)
            self._write(json.dumps(out, separators=(", ", ": "), default=str))
            return
        self._write(format_event(event, self._task_width))
        attention = event.data.get("attention") if kind is EventKind.PAUSED else None
        if attention and attention not in self._attention_told:
            # What the TUI's attention queue would hold (an agent's spent budget).
            self._attention_told.add(attention)
            self._write(f"{_UNDER}needs you: {attention}")
        if failed_log is not None:
            tail = self._tail(failed_log)
            more = ", last lines:" if tail else " (empty)"
            self._write(f"{_UNDER}log {failed_log}{more}")
            for line in tail:
                self._write(f"{_UNDER}| {line}")

    def _tail(self, log: str) -> list[str]:
        assert self._logs is not None
        return self._logs.last_lines([log], TAIL_LINES).get(log, [])

    def _learn_run_dir(self, event: Event) -> None:
        run_id = event.data.get("run_id")
        if self._run_dirs is not None and isinstance(run_id, int):
            self._run_dir = str(self._run_dirs(run_id))

    def _log_of(self, event: Event) -> str | None:
        """The ended attempt's log, found in the run's directory, or (a view with
        no run directory, attached over the control socket) in the attempt's
        own record, from the client."""
        data = event.data
        if event.task is None:
            return None
        if self._run_dir is not None:
            return log_path(self._run_dir, event.task, data.get("attempt"), data.get("stage"))
        if self._logs is None:
            return None
        try:
            attempts = self._logs.task_detail(event.task).attempts
        except CommandError:
            return None
        stage = str(data.get("stage"))
        for attempt in reversed(attempts):
            if attempt.number == data.get("attempt") and str(attempt.stage) == stage:
                return attempt.log_path
        return None

    def finish(self, tasks: Sequence[TaskSummary], report: Report) -> None:
        """The per-task table and the report (text mode; JSON has them in run_finished)."""
        if not self._json:
            self._write("")
            self._write(format_task_table(tasks))
            self._write("")
            self._write(format_report(report))
        self._flush()

    def _write(self, line: str) -> None:
        if self._broken:
            return
        # Events come in batches (one per commit): written once per turn of the
        # loop, they reach a pipe as soon as they would line by line, in one
        # write() a batch instead of one a line. Collected here rather than left
        # to the stream's buffer, which PYTHONUNBUFFERED turns into a write() a line.
        self._pending.append(line)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self._flush)
            except RuntimeError:  # no loop: printing the summary, or a test
                self._flush()

    def _flush(self) -> None:
        lines, self._pending = self._pending, []
        if self._broken or not lines:
            return
        try:
            self._out.write("\n".join(lines) + "\n")
            self._out.flush()
        except BrokenPipeError:
            self._reader_gone()

    def _reader_gone(self) -> None:
        # The reader went away (`| head`): stop printing, keep supervising; the
        # journal still records everything.
        self._broken = True


def format_event(event: Event, task_width: int = 16) -> str:
    """`HH:MM:SS.mmm  task  event  key=value ...` in local time."""
    # This runs four times per task: kept to plain string work.
    line = f"{_clock(event.ts)}  {event.task or '-':<{task_width}}  {_kind_column(event.kind)}"
    details = format_details(event.data) if event.data else ""
    return f"{line}  {details}".rstrip() if details else line.rstrip()


@functools.cache
def _kind_column(kind: str) -> str:
    return f"{kind!s:<16}"


def _clock(ts: float) -> str:
    """`HH:MM:SS.mmm` in local time."""
    whole = int(ts)
    return f"{_local_second(whole)}.{int((ts - whole) * 1000):03d}"


@functools.lru_cache(maxsize=8)
def _local_second(whole: int) -> str:
    # strftime once per second rather than once per line.
    return time.strftime("%H:%M:%S", time.localtime(whole))


def format_details(data: dict[str, Any]) -> str:
    """An event's details as `key=value` pairs, the usual keys first."""
    parts = []
    for key in sorted(data, key=_detail_rank):
        value = data[key]
        if value is None or key in _HIDDEN_KEYS:
            continue
        if key in _SECONDS_KEYS and isinstance(value, int | float):
            shown = format_seconds(float(value))
        elif key == "usage" and isinstance(value, dict):
            # An API attempt's tokens and cost: `usage=37in/40out/$0.000079`.
            shown = f"{value.get('input_tokens', 0)}in/{value.get('output_tokens', 0)}out"
            if "cost" in value:
                shown += f"/${value['cost']:g}"
        elif isinstance(value, str) and _NEEDS_QUOTES(value):
            shown = json.dumps(value)
        else:
            shown = str(value)
        parts.append(f"{key}={shown}")
    return " ".join(parts)


def _detail_rank(key: str) -> tuple[int, str]:
    return _DETAIL_RANK.get(key, _OTHER_KEYS), key


def format_task_table(tasks: Sequence[TaskSummary]) -> str:
    """Per task: final state, attempts, duration (`reused` for a task carried over
    from an earlier run), CI wait."""
    header: tuple[str, ...] = ("task", "state", "attempts", "duration", "ci wait")
    rows: list[tuple[str, ...]] = [
        (
            t.task,
            t.state,
            str(t.attempts),
            "reused" if t.reused else format_seconds(t.duration),
            format_seconds(t.ci_wait) if t.ci_wait else "-",
        )
        for t in tasks
    ]
    if any(t.usage is not None for t in tasks):
        # API agents ran: their tokens and cost, per task.
        header += ("tokens in/out", "cost")
        rows = [(*row, *_usage_cells(t.usage)) for row, t in zip(rows, tasks, strict=True)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i >= 2 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _usage_cells(usage: TokenUsage | None) -> tuple[str, str]:
    if usage is None:
        return ("-", "-")
    return (f"{usage.input_tokens}/{usage.output_tokens}", f"${usage.cost:.4f}")


def format_usage(usage: TokenUsage) -> str:
    """`1,204 in, 3,990 out, $0.0068 over 12 requests (2 throttled)`."""
    throttled = f" ({usage.throttled} throttled)" if usage.throttled else ""
    return (
        f"{usage.input_tokens:,} in, {usage.output_tokens:,} out, ${usage.cost:.4f} "
        f"over {plural(usage.requests, 'request')}{throttled}"
    )


def format_report(report: Report) -> str:
    """The run's report as aligned `name  value` lines."""
    states = ", ".join(f"{count} {state}" for state, count in sorted(report.states.items()))
    unmeasured = _unmeasured(report)
    lines = [
        ("makespan", format_seconds(report.makespan)),
        ("lower bound", f"{format_seconds(report.lower_bound)} (efficiency {_efficiency(report)})"),
        ("policy", format_policies(report)),
        ("tasks", f"{report.tasks}: {states}" + _reused(report.reused)),
        ("attempts", f"{report.attempts}, agent and CI ({plural(report.retries, 'retry')})"),
        ("completion rate", f"{report.completion_rate:.0%}"),
        ("time to first CI", _mean(report.mean_time_to_first_ci)),
        ("time to complete", _mean(report.mean_time_to_complete)),
        ("CI queue wait", _wait(report.ci_wait_mean, report.ci_wait_p95)),
        (
            "throughput",
            f"- ({unmeasured})"
            if report.throughput_per_hour is None
            else f"{report.throughput_per_hour:.1f} tasks/hour",
        ),
        ("recovery", _mean(report.mean_recovery, " after a failure")),
    ]
    if report.lands or report.landed or report.conflicts or report.ci_reruns:
        lines += [
            ("landed", f"{report.landed} of {report.tasks}"),
            ("conflicts", str(report.conflicts)),
            ("CI reruns", f"{report.ci_reruns} (the target moved)"),
            ("time to land", _mean(report.mean_time_to_land, " from first agent start")),
        ]
    if report.usage_total is not None:
        lines.append(("API usage", format_usage(report.usage_total)))
        lines += [(f"  {agent}", format_usage(usage)) for agent, usage in report.usage.items()]
    if report.compound_failures or report.preempted_attempts:
        lines += [
            (
                "compound failures",
                f"{report.compound_failures} ({report.compound_failure_rate:.0%} of tasks; "
                f"{plural(report.preempted_attempts, 'attempt')} preempted)",
            ),
            (
                "rework",
                f"{format_seconds(report.rework)} thrown away (agent "
                f"{format_seconds(report.rework_agent)}, CI {format_seconds(report.rework_ci)})",
            ),
        ]
    if report.windows:
        lines.append(("window", format_windows(report.windows)))
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)


def format_windows(windows: tuple[tuple[float, int], ...], shown: int = 8) -> str:
    """The adaptive window over time: `3 at 0:04, 1 at 0:09...` (the last `shown`)."""
    changes = [f"{window} at {_since(at)}" for at, window in windows[-shown:]]
    earlier = len(windows) - shown
    return ("... " if earlier > 0 else "") + ", ".join(changes)


def _unmeasured(report: Report) -> str:
    """Why efficiency or throughput has no figure."""
    if report.partial:
        return "partial run: not every task ended"
    if report.makespan <= 0:
        return "the run took no time"
    return "no task succeeded"


def _efficiency(report: Report) -> str:
    if report.efficiency is None:
        return f"-: {_unmeasured(report)}"
    return f"{report.efficiency:.0%}"


def format_policies(report: Report) -> str:
    """`wave`, or the policy timeline of a run that switched: `wave 0:00-0:12,
    sequential 0:12-0:40` (times since the run started)."""
    spans = report.policies
    if not spans:
        return "-"
    if len(spans) == 1:
        return spans[0][0]
    return ", ".join(f"{policy} {_since(start)}-{_since(end)}" for policy, start, end in spans)


def _since(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` past an hour, of a time since the run started."""
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _reused(count: int) -> str:
    return f" ({count} reused from an earlier run)" if count else ""


def _wait(mean: float | None, p95: float | None) -> str:
    if mean is None:
        return "-"
    return f"mean {format_seconds(mean)}, p95 {format_seconds(p95)}"


def _mean(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"mean {format_seconds(value)}{suffix}"
