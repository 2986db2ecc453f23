"""Each way of landing (rebase, merge, squash) on a real repository whose target
the user moves while the train works: every commit of theirs stays on the
target, each task's change lands on top of it, and the train's scratch
worktree, kept from one landing to the next, is gone when the run ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EngineHarness
from fleetdeck.engine import Engine
from fleetdeck.model import Event, EventKind
from git_support import commit_file, git, make_repo
from test_land import assert_nothing_left
from test_worktrees import land_fleet, landing


@pytest.mark.parametrize("mode", ["rebase", "merge", "squash"])
async def test_each_way_of_landing_keeps_the_users_commits_and_lands_on_them(
    harness: EngineHarness, tmp_path: Path, mode: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    tasks = [
        {"id": "a", "agent": "sh", "prompt": "add a\necho a > a.txt; echo a2 > a2.txt"},
        {"id": "b", "agent": "sh", "prompt": "add b\necho b > b.txt", "depends_on": ["a"]},
        {"id": "c", "agent": "sh", "prompt": "add c\necho c > c.txt", "depends_on": ["b"]},
    ]
    fleet = land_fleet(tmp_path, repo, tasks, land=mode)
    mine: list[str] = []
    scratch = tmp_path / "state" / "worktrees" / ".train"
    kept: list[bool] = []

    def during(engine: Engine, event: Event) -> None:
        if event.kind is EventKind.ATTEMPT_STARTED and event.data["stage"] == "agent":
            kept.append(scratch.is_dir())
            if event.task != "a":
                # The user commits on the target while the task's agent works:
                # it lands on top of that, and that commit stays.
                mine.append(commit_file(repo, f"mine-{event.task}.txt", "mine\n", "mine"))

    run = await harness.run(fleet, during=during, **landing(fleet, tmp_path))
    assert [run.state(task) for task in "abc"] == ["succeeded"] * 3
    tip = git(repo, "rev-parse", "main")
    for commit in mine:
        assert git(repo, "merge-base", "--is-ancestor", commit, tip) == ""  # raises if not
    files = git(repo, "ls-tree", "--name-only", "main").split()
    assert files == sorted(
        ["README", "a.txt", "a2.txt", "b.txt", "c.txt", "mine-b.txt", "mine-c.txt"]
    )
    landed = [e.data["commit"] for e in run.of(EventKind.TASK_LANDED)]
    assert landed[-1] == tip
    first_parents = git(repo, "log", "--first-parent", "--format=%s", "main").splitlines()
    if mode == "merge":
        assert first_parents == ["Merge fleetdeck/c", "mine", "Merge fleetdeck/b", "mine",
                                 "Merge fleetdeck/a", "initial"]  # fmt: skip
        assert git(repo, "rev-list", "--parents", "-n", "1", tip).count(" ") == 2
    else:
        assert first_parents == ["c: add c", "mine", "b: add b", "mine", "a: add a", "initial"]
    # The scratch worktree was there between landings (kept), and is gone now.
    assert kept == [False, True, True]
    assert not scratch.exists()
    assert (repo / "c.txt").read_text() == "c\n"  # the user's checkout came along
    assert git(repo, "status", "--porcelain") == ""
    assert_nothing_left(repo)
