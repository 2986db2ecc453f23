"""The queue's rows: which tasks the queue shows, in what order, under what header.

With 10,000 tasks nothing here may cost the fleet per refresh: `QueueRows` keeps
the tasks shown in display order, where a task coming, going or moving is a
bisection, and hands the table only the rows it draws.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter

from rich.text import Text

from fleetdeck.model import Stage, TaskState
from fleetdeck.snapshot import FleetSnapshot, TaskView
from fleetdeck.tui.render import cut, state_text
from fleetdeck.tui.vtable import Row

_WAVE = "wave:"
# The done group sorts after every wave; its header row's key.
_DONE = 1 << 62
_DONE_KEY = f"{_WAVE}done"


@dataclass(slots=True, frozen=True)
class _Row:
    """What a task row shows; equal rows draw the same."""

    state: TaskState
    attempts: int
    waits_for: str
    overlaps: tuple[str, ...] = ()


def waits_for(task: TaskView, now: float, *, live: bool = True, held_by: str | None = None) -> str:
    """What keeps the task from moving on, in a few words (the state glyph says the rest);
    `live`: the run goes on (once it has finished, nothing can be retried); `held_by`:
    the policy that holds ready tasks back while their agent has free slots."""
    state = task.state
    if state is TaskState.PENDING:
        return ", ".join(task.waiting_for)
    if state is TaskState.READY:
        if task.in_flight:  # a retry needs a slot, not the policy's budget
            return f"slot of {task.agent} (retry)"
        return f"policy: {held_by}" if held_by is not None else f"slot of {task.agent}"
    # Running, its agent or its CI: nothing keeps it (the in-flight pane says where).
    if state is TaskState.CI_QUEUED:
        return f"runner {task.runner}"
    if state is TaskState.MERGE_QUEUED:
        return "merge train"
    if state is TaskState.RETRY_WAIT and task.retry_at is not None:
        return f"retry in {max(0.0, task.retry_at - now):.0f}s"
    if state is TaskState.BLOCKED:
        return f"by {task.blocked_by}"
    if state in (TaskState.FAILED, TaskState.CANCELLED) and live:
        return "r retries"
    return ""


def _waits_cell(row: _Row, width: int) -> Text:
    """The waits-for cell: the overlap warning first (it is news), then the wait."""
    if not row.overlaps:
        return cut(row.waits_for, width, style="dim")
    cell = Text(f"⚠ overlaps {', '.join(row.overlaps)}", style="yellow")
    if row.waits_for:
        cell.append(f" · {row.waits_for}", style="dim")
    return cut(cell, width)


def policy_holds(snapshot: FleetSnapshot) -> frozenset[str]:
    """The agents whose ready tasks wait for the policy, not a slot: those with free
    slots while the policy's budget keeps ready tasks from starting."""
    if not snapshot.held_by_policy:
        return frozenset()
    return frozenset(
        pool.name for pool in snapshot.pools if pool.stage is Stage.AGENT and pool.busy < pool.total
    )


def _searched(task: TaskView) -> str:
    """What the filter searches in a task: its id, state and agent, lowercased (a NUL
    never comes from the filter box, so no match spans two)."""
    return f"{task.id.lower()}\0{task.state}\0{task.agent.lower()}"


def _header_key(group: int) -> str:
    return _DONE_KEY if group == _DONE else f"{_WAVE}{group}"


def _header_group(key: str) -> int:
    return _DONE if key == _DONE_KEY else int(key[len(_WAVE) :])


def _group_header(group: int, count: int) -> Text:
    if group == _DONE:
        return Text(f"done · {count}", style="bold dim green")
    return Text(f"wave {group} · {count}", style="bold dim")


