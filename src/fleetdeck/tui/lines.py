"""A pane of text lines that repaints only when its lines change."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.text import Text
from textual.content import Content
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
    """Set the border title as plain text, repainting only if it changed (Textual
    repaints the whole widget on every assignment, even of the same title).

    Plain, never markup: a title may quote what the operator typed (the queue's
    filter), and a string would be parsed as markup ('[/' is an error)."""
    content = Content(title)
    if widget.border_title != content.markup:  # the getter gives markup
        widget.border_title = content


def set_border_subtitle(widget: Widget, subtitle: str) -> None:
    """Set the border subtitle as plain text, repainting only if it changed."""
    content = Content(subtitle)
    if widget.border_subtitle != content.markup:
        widget.border_subtitle = content
