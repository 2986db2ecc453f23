"""The in-flight pane: agent and CI attempts running now, with their latest output.

A row per running attempt (the fleet's slots at most). A row is drawn again only
when what it shows changed, and a log's last line is read only for rows on screen.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from rich.text import Text

from fleetdeck.client import EngineClient
from fleetdeck.model import Stage
from fleetdeck.snapshot import AttemptView, FleetSnapshot
from fleetdeck.tui.lines import set_border_subtitle, set_border_title
from fleetdeck.tui.render import clock, cut, size
from fleetdeck.tui.vtable import Row, VirtualTable

COLUMNS = ("task", "stage", "time", "host", "by", "cpu", "mem", "latest output")
# From this many cells inside the border, every column; narrower, the output
# keeps its room and the host (on a one-host fleet), CPU and memory columns go.
ALL_COLUMNS_AT = 110


class _AttemptRows:
    """The rows of the in-flight table, in the order the attempts started."""

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows
        self._index = {row.key: index for index, row in enumerate(rows)}

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, index: int) -> Row:
        return self._rows[index]

    def signature(self, index: int) -> Hashable:
        return self._rows[index].signature

    def index_of(self, key: str) -> int | None:
        return self._index.get(key)


class InFlightTable(VirtualTable):
    """One row per running attempt, keyed by task (a task runs one attempt at a time).

    A `VirtualTable`: a row is drawn again only when what it shows changed, so a
    flood of output repaints the rows whose latest line moved, and nothing else.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, show_cursor=False)
        self.border_title = "In flight"
        # The columns shown, their widths, the room for the output.
        self._layout: tuple[tuple[str, ...], tuple[int, ...], int] = ((), (), 0)
        self._indexes: tuple[int, ...] = ()  # the shown columns' places in COLUMNS
        self._height = 0
        self._shown: dict[str, _Cells] = {}  # task -> what its row shows
        self._rows: list[Row] = []

    def _set_widths(self, snapshot: FleetSnapshot, task_width: int) -> int:
        """Fixed column widths from the fleet's names and the table's width; the
        room left for the output. Fixed, so the picture never depends on what
        the rows showed a moment ago.

        The latest output is what the operator reads here, so a narrow table
        drops columns before it cuts the output short: the host when every
        attempt runs on one host, CPU and memory (the contention pane sums them
        per agent)."""
        longest = {
            "task": task_width or 4,
            "host": max((len(h.name) for h in snapshot.hosts), default=5),
            "by": max((len(p.name) for p in snapshot.pools), default=2),
        }
        widths = {
            "task": min(28, max(4, longest["task"])),
            "stage": 5,
            "time": 7,
            "host": min(16, max(4, longest["host"])),
            "by": min(16, max(2, longest["by"])),
            "cpu": 4,
            "mem": 5,
        }
        inner = self.scrollable_content_region.width
        shown = ["task", "stage", "time"]
        if len(snapshot.hosts) > 1 or inner >= ALL_COLUMNS_AT:
            shown.append("host")
        shown.append("by")
        if inner >= ALL_COLUMNS_AT:
            shown += ["cpu", "mem"]
        shown.append("latest output")
        fixed = [widths[name] for name in shown[:-1]]
        padding = 2 * self.CELL_PADDING * len(shown)
        room = max(12, inner - sum(fixed) - padding)
        layout = (tuple(shown), tuple(fixed), room)
        if layout != self._layout:
            self._layout = layout
            self._shown.clear()
            self._indexes = tuple(COLUMNS.index(name) for name in shown)
            self.set_columns(list(zip(shown, [*fixed, room], strict=True)))
        return room

    def on_focus(self) -> None:
        # Only the focused table shows its cursor: one visible selection, the
        # one the keys act on.
        self.show_cursor = True

    def on_blur(self) -> None:
        self.show_cursor = False

    @property
    def selected_task(self) -> str | None:
        """The task under the cursor, if any."""
        return self.cursor_key

    def get_cell(self, key: str, column: str) -> Text | str:
        """What the row with `key` shows in `column`."""
        return self._rows[self.get_row_index(key)].cells[self._layout[0].index(column)]

    def show(self, snapshot: FleetSnapshot, *, task_width: int, logs: EngineClient) -> None:
        """Bring the rows in line with `snapshot`. `task_width` is the longest task
        id. Output is asked of `logs` only for the rows on screen, in one request;
        rows out of view keep what they showed last."""
        running = sorted(snapshot.running, key=lambda r: r.started_at)
        agents = sum(1 for r in running if r.stage is Stage.AGENT)
        merging = sum(1 for r in running if r.stage is Stage.MERGE)
        title = f"In flight · {agents} agent · {len(running) - agents - merging} CI"
        # A fleet that lands its changes says so; the others keep their title.
        if merging or any(pool.stage is Stage.MERGE for pool in snapshot.pools):
            title += f" · {merging} landing"
        set_border_title(self, title)
        room = self._set_widths(snapshot, task_width)
        # As tall as the fleet's slots (no more can run at once), within the
        # bounds app.tcss sets: fixed for the run, so no layout per refresh.
        height = sum(pool.total for pool in snapshot.pools) + self.HEADER_HEIGHT + 2
        if height != self._height:
            self._height = height
            self.styles.height = height
        top = int(self.scroll_y)
        on_screen = range(top, top + max(0, self.scrollable_content_region.height - 1))
        shown: dict[str, _Cells] = {}
        rows: list[Row] = []
        latest = logs.last_lines(
            attempt.log_path for index, attempt in enumerate(running) if index in on_screen
        )
        for index, attempt in enumerate(running):
            if index in on_screen:
                lines = latest.get(attempt.log_path)
                output = lines[-1] if lines else ""
            else:
                before = self._shown.get(attempt.task)
                output = before.output if before is not None else ""
            cells = _Cells.of(attempt, snapshot.now, output)
            shown[attempt.task] = cells
            rendered = cells.render(room)
            row_cells = tuple(rendered[index] for index in self._indexes)
            rows.append(Row(attempt.task, row_cells, (cells, self._layout)))
        changed = rows != self._rows
        self._shown, self._rows = shown, rows
        if changed:
            self.set_rows(_AttemptRows(rows))
        if not running:
            set_border_subtitle(self, "nothing running" if snapshot.started_at else "starting")
        else:
            set_border_subtitle(self, "")


