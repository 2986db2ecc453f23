"""The queue pane: every task not yet done, grouped by wave.

With 10,000 tasks nothing here may cost the fleet per refresh. The pane keeps
the latest view of every task and takes in only the views that changed
(`Refresh.changed`); `QueueRows` keeps the tasks shown in display order, where
a task coming or going is a bisection; and the table draws only the rows on
screen (`VirtualTable`). A refresh costs the changes plus the rows in view;
a new filter costs one pass over the tasks.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter
from typing import Self

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Region
from textual.widgets import Input, Static

from fleetdeck.model import TaskState
from fleetdeck.snapshot import TaskView
from fleetdeck.tui.feed import Refresh
from fleetdeck.tui.lines import set_border_title
from fleetdeck.tui.render import cut, state_text
from fleetdeck.tui.vtable import Row, VirtualTable

_WAVE = "wave:"
COLUMNS = ("task", "state", "#", "waits for")
STATE_WIDTH = 10  # "◐ ci queue"
ATTEMPTS_WIDTH = 2
TASK_WIDTH_MAX = 28
TASK_WIDTH_MIN = 12  # wave headers share the task column: "wave 3 · 120"


@dataclass(slots=True, frozen=True)
class _Row:
    """What a task row shows; equal rows draw the same."""

    state: TaskState
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


def _searched(task: TaskView) -> str | None:
    """What the filter searches in a task: its id, state and agent, lowercased (a NUL
    never comes from the filter box, so no match spans two); None once it is done."""
    if task.state is TaskState.SUCCEEDED:
        return None
    return f"{task.id.lower()}\0{task.state}\0{task.agent.lower()}"


def _wave_header(wave: int, count: int) -> Text:
    return Text(f"wave {wave} · {count}", style="bold dim")


class QueueRows:
    """The tasks the queue shows, in display order: per wave, a header row and then
    its tasks in config order. A `RowSource` for the table.

    Shown tasks are kept sorted by (wave, config order), so a task coming or going
    is a bisection, and the row at an index is found by bisecting the header rows.
    """

    def __init__(self) -> None:
        self.views: dict[str, TaskView] = {}  # every task's latest view
        self._order: dict[str, int] = {}  # config order
        self._all: list[tuple[int, int, str]] = []  # (wave, order, id) of every task, sorted
        # In step with _all: what the filter searches in each task (None: done,
        # never shown), lowercased once per view rather than per keystroke.
        self._searched: list[str | None] = []
        self._shown: list[tuple[int, int, str]] = []  # the entries of the tasks shown
        self._count: Counter[int] = Counter()  # shown tasks per wave
        self._waves: list[int] = []  # waves with shown tasks, ascending
        self._headers: list[int] | None = None  # each wave header's index (lazily)
        self.filter = ""
        self.now = 0.0
        self.widths = (0, 0)  # the task and "waits for" columns

    # --- what is shown ------------------------------------------------------------

    def shows(self, task_id: str) -> bool:
        """Not done, and matching the filter (in its id, state or agent)."""
        searched = self._searched[self._place(task_id)]
        return searched is not None and self.filter in searched

    @property
    def task_count(self) -> int:
        """How many tasks are shown (header rows not counted)."""
        return len(self._shown)

    def load(self, tasks: Iterable[TaskView]) -> None:
        """Every task's view, in config order (then `refilter()` decides what shows)."""
        self.views = {task.id: task for task in tasks}
        self._order = {task_id: number for number, task_id in enumerate(self.views)}
        self._all = sorted(self._entry(task_id) for task_id in self.views)
        self._searched = [_searched(self.views[task_id]) for _, _, task_id in self._all]

    def _entry(self, task_id: str) -> tuple[int, int, str]:
        """The task's place in display order (its wave never changes)."""
        return (self.views[task_id].wave, self._order[task_id], task_id)

    def _place(self, task_id: str) -> int:
        """The task's index in _all (and _searched)."""
        return bisect_left(self._all, self._entry(task_id))

    def put(self, task: TaskView) -> bool:
        """Take in a task's new view; whether its row came or went."""
        if task.id not in self.views:  # never seen: given its place, not shown yet
            self._order[task.id] = len(self._order)
            self.views[task.id] = task
            at = self._place(task.id)
            self._all.insert(at, self._entry(task.id))
            self._searched.insert(at, None)
        was = self.shows(task.id)
        self.views[task.id] = task
        self._searched[self._place(task.id)] = _searched(task)
        now = self.shows(task.id)
        if was and not now:
            self._remove(self._entry(task.id))
        elif now and not was:
            self._add(self._entry(task.id))
        return was != now

    def refilter(self, text: str) -> None:
        """Show the tasks matching `text`: one pass over every task, in display order
        (what `shows()` says of each, written out: this runs on every keystroke)."""
        self.filter = text
        self._shown = [
            entry
            for entry, searched in zip(self._all, self._searched, strict=True)
            if searched is not None and text in searched
        ]
        self._count = Counter(map(itemgetter(0), self._shown))  # entries start with the wave
        self._waves = sorted(self._count)
        self._headers = None

    def _add(self, entry: tuple[int, int, str]) -> None:
        wave = entry[0]
        self._shown.insert(bisect_left(self._shown, entry), entry)
        if wave not in self._count:
            self._count[wave] = 0
            self._waves.insert(bisect_left(self._waves, wave), wave)
        self._count[wave] += 1
        self._headers = None

    def _remove(self, entry: tuple[int, int, str]) -> None:
        wave = entry[0]
        index = bisect_left(self._shown, entry)
        if index < len(self._shown) and self._shown[index] == entry:
            del self._shown[index]
            self._count[wave] -= 1
            if not self._count[wave]:
                del self._count[wave]
                del self._waves[bisect_left(self._waves, wave)]
            self._headers = None

    def _header_rows(self) -> list[int]:
        if self._headers is None:
            before = accumulate((self._count[wave] for wave in self._waves), initial=0)
            self._headers = [tasks + number for number, tasks in enumerate(before)][
                : len(self._waves)
            ]
        return self._headers

    # --- RowSource ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._shown) + len(self._waves)

    def key(self, index: int) -> str:
        """The key of the row at `index`: a task id, or `wave:N` for a header."""
        headers = self._header_rows()
        number = bisect_right(headers, index) - 1
        if headers[number] == index:
            return f"{_WAVE}{self._waves[number]}"
        return self._shown[index - number - 1][2]

    def row(self, index: int) -> Row:
        key = self.key(index)
        if key.startswith(_WAVE):
            wave = int(key[len(_WAVE) :])
            count = self._count[wave]
            return Row(key, (_wave_header(wave, count), "", "", ""), (key, count))
        shown = self._shown_of(key)
        task_width, waits_width = self.widths
        cells = (
            cut(key, task_width),
            state_text(shown.state, short=True),
            str(shown.attempts) if shown.attempts else "",
            cut(shown.waits_for, waits_width, style="dim"),
        )
        return Row(key, cells, (key, shown, self.widths))

    def signature(self, index: int) -> Hashable:
        key = self.key(index)
        if key.startswith(_WAVE):
            return (key, self._count[int(key[len(_WAVE) :])])
        return (key, self._shown_of(key), self.widths)

    def _shown_of(self, task_id: str) -> _Row:
        task = self.views[task_id]
        return _Row(task.state, task.attempts, waits_for(task, self.now))

    def index_of(self, key: str) -> int | None:
        if key.startswith(_WAVE):
            wave = int(key[len(_WAVE) :])
            number = bisect_left(self._waves, wave)
            if number < len(self._waves) and self._waves[number] == wave:
                return self._header_rows()[number]
            return None
        task = self.views.get(key)
        if task is None:
            return None
        entry = (task.wave, self._order[key], key)
        at = bisect_left(self._shown, entry)
        if at == len(self._shown) or self._shown[at] != entry:
            return None
        return at + bisect_right(self._waves, task.wave)


