"""The live what-if: how long each policy would take to finish the work left.

While the run is live, every few seconds, the remaining time under each policy
of the registry is simulated (`fleetdeck.lab.predict_remaining`) from the run's
progress, so the operator sees which policy is better before pressing `s`.

Nothing of it runs on the UI's key path. On the event loop only the progress
per task is read off the snapshot the screen was just refreshed from (a frozen
picture, never the live engine); the journal's history is read and the
simulations run in a worker thread. The thread holds the interpreter lock while
it simulates, and a key pressed meanwhile waits for its turn, so the thread
is paced: a prediction starts `WHATIF_SECONDS` after the previous one started,
or later if predictions take long (a large fleet), so that it works a
`1 / PACE` share of the time at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rich.text import Text
from textual.widgets import Static
from textual.worker import Worker, WorkerState, get_current_worker

from fleetdeck.config import Fleet
from fleetdeck.engine.simulate import TaskProgress
from fleetdeck.history import History, HistoryError, read_history
from fleetdeck.lab import predict_remaining, progress_of
from fleetdeck.policy import POLICIES
from fleetdeck.snapshot import FleetSnapshot
from fleetdeck.tui.render import cut

# A new prediction this often (seconds of wall time) at most.
WHATIF_SECONDS = 3.0
# Predictions keep the worker busy a 1/PACE share of the time at most.
PACE = 4.0
# Simulated runs per policy (their median is shown).
RUNS = 5
# The journal's history is read again this often: the run's own attempts add to it.
HISTORY_SECONDS = 30.0
# Names that do not fit a narrow pane.
SHORT_NAMES = {"sequential": "seq"}
LABEL = "what-if: "
PENDING = LABEL + "…"
# A prediction that raised (a bug): said rather than left at `…` for ever.
UNAVAILABLE = LABEL + "unavailable"
# The current policy's mark, before its name.
CURRENT = "▸"


def duration(seconds: float, *, short: bool = False) -> str:
    """`42s`, `3m10s`, `2h03m` (short: `42s`, `3m10`, `2h03`), rounded to the second."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}" + ("" if short else "s")
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}" + ("" if short else "m")


def better_of(remaining: Mapping[str, float]) -> str | None:
    """The policy that finishes first, or None when none is ahead (by a second)."""
    if len(remaining) < 2:
        return None
    ranked = sorted(remaining, key=lambda policy: remaining[policy])
    first, second = ranked[0], ranked[1]
    return first if round(remaining[second]) > round(remaining[first]) else None


def format_whatif(
    remaining: Mapping[str, float] | None, current: str, width: int, *, failed: bool = False
) -> Text:
    """The what-if line for a pane `width` cells wide: `what-if: …` while the first
    prediction is computed (`failed`: it could not be); then each policy's
    remaining time, the current one first and marked, the better one
    highlighted. Names and durations are abbreviated when the line would not
    fit, then the label goes."""
    if remaining is None:
        return cut(UNAVAILABLE if failed else PENDING, width, style="dim")
    order = sorted(remaining, key=lambda policy: policy != current)  # stable: registry order
    better = better_of(remaining)
    for label, short in ((LABEL, False), (LABEL, True), ("", True)):
        line = Text(label, style="dim")
        for number, policy in enumerate(order):
            if number:
                line.append(" · ", style="dim")
            name = SHORT_NAMES.get(policy, policy) if short else policy
            style = "bold green" if policy == better else ""
            if policy == current:
                line.append(CURRENT, style="bold")
                style += " underline"
            line.append(f"{name} {duration(remaining[policy], short=short)}", style=style.strip())
        if len(line) <= width:
            break
    return cut(line, width)


class Pacer:
    """When the next prediction may start (seconds of a monotonic clock)."""

    def __init__(self, interval: float = WHATIF_SECONDS, pace: float = PACE) -> None:
        self.interval = interval
        self.pace = pace
        self.busy = False
        self._next = float("-inf")  # the first one at once
        self._started = 0.0

    def due(self, now: float) -> bool:
        """Whether a prediction should start now (none is under way, and it is time)."""
        return not self.busy and now >= self._next

    def started(self, now: float) -> None:
        """A prediction has started."""
        self.busy = True
        self._started = now
        self._next = now + self.interval

    def finished(self, now: float) -> None:
        """The prediction under way has ended (with a result or not)."""
        self.busy = False
        took = max(0.0, now - self._started)
        self._next = max(self._next, self._started + self.pace * took)


