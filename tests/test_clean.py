"""`fleetdeck clean` on real repositories: what failed tasks left goes, work on
no other branch stays (and is named), and branches fleetdeck did not make are
never touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import EngineHarness
from fleetdeck.cli import main
from git_support import commit_file, git, make_repo
from test_worktrees import land, land_fleet

TASKS = [
    # Fails having changed nothing: removing it loses nothing.
    {"id": "a", "agent": "sh", "prompt": "exit 1"},
    # Fails leaving a file it did not commit.
    {"id": "b", "agent": "sh", "prompt": "echo wip > b.txt; exit 1"},
    # Its agent's work is committed, then its CI fails: a commit on no other branch.
    {"id": "c", "agent": "sh", "prompt": "echo c > c.txt", "ci": "no"},
]


def branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split()


async def failed_run(harness: EngineHarness, tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo")
    # The user's own branch under fleetdeck's prefix: fleetdeck did not make it.
    git(repo, "branch", "fleetdeck/mine")
    fleet = land_fleet(tmp_path, repo, TASKS, runners={"no": {"command": ["sh", "-c", "exit 1"]}})
    run = await land(harness, fleet, tmp_path)
    assert [run.state(task) for task in "abc"] == ["failed"] * 3
    harness.close()
    return repo


async def test_clean_removes_what_loses_nothing_and_names_what_it_keeps(
    harness: EngineHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = await failed_run(harness, tmp_path)
    state = tmp_path / "state"
    worktrees = state / "worktrees"
    assert main(["clean", str(state), "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed == [
        f"would remove {worktrees / 'a'} and branch fleetdeck/a (task a, failed)",
        f"keeping {worktrees / 'b'} (task b, failed): uncommitted changes to b.txt",
        f"keeping {worktrees / 'c'} (task c, failed): 1 commit on no other branch "
        "(`git branch -D fleetdeck/c` drops it)",
    ]
    # A dry run removes nothing.
    assert branches(repo) == ["fleetdeck/a", "fleetdeck/b", "fleetdeck/c", "fleetdeck/mine", "main"]
    assert (worktrees / "a").is_dir()

    assert main(["clean", str(state)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        line.replace("would remove", "removing") for line in listed
    ]
    assert branches(repo) == ["fleetdeck/b", "fleetdeck/c", "fleetdeck/mine", "main"]
    assert not (worktrees / "a").exists()
    assert (worktrees / "b" / "b.txt").read_text() == "wip\n"
    assert git(worktrees / "c", "show", "HEAD:c.txt") == "c"
    listed_trees = git(repo, "worktree", "list", "--porcelain")
    assert str(worktrees / "a") not in listed_trees and str(worktrees / "b") in listed_trees
    assert (worktrees / ".branches").read_text() == "fleetdeck/b\nfleetdeck/c\n"


async def test_clean_removes_a_branch_once_its_work_is_on_another(
    harness: EngineHarness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = await failed_run(harness, tmp_path)
    worktrees = tmp_path / "state" / "worktrees"
    # The user takes c's commit onto a branch of their own, and commits b's file.
    git(repo, "branch", "keep-c", "fleetdeck/c")
    git(worktrees / "b", "add", "b.txt")
    commit_file(worktrees / "b", "b2.txt", "more\n")
    git(repo, "branch", "keep-b", "fleetdeck/b")
    assert main(["clean", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "keeping" not in out
    assert branches(repo) == ["fleetdeck/mine", "keep-b", "keep-c", "main"]
    assert git(repo, "show", "keep-b:b.txt") == "wip"
    assert len(git(repo, "worktree", "list", "--porcelain").split("\n\n")) == 1
    assert (worktrees / ".branches").read_text() == ""


def test_clean_says_what_is_wrong_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["clean", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err == f"fleetdeck: {tmp_path / 'nowhere'}: no such directory\n"


def test_a_fresh_run_cleans_first_and_sets_aside_what_it_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_cli_run import fleetdeck

    repo = make_repo(tmp_path / "repo")
    config = tmp_path / "land.toml"
    config.write_text(
        f"""
[fleet]
name = "land"
state_dir = "state"

[repo]
path = "{repo}"

[agents.sh]
command = ["sh", "-c", "{{prompt}}"]

[[tasks]]
id = "a"
agent = "sh"
prompt = "echo wip > a.txt; exit 1"

[[tasks]]
id = "b"
agent = "sh"
prompt = "exit 1"
"""
    )
    first = fleetdeck("run", str(config), "--no-tui")
    assert first.returncode == 1, first.stderr
    worktrees = tmp_path / "state" / "worktrees"
    again = fleetdeck("run", str(config), "--no-tui", "--fresh")
    assert again.returncode == 1, again.stderr
    assert (
        f"fleetdeck: removing {worktrees / 'b'} and branch fleetdeck/b (task b)\n" in again.stderr
    )
    assert (
        f"fleetdeck: keeping {worktrees / 'a'} (task a): uncommitted changes to a.txt; "
        "set aside as fleetdeck/a@1\n" in again.stderr
    )
    # The new run made a's worktree afresh beside it; what it kept is still there.
    assert (worktrees / "a@1" / "a.txt").read_text() == "wip\n"
    assert git(worktrees / "a@1", "rev-parse", "--abbrev-ref", "HEAD") == "fleetdeck/a@1"
    assert (worktrees / "a" / "a.txt").read_text() == "wip\n"  # its second attempt's
    assert sorted((worktrees / ".branches").read_text().split()) == [
        "fleetdeck/a",
        "fleetdeck/a@1",
        "fleetdeck/b",
    ]
    # A later clean keeps it (it still holds work), and sets nothing aside.
    assert main(["clean", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert f"keeping {worktrees / 'a@1'} (task a@1): uncommitted changes to a.txt\n" in out
    assert "set aside" not in out
