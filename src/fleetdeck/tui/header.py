"""The header line: fleet, policy, running, paused or finished, progress, elapsed."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from fleetdeck.snapshot import FleetSnapshot
from fleetdeck.tui.load import load_style
from fleetdeck.tui.render import bar, clock


class FleetHeader(Static):
    """One line that says what runs, how, and how far along it is."""

    DEFAULT_CSS = """
    FleetHeader {
        height: 1;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    """

    _shown: Text | None = None

    def _line(self, snapshot: FleetSnapshot, width: int, *, brand: bool, words: bool) -> Text:
        line = Text()
        line.append("fleetdeck " if brand else "", style="bold")
        line.append(snapshot.fleet, style="bold cyan")
        line.append("  policy ", style="dim")
        policy = snapshot.policy_detail or snapshot.policy
        line.append(policy, style="bold yellow" if snapshot.policy == "wave" else "bold")
        line.append("  ")
        if snapshot.finished_at is not None:
            # The run has ended; the screen stays for browsing, the clock stopped.
            style = "bold green" if snapshot.exit_code == 0 else "bold red"
            finished = f"■ finished · exit {snapshot.exit_code}"
            line.append(finished if words else f"■ exit {snapshot.exit_code}", style=style)
        elif snapshot.stopping:
            line.append("■ stopping" if words else "■", style="bold red")
        elif snapshot.paused:
            line.append("⏸ paused" if words else "⏸", style="bold magenta")
        elif snapshot.done == snapshot.total:
            line.append("✓ all done" if words else "✓", style="bold green")
        else:
            line.append("▶ running" if words else "▶", style="green")
        load = snapshot.load
        line.append("  load ", style="dim")
        line.append(f"{load.score}/{load.capacity}", style=load_style(load.score, load.capacity))
        progress = f"  {snapshot.done}/{snapshot.total} done "
        elapsed = f"  {clock(snapshot.elapsed)}"
        room = width - 2 - len(line.plain) - len(progress) - len(elapsed) - 5
        line.append(progress)
        if room >= 6:
            fraction = snapshot.done / snapshot.total if snapshot.total else 1.0
            line.append(bar(fraction, min(room, 40)), style="green")
            line.append(f" {fraction:4.0%}")
        line.append(elapsed, style="bold")
        return line

    def show(self, snapshot: FleetSnapshot, *, width: int) -> None:
        """Render `snapshot` for a terminal `width` cells wide."""
        # The load figure is here as well as in its pane, which a small terminal
        # has no room for. When the line is too long, the words go first (the
        # app's name, the state's name), never a figure.
        for brand, words in ((True, True), (False, True), (False, False)):
            line = self._line(snapshot, width, brand=brand, words=words)
            if len(line) <= width - 2:
                break
        if line != self._shown:
            self._shown = line
            self.update(line, layout=False)  # always one line: no layout to redo
