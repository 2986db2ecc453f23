"""The timeline screen: the Gantt of attempts per slot, and the CI queue, over time.

The operator zooms and scrolls in time and walks the selection from bar to bar;
the selected bar is named in full under the chart (drawn by fleetdeck.tui.gantt).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from fleetdeck.client import EngineClient
from fleetdeck.model import Stage
from fleetdeck.snapshot import AttemptRecord, Timeline
from fleetdeck.text import format_seconds
from fleetdeck.tui.footer import FleetFooter
from fleetdeck.tui.gantt import STYLES, Window, assign_lanes, attempt_span, render_timeline
from fleetdeck.tui.render import clock

REFRESH_SECONDS = 1.0
MIN_SPAN = 2.0  # seconds: zooming in stops there


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
        # enter (the app's "details") opens the selected bar's task: see selected_task.
    ]
    DEFAULT_CSS = """
    TimelineScreen #gantt { padding: 0 1; }
    TimelineScreen VerticalScroll { border: round $primary; height: 1fr; }
    TimelineScreen #selected { height: 2; padding: 0 1; background: $panel; }
    """

    def __init__(self, client: EngineClient) -> None:
        super().__init__()
        self.client = client
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
        timeline = timeline or self.client.timeline()
        first = timeline.started_at if timeline.started_at is not None else timeline.now
        whole = max(1.0, timeline.now - first)
        span = whole if self.span is None else min(self.span, whole)
        end = timeline.now if self.end is None else min(self.end, timeline.now)
        end = max(end, first + span)
        return Window(end - span, end, self.selected)

    def visible_range(self) -> tuple[float, float]:
        """Seconds since the run started at the left and right edges of the chart."""
        timeline = self.client.timeline()
        window = self.window(timeline)
        first = timeline.started_at or timeline.now
        return window.start - first, window.end - first

    def action_zoom(self, factor: float) -> None:
        """+ halves the stretch on screen, - doubles it (up to the whole run),
        around the selected bar, or the middle, or now while following the run."""
        timeline = self.client.timeline()
        window = self.window(timeline)
        span = max(MIN_SPAN, (window.end - window.start) * factor)
        first = timeline.started_at if timeline.started_at is not None else timeline.now
        if span >= timeline.now - first:
            self.span = self.end = None  # the whole run again, following it
        else:
            chosen = self._attempt(timeline, self.selected)
            self.span = span
            if chosen is not None:
                began, ended = attempt_span(chosen, timeline.now)
                self._set_end(timeline, (began + ended) / 2 + span / 2)
            elif self.end is not None:
                self._set_end(timeline, (window.start + window.end) / 2 + span / 2)
            # else following the run: the right edge stays on now
        self.redraw()

    def action_scroll_time(self, direction: int) -> None:
        """← → move the window by a quarter of its width."""
        timeline = self.client.timeline()
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
        timeline = self.client.timeline()
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
        began, ended = attempt_span(current, timeline.now)
        middle = (began + ended) / 2
        nearest = min(target, key=lambda a: abs(sum(attempt_span(a, timeline.now)) / 2 - middle))
        self._select(timeline, nearest)

    def action_select_bar(self, step: int) -> None:
        """shift+← → the previous or next bar in the selected bar's lane."""
        timeline = self.client.timeline()
        # Nothing selected yet: the latest bar is (it is what enter opens).
        current = self._attempt(timeline, self.selected) or _latest(timeline)
        if current is None:
            return
        for bars in assign_lanes(timeline).values():
            if current in bars:
                index = max(0, min(len(bars) - 1, bars.index(current) + step))
                self._select(timeline, bars[index])
                return

    @property
    def selected_task(self) -> str | None:
        """The task of the selected bar, else of the latest bar to start (what
        enter opens)."""
        timeline = self.client.timeline()
        attempt = self._attempt(timeline, self.selected) or _latest(timeline)
        return None if attempt is None else attempt.task

    def _select(self, timeline: Timeline, attempt: AttemptRecord) -> None:
        """Select `attempt`, and bring it on screen if it is not."""
        self.selected = attempt.attempt_id
        window = self.window(timeline)
        began, ended = attempt_span(attempt, timeline.now)
        span = window.end - window.start
        if ended > window.end:
            self._set_end(timeline, ended + span / 8)
        elif began < window.start:
            self._set_end(timeline, began - span / 8 + span)
        self.redraw()

    # --- drawing ----------------------------------------------------------------

    def redraw(self) -> None:
        """Draw the Gantt for the current size, window and selection."""
        timeline = self.client.timeline()
        gantt = self.query_one("#gantt", Static)
        width = max(30, self.size.width - 4)  # border and padding
        height = max(5, self.size.height - 5)  # border, the selected bar, the footer
        gantt.update(render_timeline(timeline, self.window(timeline), width, height))
        self.query_one("#selected", Static).update(self._selected_text(timeline))

    def _selected_text(self, timeline: Timeline) -> Text:
        attempt = self._attempt(timeline, self.selected)
        if attempt is None:
            return Text("↑ ↓ select a bar · + - zoom · ← → home end scroll", style="dim")
        began, ended = attempt_span(attempt, timeline.now)
        first = timeline.started_at or began
        outcome = "running" if attempt.outcome is None else attempt.outcome.value
        line = Text()
        line.append(attempt.task, style="bold")
        line.append(f"  attempt {attempt.number} · {attempt.stage.value} on {attempt.worker}")
        line.append(f"@{attempt.host}" if attempt.host != "local" else "")
        line.append(f" · {outcome}", style=STYLES[attempt.outcome].split(" on ")[-1])
        line.append(
            f"\n{format_seconds(ended - began)} · from {clock(began - first)}"
            f" to {clock(ended - first)}",
        )
        wait = waited(attempt)
        if wait is not None:
            line.append(f" · waited {format_seconds(wait)}")
        if attempt.error:
            line.append(f" · {attempt.error}", style="red")
        return line


def waited(attempt: AttemptRecord) -> float | None:
    """How long a later stage's attempt waited in its pool's queue, if it did.

    Journals written before 2026-12-06 stamped `queued_at` on the agent attempt
    too, when its task joined the CI queue: there it is after the start and says
    nothing about a wait, so only a later stage's attempt has one."""
    queued, started = attempt.queued_at, attempt.started_at
    if attempt.stage is Stage.AGENT or queued is None or started is None or queued > started:
        return None
    return started - queued


def _latest(timeline: Timeline) -> AttemptRecord | None:
    """The attempt that started last (the latest bar), if any started."""
    started = [a for a in timeline.attempts if a.started_at is not None]
    return max(started, key=lambda a: (a.started_at or 0.0, a.attempt_id), default=None)
