"""The command palette's source: the app's commands, found by name or by what they do.

Textual's own source matches names only, and brings Textual's commands along
(theme, keys panel, screenshot), which mean nothing to an operator. Here the
commands are the app's (`App.get_system_commands`), and a query finds a command
by its description as well: "launches" finds "Pause or resume".
"""

from __future__ import annotations

from textual.command import DiscoveryHit, Hit, Hits, Provider

# The operator's commands: (title, what it does, the app's action); the key is said
# in the description, so that the palette teaches the keys.
PALETTE: tuple[tuple[str, str, str], ...] = (
    (
        "Switch policy",
        "the next policy in turn: sequential, wave, pipelined, adaptive (s)",
        "switch_policy",
    ),
    ("Cancel task", "cancel the selected task (c)", "cancel"),
    ("Retry task", "retry the selected task (r)", "retry"),
    ("Seen", "acknowledge the selected failure: it needs you no more (x)", "acknowledge"),
    ("Pause or resume", "hold back new launches (p)", "pause"),
    ("Task details", "attempts, log, inputs, output (enter)", "details"),
    ("Timeline", "attempts per slot over time (t)", "timeline"),
    ("All tasks", "show or hide the tasks that are done (a)", "all_tasks"),
    ("Filter queue", "by task, state or agent (/)", "filter"),
    ("Help", "keys and the load formula (?)", "help"),
    ("Quit", "stop cleanly and leave (q)", "quit"),
)

# A match in the description ranks below a match of the same strength in the name.
DESCRIPTION_WEIGHT = 0.5


def described(query: str, description: str) -> bool:
    """Whether every word of `query` is in `description` (case-insensitive).

    Words, not a fuzzy subsequence: in a sentence a few letters would match
    nearly anything."""
    words = query.lower().split()
    text = description.lower()
    return bool(words) and all(word in text for word in words)


class OperatorCommands(Provider):
    """The app's commands for the command palette (ctrl+p)."""

    async def discover(self) -> Hits:
        """Every command, as the app lists them, before anything is typed."""
        for title, help_text, callback, discover in self.app.get_system_commands(self.screen):
            if discover:
                yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        """The commands whose name matches `query` (fuzzy), or whose description has
        its words."""
        matcher = self.matcher(query)
        for title, help_text, callback, _ in self.app.get_system_commands(self.screen):
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
            elif described(query, help_text):
                yield Hit(DESCRIPTION_WEIGHT, title, callback, help=help_text)
