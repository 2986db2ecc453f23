"""A question with a few answers, one key each, that blocks the rest of the
screen (what a retry of a task whose CI failed reruns)."""

from __future__ import annotations

from collections.abc import Sequence

from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class ChoiceScreen(ModalScreen[str | None]):
    """Asks `question`; each of `choices` (key, label) answers with its key,
    `esc` with None (nothing chosen)."""

    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen > Vertical {
        width: 64; max-width: 95%; height: auto;
        border: thick $warning; background: $surface; padding: 1 2;
    }
    ChoiceScreen #question { width: 1fr; height: auto; }
    ChoiceScreen #keys { width: 1fr; height: auto; color: $text-muted; margin-top: 1; }
    """

    def __init__(self, question: str, choices: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.question = question
        self.choices = dict(choices)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="question")
            keys = [f"{key} {label}" for key, label in self.choices.items()]
            yield Static(" · ".join([*keys, "esc nothing"]), id="keys")

    def on_key(self, event: events.Key) -> None:
        # Every key stops here: the screens below must not act on a key meant
        # as an answer (or pressed by mistake while the question is up).
        event.stop()
        event.prevent_default()
        if event.key in self.choices:
            self.dismiss(event.key)
        elif event.key == "escape":
            self.dismiss(None)
