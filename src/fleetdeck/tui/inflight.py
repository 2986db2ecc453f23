"""The in-flight pane: agent and CI attempts running now, with their latest output."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from fleetdeck.logtail import last_line
from fleetdeck.model import Stage
from fleetdeck.snapshot import AttemptView, FleetSnapshot
from fleetdeck.tui.render import clock, cut, room_for_last_column, size

COLUMNS = ("task", "stage", "time", "host", "by", "cpu", "mem", "latest output")


class InFlightTable(DataTable[Text | str]):
    """One row per running attempt, keyed by task (a task runs one attempt at a time)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(cursor_type="row", id=id)
        self.border_title = "In flight"

    def on_mount(self) -> None:
        for label in COLUMNS:
            self.add_column(label, key=label)

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
        room = room_for_last_column(self)
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
        output = cut(last_line(attempt.log_path), room, style="dim")
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
