"""The timeline screen: a Gantt of attempts per slot, and the CI queue, over time.

One lane per slot, as tall as the screen allows (a bar then carries its
task's name and, below it, its attempt and duration); the CI queue as a row of
counts under its runner. The operator zooms and scrolls in time and walks the
selection from bar to bar; the selected bar is named in full under the chart.
The drawing is `render_timeline`, a function of the run and a `Window`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from fleetdeck.engine import Engine
from fleetdeck.model import Outcome, Stage
from fleetdeck.snapshot import AttemptRecord, Lane, Timeline
from fleetdeck.text import format_seconds
from fleetdeck.tui.footer import FleetFooter
from fleetdeck.tui.render import clock

REFRESH_SECONDS = 1.0
LABEL_MAX = 22
MAX_LANE_HEIGHT = 3
QUEUE_CHART_MAX = 8  # rows of a CI queue's chart, when the screen has them
MIN_SPAN = 2.0  # seconds: zooming in stops there
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)
_TICK_GAP = 12  # cells at least between two time labels
_SELECTED = "bold black on bright_white"

_STYLES = {
    None: "black on green",  # running
    Outcome.OK: "black on blue",
    Outcome.FAILED: "white on red",
    Outcome.TIMEOUT: "white on red",
    Outcome.CANCELLED: "white on bright_black",
    Outcome.LOST: "black on yellow",
}
_CI_STYLES = {**_STYLES, Outcome.OK: "black on cyan"}
LEGEND = (
    "green running · blue agent ok · cyan CI ok · red failed · grey cancelled · "
    "yellow lost · queue: tasks waiting for the runner"
)


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
class Window:
    """The stretch of the run on screen, in seconds since the epoch, and the
    selected attempt."""

    start: float
    end: float
    selected: int | None = None  # attempt id


@dataclass(slots=True, frozen=True)
class _Scale:
    """Maps moments of the run to columns of the chart."""

    start: float
    step: float  # seconds per column
    cells: int

    def column(self, at: float) -> int:
        return int((at - self.start) / self.step)


def _ends(attempt: AttemptRecord, now: float) -> tuple[float, float]:
    start = attempt.started_at if attempt.started_at is not None else now
    return start, attempt.finished_at if attempt.finished_at is not None else now


def lane_height(lanes: int, queues: int, height: int, legend: int = 1) -> int:
    """Rows per lane: as many as `height` rows allow, from 1 to MAX_LANE_HEIGHT
    (the name, the attempt and duration, a gap)."""
    room = height - queues - 1 - legend  # the time axis and the legend
    return max(1, min(MAX_LANE_HEIGHT, room // max(1, lanes)))


def render_timeline(timeline: Timeline, window: Window, width: int, height: int) -> Text:
    """The Gantt as text, `width` cells wide, filling `height` rows when it can."""
    if timeline.started_at is None:
        return Text("The run has not started.", style="dim")
    names = [_lane_name(lane) for lane in timeline.lanes]
    label = min(LABEL_MAX, max((len(name) for name in names), default=4) + 5)
    cells = max(10, width - label)
    span = max(1e-3, window.end - window.start)
    scale = _Scale(start=window.start, step=span / cells, cells=cells)
    by_lane = assign_lanes(timeline)
    last_lane_of_runner = {
        lane.worker: lane for lane in timeline.lanes if lane.stage is Stage.CI
    }  # lanes come in order, so the last one written wins
    legend = -(-len(LEGEND) // width)  # the rows it wraps to
    runners = len(last_lane_of_runner)
    rows = lane_height(len(timeline.lanes), runners, height, legend)
    # Rows left once the lanes are drawn go to the CI queues, as column charts.
    spare = height - rows * len(timeline.lanes) - runners - 1 - legend
    queue_rows = 1 + max(0, min(QUEUE_CHART_MAX, spare // max(1, runners)))
    out = Text()
    for lane, name in zip(timeline.lanes, names, strict=True):
        heading = f"{name[: label - 5]:<{label - 5}} #{lane.slot:<2} "
        bars = _lane_rows(lane, by_lane.get(lane, []), timeline.now, scale, rows, window)
        for number, bar in enumerate(bars):
            out.append(heading if number == 0 else " " * label, style="bold")
            out.append_text(bar)
            out.append("\n")
        if last_lane_of_runner.get(lane.worker) == lane:
            out.append_text(_queue_rows(timeline, lane.worker, scale, label, queue_rows))
    out.append_text(_axis(timeline.started_at, scale, label))
    out.append(LEGEND, style="dim")
    return out


def _lane_name(lane: Lane) -> str:
    return lane.worker + (f"@{lane.host}" if lane.host != "local" else "")


def _lane_rows(
    lane: Lane,
    attempts: list[AttemptRecord],
    now: float,
    scale: _Scale,
    rows: int,
    window: Window,
) -> list[Text]:
    """The lane's rows: bars with the task's name, then attempt and duration."""
    out = [Text("·" * scale.cells, style="dim")] + [
        Text(" " * scale.cells) for _ in range(rows - 1)
    ]
    styles = _CI_STYLES if lane.stage is Stage.CI else _STYLES
    for attempt in attempts:
        began, ended = _ends(attempt, now)
        first, last = scale.column(began), scale.column(ended)
        if last < 0 or first >= scale.cells:
            continue  # out of the window
        first, last = max(0, first), min(scale.cells - 1, last)
        length = last - first + 1
        style = _SELECTED if attempt.attempt_id == window.selected else styles[attempt.outcome]
        # A bar starts with a thin edge: two bars of one colour side by side
        # stay two bars.
        edge = "▏" if length >= 3 else ""
        words = [attempt.task, f"#{attempt.number} {format_seconds(ended - began)}"]
        for number in range(min(rows, 2)):  # a third row is the gap between lanes
            text = words[number] if number < len(words) else ""
            room = length - len(edge)
            if len(text) > room:
                text = text[: room - 1] + "…" if room > 2 else text[:room]
            cell = Text((edge + text).ljust(length), style=style)
            out[number] = out[number][:first] + cell + out[number][last + 1 :]
    return out


def _queue_rows(timeline: Timeline, runner: str, scale: _Scale, label: int, rows: int) -> Text:
    """How many tasks waited for `runner` at each moment: digits on one row, or
    a column chart over `rows` rows with its scale in the label."""
    counts = [0] * scale.cells
    for attempt in timeline.attempts:
        if attempt.stage is not Stage.CI or attempt.worker != runner or attempt.queued_at is None:
            continue
        began = attempt.started_at if attempt.started_at is not None else timeline.now
        first = max(0, scale.column(attempt.queued_at))
        for cell in range(first, min(scale.cells, scale.column(began))):
            counts[cell] += 1
    title = f"{'  queue ' + runner:<{label}}"[:label]
    if rows == 1:
        row = Text(title, style="yellow")
        for count in counts:
            style = "bold yellow" if count else "dim"
            row.append(str(min(count, 9)) if count else "·", style=style)
        return row.append("\n")
    top = max(max(counts), 1)
    rows = min(rows, max(2, top))  # a row per task waiting, at most
    out = Text()
    for number in range(rows):
        level = rows - 1 - number  # the chart's rows, top first
        heading = title if number == 0 else f"{f'  max {top}' if number == 1 else '':<{label}}"
        out.append(heading[:label], style="yellow")
        line = "".join(_column(count / top * rows - level) for count in counts)
        out.append(line.replace(" ", "·") if level == 0 else line, style="yellow")
        out.append("\n")
    return out


def _column(fill: float) -> str:
    """One cell of a column chart filled to `fill` (1 or more: full)."""
    if fill >= 1:
        return "█"
    eighths = round(max(0.0, fill) * 8)
    return " ▁▂▃▄▅▆▇"[eighths] if eighths < 8 else "█"


def _axis(run_start: float, scale: _Scale, label: int) -> Text:
    """Time since the run started, at round moments at least _TICK_GAP cells apart."""
    step = next((s for s in _TICK_STEPS if s / scale.step >= _TICK_GAP), _TICK_STEPS[-1])
    line = [" "] * scale.cells
    offset = scale.start - run_start
    tick = -(-offset // step) * step  # the first round moment in the window
    while True:
        column = int((tick - offset) / scale.step)
        if column >= scale.cells:
            break
        text = "┆" + clock(tick)
        if column + len(text) <= scale.cells:
            line[column : column + len(text)] = text
        tick += step
    return Text(" " * label + "".join(line) + "\n", style="dim")


class TimelineScreen(Screen[None]):
    """Attempts per slot over time, redrawn every second; zoom, scroll, select."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("t", "app.pop_screen", "Back", show=False),
        Binding("plus,equals_sign", "zoom(0.5)", "Zoom in", key_display="+"),
        Binding("minus", "zoom(2)", "Zoom out", key_display="-"),
        Binding("left", "scroll_time(-1)", "Earlier", key_display="←"),
        Binding("right", "scroll_time(1)", "Later", key_display="→"),
        Binding("home", "to_start", "Start", show=False),
        Binding("end", "to_now", "Now", show=False),
        Binding("up,k", "select_lane(-1)", "Select", key_display="↑↓", show=True),
        Binding("down,j", "select_lane(1)", "Select", show=False),
        Binding("shift+left,comma", "select_bar(-1)", "Previous bar", show=False),
        Binding("shift+right,full_stop", "select_bar(1)", "Next bar", show=False),
    ]
    DEFAULT_CSS = """
    TimelineScreen #gantt { padding: 0 1; }
    TimelineScreen VerticalScroll { border: round $primary; height: 1fr; }
    TimelineScreen #selected { height: 2; padding: 0 1; background: $panel; }
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.span: float | None = None  # seconds on screen; None: the whole run
        self.end: float | None = None  # the window's right edge; None: now, following
        self.selected: int | None = None  # attempt id

    def compose(self) -> ComposeResult:
        with VerticalScroll(can_focus=False):
            yield Static(id="gantt")
        yield Static(id="selected")
        yield FleetFooter()

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).border_title = "Timeline"
        self.redraw()
        self.set_interval(REFRESH_SECONDS, self.redraw)

    def on_resize(self) -> None:
        self.redraw()

    # --- the window -------------------------------------------------------------

    def window(self, timeline: Timeline | None = None) -> Window:
        """The stretch of the run on screen now (the whole run, until zoomed)."""
        timeline = timeline or self.engine.timeline()
        first = timeline.started_at if timeline.started_at is not None else timeline.now
        whole = max(1.0, timeline.now - first)
        span = whole if self.span is None else min(self.span, whole)
        end = timeline.now if self.end is None else min(self.end, timeline.now)
        end = max(end, first + span)
        return Window(end - span, end, self.selected)

    def visible_range(self) -> tuple[float, float]:
        """Seconds since the run started at the left and right edges of the chart."""
        timeline = self.engine.timeline()
        window = self.window(timeline)
        first = timeline.started_at or timeline.now
        return window.start - first, window.end - first

    def action_zoom(self, factor: float) -> None:
        """+ halves the stretch on screen, - doubles it (up to the whole run),
        around the selected bar, or the middle, or now while following the run."""
        timeline = self.engine.timeline()
        window = self.window(timeline)
        span = max(MIN_SPAN, (window.end - window.start) * factor)
        first = timeline.started_at if timeline.started_at is not None else timeline.now
        if span >= timeline.now - first:
            self.span = self.end = None  # the whole run again, following it
        else:
            chosen = self._attempt(timeline, self.selected)
            self.span = span
            if chosen is not None:
                began, ended = _ends(chosen, timeline.now)
                self._set_end(timeline, (began + ended) / 2 + span / 2)
            elif self.end is not None:
                self._set_end(timeline, (window.start + window.end) / 2 + span / 2)
            # else following the run: the right edge stays on now
        self.redraw()

    def action_scroll_time(self, direction: int) -> None:
        """← → move the window by a quarter of its width."""
        timeline = self.engine.timeline()
        window = self.window(timeline)
        self._set_end(timeline, window.end + direction * (window.end - window.start) / 4)
        self.redraw()

    def action_to_start(self) -> None:
        """home: the start of the run."""
        self.end = float("-inf")  # clamped to the first full window
        self.redraw()

    def action_to_now(self) -> None:
        """end: now, and follow the run."""
        self.end = None
        self.redraw()

    def _set_end(self, timeline: Timeline, end: float) -> None:
        self.end = None if end >= timeline.now else end

    # --- the selection ----------------------------------------------------------

    @staticmethod
    def _attempt(timeline: Timeline, attempt_id: int | None) -> AttemptRecord | None:
        return next((a for a in timeline.attempts if a.attempt_id == attempt_id), None)

    def action_select_lane(self, step: int) -> None:
        """↑ ↓ the bar in the lane above or below nearest in time to the selected one."""
        timeline = self.engine.timeline()
        lanes = [(lane, bars) for lane, bars in assign_lanes(timeline).items() if bars]
        order = {lane: number for number, lane in enumerate(timeline.lanes)}
        lanes.sort(key=lambda item: order[item[0]])
        if not lanes:
            return
        current = self._attempt(timeline, self.selected)
        at = next((n for n, (_, bars) in enumerate(lanes) if current in bars), None)
        if current is None or at is None:
            # Nothing selected yet: the latest bar of the first or last lane.
            bars = lanes[0 if step > 0 else -1][1]
            self._select(timeline, bars[-1])
            return
        target = lanes[max(0, min(len(lanes) - 1, at + step))][1]
        began, ended = _ends(current, timeline.now)
        middle = (began + ended) / 2
        nearest = min(target, key=lambda a: abs(sum(_ends(a, timeline.now)) / 2 - middle))
        self._select(timeline, nearest)

    def action_select_bar(self, step: int) -> None:
        """shift+← → the previous or next bar in the selected bar's lane."""
        timeline = self.engine.timeline()
        current = self._attempt(timeline, self.selected)
        if current is None:
            self.action_select_lane(step)
            return
        for bars in assign_lanes(timeline).values():
            if current in bars:
                index = max(0, min(len(bars) - 1, bars.index(current) + step))
                self._select(timeline, bars[index])
                return

    def _select(self, timeline: Timeline, attempt: AttemptRecord) -> None:
        """Select `attempt`, and bring it on screen if it is not."""
        self.selected = attempt.attempt_id
        window = self.window(timeline)
        began, ended = _ends(attempt, timeline.now)
        span = window.end - window.start
        if ended > window.end:
            self._set_end(timeline, ended + span / 8)
        elif began < window.start:
            self._set_end(timeline, began - span / 8 + span)
        self.redraw()

    # --- drawing ----------------------------------------------------------------

    def redraw(self) -> None:
        """Draw the Gantt for the current size, window and selection."""
        timeline = self.engine.timeline()
        gantt = self.query_one("#gantt", Static)
        width = max(30, self.size.width - 4)  # border and padding
        height = max(5, self.size.height - 5)  # border, the selected bar, the footer
        gantt.update(render_timeline(timeline, self.window(timeline), width, height))
        self.query_one("#selected", Static).update(self._selected_text(timeline))

    def _selected_text(self, timeline: Timeline) -> Text:
        attempt = self._attempt(timeline, self.selected)
        if attempt is None:
            return Text("↑ ↓ select a bar · + - zoom · ← → home end scroll", style="dim")
        began, ended = _ends(attempt, timeline.now)
        first = timeline.started_at or began
        outcome = "running" if attempt.outcome is None else attempt.outcome.value
        line = Text()
        line.append(attempt.task, style="bold")
        line.append(f"  attempt {attempt.number} · {attempt.stage.value} on {attempt.worker}")
        line.append(f"@{attempt.host}" if attempt.host != "local" else "")
        line.append(f" · {outcome}", style=_STYLES[attempt.outcome].split(" on ")[-1])
        line.append(
            f"\n{format_seconds(ended - began)} · from {clock(began - first)}"
            f" to {clock(ended - first)}",
        )
        if attempt.queued_at is not None and attempt.started_at is not None:
            line.append(f" · waited {format_seconds(attempt.started_at - attempt.queued_at)}")
        if attempt.error:
            line.append(f" · {attempt.error}", style="red")
        return line
