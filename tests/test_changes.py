"""Overlaps among the changes of tasks in flight: only tasks sharing a file warn,
each naming the others and the files in common."""

from __future__ import annotations

from pathlib import Path

from fleetdeck.engine.changes import Overlap, TaskChanges
from fleetdeck.workspace.git import diff_stat
from git_support import git, make_repo


def details(*paths: str) -> dict[str, object]:
    return {
        "commit": "c1",
        "branch": "fleetdeck/x",
        "base": "b0",
        "files": len(paths),
        "insertions": 1,
        "deletions": 0,
        "paths": list(paths),
    }


def test_only_tasks_that_share_a_file_overlap() -> None:
    changes = TaskChanges()
    changes.record(0, details("shared.txt", "a.txt"))
    changes.record(1, details("b.txt"))
    changes.record(2, details("shared.txt", "c.txt", "a.txt"))
    changes.record(3, details("c.txt"))
    changes.record(4, {"landed": "abc"})  # a merge's details: no change recorded
    assert 4 not in changes.by_node
    assert changes.overlaps(range(5)) == {
        0: Overlap((2,), ("a.txt", "shared.txt")),
        2: Overlap((0, 3), ("a.txt", "c.txt", "shared.txt")),
        3: Overlap((2,), ("c.txt",)),
    }
    # Task 2 no longer in flight: nothing is left to overlap.
    assert changes.overlaps([0, 1, 3]) == {}


async def test_a_renamed_file_overlaps_by_both_its_names(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"old.txt": "some text\n" * 20, "keep.txt": "k\n"})
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "mv", "old.txt", "new.txt")
    (repo / "keep.txt").write_text("changed\n")
    git(repo, "commit", "-q", "-am", "rename")
    stat = await diff_stat(repo, base, "HEAD")
    assert stat.files == 2
    assert stat.paths == ("keep.txt", "new.txt", "old.txt")
