"""A supervisor SIGKILLed in the middle of a landing, then run again: the target
branch is landed or untouched (never half moved, no commit of it lost), the run
completes, and no worktree is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from git_support import git, make_repo

# Git hooks that stop the first landing at one moment, long enough to be killed
# there (the marker says it got there). `building`: in the train's scratch
# worktree, before anything moved. `moved`: the target's ref has just moved,
# before the user's checkout of it came along.
HOOKS = {
    "building": (
        "post-checkout",
        'case "$PWD" in */.train) [ -e "$MARK" ] || { touch "$MARK"; sleep 60; } ;; esac\n',
    ),
    "moved": (
        "reference-transaction",
        '[ "$1" = committed ] || exit 0\n'
        'grep -q " refs/heads/main$" || exit 0\n'
        '[ -e "$MARK" ] || { touch "$MARK"; sleep 60; }\n',
    ),
}

CONFIG = """
[fleet]
name = "kill"
state_dir = "state"
retry_backoff = 0.05

[repo]
path = "{repo}"

[agents.sh]
command = ["sh", "-c", "{{prompt}}"]
slots = 2

[runners.t]
command = ["sh", "-c", "test -f $FLEETDECK_TASK.txt"]

[[tasks]]
id = "a"
agent = "sh"
prompt = "echo a > a.txt"
ci = "t"

[[tasks]]
id = "b"
agent = "sh"
prompt = "echo b > b.txt"
"""


def fleetdeck_run(config: Path, mark: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fleetdeck", "run", str(config), "--no-tui"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MARK": str(mark)},
        start_new_session=True,  # its own group: the kill takes git and the hook too
    )


@pytest.mark.parametrize("moment", sorted(HOOKS))
def test_killed_mid_landing_resumes_cleanly(tmp_path: Path, moment: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README": "hello\n", "notes": "mine\n"})
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    before = git(repo, "rev-list", "main").split()
    (repo / "notes").write_bytes(b"still mine\n")  # the user's own uncommitted work
    hook, script = HOOKS[moment]
    (repo / ".git" / "hooks" / hook).write_text("#!/bin/sh\n" + script)
    (repo / ".git" / "hooks" / hook).chmod(0o755)
    config = tmp_path / "kill.toml"
    config.write_text(CONFIG.format(repo=repo))
    mark = tmp_path / "mark"

    first = fleetdeck_run(config, mark)
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the landing never got there"
        time.sleep(0.02)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()

    # Landed or untouched: every commit the target had is still in it.
    tip = git(repo, "rev-parse", "main")
    assert set(before) <= set(git(repo, "rev-list", "main").split())
    assert (tip == before[0]) == (moment == "building")

    again = fleetdeck_run(config, mark)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err + out
    assert "resuming run 1" in err
    assert set(before) <= set(git(repo, "rev-list", "main").split())
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == [
        "README",
        "a.txt",
        "b.txt",
        "notes",
    ], err + out
    # The user's checkout came along, their own change kept as it was.
    assert git(repo, "status", "--porcelain") == "M notes"
    assert (repo / "notes").read_bytes() == b"still mine\n"
    assert (repo / "a.txt").read_text() == "a\n"
    # Nothing left behind: no worktree but the user's, no scratch, no branch.
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "branch", "--list", "fleetdeck/*") == ""
    worktrees = tmp_path / "state" / "worktrees"
    assert sorted(p.name for p in worktrees.iterdir()) == [".branches", ".repo"]


@pytest.mark.parametrize("ended", [False, True], ids=["still-running", "ended-meanwhile"])
def test_killed_while_an_agent_works_its_work_is_committed_when_it_ends(
    tmp_path: Path, ended: bool
) -> None:
    """The agent's attempt outlives the supervisor; the next one takes it up
    (still running, or ended while no supervisor watched), and what it left is
    committed and lands (not an empty change)."""
    repo = make_repo(tmp_path / "repo")
    config = tmp_path / "kill.toml"
    config.write_text(
        CONFIG.format(repo=repo).split("[[tasks]]")[0]
        + '[[tasks]]\nid = "a"\nagent = "sh"\nci = "t"\n'
        + 'prompt = "touch \\"$MARK\\"; sleep 3; echo a > a.txt; touch \\"$MARK.done\\""\n'
    )
    mark = tmp_path / "mark"
    first = fleetdeck_run(config, mark)
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the agent never started"
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)  # the supervisor only: its attempt goes on
    first.communicate()
    if ended:
        done = tmp_path / "mark.done"
        while not done.exists():
            assert time.monotonic() < deadline, "the agent never ended"
            time.sleep(0.05)
        time.sleep(0.5)  # its status recorded by the shim
    again = fleetdeck_run(config, mark)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err + out
    assert git(repo, "show", "main:a.txt") == "a"
    assert git(repo, "log", "-1", "--format=%s", "main").startswith("a: touch")
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
