"""`[repo]`: its keys, and `fleetdeck validate` checking them against the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetdeck.cli import main
from fleetdeck.config import ConfigError, parse_fleet
from git_support import commit_file, make_repo

FLEET = """
[fleet]
state_dir = "{state}"

[repo]
path = "{path}"
{repo}

[agents.coder]
command = ["true"]

[[tasks]]
id = "a"
prompt = "p"
agent = "coder"
{task}
"""


def fleet_text(path: Path, *, repo: str = "", task: str = "", state: str = ".fleetdeck") -> str:
    return FLEET.format(path=path, repo=repo, task=task, state=state)


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "fleet.toml"
    config.write_text(text)
    code = main(["validate", str(config)])
    out, err = capsys.readouterr()
    return code, (err + out).replace(f"{config}: ", "")


def test_defaults_and_task_keys(tmp_path: Path) -> None:
    fleet = parse_fleet(fleet_text(tmp_path, task="land = false\nkeep_worktree = true"))
    repo = fleet.config.repo
    assert repo is not None
    assert (repo.target, repo.land, repo.worktrees, repo.setup, repo.copy, repo.empty) == (
        "main",
        "rebase",
        "worktrees",
        None,
        (),
        "fail",
    )
    assert (fleet.tasks[0].land, fleet.tasks[0].keep_worktree) == (False, True)
    without = FLEET.replace('[repo]\npath = "{path}"\n', "")
    assert parse_fleet(without.format(repo="", task="", state="s")).config.repo is None


def test_bad_keys_are_named(tmp_path: Path) -> None:
    text = fleet_text(tmp_path, repo='land = "rebsae"\nempty = "maybe"\nsetup = []')
    with pytest.raises(ConfigError) as caught:
        parse_fleet(text, source="f.toml")
    lines = str(caught.value).splitlines()
    assert any(line.startswith("f.toml: repo.land: must be one of") for line in lines)
    assert any("did you mean 'rebase'" in line for line in lines)
    assert any(line.startswith("f.toml: repo.empty: must be one of") for line in lines)
    assert "f.toml: repo.setup: must not be empty" in lines


def test_a_good_repository_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_repo(tmp_path / "repo")
    (tmp_path / "repo" / ".gitignore").write_text(".fleetdeck/\n")
    code, shown = validate(tmp_path, fleet_text(tmp_path / "repo", state="repo/.fleetdeck"), capsys)
    assert code == 0, shown
    assert shown.startswith("ok: fleet")


def test_not_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").mkdir()
    code, shown = validate(tmp_path, fleet_text(tmp_path / "plain"), capsys)
    assert code == 2
    assert (
        shown.strip() == f"repo.path: {tmp_path / 'plain'} is not a git repository with a work tree"
    )
    code, shown = validate(tmp_path, fleet_text(tmp_path / "nowhere"), capsys)
    assert (code, shown.strip()) == (2, f"repo.path: {tmp_path / 'nowhere'} is not a directory")


def test_a_missing_target_branch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_repo(tmp_path / "repo", branch="trunk")
    code, shown = validate(tmp_path, fleet_text(tmp_path / "repo"), capsys)
    assert code == 2
    assert shown.strip() == f"repo.target: no branch 'main' in {tmp_path / 'repo'}"


def test_worktrees_among_tracked_files_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo")
    commit_file(repo, "src/app.py", "x = 1\n")
    text = fleet_text(repo, repo='worktrees = "wt"', state="repo/src/state")
    code, shown = validate(tmp_path, text, capsys)
    assert code == 2
    assert shown.strip() == (
        f"repo.worktrees: {repo / 'src/state/wt'} is inside 'src', which git tracks in "
        f"{repo}: put the worktrees outside the tracked files"
    )
    # An untracked directory of the repository is fine.
    code, shown = validate(tmp_path, fleet_text(repo, state="repo/.state"), capsys)
    assert code == 0, shown


def test_copy_paths_stay_inside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_repo(tmp_path / "repo")
    text = fleet_text(tmp_path / "repo", repo='copy = [".env", "../secrets", "/etc/passwd"]')
    code, shown = validate(tmp_path, text, capsys)
    assert code == 2
    assert shown.strip().splitlines() == [
        "repo.copy[1]: '../secrets' must be a path inside the repository",
        "repo.copy[2]: '/etc/passwd' must be a path inside the repository",
    ]


def test_run_refuses_a_bad_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").mkdir()
    config = tmp_path / "fleet.toml"
    config.write_text(fleet_text(tmp_path / "plain"))
    assert main(["run", "--no-tui", str(config)]) == 2
    assert "repo.path:" in capsys.readouterr().err
