"""A table that draws only the rows on screen, for lists of any length.

Textual's DataTable keeps every row as a widget-side record and does work in the
number of rows for each change (re-indexing on removal, re-measuring added rows,
rebuilding its row order after any cell update): with 10,000 tasks, filtering the
queue took seconds. `VirtualTable` holds no rows at all. It asks a `RowSource`
for the row at an index when that row is drawn, so its cost is the rows on
screen, whatever the length of the list. It looks and moves like a row-cursor
DataTable (same component classes, same styles, so themes and snapshots agree)
and keeps the cursor on the same row key when rows come and go around it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Protocol

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size, Spacing
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cell = Text | str


@dataclass(frozen=True, slots=True)
class Row:
    """One row as the table draws it.

    `signature` stands for everything the row shows (equal signatures, equal
    pictures): rows are drawn once per signature and taken from a cache after.
    """

    key: str
    cells: tuple[Cell, ...]
    signature: Hashable


class RowSource(Protocol):
    """The rows, in display order, as the table asks for them."""

    def __len__(self) -> int: ...

    def row(self, index: int) -> Row:
        """The row at `index` (0 <= index < len)."""
        ...

    def signature(self, index: int) -> Hashable:
        """`row(index).signature`, without making the cells: a row drawn before is
        taken from the cache on this alone."""
        ...

    def index_of(self, key: str) -> int | None:
        """Where the row with `key` is, or None when it is not there."""
        ...


class _NoRows:
    def __len__(self) -> int:
        return 0

    def row(self, index: int) -> Row:
        raise IndexError(index)

    def signature(self, index: int) -> Hashable:
        raise IndexError(index)

    def index_of(self, key: str) -> int | None:
        return None


_EMPTY = Text(no_wrap=True, end="")
# Drawn rows kept, the least recently shown dropped first: this many screens of
# the table's height (a row under the cursor or the mouse is drawn twice). Rows
# that change on every refresh (in-flight output) only pass through: a bigger
# cache would hold dead lines for the garbage collector to walk.
_CACHE_SCREENS = 4


class VirtualTable(ScrollView, can_focus=True):
    """Fixed-width columns over a `RowSource`, with a row cursor.

    `selectable()` says which rows the cursor may rest on (section headers may
    not); the cursor steps over the others.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "datatable--cursor",
        "datatable--hover",
        "datatable--header",
        "datatable--header-hover",
    }
    # DataTable's look, for the parts a row-cursor table without zebra stripes,
    # fixed rows or fixed columns uses.
    DEFAULT_CSS = """
    VirtualTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        &:focus {
            background-tint: $foreground 5%;
            & > .datatable--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .datatable--header {
                background-tint: $foreground 5%;
            }
        }
        & > .datatable--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .datatable--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .datatable--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .datatable--header-hover {
            background: $accent 30%;
        }
        & > .datatable--hover {
            background: $block-hover-background;
        }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("ctrl+home,home", "scroll_top", "Top", show=False),
        Binding("ctrl+end,end", "scroll_bottom", "Bottom", show=False),
    ]

    CELL_PADDING = 1
    HEADER_HEIGHT = 1

    class RowHighlighted(Message):
        """The cursor moved onto the row with `key`."""

        def __init__(self, table: VirtualTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    class RowSelected(Message):
        """Enter on the cursor row, or a click on it."""

        def __init__(self, table: VirtualTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    show_cursor: reactive[bool] = reactive(True)

    def __init__(self, *, id: str | None = None, show_cursor: bool = True) -> None:
        super().__init__(id=id)
        self.set_reactive(VirtualTable.show_cursor, show_cursor)
        self._columns: tuple[tuple[str, int], ...] = ()
        self._source: RowSource = _NoRows()
        self._cursor = 0
        self._cursor_key: str | None = None
        self._hover = -2  # the row under the mouse (-1: the header)
        self._show_hover = False
        self._lines: LRUCache[Hashable, Strip] = LRUCache(_CACHE_SCREENS * 24)
        self._style = Style()  # the table's rich_style, as of the repaint under way

    # --- what is shown -----------------------------------------------------------

    @property
    def row_count(self) -> int:
        """How many rows there are (not counting the header)."""
        return len(self._source)

    @property
    def cursor_row(self) -> int:
        """The index of the cursor's row."""
        return self._cursor

    @property
    def cursor_key(self) -> str | None:
        """The key of the cursor's row, or None when there are no rows."""
        return self._cursor_key if self.row_count else None

    def set_columns(self, columns: Sequence[tuple[str, int]]) -> None:
        """Labels and widths (in cells, padding not included) of the columns."""
        self._columns = tuple(columns)
        self._lines.clear()
        self._update_size()
        self.refresh()

    def set_rows(self, source: RowSource, *, repaint: bool = True) -> None:
        """Show `source`; call it again whenever rows came, went or changed.

        The cursor stays on its row's key when that row is still there; otherwise
        it stays at its index (the row that took its place). `repaint=False` when
        only rows off screen changed.
        """
        self._source = source
        count = len(source)
        index = source.index_of(self._cursor_key) if self._cursor_key is not None else None
        if index is None:
            index = min(self._cursor, max(0, count - 1))
            index = self._nearest_selectable(index, step=1)
        self._update_size()
        self._set_cursor(index, scroll=False)
        if repaint:
            self.refresh()

    def rows_on_screen(self) -> range:
        """The indexes of the rows in view now."""
        top = int(self.scroll_y)
        height = max(0, self.scrollable_content_region.height - self.HEADER_HEIGHT)
        return range(top, min(self.row_count, top + height))

    def selectable(self, index: int) -> bool:
        """Whether the cursor may rest on the row at `index` (all rows, here)."""
        return True

    def get_row_index(self, key: str) -> int:
        """The index of the row with `key` (KeyError when there is none)."""
        index = self._source.index_of(key)
        if index is None:
            raise KeyError(key)
        return index

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Put the cursor on row `row` (clamped) and scroll it into view."""
        self._set_hover(False)
        self._set_cursor(row, scroll=True, animate=animate)

    # --- the cursor ---------------------------------------------------------------

    def watch_show_cursor(self, show: bool) -> None:
        self._lines.clear()
        if show and self.row_count:
            self._scroll_to_cursor()

    def _nearest_selectable(self, index: int, step: int) -> int:
        """The first selectable row from `index` going `step`, else the other way."""
        count = self.row_count
        for direction in (step, -step):
            probe = index
            while 0 <= probe < count:
                if self.selectable(probe):
                    return probe
                probe += direction
        return max(0, min(index, count - 1))

    def _set_cursor(self, index: int, *, scroll: bool, animate: bool = False) -> None:
        count = self.row_count
        index = max(0, min(index, count - 1)) if count else 0
        old, old_key = self._cursor, self._cursor_key
        self._cursor = index
        self._cursor_key = self._source.row(index).key if count else None
        if old != index:
            self._refresh_row(old)
            self._refresh_row(index)
        if scroll and count:
            # Once the layout is settled: a table just filled may not have its size yet.
            self.call_after_refresh(self._scroll_to_cursor, animate=animate)
        if self._cursor_key is not None and self._cursor_key != old_key:
            self.post_message(self.RowHighlighted(self, self._cursor_key))

    def _scroll_to_cursor(self, animate: bool = False) -> None:
        if not self.row_count:
            return
        region = Region(int(self.scroll_x), self._cursor + self.HEADER_HEIGHT, self.size.width, 1)
        spacing = Spacing(self.HEADER_HEIGHT, 0, 0, 0)
        self.scroll_to_region(region, animate=animate, spacing=spacing, force=True)

    def _step(self, step: int) -> None:
        """Move the cursor by `step` rows, over rows it may not rest on."""
        if not self.row_count or not self.show_cursor:
            return
        target = self._cursor + step
        while 0 <= target < self.row_count and not self.selectable(target):
            target += 1 if step > 0 else -1
        if 0 <= target < self.row_count:
            self.move_cursor(row=target)

    def action_cursor_down(self) -> None:
        """down: the next row."""
        self._step(1)

    def action_cursor_up(self) -> None:
        """up: the row before (never a header above the first row)."""
        self._step(-1)

    def action_page_down(self) -> None:
        """page down: a screenful further."""
        page = max(1, self.scrollable_content_region.height - self.HEADER_HEIGHT)
        target = min(self.row_count - 1, self._cursor + page)
        self.move_cursor(row=self._nearest_selectable(target, step=1))

    def action_page_up(self) -> None:
        """page up: a screenful back."""
        page = max(1, self.scrollable_content_region.height - self.HEADER_HEIGHT)
        target = max(0, self._cursor - page)
        self.move_cursor(row=self._nearest_selectable(target, step=-1))

    def action_scroll_top(self) -> None:
        """home: the first row."""
        self.move_cursor(row=self._nearest_selectable(0, step=1))

    def action_scroll_bottom(self) -> None:
        """end: the last row."""
        self.move_cursor(row=self._nearest_selectable(self.row_count - 1, step=-1))

    def action_select_cursor(self) -> None:
        """enter: select the cursor's row."""
        if self.show_cursor and self.cursor_key is not None:
            self.post_message(self.RowSelected(self, self.cursor_key))

    # --- the mouse ----------------------------------------------------------------

    def _on_mouse_move(self, event: events.MouseMove) -> None:
        row = event.style.meta.get("row")
        if row is None:
            self._set_hover(False)
            return
        if row != self._hover:
            self._refresh_row(self._hover)
            self._hover = row
        self._set_hover(True)

    def _on_leave(self, _: events.Leave) -> None:
        self._set_hover(False)

    async def _on_click(self, event: events.Click) -> None:
        self._set_hover(True)
        row = event.style.meta.get("row")
        if row is None or row < 0 or not self.show_cursor or not self.selectable(row):
            return
        again = row == self._cursor
        self._set_cursor(row, scroll=True, animate=True)
        if again:
            self.action_select_cursor()
        event.stop()

    def _set_hover(self, active: bool) -> None:
        if active != self._show_hover:
            self._show_hover = active
            self._refresh_row(self._hover)

    # --- drawing ------------------------------------------------------------------

    def _update_size(self) -> None:
        width = sum(width + 2 * self.CELL_PADDING for _, width in self._columns)
        size = Size(width, self.row_count + self.HEADER_HEIGHT)
        if size == self.virtual_size:
            return
        if not self.container_size:
            self.virtual_size = size  # not laid out yet: the first layout sees to it
            return
        # A new virtual size asks Textual for a layout of the whole screen, which
        # then repaints whatever it finds changed, and the queue's filter changes
        # the number of rows on every keystroke. Unless a scrollbar comes or goes
        # (then `_scroll_update` asks for the layout itself), all a layout does for
        # a new virtual size is what it calls `_scroll_update` for: updating the
        # scrollbars and clamping the scroll offsets. So call it directly.
        self.set_reactive(VirtualTable.virtual_size, size)
        self._scroll_update(size)

    def _refresh_row(self, index: int) -> None:
        y = index + self.HEADER_HEIGHT - int(self.scroll_y) if index >= 0 else 0
        if 0 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def notify_style_update(self) -> None:
        self._lines.clear()
        super().notify_style_update()

    def _on_resize(self, _: events.Resize) -> None:
        self._lines = LRUCache(_CACHE_SCREENS * max(1, self.size.height))

    def render_lines(self, crop: Region) -> list[Strip]:
        # The table's own style is the same for every line of a repaint, and
        # computing it walks up the DOM: once per repaint, not once per line.
        self._style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        base = self._style
        if y < self.HEADER_HEIGHT:
            hovered = self._hover == -1 and self._show_hover
            key: Hashable = ("header", hovered, self.show_cursor, base, int(self.scroll_x))
            strip = self._lines.get(key)
            if strip is None:
                strip = self._in_view(self._header_line(base), base)
                self._lines.set(key, strip)
            return strip
        index = y - self.HEADER_HEIGHT + int(self.scroll_y)
        if index >= self.row_count:
            return Strip.blank(self.size.width, base)
        signature = self._source.signature(index)
        cursor = index == self._cursor
        hover = index == self._hover and self._show_hover
        key = (signature, index, cursor, hover, self.show_cursor, base, int(self.scroll_x))
        strip = self._lines.get(key)
        if strip is None:
            component, post = self._cell_styles(hover=hover, cursor=cursor, header=False)
            cells = [_formatted(cell) for cell in self._source.row(index).cells]
            strip = self._in_view(self._line(index, cells, base, component, post), base)
            self._lines.set(key, strip)
        return strip

    def _in_view(self, segments: list[Segment], base: Style) -> Strip:
        """A whole line, as much of it as the table's width shows where it is scrolled."""
        width = self.size.width
        x = int(self.scroll_x)
        return Strip(segments).crop(x, x + width).adjust_cell_length(width, base).simplify()

    def _cell_styles(self, *, hover: bool, cursor: bool, header: bool) -> tuple[Style, Style]:
        """DataTable's styles for a cell: the component style and the colour laid over."""
        component = Style()
        if hover and self.show_cursor and self._show_hover:
            component += self.get_component_rich_style("datatable--hover")
            if header:
                component += self.get_component_rich_style("datatable--header-hover")
        if cursor and self.show_cursor:
            component += self.get_component_rich_style("datatable--cursor")
        # The cursor's foreground wins over the cells' own colours, their background not.
        return component, Style.from_color(color=component.color)

    def _header_line(self, base: Style) -> list[Segment]:
        style = self.get_component_styles("datatable--header").rich_style
        hover = self._hover == -1
        component, post = self._cell_styles(hover=hover, cursor=False, header=True)
        cells = [Text.from_markup(label) for label, _ in self._columns]
        return self._line(-1, cells, style, component, post)

    def _line(
        self, index: int, cells: list[Text], row_style: Style, component: Style, post: Style
    ) -> list[Segment]:
        """A whole row: each cell padded to its column, then the rest of the width.

        It looks as DataTable draws it (each cell through rich's Padding and
        Styled; tests/test_tui_vtable.py compares the two), but is built from the
        cells' segments directly, about five times faster: a flood of output
        redraws every in-flight row on every refresh.
        """
        console = self.app.console
        padding = " " * self.CELL_PADDING
        segments: list[Segment] = []
        for column, (cell, (_, width)) in enumerate(zip(cells, self._columns, strict=False)):
            # Where the cell is travels with the mouse (clicks and hovers find their row).
            pre = row_style + Style.from_meta({"row": index, "column": column}) + component
            pad = Segment(padding, pre + post)
            segments.append(pad)
            segments.extend(Segment.apply_style(_cell_line(cell, width, console), pre, post))
            segments.append(pad)
        used = sum(width + 2 * self.CELL_PADDING for _, width in self._columns)
        rest = (
            row_style
            + component
            + Style.from_meta({"row": index, "column": 0, "out_of_bounds": True})
        )
        segments.append(Segment(" " * max(0, self.size.width - used), rest))
        return segments