@dataclass(frozen=True, slots=True)
class _Cells:
    """What a row shows, as plain values (compared to skip cells that did not change)."""

    task: str
    stage: str  # agent, ci, merge or stop
    time: str
    host: str
    worker: str
    cpu: str
    mem: str
    output: str

    @classmethod
    def of(cls, attempt: AttemptView, now: float, output: str) -> _Cells:
        stage = "stop" if attempt.stopping else attempt.stage.value
        return cls(
            task=attempt.task,
            stage=stage,
            time=clock(now - attempt.started_at),
            host=attempt.host,
            worker=attempt.worker,
            cpu="" if attempt.cpu_percent is None else f"{attempt.cpu_percent:.0f}%",
            mem="" if attempt.rss_bytes is None else size(attempt.rss_bytes),
            output=output,
        )

    def values(self) -> tuple[str, ...]:
        """The values in column order."""
        return (
            self.task,
            self.stage,
            self.time,
            self.host,
            self.worker,
            self.cpu,
            self.mem,
            self.output,
        )

    def render(self, room: int) -> tuple[Text | str, ...]:
        """The cells in column order; the output cut to `room` cells."""
        return (
            self.task,
            Text(self.stage, style=_STAGE_STYLES[self.stage]),
            self.time,
            self.host,
            self.worker,
            self.cpu,
            self.mem,
            cut(self.output, room, style="dim"),
        )


_STAGE_STYLES = {"stop": "bold red", "agent": "green", "ci": "cyan", "merge": "bold blue"}
