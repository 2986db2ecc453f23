"""What the app sends the terminal adds up to the screen it means.

The panes repaint as little as they can (a new queue title repaints the top
border row, a filter keystroke asks for no layout), so a region left out of a
repaint would leave stale text on the terminal while every render of the app
itself looks right. Here the updates the app sends are applied to a model
terminal, which must then show what a full render of the screen shows.
"""

from __future__ import annotations

import re
from pathlib import Path

from textual.screen import Screen

from fleetdeck.model import TaskState
from fleetdeck.tui.queue import QueuePane, QueueTable
from tui_support import engine_of, fleet, make_app, until

WIDTH, HEIGHT = 100, 30
# What the updates hold besides text: cursor moves (CSI row;col H) and the rest
# (colours, modes), which the model ignores.
CONTROL = re.compile(r"\x1b\[(?:(\d+);(\d+)H|[0-9;?]*[A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class ModelTerminal:
    """The text of a terminal's cells, as escape sequences leave them."""

    def __init__(self) -> None:
        self.lines = [[" "] * WIDTH for _ in range(HEIGHT)]

    def write(self, data: str) -> None:
        x = y = 0
        at = 0
        for control in CONTROL.finditer(data):
            x = self._text(data[at : control.start()], x, y)
            if control.group(1):
                y, x = int(control.group(1)) - 1, int(control.group(2)) - 1
            at = control.end()
        self._text(data[at:], x, y)

    def _text(self, text: str, x: int, y: int) -> int:
        for char in text:
            if char == "\n":
                continue  # every line of an update starts with a cursor move
            if 0 <= y < HEIGHT and 0 <= x < WIDTH:
                self.lines[y][x] = char
            x += 1
        return x

    def text(self) -> list[str]:
        return ["".join(line) for line in self.lines]


def full_render(screen: Screen[object]) -> list[str]:
    """The screen's text as a render of all of it draws it."""
    strips = screen._compositor.render_strips()
    return [strip.text for strip in strips]


async def test_filter_keystrokes_leave_the_terminal_as_the_screen_is(tmp_path: Path) -> None:
    tasks = [{"id": f"task-{number:03d}", "agent": "coder"} for number in range(200)]
    app, journal = make_app(fleet(tmp_path, tasks, slots=2), tmp_path)
    terminal = ModelTerminal()

    def display(screen: Screen[object], update: object) -> None:
        if update is not None:
            terminal.write(update.render_segments(app.console))  # type: ignore[attr-defined]

    app._display = display  # type: ignore[method-assign]
    async with app.run_test(size=(WIDTH, HEIGHT)) as pilot:
        await until(lambda: engine_of(app).task("task-000").state is TaskState.RUNNING)
        await pilot.pause()
        # Rows come and go and the title counts the matches; the scrollbar's thumb
        # follows, and at "199" (one match) the scrollbar goes.
        for keys in (
            ["slash", "1"],
            ["backspace"],
            ["3"],
            ["backspace", "2"],
            ["backspace", "1", "9", "9"],
            ["backspace", "backspace", "backspace"],
            ["escape"],
        ):
            await pilot.press(*keys)
            await pilot.pause()
            shown = terminal.text()
            assert shown == full_render(app.screen), keys
            # A render reuses the lines it drew before, even stale ones: the title
            # is checked against what it must say.
            pane = app.query_one(QueuePane)
            matches = f"{pane.table.rows.task_count} match '{pane.filter_text}'"
            assert (matches in shown[pane.region.y]) == bool(pane.filter_text), keys
        assert "match" not in shown[pane.region.y]
        assert len(app.query_one(QueueTable).row_keys()) == 201
    journal.close()
