"""The timeline's chart: a Gantt of attempts per slot, and the CI queue, as text.

One lane per slot, as tall as the room allows (a bar then carries its task's
name and, below it, its attempt and duration), the CI queue as counts or, with
rows to spare, a column chart under its runner, and a time axis. A function of
the run and a `Window`: the stretch of time on screen and the selected attempt.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rich.text import Text

from fleetdeck.model import Outcome, Stage
from fleetdeck.snapshot import AttemptRecord, Lane, Timeline
from fleetdeck.text import format_seconds
from fleetdeck.tui.render import clock

LABEL_MAX = 22
MAX_LANE_HEIGHT = 3
QUEUE_CHART_MAX = 8  # rows of a CI queue's chart, when the screen has them
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)
_TICK_GAP = 12  # cells at least between two time labels
_SELECTED = "bold black on bright_white"

# The colour of a bar by its attempt's outcome (None: running).
STYLES = {
    None: "black on green",  # running
    Outcome.OK: "black on blue",
    Outcome.FAILED: "white on red",
    Outcome.TIMEOUT: "white on red",
    Outcome.CANCELLED: "white on bright_black",
    Outcome.LOST: "black on yellow",
    Outcome.PREEMPTED: "white on magenta",
}
_CI_STYLES = {**STYLES, Outcome.OK: "black on cyan"}
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


def attempt_span(attempt: AttemptRecord, now: float) -> tuple[float, float]:
    """When the attempt started and ended (now, while it runs)."""
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
        lane.worker: lane for lane in timeline.lanes if lane.stage is not Stage.AGENT
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
    styles = _CI_STYLES if lane.stage is not Stage.AGENT else STYLES
    for attempt in attempts:
        began, ended = attempt_span(attempt, now)
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
        if attempt.stage is Stage.AGENT or attempt.worker != runner or attempt.queued_at is None:
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
