"""The in-flight pane: agent and CI attempts running now, with their latest output."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from fleetdeck.model import Stage
from fleetdeck.snapshot import AttemptView, FleetSnapshot
from fleetdeck.tui.render import clock, cut, size

COLUMNS = ("task", "stage", "time", "host", "by", "cpu", "mem", "latest output")


class InFlightTable(DataTable[Text | str]):
    """One row per running attempt, keyed by task (a task runs one attempt at a time)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", id=id, show_cursor=False)
        self.border_title = "In flight"
        self._widths: tuple[tuple[int, ...], int] = ((), 0)

    def _set_widths(self, snapshot: FleetSnapshot) -> int:
        """Fixed column widths from the fleet's names and the table's width; the
        room left for the output. Fixed, so the picture never depends on what
        the rows showed a moment ago."""
        longest = {
            "task": max((len(t.id) for t in snapshot.tasks), default=4),
            "host": max((len(h.name) for h in snapshot.hosts), default=5),
            "by": max((len(p.name) for p in snapshot.pools), default=2),
        }
        widths = [
            min(28, max(4, longest["task"])),
            5,  # stage
            7,  # time
            min(16, max(4, longest["host"])),
            min(16, max(2, longest["by"])),
            4,  # cpu
            5,  # mem
        ]
        padding = 2 * self.cell_padding * len(COLUMNS)
        room = max(12, self.scrollable_content_region.width - sum(widths) - padding)
        if (tuple(widths), room) != self._widths:
            self._widths = (tuple(widths), room)
            self.clear(columns=True)
            for label, width in zip(COLUMNS, [*widths, room], strict=True):
                self.add_column(label, key=label, width=width)
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
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def show(self, snapshot: FleetSnapshot) -> None:
        """Redraw from `snapshot` (a few rows: rebuilt each time, cursor kept)."""
        selected = self.selected_task
        running = sorted(snapshot.running, key=lambda r: r.started_at)
        agents = sum(1 for r in running if r.stage is Stage.AGENT)
        self.border_title = f"In flight · {agents} agent · {len(running) - agents} CI"
        room = self._set_widths(snapshot)
        self.clear()
        for attempt in running:
            self.add_row(*self._cells(attempt, snapshot.now, room), key=attempt.task)
        if not running:
            self.border_subtitle = "nothing running" if snapshot.started_at else "starting"
        else:
            self.border_subtitle = ""
        if selected is not None and selected in {r.task for r in running}:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    @staticmethod
    def _cells(attempt: AttemptView, now: float, room: int) -> tuple[Text | str, ...]:
        if attempt.stopping:
            stage = Text("stop", style="bold red")
        elif attempt.stage is Stage.AGENT:
            stage = Text("agent", style="green")
        else:
            stage = Text("ci", style="cyan")
        cpu = "" if attempt.cpu_percent is None else f"{attempt.cpu_percent:.0f}%"
        mem = "" if attempt.rss_bytes is None else size(attempt.rss_bytes)
        # Read from the log file on disk, only for rows on screen.
        output = cut(attempt.last_line(), room, style="dim")
        return (
            attempt.task,
            stage,
            clock(now - attempt.started_at),
            attempt.host,
            attempt.worker,
            cpu,
            mem,
            output,
        )
