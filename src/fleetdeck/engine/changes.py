"""What each task's agent changed, and which changes in flight touch the same files.

With a `[repo]`, each successful agent attempt's `attempt_finished` event says
what it committed (branch, base, head, diff stat, paths: the workspace's
`after_attempt`). The shell hands those details here; views read them back as
plain data (`TaskChange`) and as overlaps: two tasks in flight whose changes
touch a file in common will meet at the merge train, and the operator hears of
it before they do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleetdeck.snapshot import TaskChange


@dataclass(slots=True, frozen=True)
class Overlap:
    """Task `node`'s change touches `files`, which the changes of `others` touch too."""

    others: tuple[int, ...]  # nodes, ascending (config order)
    files: tuple[str, ...]  # sorted


class TaskChanges:
    """The latest change of each task (by DAG node) whose agent committed one."""

    def __init__(self) -> None:
        self.by_node: dict[int, TaskChange] = {}

    def record(self, node: int, details: Mapping[str, Any]) -> None:
        """Keep what an agent attempt's `attempt_finished` details say it changed
        (nothing when they say no commit: a fleet without a `[repo]`)."""
        from fleetdeck.snapshot import TaskChange

        commit = details.get("commit")
        if not isinstance(commit, str):
            return
        paths = details.get("paths")
        self.by_node[node] = TaskChange(
            branch=str(details.get("branch", "")),
            base=str(details.get("base", "")),
            commit=commit,
            files=_count(details.get("files")),
            insertions=_count(details.get("insertions")),
            deletions=_count(details.get("deletions")),
            paths=tuple(str(path) for path in paths) if isinstance(paths, list | tuple) else (),
        )

    def overlaps(self, nodes: Iterable[int]) -> dict[int, Overlap]:
        """Among the changes of `nodes`, each one that shares a file with another."""
        holders: dict[str, list[int]] = {}
        for node in nodes:
            change = self.by_node.get(node)
            if change is not None:
                for path in change.paths:
                    holders.setdefault(path, []).append(node)
        others: dict[int, set[int]] = {}
        files: dict[int, set[str]] = {}
        for path, sharing in holders.items():
            if len(sharing) < 2:
                continue
            for node in sharing:
                others.setdefault(node, set()).update(n for n in sharing if n != node)
                files.setdefault(node, set()).add(path)
        return {
            node: Overlap(tuple(sorted(with_)), tuple(sorted(files[node])))
            for node, with_ in others.items()
        }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
