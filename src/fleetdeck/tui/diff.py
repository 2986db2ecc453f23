"""The diff screen: the patch of a task's change, coloured, a page at a time.

The patch comes through the client (`EngineClient.task_diff`, secrets masked);
this screen only colours it, line by line, as `git diff --color` would.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import RichLog

from fleetdeck.client import CommandError, EngineClient
from fleetdeck.tui.footer import FleetFooter

# A patch longer than this shows its start and says how much was left out (the
# whole of it is one `git diff` away).
DIFF_LINES_SHOWN = 20_000


def diff_line(line: str) -> Text:
    """One line of a patch, coloured by what it is."""
    if line.startswith(("diff --git", "index ", "--- ", "+++ ")):
        return Text(line, style="bold")
    if line.startswith("@@"):
        return Text(line, style="cyan")
    if line.startswith("+"):
        return Text(line, style="green")
    if line.startswith("-"):
        return Text(line, style="red")
    return Text(line)


class DiffScreen(Screen[None]):
    """The change `task_id`'s agent committed last, as a patch: arrows, PgUp/PgDn,
    Home/End page through it."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("q", "app.pop_screen", "Back", show=False),
        Binding("space", "page_down", "Page", show=False),
        Binding("b", "page_up", "Page up", show=False),
    ]
    DEFAULT_CSS = """
    DiffScreen #diff { height: 1fr; border: round $primary; }
    """

    def __init__(self, client: EngineClient, task_id: str) -> None:
        super().__init__()
        self.client = client
        self.task_id = task_id
        self.loaded = False  # the patch (or why there is none) is on screen

    def compose(self) -> ComposeResult:
        yield RichLog(id="diff", wrap=False, auto_scroll=False, markup=False, highlight=False)
        yield FleetFooter()

    def on_mount(self) -> None:
        view = self.query_one("#diff", RichLog)
        view.border_title = f"Diff · {self.task_id}"
        view.focus()
        self.run_worker(self._load(), exclusive=True)

    async def _load(self) -> None:
        view = self.query_one("#diff", RichLog)
        try:
            patch = await self.client.task_diff(self.task_id)
        except CommandError as exc:
            view.write(Text(str(exc), style="dim"))
            self.loaded = True
            return
        lines = patch.splitlines()
        for line in lines[:DIFF_LINES_SHOWN]:
            view.write(diff_line(line))
        if len(lines) > DIFF_LINES_SHOWN:
            view.write(Text(f"[… {len(lines) - DIFF_LINES_SHOWN} more lines]", style="dim"))
        if not lines:
            view.write(Text("(no change)", style="dim"))
        view.scroll_home(animate=False)
        self.loaded = True

    def action_page_down(self) -> None:
        self.query_one("#diff", RichLog).scroll_page_down(animate=False)

    def action_page_up(self) -> None:
        self.query_one("#diff", RichLog).scroll_page_up(animate=False)