class QueueRows:
    """The tasks the queue shows, in display order: per wave, a header row and then
    its tasks in config order; with `show_done`, the tasks that are done after them
    in a group of their own. A `RowSource` for the table.

    Shown tasks are kept sorted by (group, config order), where the group is the
    wave, or the done group after every wave; so a task coming, going or moving
    is a bisection, and the row at an index is found by bisecting the header rows.
    """

    def __init__(self) -> None:
        self.views: dict[str, TaskView] = {}  # every task's latest view
        self._order: dict[str, int] = {}  # config order
        self._all: list[tuple[int, int, str]] = []  # (wave, order, id) of every task, sorted
        # In step with _all: what the filter searches in each task, lowercased once
        # per view rather than per keystroke; in the first list for the tasks not
        # done (None for those done), in the second for those done (None for the
        # others), so that a keystroke looks at the tasks done only if shown.
        self._searched: list[str | None] = []
        self._searched_done: list[str | None] = []
        self._shown: list[tuple[int, int, str]] = []  # (group, order, id) of the tasks shown
        self._count: Counter[int] = Counter()  # shown tasks per group
        self._waves: list[int] = []  # groups with shown tasks, ascending (done last)
        self._headers: list[int] | None = None  # each group header's index (lazily)
        self.show_done = False  # the done group is shown
        self.filter = ""
        self.now = 0.0
        self.live = True  # the run goes on (see waits_for)
        self.policy = ""  # the policy, and the agents it holds back (see policy_holds)
        self.held_agents: frozenset[str] = frozenset()
        self.widths = (0, 0)  # the task and "waits for" columns

    # --- what is shown ------------------------------------------------------------

    def shows(self, task_id: str) -> bool:
        """Not done (or done tasks shown), and matching the filter (in its id, state
        or agent)."""
        at = self._place(task_id)
        searched = self._searched[at]
        if searched is None and self.show_done:
            searched = self._searched_done[at]
        return searched is not None and self.filter in searched

    @property
    def task_count(self) -> int:
        """How many tasks are shown (header rows not counted)."""
        return len(self._shown)

    def load(self, tasks: Iterable[TaskView]) -> None:
        """Every task's view, in config order (then `refilter()` decides what shows)."""
        self.views = {task.id: task for task in tasks}
        self._order = {task_id: number for number, task_id in enumerate(self.views)}
        self._all = sorted(self._entry(task_id) for task_id in self.views)
        self._searched = [None] * len(self._all)
        self._searched_done = [None] * len(self._all)
        for at, (_, _, task_id) in enumerate(self._all):
            self._set_searched(at, self.views[task_id])

    def _set_searched(self, at: int, task: TaskView) -> None:
        text = _searched(task)
        done = task.state is TaskState.SUCCEEDED
        self._searched[at] = None if done else text
        self._searched_done[at] = text if done else None

    def _entry(self, task_id: str) -> tuple[int, int, str]:
        """The task's place in _all (its wave never changes)."""
        return (self.views[task_id].wave, self._order[task_id], task_id)

    def _shown_entry(self, task_id: str) -> tuple[int, int, str]:
        """The task's place among the rows: in its wave, or in the done group."""
        task = self.views[task_id]
        group = _DONE if task.state is TaskState.SUCCEEDED else task.wave
        return (group, self._order[task_id], task_id)

    def _place(self, task_id: str) -> int:
        """The task's index in _all (and _searched)."""
        return bisect_left(self._all, self._entry(task_id))

    def put(self, task: TaskView) -> bool:
        """Take in a task's new view; whether its row came, went or moved."""
        if task.id not in self.views:  # never seen: given its place, not shown yet
            self._order[task.id] = len(self._order)
            self.views[task.id] = task
            at = self._place(task.id)
            self._all.insert(at, self._entry(task.id))
            self._searched.insert(at, None)
            self._searched_done.insert(at, None)
        was, before = self.shows(task.id), self._shown_entry(task.id)
        self.views[task.id] = task
        self._set_searched(self._place(task.id), task)
        now, after = self.shows(task.id), self._shown_entry(task.id)
        if not (was or now) or (was and now and before == after):
            return False
        if was:
            self._remove(before)
        if now:
            self._add(after)
        return True

    def refilter(self, text: str) -> None:
        """Show the tasks matching `text`: one pass over every task, in display order
        (what `shows()` says of each, written out: this runs on every keystroke)."""
        self.filter = text
        self._shown = [
            entry
            for entry, searched in zip(self._all, self._searched, strict=True)
            if searched is not None and text in searched
        ]
        if self.show_done:
            # After every wave, in config order.
            self._shown += sorted(
                (_DONE, order, task_id)
                for (_, order, task_id), searched in zip(
                    self._all, self._searched_done, strict=True
                )
                if searched is not None and text in searched
            )
        self._count = Counter(map(itemgetter(0), self._shown))  # entries start with the wave
        self._waves = sorted(self._count)
        self._headers = None

    def _add(self, entry: tuple[int, int, str]) -> None:
        wave = entry[0]
        self._shown.insert(bisect_left(self._shown, entry), entry)
        if wave not in self._count:
            self._count[wave] = 0
            self._waves.insert(bisect_left(self._waves, wave), wave)
        self._count[wave] += 1
        self._headers = None

    def _remove(self, entry: tuple[int, int, str]) -> None:
        wave = entry[0]
        index = bisect_left(self._shown, entry)
        if index < len(self._shown) and self._shown[index] == entry:
            del self._shown[index]
            self._count[wave] -= 1
            if not self._count[wave]:
                del self._count[wave]
                del self._waves[bisect_left(self._waves, wave)]
            self._headers = None

    def _header_rows(self) -> list[int]:
        if self._headers is None:
            before = accumulate((self._count[wave] for wave in self._waves), initial=0)
            self._headers = [tasks + number for number, tasks in enumerate(before)][
                : len(self._waves)
            ]
        return self._headers

    # --- RowSource ----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._shown) + len(self._waves)

    def key(self, index: int) -> str:
        """The key of the row at `index`: a task id, or `wave:N` (`wave:done`) for a
        header."""
        headers = self._header_rows()
        number = bisect_right(headers, index) - 1
        if headers[number] == index:
            return _header_key(self._waves[number])
        return self._shown[index - number - 1][2]

    def row(self, index: int) -> Row:
        key = self.key(index)
        if key.startswith(_WAVE):
            group = _header_group(key)
            count = self._count[group]
            return Row(key, (_group_header(group, count), "", "", ""), (key, count))
        shown = self._shown_of(key)
        task_width, waits_width = self.widths
        cells = (
            cut(key, task_width),
            state_text(shown.state, short=True),
            str(shown.attempts) if shown.attempts else "",
            _waits_cell(shown, waits_width),
        )
        return Row(key, cells, (key, shown, self.widths))

    def signature(self, index: int) -> Hashable:
        key = self.key(index)
        if key.startswith(_WAVE):
            return (key, self._count[_header_group(key)])
        return (key, self._shown_of(key), self.widths)

    def _shown_of(self, task_id: str) -> _Row:
        task = self.views[task_id]
        held_by = self.policy if task.agent in self.held_agents else None
        waits = waits_for(task, self.now, live=self.live, held_by=held_by)
        return _Row(task.state, task.attempts, waits, task.overlaps)

    def index_of(self, key: str) -> int | None:
        if key.startswith(_WAVE):
            group = _header_group(key)
            number = bisect_left(self._waves, group)
            if number < len(self._waves) and self._waves[number] == group:
                return self._header_rows()[number]
            return None
        if key not in self.views:
            return None
        entry = self._shown_entry(key)
        at = bisect_left(self._shown, entry)
        if at == len(self._shown) or self._shown[at] != entry:
            return None
        return at + bisect_right(self._waves, entry[0])


def is_header(key: str) -> bool:
    """Whether a row key is a group's header row (`wave:N`, `wave:done`), not a task."""
    return key.startswith(_WAVE)
