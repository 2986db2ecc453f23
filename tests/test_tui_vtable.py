"""VirtualTable draws a cell as rich's Padding and Styled would (what DataTable
does), without going through them: the pictures must not tell the two apart."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.renderables.styled import Styled

from fleetdeck.tui.vtable import _cell_line, _formatted

CELLS: list[Text | str] = [
    "t00042",
    "",
    "[bold]markup[/] and more",
    "a :smile: emoji code",
    "日本語の幅",
    "x" * 40,
    "a\ttab",
    "two\nlines",
    Text("dim", style="dim"),
    Text("cut here and there", style="bold red", overflow="ellipsis"),
    Text.assemble(("red ", "red"), ("green", "green"), " plain"),
    Text("on the right", justify="right"),
    Text("left and padded", justify="left", style="on blue"),
    Text("no such style", style="not-a-style"),
    Text("no such style, cut here", style="not-a-style"),
]


def padded_and_styled(cell: Text, width: int, pre: Style, post: Style) -> list[Segment]:
    """The cell as the table drew it before: Padding inside Styled, rendered by rich."""
    console = Console(width=200, color_system="truecolor")
    options = console.options.update_dimensions(width + 2, 1).update(no_wrap=True)
    lines = console.render_lines(
        Styled(Padding(cell, (0, 1)), pre_style=pre, post_style=post), options
    )
    return list(Segment.simplify(lines[0]))


def drawn(cell: Text, width: int, pre: Style, post: Style) -> list[Segment]:
    """The cell as the table draws it now (see VirtualTable._line)."""
    console = Console(width=200, color_system="truecolor")
    pad = Segment(" ", pre + post)
    segments = [pad, *Segment.apply_style(_cell_line(cell, width, console), pre, post), pad]
    return list(Segment.simplify(segments))


@pytest.mark.parametrize("cell", CELLS, ids=repr)
@pytest.mark.parametrize("width", [1, 6, 12, 30])
def test_a_cell_looks_as_padding_and_styled_draw_it(cell: Text | str, width: int) -> None:
    pre = Style(bgcolor="grey23") + Style.from_meta({"row": 3, "column": 1})
    post = Style(color="white")
    text = _formatted(cell)
    assert drawn(text, width, pre, post) == padded_and_styled(text, width, pre, post)
