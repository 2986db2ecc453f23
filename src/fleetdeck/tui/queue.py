"""The queue pane: every task not yet done, grouped by wave.

Rows are updated in place from one snapshot to the next (only cells that
changed), and rebuilt only when a task must appear that is not shown: with
10,000 tasks a rebuild per refresh would be the slowest thing on screen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Static

from fleetdeck.model import TaskState
from fleetdeck.snapshot import FleetSnapshot, TaskView
from fleetdeck.tui.render import cut, state_text

_WAVE = "wave:"
COLUMNS = ("task", "state", "#", "waits for")
STATE_WIDTH = 10  # "◐ ci queue"
ATTEMPTS_WIDTH = 2
TASK_WIDTH_MAX = 28


@dataclass(slots=True, frozen=True)
class _Row:
    """What a task row shows; rows are redrawn only when this changes."""

    state: TaskState
    agent: str
    attempts: int
    waits_for: str


def waits_for(task: TaskView, now: float) -> str:
    """What keeps the task from moving on, in a few words (the state glyph says the rest)."""
    state = task.state
    if state is TaskState.PENDING:
        return ", ".join(task.waiting_for)
    if state is TaskState.READY:
        return f"slot of {task.agent}" + (" (retry)" if task.in_flight else "")
    if state is TaskState.RUNNING:
        return f"agent {task.agent}"
    if state is TaskState.CI_QUEUED:
        return f"runner {task.runner}"
    if state is TaskState.CI_RUNNING:
        return f"ci on {task.runner}"
    if state is TaskState.RETRY_WAIT and task.retry_at is not None:
        return f"retry in {max(0.0, task.retry_at - now):.0f}s"
    if state is TaskState.BLOCKED:
        return f"by {task.blocked_by}"
    if state in (TaskState.FAILED, TaskState.CANCELLED):
        return "r retries"
    return ""


def _wave_header(wave: int, count: int) -> Text:
    return Text(f"wave {wave} · {count}", style="bold dim")


def _row(task: TaskView, now: float) -> _Row:
    return _Row(task.state, task.agent, task.attempts, waits_for(task, now))


class QueueTable(DataTable[Text | str]):
    """The queue's table: wave header rows between task rows; the cursor skips headers."""

    def __init__(self) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, id="queue-table")
        self._last_row = 0

    def set_widths(self, task_width: int, waits_width: int) -> None:
        """(Re)create the columns with fixed widths: content never shifts them."""
        self.clear(columns=True)
        for label, width in zip(
            COLUMNS, (task_width, STATE_WIDTH, ATTEMPTS_WIDTH, waits_width), strict=True
        ):
            self.add_column(label, key=label, width=width)

    def on_focus(self) -> None:
        # Only the focused table shows its cursor: one visible selection, the
        # one the keys act on.
        self.show_cursor = True

    def on_blur(self) -> None:
        self.show_cursor = False

    @property
    def selected_task(self) -> str | None:
        """The task under the cursor, or None (no rows, or on a wave header)."""
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return None if key is None or key.startswith(_WAVE) else key

    @on(DataTable.RowHighlighted)
    def _skip_wave_headers(self) -> None:
        # Look at where the cursor is now, not where the message says it was: after a
        # clear() a stale message for row 0 may arrive once the cursor has moved on.
        if self.row_count == 0:
            return
        row = self.cursor_row
        if self.selected_task is not None:
            self._last_row = row
            return
        # On a wave header: keep going the way the cursor moved; at the top, step down.
        target = row - 1 if row < self._last_row and row > 0 else row + 1
        if 0 <= target < self.row_count:
            self.move_cursor(row=target, animate=False)


