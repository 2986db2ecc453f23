"""The help screen: every key, and how the load score is computed."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# Keys and what they do; the single list the help screen and the README follow.
KEYS: tuple[tuple[str, str], ...] = (
    ("s", "the next policy, in turn (next launch; nothing in flight is touched)"),
    ("c", "cancel the selected task (asks y/n); its process tree is stopped"),
    ("r", "retry the selected failed, cancelled or blocked-root task (CI failed: CI only, or all)"),
    ("x", "seen: the selected failed task or blocked root leaves the attention queue"),
    ("p", "pause / resume new launches (work in flight goes on)"),
    ("enter", "details of the selected task (or timeline bar): attempts, live log, inputs, output"),
    ("t", "timeline: attempts per slot over time"),
    ("  + -", "timeline: zoom in / out (around the selected bar)"),
    ("  ← →", "timeline: earlier / later; home: the start, end: now"),
    ("  ↑ ↓", "timeline: select a bar above / below; shift+← → in its lane; enter opens it"),
    ("a", "all tasks: show / hide the tasks that are done, in a group at the end of the queue"),
    ("/", "filter the queue by task, state or agent"),
    ("?", "this help"),
    ("q", "quit (asks y/n while work is in flight; stops it cleanly); at once after the end"),
    ("ctrl+c", "as q"),
    ("d", "detach: leave the screen, the fleet in the background goes on"),
    ("Q", "stop a fleet in the background, for every screen attached (asks y/n)"),
    ("esc", "back, or clear the filter"),
    ("↑ ↓  j k", "move the selection; tab switches between queue and in flight"),
    ("ctrl+p", "command palette: every action, by name or by what it does"),
)

# Said under the keys: how a run ends in the TUI.
RUN_END_HELP = (
    "The run ends by itself once every task has ended, as with --no-tui: the header "
    "then says finished and the exit code, the clock stops, and the screen stays for "
    "browsing until q. Retry, cancel, pause, policy and x need a running run."
)

LOAD_FORMULA = "load = in_flight + 2 × needs_attention + (distinct in-flight states − 1)"
# Each term and what it counts: a table, so a definition wraps under itself at
# any width (80 columns leave ~60 for the words).
LOAD_TERMS: tuple[tuple[str, str], ...] = (
    ("in_flight", "tasks between their first launch and their end, each one thing to keep in mind"),
    (
        "needs_attention",
        "failed tasks awaiting a decision, and blocked roots (tasks blocked directly by "
        "a failed or cancelled dependency); they count double because they interrupt",
    ),
    (
        "distinct states",
        "running, waiting for CI, waiting to retry: each kind of state in flight beyond "
        "the first is one more context",
    ),
)
LOAD_GAUGE_HELP = (
    "The gauge turns yellow past 70% of your capacity and red past it. "
    "Set the capacity with load_capacity in [fleet] (default 7)."
)


def load_terms() -> Table:
    """The load formula's terms, each definition in a column of its own."""
    terms = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
    terms.add_column(style="bold", no_wrap=True)
    terms.add_column()
    for term, what in LOAD_TERMS:
        terms.add_row(term, what)
    return terms


class HelpScreen(ModalScreen[None]):
    """Keys and the load formula."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 96; height: 90%;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    """
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("question_mark", "app.pop_screen", "Back", show=False),
        Binding("q", "app.pop_screen", "Back", show=False),
    ]

    def compose(self) -> ComposeResult:
        keys = Table(box=None, show_header=False, padding=(0, 2))
        keys.add_column(style="bold cyan", no_wrap=True)
        keys.add_column()
        for key, what in KEYS:
            keys.add_row(key, what)
        with VerticalScroll():
            yield Static(Text("Keys", style="bold underline"))
            yield Static(keys)
            yield Static(Text("\n" + RUN_END_HELP, style="dim"))
            yield Static(Text("\nCognitive load", style="bold underline"))
            yield Static(Text(LOAD_FORMULA + "\n"))
            yield Static(load_terms(), id="load-terms")
            yield Static(Text("\n" + LOAD_GAUGE_HELP))
            yield Static(Text("\nesc closes this screen", style="dim"))
