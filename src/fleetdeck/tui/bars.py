"""Which bar of the timeline the keys act on: ← → go from one attempt to the next
in the order they started, and enter opens that attempt's task."""

from __future__ import annotations

from fleetdeck.snapshot import AttemptRecord, Timeline


class BarPicker:
    """The selected attempt of a timeline, kept from one redraw to the next."""

    def __init__(self) -> None:
        self._bars: list[AttemptRecord] = []  # the attempts drawn, in the order they started
        self._selected: int | None = None  # its attempt id; None: the latest one

    def update(self, timeline: Timeline) -> None:
        """Take in the attempts of a fresh timeline (those started: the ones drawn)."""
        started = [attempt for attempt in timeline.attempts if attempt.started_at is not None]
        self._bars = sorted(started, key=lambda a: (a.started_at or 0.0, a.attempt_id))

    @property
    def selected(self) -> AttemptRecord | None:
        """The selected attempt: the one picked, else the latest to start."""
        if not self._bars:
            return None
        return next((a for a in self._bars if a.attempt_id == self._selected), self._bars[-1])

    def move(self, step: int) -> None:
        """Select the attempt `step` places later (earlier if negative), within bounds."""
        current = self.selected
        if current is None:
            return
        at = self._bars.index(current) + step
        self._selected = self._bars[max(0, min(len(self._bars) - 1, at))].attempt_id

    def caption(self) -> str:
        """What the timeline's border says of the selection, and of the keys."""
        attempt = self.selected
        if attempt is None:
            return "no attempt yet"
        return (
            f"{attempt.task} · attempt {attempt.number} {attempt.stage.value} on "
            f"{attempt.worker} · ← → another · enter details"
        )