class QueuePane(Vertical):
    """Title, filter box and table of every task not yet succeeded."""

    DEFAULT_CSS = """
    QueuePane #queue-filter { display: none; height: 3; }
    QueuePane.-filtering #queue-filter { display: block; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Queue"
        self._shown: dict[str, _Row] = {}
        self._wave_of: dict[str, int] = {}
        self._wave_counts: Counter[int] = Counter()
        self._filter = ""
        self._widths = (0, 0)

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: task, state or agent (esc clears)", id="queue-filter")
        yield QueueTable()
        yield Static("", id="queue-empty")

    @property
    def table(self) -> QueueTable:
        """The table of tasks."""
        return self.query_one(QueueTable)

    @property
    def filter_text(self) -> str:
        """The current filter ('' for none)."""
        return self._filter

    def set_filter(self, text: str) -> None:
        """Show only tasks whose id, state or agent contains `text`."""
        self._filter = text.strip().lower()
        self._shown.clear()  # forces a rebuild at the next show()

    def _matches(self, task: TaskView) -> bool:
        needle = self._filter
        return not needle or any(
            needle in field for field in (task.id.lower(), task.state.value, task.agent.lower())
        )

    def show(self, snapshot: FleetSnapshot) -> None:
        """Bring the table in line with `snapshot`."""
        now = snapshot.now
        visible = [
            task
            for task in snapshot.tasks
            if task.state is not TaskState.SUCCEEDED and self._matches(task)
        ]
        waiting = sum(1 for task in snapshot.tasks if task.state is not TaskState.SUCCEEDED)
        title = f"Queue · {waiting} not done"
        if self._filter:
            title += f" · {len(visible)} match '{self._filter}'"
        self.border_title = title
        table = self.table
        task_width = min(TASK_WIDTH_MAX, max((len(t.id) for t in snapshot.tasks), default=4))
        # Each column has cell padding on both sides.
        padding = 2 * table.cell_padding * len(COLUMNS)
        room = table.scrollable_content_region.width - task_width - STATE_WIDTH
        room = max(8, room - ATTEMPTS_WIDTH - padding)
        selected = table.selected_task  # before anything below clears the table
        if (task_width, room) != self._widths:
            # First time, or the pane was resized: new columns, every row again.
            self._widths = (task_width, room)
            table.set_widths(task_width, room)
            self._shown.clear()
        if any(task.id not in self._shown for task in visible) or not table.row_count:
            self._rebuild(table, visible, now, selected)
        else:
            self._update(table, visible, now)
        empty = self.query_one("#queue-empty", Static)
        if visible:
            empty.update("")
            empty.display = False
        else:
            empty.display = True
            empty.update("No task matches the filter." if self._filter else "Every task is done.")

    def _rebuild(
        self, table: QueueTable, visible: list[TaskView], now: float, selected: str | None
    ) -> None:
        table.clear()
        self._shown.clear()
        self._wave_of.clear()
        per_wave = Counter(task.wave for task in visible)
        wave = None
        for task in sorted(visible, key=lambda t: t.wave):
            if task.wave != wave:
                wave = task.wave
                table.add_row(_wave_header(wave, per_wave[wave]), "", "", "", key=f"{_WAVE}{wave}")
            row = _row(task, now)
            table.add_row(*self._cells(task.id, row), key=task.id)
            self._shown[task.id] = row
            self._wave_of[task.id] = task.wave
        self._wave_counts = per_wave
        target = selected if selected in self._shown else next(iter(self._shown), None)
        if target is not None:
            table.move_cursor(row=table.get_row_index(target), animate=False)

    def _update(self, table: QueueTable, visible: list[TaskView], now: float) -> None:
        still = {task.id for task in visible}
        for task_id in [t for t in self._shown if t not in still]:
            table.remove_row(task_id)
            del self._shown[task_id]
            wave = self._wave_of.pop(task_id)
            self._wave_counts[wave] -= 1
            if self._wave_counts[wave] == 0:
                table.remove_row(f"{_WAVE}{wave}")
            else:
                table.update_cell(
                    f"{_WAVE}{wave}", COLUMNS[0], _wave_header(wave, self._wave_counts[wave])
                )
        for task in visible:
            row = _row(task, now)
            if row != self._shown[task.id]:
                for column, cell in zip(COLUMNS, self._cells(task.id, row), strict=True):
                    table.update_cell(task.id, column, cell)
                self._shown[task.id] = row
        # A removed row may leave the cursor on a wave header.
        if table.row_count and table.selected_task is None:
            below = min(table.cursor_row + 1, table.row_count - 1)
            table.move_cursor(row=below, animate=False)

    def _cells(self, task_id: str, row: _Row) -> tuple[Text | str, ...]:
        attempts = str(row.attempts) if row.attempts else ""
        waits = cut(row.waits_for, self._widths[1], style="dim")
        return (cut(task_id, self._widths[0]), state_text(row.state, short=True), attempts, waits)
