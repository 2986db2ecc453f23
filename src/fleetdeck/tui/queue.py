"""The queue pane: every task not yet done, grouped by wave; on demand (`a`), the
tasks that are done too, in a group of their own at the end.

With 10,000 tasks nothing here may cost the fleet per refresh. The pane keeps
the latest view of every task and takes in only the views that changed
(`Refresh.changed`); `QueueRows` (see fleetdeck.tui.queue_rows) keeps the
tasks shown in display order, where a task coming or going is a bisection; and
the table draws only the rows on screen (`VirtualTable`). A refresh costs the
changes plus the rows in view; a new filter costs one pass over the tasks.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Self

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Region
from textual.widgets import Input, Static

from fleetdeck.tui.feed import Refresh
from fleetdeck.tui.lines import set_border_title
from fleetdeck.tui.queue_rows import QueueRows, is_header, policy_holds
from fleetdeck.tui.vtable import VirtualTable

COLUMNS = ("task", "state", "#", "waits for")
STATE_WIDTH = 11  # "⊖ cancelled"
ATTEMPTS_WIDTH = 2
TASK_WIDTH_MAX = 28
TASK_WIDTH_MIN = 12  # wave headers share the task column: "wave 3 · 120"


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
        return not is_header(self.rows.key(index))

    @property
    def selected_task(self) -> str | None:
        """The task under the cursor, or None (no rows, or on a wave header)."""
        key = self.cursor_key
        return None if key is None or is_header(key) else key

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
    """Title, filter box and table of every task not yet succeeded (and, on demand,
    of those that have)."""

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
        self._done = 0
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

    @property
    def show_done(self) -> bool:
        """Whether the tasks that are done are shown (a group after the waves)."""
        return self.table.rows.show_done

    def set_show_done(self, shown: bool) -> None:
        """Show the tasks that are done too, or hide them again: one pass over the tasks."""
        rows = self.table.rows
        if shown != rows.show_done:
            rows.show_done = shown
            self._refilter()
            self._draw()

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
        rows.live = snapshot.finished_at is None
        rows.policy, rows.held_agents = snapshot.policy, policy_holds(snapshot)
        self._not_done = snapshot.total - snapshot.done
        self._done = snapshot.done
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
        if rows.show_done:
            title += f" · {self._done} done"
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
            else "Every task is done (a shows them)."
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
