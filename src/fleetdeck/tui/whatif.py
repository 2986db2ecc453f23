"""The live what-if line: how long each policy would take to finish the work left.

While the run is live, every few seconds, the remaining time under each policy
of the registry is predicted from the run's progress, so the operator sees which
policy is better before pressing `s`.

Nothing of it runs on the UI's key path: the line asks its client
(`EngineClient.what_if`), which simulates away from the loop (in this process's
client, a process of its own: see fleetdeck.whatif), and shows the answer when
it comes. A prediction
starts `WHATIF_SECONDS` after the previous one started, or later when
predictions take long (a large fleet), so that the process works a `1 / PACE`
share of the time at most: it shares the machine with the agents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from rich.text import Text
from textual.widgets import Static

from fleetdeck.client import EngineClient, WhatIfUnavailable
from fleetdeck.snapshot import FleetSnapshot
from fleetdeck.tui.render import cut

# A new prediction this often (seconds of wall time) at most.
WHATIF_SECONDS = 3.0
# Predictions keep their process busy a 1/PACE share of the time at most.
PACE = 4.0
# Names that do not fit a narrow pane.
SHORT_NAMES = {"sequential": "seq", "pipelined": "pipe", "adaptive": "adapt"}
# Last resort for a narrow pane with every policy on it: initials.
LABEL = "what-if: "
PENDING = LABEL + "…"
# A prediction that raised (a bug): said rather than left at `…` for ever.
UNAVAILABLE = LABEL + "unavailable"
# Nothing says yet how long tasks take (a first run, no estimates): no figure.
LEARNING = LABEL + "learning from the first attempts…"
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
    remaining: Mapping[str, float] | None,
    current: str,
    width: int,
    *,
    failed: bool = False,
    learning: bool = False,
) -> Text:
    """The what-if line for a pane `width` cells wide: `what-if: …` while the first
    prediction is computed (`failed`: it could not be); then each policy's
    remaining time, the current one first and marked, the better one
    highlighted. Names and durations are abbreviated when the line would not
    fit, then the label goes."""
    if learning:
        return cut(LEARNING, width, style="dim")
    if remaining is None:
        return cut(UNAVAILABLE if failed else PENDING, width, style="dim")
    order = sorted(remaining, key=lambda policy: policy != current)  # stable: registry order
    better = better_of(remaining)
    for label, short in ((LABEL, False), (LABEL, True), ("", True), ("", None)):
        line = Text(label, style="dim")
        for number, policy in enumerate(order):
            if number:
                line.append(" · " if short is not None else " ", style="dim")
            if short is None:
                name = policy[0]
            else:
                name = SHORT_NAMES.get(policy, policy) if short else policy
            style = "bold green" if policy == better else ""
            if policy == current:
                line.append(CURRENT, style="bold")
                style += " underline"
            seconds = duration(remaining[policy], short=short is not False)
            line.append(f"{name} {seconds}", style=style.strip())
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


class WhatIfLine(Static):
    """One line: the remaining time under each policy, while the run is live.

    Fed by `show(snapshot)` at each refresh of the screen; it asks its
    prediction process when a prediction is due, and shows the latest answer."""

    DEFAULT_CSS = """
    WhatIfLine { height: 1; padding: 0 1; display: none; }
    """

    def __init__(
        self,
        client: EngineClient,
        *,
        pacer: Pacer | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        id: str | None = None,
    ) -> None:
        """A client whose what-if is off: the line stays hidden."""
        super().__init__("", id=id)
        self.client = client
        self.pacer = pacer or Pacer()
        self._monotonic = monotonic
        self.remaining: dict[str, float] | None = None
        self.failed = False
        self.learning = False
        self._policy = ""
        self._shown: Text | None = None

    def show(self, snapshot: FleetSnapshot) -> None:
        """Follow the run: hidden once it has ended; a prediction asked for if due."""
        # Nothing is computed for a line no one can see (no room for the side column).
        seen = self.parent is None or self.parent.display
        ended = snapshot.finished_at is not None or snapshot.stopping
        live = self.client.what_if_available and seen and not ended
        if self.display != live:
            self.display = live
        if not live:
            return
        self._policy = snapshot.policy
        now = self._monotonic()
        if self.pacer.due(now):
            self.pacer.started(now)
            self.run_worker(self._predict(), group="what-if", exit_on_error=False)
        self._render_line()

    async def _predict(self) -> None:
        try:
            self.remaining, self.failed = await self.client.what_if(), False
            self.learning = False
        except WhatIfUnavailable as exc:
            self.failed, self.learning = True, exc.learning
        self.pacer.finished(self._monotonic())
        self._render_line()

    def on_resize(self) -> None:
        self._render_line()

    def _render_line(self) -> None:
        if not self.display or not self._policy:
            return
        line = format_whatif(
            self.remaining,
            self._policy,
            self.size.width,
            failed=self.failed,
            learning=self.learning,
        )
        if line != self._shown:
            self._shown = line
            self.update(line, layout=False)  # always one line
