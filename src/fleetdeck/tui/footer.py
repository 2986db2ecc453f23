"""The footer: the keys of the screen, with the way out always on it."""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Narrower than this, keys are drawn without padding (80 columns need it).
ROOMY = 120
_LEAVE = frozenset({"quit", "app.quit", "app.pop_screen"})
# Still no room without the palette's key: these go next, in this order (the
# help screen and the palette list them; the other keys act on the run).
_EXPENDABLE = ("all_tasks",)


class FleetFooter(Footer):
    """Textual's footer, except that the key that leaves (quit, or back on a
    screen above the main one) is drawn at the right end, where keys that do
    not fit never push it out; compact below `ROOMY` columns."""

    DEFAULT_CSS = """
    FleetFooter FooterKey.-leave, FleetFooter.-compact FooterKey.-leave {
        dock: right;
        margin: 0;
        padding-left: 1;
        border-left: vkey $foreground 20%;
    }
    FleetFooter FooterKey.-command-palette { dock: none; border-left: none; }
    """

    def compose(self) -> ComposeResult:
        widgets = list(super().compose())
        leave = [w for w in widgets if isinstance(w, FooterKey) and w.action in _LEAVE]
        rest = [w for w in widgets if w not in leave]
        if self.size.width and _needs(widgets, compact=self.compact) > self.size.width:
            # No room for every key: the command palette's goes (ctrl+p still
            # works, and the help screen lists it), not one of the screen's.
            rest = [w for w in rest if not w.has_class("-command-palette")]
            for action in _EXPENDABLE:
                if _needs([*rest, *leave[:1]], compact=self.compact) <= self.size.width:
                    break
                rest = [w for w in rest if not (isinstance(w, FooterKey) and w.action == action)]
        for key in leave[:1]:
            key.add_class("-leave")
        yield from rest
        yield from leave[:1]

    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._width:
            self._width = event.size.width
            self.compact = event.size.width < ROOMY
            self.call_after_refresh(self.recompose)

    _width = 0


def _needs(widgets: Sequence[Widget], *, compact: bool) -> int:
    """The cells the footer's keys take, side by side: each key and label with
    the space between them and the gap after (padding when not compact), and
    the leave key's edge."""
    keys = [w for w in widgets if isinstance(w, FooterKey)]
    gaps = 2 if compact else 3
    return 2 + sum(len(k.key_display) + len(k.description) + gaps for k in keys)
