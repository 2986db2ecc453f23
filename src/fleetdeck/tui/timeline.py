"""The timeline screen: a Gantt of attempts per slot, and the CI queue, over time.

Parallelism shows as bars stacked in one column, idle slots as dots, and the CI
queue as a row of counts under its runner.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from fleetdeck.engine import Engine
from fleetdeck.model import Outcome, Stage
from fleetdeck.snapshot import AttemptRecord, Lane, Timeline
from fleetdeck.tui.bars import BarPicker
from fleetdeck.tui.lines import set_border_subtitle
from fleetdeck.tui.render import clock

REFRESH_SECONDS = 1.0
_LABEL = 18

_STYLES = {
    None: "black on green",  # running
    Outcome.OK: "black on blue",
    Outcome.FAILED: "white on red",
    Outcome.TIMEOUT: "white on red",
    Outcome.CANCELLED: "white on bright_black",
    Outcome.LOST: "black on yellow",
}
_CI_STYLES = {**_STYLES, Outcome.OK: "black on cyan"}


def assign_lanes(timeline: Timeline) -> dict[Lane, list[AttemptRecord]]:
    """Place each attempt in one slot of its worker and host, first free slot first."""
    free_at: dict[Lane, float] = {}
    by_lane: dict[Lane, list[AttemptRecord]] = defaultdict(list)
    lanes_of: dict[tuple[Stage, str, str], list[Lane]] = defaultdict(list)
    for lane in timeline.lanes:
        lanes_of[(lane.stage, lane.worker, lane.host)].append(lane)
        free_at[lane] = float("-inf")
    started = [a for a in timeline.attempts if a.started_at is not None]
    for attempt in sorted(started, key=lambda a: a.started_at or 0.0):
        start = attempt.started_at or 0.0
        end = attempt.finished_at if attempt.finished_at is not None else timeline.now
        candidates = lanes_of.get((attempt.stage, attempt.worker, attempt.host), [])
        chosen = next((lane for lane in candidates if free_at[lane] <= start + 1e-6), None)
        if chosen is None and candidates:
            # More attempts at once than slots (a retry overlapping a stop): share.
            chosen = min(candidates, key=lambda item: free_at[item])
        if chosen is not None:
            by_lane[chosen].append(attempt)
            free_at[chosen] = end
    return by_lane


@dataclass(slots=True, frozen=True)
class _Scale:
    """Maps moments of the run to columns of the chart."""

    start: float
    step: float  # seconds per column
    cells: int

    def column(self, at: float) -> int:
        return min(self.cells - 1, max(0, int((at - self.start) / self.step)))


def render_timeline(timeline: Timeline, width: int) -> Text:
    """The Gantt as text, `width` cells wide."""
    if timeline.started_at is None:
        return Text("The run has not started.", style="dim")
    cells = max(10, width - _LABEL - 1)
    span = max(1.0, timeline.now - timeline.started_at)
    scale = _Scale(start=timeline.started_at, step=span / cells, cells=cells)
    by_lane = assign_lanes(timeline)
    last_lane_of_runner = {
        lane.worker: lane for lane in timeline.lanes if lane.stage is Stage.CI
    }  # lanes come in order, so the last one written wins
    out = Text()
    for lane in timeline.lanes:
        out.append_text(_lane_row(lane, by_lane.get(lane, []), timeline.now, scale))
        if last_lane_of_runner.get(lane.worker) == lane:
            out.append_text(_queue_row(timeline, lane.worker, scale))
    out.append(
        " " * _LABEL + clock(0).ljust(cells - len(clock(span))) + clock(span) + "\n", style="dim"
    )
    out.append(
        "\nbars: attempts per slot · green running · blue agent ok · cyan CI ok · "
        "red failed · grey cancelled · yellow lost · digits: CI queue length",
        style="dim",
    )
    return out


def _lane_row(lane: Lane, attempts: list[AttemptRecord], now: float, scale: _Scale) -> Text:
    row = Text("·" * scale.cells, style="dim")
    styles = _CI_STYLES if lane.stage is Stage.CI else _STYLES
    for attempt in attempts:
        start = scale.column(attempt.started_at if attempt.started_at is not None else now)
        end = scale.column(attempt.finished_at if attempt.finished_at is not None else now)
        length = end - start + 1
        label = attempt.task[:length].ljust(length)
        row = row[:start] + Text(label, style=styles[attempt.outcome]) + row[end + 1 :]
    name = lane.worker + (f"@{lane.host}" if lane.host != "local" else "")
    line = Text(f"{name[: _LABEL - 4]:<{_LABEL - 4}} #{lane.slot:<2}", style="bold")
    line.append_text(row)
    line.append("\n")
    return line


def _queue_row(timeline: Timeline, runner: str, scale: _Scale) -> Text:
    """How many tasks waited for `runner` at each moment, as digits."""
    counts = [0] * scale.cells
    for attempt in timeline.attempts:
        if attempt.stage is not Stage.CI or attempt.worker != runner or attempt.queued_at is None:
            continue
        began = attempt.started_at if attempt.started_at is not None else timeline.now
        for cell in range(scale.column(attempt.queued_at), scale.column(began)):
            counts[cell] += 1
    row = Text(f"{'  queue ' + runner:<{_LABEL}}"[:_LABEL], style="yellow")
    for count in counts:
        row.append(str(min(count, 9)) if count else "·", style="bold yellow" if count else "dim")
    row.append("\n")
    return row


class TimelineScreen(Screen[None]):
    """Attempts per slot over time, redrawn every second."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("t", "app.pop_screen", "Back"),
        # A bar for enter to open (see fleetdeck.tui.bars); before the scroll's arrows.
        Binding("left", "pick(-1)", "Earlier", show=False, priority=True),
        Binding("right", "pick(1)", "Later", show=False, priority=True),
    ]
    DEFAULT_CSS = """
    TimelineScreen #gantt { padding: 0 1; }
    TimelineScreen VerticalScroll { border: round $primary; }
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.bars = BarPicker()

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(id="gantt")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).border_title = "Timeline"
        self.redraw()
        self.set_interval(REFRESH_SECONDS, self.redraw)

    def on_resize(self) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw the Gantt for the current width."""
        width = max(30, self.size.width - 4)
        timeline = self.engine.timeline()
        self.bars.update(timeline)
        set_border_subtitle(self.query_one(VerticalScroll), self.bars.caption())
        self.query_one("#gantt", Static).update(render_timeline(timeline, width))

    def action_pick(self, step: int) -> None:
        """←/→: the bar that started before or after the selected one."""
        self.bars.move(step)
        set_border_subtitle(self.query_one(VerticalScroll), self.bars.caption())
