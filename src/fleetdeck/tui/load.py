"""The cognitive-load pane: the score against capacity, and the attention queue."""

from __future__ import annotations

from rich.text import Text

from fleetdeck.snapshot import FleetSnapshot
from fleetdeck.tui.lines import LinesPane, set_border_subtitle
from fleetdeck.tui.render import STATE_GLYPHS, STATE_STYLES, bar, clock, cut

GAUGE_MAX = 40


def load_style(score: int, capacity: int) -> str:
    """Green while comfortable, yellow near capacity, red past it."""
    if score > capacity:
        return "bold red"
    if score > 0.7 * capacity:
        return "bold yellow"
    return "bold green"


class LoadPane(LinesPane):
    """The operator's load as a gauge, what makes it up, and what needs them."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Cognitive load"

    def show(self, snapshot: FleetSnapshot, *, width: int, lines: int) -> None:
        """Render into a pane `width` cells wide with room for `lines` lines."""
        load = snapshot.load
        style = load_style(load.score, load.capacity)
        gauge = Text()
        gauge.append(f"load {load.score}/{load.capacity} ", style=style)
        # The bar spans twice the capacity so that being over it shows; past
        # GAUGE_MAX cells a longer bar says nothing more.
        over = " over!" if load.over_capacity else ""
        gauge_width = min(GAUGE_MAX, max(6, width - len(gauge) - len(over)))
        gauge.append(bar(load.score / (2 * load.capacity), gauge_width), style=style)
        gauge.append(over, style="bold red")
        extra_states = max(0, load.distinct_states - 1)
        breakdown = (
            f"{load.in_flight} in flight + 2×{load.needs_attention} need you"
            f" + {extra_states} extra states"
        )
        if len(breakdown) > width:
            breakdown = (
                f"{load.in_flight} flight + 2×{load.needs_attention} attn + {extra_states} states"
            )
        parts = cut(breakdown, width, style="dim")
        rows: list[Text] = [gauge, parts]
        room = max(0, lines - 2)
        items = snapshot.attention
        # Past the room, the last row says how many more (alone, or after the oldest).
        fits = len(items) <= room
        shown = items if fits else items[: max(1, room - 1)] if room else ()
        for item in shown:
            line = Text()
            if item.agent is not None:
                # An agent's item (its budget is spent): what, and since when.
                line.append("⏸ ", style="bold yellow")
                line.append(item.reason or f"{item.agent} takes no launches")
                line.append(f" {clock(snapshot.now - item.since)}", style="dim")
                rows.append(cut(line, width))
                continue
            if item.files:
                line.append("⚠ ", style="bold yellow")
            else:
                line.append(f"{STATE_GLYPHS[item.state]} ", style=STATE_STYLES[item.state])
            line.append(item.task)
            if item.files:
                # Two changes in flight touch the same files: say which.
                line.append(f" overlaps {', '.join(item.overlaps)}: ", style="yellow")
                line.append(", ".join(item.files))
            else:
                line.append(f" {item.state.value} ", style=STATE_STYLES[item.state])
                line.append(clock(snapshot.now - item.since), style="dim")
                if item.reason:
                    line.append(f" {item.reason}")
            rows.append(cut(line, width))
        if room == 1 and len(items) > 1:
            # One row: the oldest item, and how many more, rather than a count alone.
            more = f" +{len(items) - 1} more"
            rows[-1] = cut(rows[-1], width - len(more)).append(more, style="dim")
        elif len(shown) < len(items):
            rows.append(Text(f"… and {len(items) - len(shown)} more", style="dim"))
        elif not items and room:
            rows.append(Text("nothing needs you", style="dim"))
        set_border_subtitle(self, f"attention {len(items)}" if items else "")
        self.show_lines(rows)