class QueueTable(VirtualTable):
    """The queue's table: wave header rows between task rows; the cursor skips headers."""

    def __init__(self) -> None:
        super().__init__(id="queue-table", show_cursor=True)
        self.rows = QueueRows()

    def on_focus(self) -> None:
        # Only the focused table shows its cursor: one visible selection, the
        # one the keys act on.
        self.show_cursor = True

    def on_blur(self) -> None:
        self.show_cursor = False

    def selectable(self, index: int) -> bool:
        """Tasks, not wave headers."""
        return not self.rows.key(index).startswith(_WAVE)

    @property
    def selected_task(self) -> str | None:
        """The task under the cursor, or None (no rows, or on a wave header)."""
        key = self.cursor_key
        return None if key is None or key.startswith(_WAVE) else key

    def row_keys(self) -> list[str]:
        """Every row's key, top to bottom (for tests: costs the whole queue)."""
        return [self.rows.key(index) for index in range(len(self.rows))]

    def get_cell(self, key: str, column: str) -> Text | str:
        """What the row with `key` shows in `column`."""
        return self.rows.row(self.get_row_index(key)).cells[COLUMNS.index(column)]


class FilterInput(Input):
    """The filter box: an Input whose typing asks for no layout of the screen,
    with a steady cursor.

    Input's virtual width follows its text (plus a cell for the cursor), and
    every change of a virtual size makes Textual lay out the whole screen (at
    200x60, 1-2 ms, then repainting what it finds changed, and a second frame
    for the scrollbars). Here the virtual width is at least the box's own
    width, which is what is drawn and scrolled anyway, so it changes only for
    text longer than the box.
    """

    def __init__(self, *, placeholder: str, id: str) -> None:
        super().__init__(placeholder=placeholder, id=id)
        # A steady cursor. A blinking one is drawn again on each keystroke
        # that finds it hidden (half of them), in a frame of its own before the
        # keystroke's refiltered queue; that frame then waits for the next one
        # Textual allows (60 a second): 17 ms more for half the keystrokes.
        self.set_reactive(Input.cursor_blink, False)

    @property
    def content_width(self) -> int:
        """Input's width of the text (or placeholder), or the box's when wider."""
        return max(super().content_width, self.scrollable_content_region.width)