class Predictor:
    """What the worker thread does: the journal's history (read again now and
    then), and the simulations. Only one thread uses it at a time."""

    def __init__(
        self,
        fleet: Fleet,
        state_dir: Path,
        *,
        policies: Sequence[str] = tuple(POLICIES),
        runs: int = RUNS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.state_dir = state_dir
        self.policies = tuple(policies)
        self.runs = runs
        self._monotonic = monotonic
        self._history: History | None = None
        self._read_at = 0.0

    def history(self) -> History:
        """The journal's history; none (estimates and defaults) if it cannot be read."""
        now = self._monotonic()
        if self._history is None or now - self._read_at >= HISTORY_SECONDS:
            try:
                self._history = read_history(self.state_dir)
            except HistoryError:
                self._history = History()
            self._read_at = now
        return self._history

    def predict(
        self, progress: Mapping[str, TaskProgress], cancelled: Callable[[], bool] = lambda: False
    ) -> dict[str, float] | None:
        """Seconds left under each policy, or None if cancelled meanwhile (checked
        between policies: quitting does not wait for every simulation)."""
        history = self.history()
        remaining: dict[str, float] = {}
        for policy in self.policies:
            if cancelled():
                return None
            # One policy at a time; the same seeds as all at once.
            remaining |= predict_remaining(self.fleet, progress, history, [policy], runs=self.runs)
        return remaining


class WhatIfLine(Static):
    """One line: the remaining time under each policy, while the run is live.

    Fed by `show(snapshot)` at each refresh of the screen; it starts a
    prediction in a worker thread when one is due, and shows the latest."""

    DEFAULT_CSS = """
    WhatIfLine { height: 1; padding: 0 1; display: none; }
    """

    def __init__(
        self,
        predictor: Predictor | None,
        *,
        pacer: Pacer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        id: str | None = None,
    ) -> None:
        """`predictor` None: no what-if at all (the line stays hidden)."""
        super().__init__("", id=id)
        self.predictor = predictor
        self.pacer = pacer or Pacer()
        self._monotonic = monotonic
        self.remaining: dict[str, float] | None = None
        self.failed = False
        self._policy = ""
        self._shown: Text | None = None

    def show(self, snapshot: FleetSnapshot) -> None:
        """Follow the run: hidden once it has ended; a prediction started if due."""
        # Nothing is computed for a line no one can see (no room for the side column).
        seen = self.parent is None or self.parent.display
        ended = snapshot.finished_at is not None or snapshot.stopping
        live = self.predictor is not None and seen and not ended
        if self.display != live:
            self.display = live
        if not live:
            return
        self._policy = snapshot.policy
        now = self._monotonic()
        if self.pacer.due(now):
            self.pacer.started(now)
            # Read here, on the loop, from the frozen snapshot; simulated in the thread.
            progress = progress_of(snapshot)
            self.run_worker(
                lambda: self._predict(progress),
                name="what-if",
                group="what-if",
                thread=True,
                exit_on_error=False,
            )
        self._render_line()

    def _predict(self, progress: Mapping[str, TaskProgress]) -> dict[str, float] | None:
        assert self.predictor is not None
        worker = get_current_worker()
        return self.predictor.predict(progress, lambda: worker.is_cancelled)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Take the prediction in when it has ended (and pace the next one)."""
        if event.worker.group != "what-if" or event.state not in (
            WorkerState.SUCCESS,
            WorkerState.ERROR,
            WorkerState.CANCELLED,
        ):
            return
        self.pacer.finished(self._monotonic())
        if event.state is WorkerState.ERROR:
            self.failed = True
        elif event.state is WorkerState.SUCCESS and event.worker.result is not None:
            self.remaining = event.worker.result
            self.failed = False
        self._render_line()

    def on_resize(self) -> None:
        self._render_line()

    def _render_line(self) -> None:
        if not self.display or not self._policy:
            return
        line = format_whatif(self.remaining, self._policy, self.size.width, failed=self.failed)
        if line != self._shown:
            self._shown = line
            self.update(line, layout=False)  # always one line
