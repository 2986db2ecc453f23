"""The task detail screen: attempts, the live tail of a log, inputs and output."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Log, Static

from fleetdeck.attempts import attempt_error, attempt_outcome
from fleetdeck.client import CommandError, EngineClient, LogFeed
from fleetdeck.model import Outcome, TaskState
from fleetdeck.snapshot import AttemptRecord, TaskDetail
from fleetdeck.text import format_seconds
from fleetdeck.tui.footer import FleetFooter
from fleetdeck.tui.lines import set_border_subtitle
from fleetdeck.tui.render import state_text

# The log keeps this many lines in memory; the whole log stays on disk.
LOG_LINES_KEPT = 2000
REFRESH_SECONDS = 0.25

_OUTCOME_STYLES = {
    Outcome.OK: "green",
    Outcome.FAILED: "bold red",
    Outcome.TIMEOUT: "bold red",
    Outcome.CANCELLED: "red",
    Outcome.LOST: "yellow",
    Outcome.PREEMPTED: "magenta",
    # Held back by the provider's limit: it runs again, nothing failed.
    Outcome.THROTTLED: "yellow",
}


def outcome_text(attempt: AttemptRecord, *, live: bool) -> Text:
    """The attempt's outcome in the report's word (`interrupted` for one without an
    outcome once the run has ended, not `running`)."""
    word = attempt_outcome(attempt.outcome, reason=None, live=live)
    if attempt.outcome is None:
        return Text(word, style="bold green" if live else "yellow")
    # Outcomes of later stages (conflict, retest, wait) are not failures either.
    return Text(word, style=_OUTCOME_STYLES.get(attempt.outcome, "yellow"))


class TaskDetailScreen(Screen[None]):
    """Everything about one task; the log follows the attempt selected above it."""

    # `d` is not in the footer (full at 80 columns): the summary offers it when
    # the task has a change to show.
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("d", "diff", "Diff", show=False),
    ]
    DEFAULT_CSS = """
    TaskDetailScreen #summary { height: auto; max-height: 5; padding: 0 1; background: $panel; }
    TaskDetailScreen #main { height: 1fr; }
    TaskDetailScreen #attempts { height: auto; max-height: 8; border: round $primary; }
    TaskDetailScreen #log { border: round $success; height: 1fr; min-height: 5; overflow: auto; }
    TaskDetailScreen #data { height: 6; }
    TaskDetailScreen #inputs, TaskDetailScreen #output {
        width: 1fr; height: 6; border: round $primary; padding: 0 1; overflow-y: auto;
    }
    """

    def __init__(self, client: EngineClient, task_id: str) -> None:
        super().__init__()
        self.client = client
        self.task_id = task_id
        self._follower: LogFeed | None = None
        self._following: int | None = None  # attempt id whose log is shown
        self._pinned = False  # the user picked an attempt: stop jumping to the latest
        self._rows: tuple[AttemptRecord, ...] = ()
        self._live = True  # the run goes on: an attempt without an outcome is running

    def compose(self) -> ComposeResult:
        yield Static(id="summary")
        with Vertical(id="main"):
            yield DataTable(id="attempts", cursor_type="row")
            # The screen keeps the log at its end itself (_write_log): Log's own
            # auto-scroll runs before the pane has its size, and stays at the top.
            yield Log(id="log", max_lines=LOG_LINES_KEPT, auto_scroll=False)
            with Horizontal(id="data"):
                yield Static(id="inputs")
                yield Static(id="output")
        yield FleetFooter()

    def on_mount(self) -> None:
        table = self.query_one("#attempts", DataTable)
        for label in ("#", "stage", "outcome", "exit", "duration", "host", "by", "error"):
            table.add_column(label, key=label)
        self.query_one("#attempts").border_title = "Attempts"
        self.query_one("#inputs").border_title = "Inputs"
        self.query_one("#output").border_title = "Output"
        self.refresh_detail()
        self.set_interval(REFRESH_SECONDS, self.refresh_detail)

    def refresh_detail(self) -> None:
        """Re-read the task and the new lines of its log from the client."""
        try:
            detail = self.client.task_detail(self.task_id)
        except CommandError:
            return
        self._show_summary(detail)
        live = not getattr(self.app, "finished", False)  # FleetApp.finished
        if detail.attempts != self._rows or live != self._live:
            self._live = live
            self._show_attempts(detail)
        self._show_data(detail)
        self._follow_log(detail)

    def _show_summary(self, detail: TaskDetail) -> None:
        task = detail.task
        line = Text()
        line.append(f"{task.id}  ", style="bold")
        line.append_text(state_text(task.state))
        line.append(f"  wave {task.wave}  agent {task.agent}")
        if task.runner:
            line.append(f"  ci {task.runner}")
        if detail.usage is not None:
            tokens_in, tokens_out, cost = detail.usage
            line.append(f"  tokens {tokens_in:,} in · {tokens_out:,} out · ${cost:.4f}")
        if task.blocked_by:
            line.append(f"  blocked by {task.blocked_by}", style="red")
        line.append(f"\nprompt: {detail.prompt}")
        links = []
        if detail.depends_on:
            links.append(f"depends on {', '.join(detail.depends_on)}")
        if detail.dependents:
            links.append(f"needed by {', '.join(detail.dependents)}")
        if links:
            line.append("\n" + " · ".join(links), style="dim")
        change = detail.change
        if change is not None:
            line.append(f"\nbranch {change.branch} from {change.base[:10]}  ")
            line.append(f"{change.files} file{'s' if change.files != 1 else ''} ")
            line.append(f"+{change.insertions}", style="green")
            line.append(f" -{change.deletions}", style="red")
            line.append("  d: diff", style="dim")
        if task.overlaps:
            line.append(f"  ⚠ overlaps {', '.join(task.overlaps)}", style="yellow")
        self.query_one("#summary", Static).update(line)

    def _show_attempts(self, detail: TaskDetail) -> None:
        table = self.query_one("#attempts", DataTable)
        selected = table.cursor_row if self._pinned else None
        table.clear()
        for attempt in detail.attempts:
            duration = (
                attempt.finished_at - attempt.started_at
                if attempt.finished_at is not None and attempt.started_at is not None
                else None
            )
            table.add_row(
                str(attempt.number),
                attempt.stage.value,
                outcome_text(attempt, live=self._live),
                "" if attempt.exit_code is None else str(attempt.exit_code),
                format_seconds(duration) if duration is not None else "…",
                attempt.host,
                attempt.worker,
                Text(attempt_error(attempt.error, attempt.exit_code) or "", style="red"),
                key=str(attempt.attempt_id),
            )
        self._rows = detail.attempts
        if detail.attempts:
            table.move_cursor(row=selected if selected is not None else len(detail.attempts) - 1)

    def action_diff(self) -> None:
        """d: the patch of the task's change, on a screen of its own."""
        from fleetdeck.tui.diff import DiffScreen

        self.app.push_screen(DiffScreen(self.client, self.task_id))

    @on(DataTable.RowSelected, "#attempts")
    def _pick_attempt(self, event: DataTable.RowSelected) -> None:
        self._pinned = True
        self._switch_log(int(event.row_key.value or 0))

    def _follow_log(self, detail: TaskDetail) -> None:
        if not detail.attempts:
            return
        if not self._pinned or self._following is None:
            latest = detail.attempts[-1].attempt_id
            if latest != self._following:
                self._switch_log(latest)
        if self._follower is not None:
            lines = self._follower.read()
            if lines:
                self._write_log(lines)

    def _switch_log(self, attempt_id: int) -> None:
        attempt = next((a for a in self._rows if a.attempt_id == attempt_id), None)
        if attempt is None:
            return
        self._following = attempt_id
        self._follower = self.client.follow_log(attempt.log_path)
        log = self.query_one("#log", Log)
        log.clear()
        log.border_title = f"Log · attempt {attempt.number} {attempt.stage.value}"
        # Plain text: a state directory's path may hold `[`, which markup would parse.
        set_border_subtitle(log, attempt.log_path)
        lines = self._follower.read()
        if self._follower.skipped:
            lines = [f"[… {self._follower.skipped} earlier bytes in the file on disk]", *lines]
        self._write_log(lines, follow=True)

    def _write_log(self, lines: list[str], *, follow: bool = False) -> None:
        """Add `lines` to the log and, like `tail -f`, show its end, unless the user
        scrolled up to read (`follow`: a log just opened starts at its end)."""
        log = self.query_one("#log", Log)
        follow = follow or log.is_vertical_scroll_end
        # One call per refresh, whatever the number of lines.
        log.write_lines(lines)
        if follow:
            # After the layout: the pane may not have its size (on opening) or the
            # new lines their height yet.
            self.call_after_refresh(log.scroll_end, animate=False, immediate=True, x_axis=False)

    def _show_data(self, detail: TaskDetail) -> None:
        inputs = Text()
        for dep, text in detail.inputs.items():
            inputs.append(f"{dep}: ", style="bold")
            inputs.append(text.strip() or "(no output)")
            inputs.append("\n")
        if not detail.inputs:
            inputs.append("no dependencies", style="dim")
        self.query_one("#inputs", Static).update(inputs)
        output = (
            Text(detail.output.strip() or "(empty)")
            if detail.output is not None
            else Text(no_output(detail.task.state), style="dim")
        )
        self.query_one("#output", Static).update(output)


def no_output(state: TaskState) -> str:
    """What the Output box says of a task without one: "not yet" only while it may
    still come."""
    if state.is_terminal:
        return f"none ({state.value.replace('_', ' ')})"
    return "not yet"