class QueuePane(Vertical):
    """Title, filter box and table of every task not yet succeeded."""

    DEFAULT_CSS = """
    QueuePane #queue-filter { display: none; height: 3; }
    QueuePane.-filtering #queue-filter { display: block; }
    """
    _title_row_only = False  # set while the title changes: see refresh()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Queue"
        self._filter = ""
        self._not_done = 0
        self._on_screen: list[Hashable] = []  # the signatures of the rows last drawn
        self._empty: str | None = ""  # the message under the table (None: hidden)

    def compose(self) -> ComposeResult:
        yield FilterInput(
            placeholder="filter: task, state or agent (esc clears)", id="queue-filter"
        )
        yield QueueTable()
        yield Static("", id="queue-empty")

    def on_mount(self) -> None:
        # Synchronously, as the box's text changes: the new rows and the typed
        # character then reach the screen in the same frame (an Input.Changed
        # handler runs later, after the screen has laid out the box alone).
        self.watch(self.query_one("#queue-filter", Input), "value", self.set_filter, init=False)

    @property
    def table(self) -> QueueTable:
        """The table of tasks."""
        return self.query_one(QueueTable)

    @property
    def filter_text(self) -> str:
        """The current filter ('' for none)."""
        return self._filter

    def set_filter(self, text: str) -> None:
        """Show only tasks whose id, state or agent contains `text`, at once (the
        filter box's text, as it changes).

        From the task views the pane already has: a keystroke waits neither for
        the engine's snapshot nor for the other panes (the next refresh brings
        what changed meanwhile)."""
        wanted = text.strip().lower()
        if wanted != self._filter:
            self._filter = wanted
            self._refilter()
            self._draw()

    def show(self, refresh: Refresh) -> None:
        """Bring the table in line with the engine: take in what changed, draw what is
        on screen."""
        snapshot = refresh.snapshot
        table = self.table
        rows = table.rows
        rows.now = snapshot.now
        self._not_done = snapshot.total - snapshot.done
        if refresh.full:
            rows.load(refresh.changed)
            self._refilter()
        else:
            came_or_went = False
            for task in refresh.changed:
                came_or_went |= rows.put(task)
            if came_or_went:
                table.set_rows(rows)
        task_width = min(TASK_WIDTH_MAX, max(TASK_WIDTH_MIN, refresh.longest_id))
        # Each column has cell padding on both sides.
        padding = 2 * table.CELL_PADDING * len(COLUMNS)
        room = table.scrollable_content_region.width - task_width - STATE_WIDTH
        room = max(8, room - ATTEMPTS_WIDTH - padding)
        if (task_width, room) != rows.widths:
            # First time, or the pane was resized: new columns.
            rows.widths = (task_width, room)
            table.set_columns(
                list(zip(COLUMNS, (task_width, STATE_WIDTH, ATTEMPTS_WIDTH, room), strict=True))
            )
        self._draw()

    def _refilter(self) -> None:
        """Apply the filter to every task; the cursor stays on its task if shown."""
        table = self.table
        rows = table.rows
        selected = table.selected_task
        rows.refilter(self._filter)
        table.set_rows(rows)
        if selected is None or rows.index_of(selected) is None:
            table.action_scroll_top()  # the selected task is not shown: the first one

    def _draw(self) -> None:
        """Repaint the rows on screen if they look different; the title, the message."""
        table = self.table
        rows = table.rows
        # Rows off screen cost nothing until they are scrolled to.
        on_screen = [rows.signature(index) for index in table.rows_on_screen()]
        if on_screen != self._on_screen:
            self._on_screen = on_screen
            table.refresh()
        title = f"Queue · {self._not_done} not done"
        if self._filter:
            title += f" · {rows.task_count} match '{self._filter}'"
        self._title_row_only = True
        try:
            set_border_title(self, title)
        finally:
            self._title_row_only = False
        self._show_empty(
            None
            if rows.task_count
            else "No task matches the filter."
            if self._filter
            else "Every task is done."
        )

    def refresh(
        self, *regions: Region, repaint: bool = True, layout: bool = False, recompose: bool = False
    ) -> Self:
        """Textual's refresh, except that a new title repaints only the top border.

        Setting a border title repaints the whole widget, and the screen redraws
        every widget under a repainted region: here the table, the filter box and
        the containers behind them, on every keystroke in the filter box (the
        title counts the matches). The title is drawn on the top border row alone.
        """
        if self._title_row_only and not regions and not layout and not recompose:
            top, _, _, left = self.styles.gutter  # regions are relative to the content
            regions = (Region(-left, -top, self.outer_size.width, top),)
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def _show_empty(self, message: str | None) -> None:
        """Say why the table is empty, or hide the message (only when that changes)."""
        if message == self._empty:
            return
        self._empty = message
        empty = self.query_one("#queue-empty", Static)
        empty.display = message is not None
        empty.update(message or "")