def _cell_line(cell: Text, width: int, console: Console) -> list[Segment]:
    """The cell's first line in exactly `width` cells, as rich renders a Text
    given that width without wrapping: cut (as its overflow says), or padded."""
    plain = cell.plain
    length = cell_len(plain)
    if (
        length <= width
        and not cell.spans
        and cell.justify in (None, "default")
        and "\t" not in plain
        and "\n" not in plain
    ):
        # Nearly every cell: one run of text in one style, that fits.
        # An unknown style name draws plain, as in Text.render.
        style = console.get_style(cell.style, default=Style.null()) if cell.style else None
        segments = [Segment(plain, style)] if plain else []
        if length < width:
            segments.append(Segment(" " * (width - length)))
        return segments
    lines = cell.wrap(
        console,
        width,
        justify=cell.justify or "default",
        overflow=cell.overflow or "fold",
        tab_size=cell.tab_size or console.tab_size or 8,
        no_wrap=True,
    )
    # Joined as Text.__rich_console__ does: it turns the base style into a span.
    line = Text("\n").join(lines[:1])
    return Segment.adjust_line_length(list(line.render(console)), width)


def _formatted(cell: Cell) -> Text:
    """A cell as DataTable shows it: strings as markup, on one line."""
    if isinstance(cell, Text):
        return cell if cell else _EMPTY
    if not cell:
        return _EMPTY
    return _markup(cell)


@lru_cache(maxsize=4096)
def _markup(cell: str) -> Text:
    """A string cell's markup, parsed once: the same few names and numbers come
    back row after row (the Text is shared, so nothing may change it)."""
    text = Text.from_markup(cell, end="")
    text.no_wrap = True
    return text
