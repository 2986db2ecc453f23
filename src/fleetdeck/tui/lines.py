"""A pane of text lines that repaints only when its lines change."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.text import Text
from textual.widget import Widget
from textual.widgets import Static


class LinesPane(Static):
    """A Static fed whole lines, refresh after refresh.

    `Static.update` asks for a layout of the whole screen every time, and the
    panes are fed four times a second: at 200x60 with a busy fleet, those
    layouts cost more than everything else in a refresh, and a key pressed
    meanwhile waits for them. Here identical lines cost nothing, and only a
    change in the number of lines (what an auto-height pane's size depends on)
    asks for a layout.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._lines: list[Text] = []

    def show_lines(self, lines: Sequence[Text]) -> None:
        """Show `lines`, one per row (each already cut to the pane's width)."""
        if len(lines) == len(self._lines) and all(
            new == old for new, old in zip(lines, self._lines, strict=True)
        ):
            return
        layout = len(lines) != len(self._lines)
        self._lines = list(lines)
        self.update(Group(*lines), layout=layout)


def set_border_title(widget: Widget, title: str) -> None:
    """Set the border title, repainting only if it changed (Textual repaints the
    whole widget on every assignment, even of the same title)."""
    if widget.border_title != title:
        widget.border_title = title


def set_border_subtitle(widget: Widget, subtitle: str) -> None:
    """Set the border subtitle, repainting only if it changed."""
    if widget.border_subtitle != subtitle:
        widget.border_subtitle = subtitle
