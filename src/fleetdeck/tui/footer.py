"""The footer: the keys of the screen, with the way out always on it."""

from __future__ import annotations

from textual import events
from textual.app import ComposeResult
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# Narrower than this, keys are drawn without padding (80 columns need it).
ROOMY = 120
# Narrower than this, no command palette key (ctrl+p still works, and the help
# screen lists it): its cells go to the screen's own keys.
PALETTE_AT = 80
_LEAVE = frozenset({"quit", "app.quit", "app.pop_screen"})


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
        if self.size.width and self.size.width < PALETTE_AT:
            rest = [w for w in rest if not w.has_class("-command-palette")]
        for key in leave[:1]:
            key.add_class("-leave")
        yield from rest
        yield from leave[:1]

    def on_resize(self, event: events.Resize) -> None:
        compact = event.size.width < ROOMY
        palette = event.size.width >= PALETTE_AT
        if compact != self.compact or palette != getattr(self, "_palette", None):
            self._palette = palette
            self.compact = compact
            self.call_after_refresh(self.recompose)
