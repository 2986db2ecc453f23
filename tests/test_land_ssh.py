"""Landing code from an SSH host: the agent works in a worktree of the host's own
clone (`repo` in its `[hosts.NAME]`), made there over the host's connection;
its work comes back here before CI and the merge train, which run here.

Real OpenSSH (tests/sshd.py) on 127.0.0.1, logged in as the unprivileged test
user, who owns the clone; real git on both sides.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import EngineHarness, Run, must_have
from fleetdeck.cli import main
from fleetdeck.config import ConfigError, Fleet, build_fleet
from fleetdeck.engine import Engine
from fleetdeck.executors import build_executors
from fleetdeck.model import TRAIN_HOST, Event, EventKind
from fleetdeck.workspace.remote_clean import clean_hosts
from fleetdeck.workspace.train import Train
from fleetdeck.workspace.worktrees import GitWorkspace
from git_support import git, make_repo
from sshd import TEST_USER, SshLab, SshServer, ensure_test_user, missing_tools
from test_land import CONFLICTING, assert_nothing_left, outcomes
from test_worktrees import FLAKY

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def alpha() -> Iterator[SshServer]:
    must_have(missing_tools())
    must_have("git is missing" if shutil.which("git") is None else None)
    ensure_test_user()
    lab = SshLab.create()
    try:
        yield lab.start_server("alpha")
    finally:
        lab.close()


@pytest.fixture
def clone_dir() -> Iterator[Path]:
    """A directory the test user owns, for the host's clone (it is this machine)."""
    where = Path(tempfile.mkdtemp(prefix="fleetdeck-clone-"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def as_user(*argv: str) -> str:
    """Run `argv` as the test user (what the agent on the host would see)."""
    done = subprocess.run(
        ["su", "-s", "/bin/sh", TEST_USER, "-c", " ".join(f"'{arg}'" for arg in argv)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def host_clone(repo: Path, where: Path) -> Path:
    """A clone of `repo` on the host, owned by the test user."""
    clone = where / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, capture_output=True)
    subprocess.run(["chown", "-R", f"{TEST_USER}:", str(where)], check=True)
    return clone


def ssh_land_fleet(
    tmp_path: Path,
    repo: Path,
    alpha: SshServer,
    clone: str | None,
    tasks: list[dict[str, Any]],
    repo_keys: dict[str, Any] | None = None,
    **runners: Any,
) -> Fleet:
    host = alpha.host() if clone is None else alpha.host(repo=clone)
    data = {
        "fleet": {"name": "land", "state_dir": "state", "grace_period": 0.5, "retry_backoff": 0.01},
        "repo": {"path": str(repo), **(repo_keys or {})},
        "hosts": {"alpha": host},
        "agents": {
            "far": {"command": ["sh", "-c", "{prompt}"], "slots": 2, "host": "alpha"},
            "near": {"command": ["sh", "-c", "{prompt}"]},
        },
        "runners": runners,
        "tasks": tasks,
    }
    return build_fleet(data, source="land.toml", base_dir=tmp_path)


async def land(harness: EngineHarness, fleet: Fleet, tmp_path: Path) -> Run:
    """As cli.py runs it: the workspace knows the run's executors (the SSH host)."""
    executors = build_executors(fleet)
    workspace = GitWorkspace(fleet, tmp_path / "state", executors)
    executors[TRAIN_HOST] = Train(fleet, workspace)
    return await harness.run(fleet, workspace=workspace, executors=executors)


def assert_nothing_left_on_the_host(clone: Path, head: str) -> None:
    """The host's clone as it was: one worktree, no branch of fleetdeck's, its own
    branch where it was, nothing uncommitted, no worktrees directory."""
    assert (
        as_user("git", "-C", str(clone), "worktree", "list", "--porcelain").count("worktree ") == 1
    )
    assert as_user("git", "-C", str(clone), "branch", "--list", "fleetdeck/*") == ""
    assert as_user("git", "-C", str(clone), "rev-parse", "HEAD") == head
    assert as_user("git", "-C", str(clone), "status", "--porcelain") == ""
    assert not (clone / ".git" / "fleetdeck-worktrees").exists()


WHERE = 'echo "$(pwd) $FLEETDECK_WORKTREE $FLEETDECK_BRANCH $FLEETDECK_BASE $(id -un)" > where; '


async def test_a_task_on_the_host_lands_here_and_nothing_is_left_there(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    start = git(repo, "rev-parse", "main")
    # The target moves after the clone was made: the host must be brought to it.
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-q", "-m", "later")
    tip = git(repo, "rev-parse", "main")
    # CI runs here, in the task's local worktree, on what the agent did there.
    check = (
        'test "$(cat a.txt)" = a && test -f later.txt && test "$PWD" != "$(cut -d" " -f1 where)"'
    )
    fleet = ssh_land_fleet(
        tmp_path,
        repo,
        alpha,
        str(clone),
        [
            {"id": "a", "agent": "far", "prompt": f"add a\n{WHERE}echo a > a.txt", "ci": "t"},
            # Depends on a: its worktree there is made after a landed here.
            {"id": "b", "agent": "far", "prompt": "cat a.txt > b.txt", "depends_on": ["a"]},
        ],
        t={"command": ["sh", "-c", check]},
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == run.state("b") == "succeeded", [
        (e.kind, e.task, e.data) for e in run.events if e.kind is EventKind.ATTEMPT_FINISHED
    ]
    assert [e.data["host"] for e in run.of(EventKind.ATTEMPT_STARTED, stage="agent")] == [
        "alpha",
        "alpha",
    ]
    # It worked in a worktree of the host's clone, as the test user, from the tip.
    pwd, worktree, branch, base, user = git(repo, "show", "main:where").split()
    assert pwd == worktree == str(clone / ".git" / "fleetdeck-worktrees" / "a")
    assert (branch, base, user) == ("fleetdeck/a", tip, TEST_USER)
    # Its work landed here, committed with the prompt's first line; b saw a's change.
    assert git(repo, "show", "main:a.txt") == "a"
    assert git(repo, "show", "main:b.txt") == "a"
    assert git(repo, "log", "--format=%s", "main").splitlines() == [
        "b: cat a.txt > b.txt",
        "a: add a",
        "later",
        "initial",
    ]
    assert outcomes(run, "a", "ci") == ["ok"]
    landed = run.of(EventKind.TASK_LANDED)
    assert [e.task for e in landed] == ["a", "b"]
    assert landed[-1].data["commit"] == git(repo, "rev-parse", "main")
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "a", stage="agent")
    assert finished.data["files"] == 2 and finished.data["branch"] == "fleetdeck/a"
    assert_nothing_left(repo)
    assert_nothing_left_on_the_host(clone, start)
    # No bundle left in the state directory either.
    assert not list((tmp_path / "state").rglob("*.bundle"))


async def test_a_conflict_from_the_host_goes_back_to_its_agent_there(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    start = as_user("git", "-C", str(clone), "rev-parse", "HEAD")
    tasks = [{"id": t, "agent": "far", "prompt": CONFLICTING, "retries": 1} for t in ("a", "b")]
    fleet = ssh_land_fleet(tmp_path, repo, alpha, str(clone), tasks)
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == run.state("b") == "succeeded"
    merges = {task: outcomes(run, task, "merge") for task in ("a", "b")}
    first, second = ("a", "b") if merges["a"] == ["ok"] else ("b", "a")
    assert merges == {first: ["ok"], second: ["conflict", "ok"]}
    # The second agent ran again there, told which file, on top of the first's change.
    hosts = [e.data["host"] for e in run.of(EventKind.ATTEMPT_STARTED, second, stage="agent")]
    assert hosts == ["alpha", "alpha"]
    retried = run.engine.task(second).output_attempt
    assert retried is not None and retried.number == 2
    assert Path(retried.output_path).read_text() == "shared.txt"
    assert git(repo, "show", "main:shared.txt").splitlines() == [first, second]
    assert_nothing_left(repo)
    assert_nothing_left_on_the_host(clone, start)


async def test_ci_on_the_host_runs_there_on_the_commit_it_tests(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    start = as_user("git", "-C", str(clone), "rev-parse", "HEAD")
    seen = clone_dir / "seen"
    # Both agents work here; CI runs on the host, in its clone's worktree of the task.
    check = f'test -f "$FLEETDECK_TASK.txt" && echo "$(pwd) $(git rev-parse HEAD)" >> {seen}'
    fleet = ssh_land_fleet(
        tmp_path,
        repo,
        alpha,
        str(clone),
        [
            {"id": t, "agent": "near", "prompt": f"echo {t} > {t}.txt", "ci": "t"}
            for t in ("a", "b")
        ],
        t={"command": ["sh", "-c", check], "host": "alpha", "slots": 2},
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == run.state("b") == "succeeded"
    merges = {task: outcomes(run, task, "merge") for task in ("a", "b")}
    # Both started from the same tip: the second to land was tested again on top
    # of the first, there too (the rebased candidate went to the host).
    assert sorted(merges.values()) == [["ok"], ["retest", "ok"]]
    ran = [line.split() for line in seen.read_text().splitlines()]
    assert len(ran) == 3
    assert {where for where, _ in ran} == {
        str(clone / ".git" / "fleetdeck-worktrees" / t) for t in ("a", "b")
    }
    # Every commit that landed on main was a commit CI ran on, there.
    landed = [e.data["commit"] for e in run.of(EventKind.TASK_LANDED)]
    assert set(landed) <= {commit for _, commit in ran}
    assert git(repo, "rev-parse", "main") == landed[-1]
    assert_nothing_left(repo)
    assert_nothing_left_on_the_host(clone, start)


async def test_copy_and_setup_happen_in_the_worktree_on_the_host(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    # Each side has its own untracked .env, and ignores what setup makes.
    (repo / ".env").write_text("here\n")
    (clone / ".env").write_text("there\n")
    for where in (repo, clone):
        with (where / ".git" / "info" / "exclude").open("a") as exclude:
            exclude.write("setup.out\n")
    subprocess.run(["chown", "-R", f"{TEST_USER}:", str(clone)], check=True)
    fleet = ssh_land_fleet(
        tmp_path,
        repo,
        alpha,
        str(clone),
        [{"id": "a", "agent": "far", "prompt": "cat .env setup.out > seen.txt"}],
        repo_keys={"copy": [".env"], "setup": ["sh", "-c", "cat .env > setup.out"]},
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == "succeeded"
    # The agent saw the host's .env, copied and read by setup there.
    assert git(repo, "show", "main:seen.txt").splitlines() == ["there", "there"]
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == ["README", "seen.txt"]
    assert_nothing_left(repo)


async def test_a_retry_there_starts_afresh_unless_the_task_keeps_its_worktree(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    tasks = [
        {"id": "fresh", "agent": "far", "prompt": FLAKY, "retries": 1},
        {"id": "kept", "agent": "far", "prompt": FLAKY, "retries": 1, "keep_worktree": True},
    ]
    run = await land(harness, ssh_land_fleet(tmp_path, repo, alpha, str(clone), tasks), tmp_path)
    outputs = {}
    for task in ("fresh", "kept"):
        assert run.state(task) == "succeeded", run.story(task)
        attempt = run.engine.task(task).output_attempt
        assert attempt is not None and attempt.number == 2
        out = Path(attempt.output_path)
        outputs[task] = out.read_text().strip() if out.exists() else ""
    assert outputs == {"fresh": "", "kept": "found"}


async def test_a_failed_tasks_worktree_stays_on_the_host(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    fleet = ssh_land_fleet(
        tmp_path,
        repo,
        alpha,
        str(clone),
        [{"id": "a", "agent": "far", "prompt": "echo half > half.txt; exit 3"}],
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == "failed"
    kept = clone / ".git" / "fleetdeck-worktrees" / "a"
    assert (kept / "half.txt").read_text() == "half\n"
    assert as_user("git", "-C", str(clone), "branch", "--list", "fleetdeck/*") == "+ fleetdeck/a"
    assert git(repo, "rev-parse", "main") == as_user("git", "-C", str(clone), "rev-parse", "HEAD")


async def test_a_host_path_that_is_not_a_repository_is_a_launch_error(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    plain = clone_dir / "plain"
    plain.mkdir()
    subprocess.run(["chown", "-R", f"{TEST_USER}:", str(clone_dir)], check=True)
    fleet = ssh_land_fleet(
        tmp_path, repo, alpha, str(plain), [{"id": "a", "agent": "far", "prompt": "true"}]
    )
    run = await land(harness, fleet, tmp_path)
    assert run.state("a") == "failed"
    (finished,) = run.of(EventKind.ATTEMPT_FINISHED, "a")
    assert finished.data["error"] == (f"alpha: [hosts.alpha] repo: {plain} is not a git repository")
    assert not list(plain.iterdir())  # nothing made there
    assert git(repo, "branch", "--list", "fleetdeck/*") == "+ fleetdeck/a"  # here, kept


def test_a_host_repo_without_a_fleet_repo_is_a_config_error(tmp_path: Path) -> None:
    data = {
        "hosts": {"alpha": {"address": "127.0.0.1", "repo": "/srv/app"}},
        "agents": {"far": {"command": ["true"], "host": "alpha"}},
        "tasks": [{"id": "a", "agent": "far"}],
    }
    with pytest.raises(ConfigError) as caught:
        build_fleet(data, source="f.toml", base_dir=tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        "hosts.alpha.repo: needs a [repo] in the fleet (the repository its tasks' changes land on)"
    ]
    data["repo"] = {"path": "."}
    data["hosts"]["alpha"]["repo"] = "srv/app"  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        build_fleet(data, source="f.toml", base_dir=tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        "hosts.alpha.repo: 'srv/app' must be absolute on the host (or start with ~/)"
    ]


def test_clean_removes_what_failed_tasks_left_on_the_host_and_keeps_work(
    harness: EngineHarness,
    tmp_path: Path,
    alpha: SshServer,
    clone_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    fleet = ssh_land_fleet(
        tmp_path,
        repo,
        alpha,
        str(clone),
        [
            # Fails having changed nothing there: removing it loses nothing.
            {"id": "a", "agent": "far", "prompt": "exit 1"},
            # Fails leaving a file it did not commit there.
            {"id": "b", "agent": "far", "prompt": "echo wip > b.txt; exit 1"},
            # Its work came back here, then its CI failed: nothing lost there.
            {"id": "c", "agent": "far", "prompt": "echo c > c.txt", "ci": "no"},
        ],
        no={"command": ["sh", "-c", "exit 1"]},
    )
    run = asyncio.run(land(harness, fleet, tmp_path))
    assert [run.state(task) for task in "abc"] == ["failed"] * 3
    harness.close()
    trees = clone / ".git" / "fleetdeck-worktrees"
    state = tmp_path / "state"
    assert main(["clean", str(state), "--dry-run"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if "alpha" in line]
    assert listed == [
        f"would remove alpha:{trees / 'a'} (task a, failed)",
        f"keeping alpha:{trees / 'b'} (task b, failed): uncommitted changes to b.txt",
        f"would remove alpha:{trees / 'c'} (task c, failed)",
    ]
    assert sorted(path.name for path in trees.iterdir()) == ["a", "b", "c"]  # a dry run
    assert main(["clean", str(state)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if "alpha" in line] == [
        line.replace("would remove", "removing") for line in listed
    ]
    assert sorted(path.name for path in trees.iterdir()) == ["b"]
    assert (trees / "b" / "b.txt").read_text() == "wip\n"
    assert as_user("git", "-C", str(clone), "branch", "--list", "fleetdeck/*") == "+ fleetdeck/b"
    # Here, c's commit is on no other branch: kept, as ever.
    assert any(line.startswith(f"keeping {state / 'worktrees' / 'c'}") for line in out)
    # A --fresh run sets it aside there, where the new run's worktree of b cannot replace it.
    lines = clean_hosts(fleet, repo, state / "worktrees", aside=True)
    assert lines == [
        f"keeping alpha:{trees / 'b'} (task b): uncommitted changes to b.txt; "
        "set aside as fleetdeck/b@1"
    ]
    assert (trees / "b@1" / "b.txt").read_text() == "wip\n"
    assert as_user("git", "-C", str(clone), "branch", "--list", "fleetdeck/*") == "+ fleetdeck/b@1"


def test_fleetdeck_run_lands_a_task_done_on_the_host(
    tmp_path: Path, alpha: SshServer, clone_dir: Path
) -> None:
    """As a user runs it: a config file, `fleetdeck run`, then `fleetdeck validate`
    of a host repo without a [repo]."""
    from test_cli_run import fleetdeck

    repo = make_repo(tmp_path / "repo")
    clone = host_clone(repo, clone_dir)
    host = alpha.host(repo=str(clone))
    table = "\n".join(f"{key} = {json.dumps(value)}" for key, value in host.items())
    config = tmp_path / "land.toml"
    text = f"""
[fleet]
name = "land"
state_dir = "state"

[repo]
path = "{repo}"

[hosts.alpha]
{table}

[agents.far]
command = ["sh", "-c", "{{prompt}}"]
host = "alpha"

[[tasks]]
id = "a"
agent = "far"
prompt = "echo there > a.txt"
"""
    config.write_text(text)
    done = fleetdeck("run", str(config), "--no-tui")
    assert done.returncode == 0, done.stderr
    assert git(repo, "show", "main:a.txt") == "there"
    assert (repo / "a.txt").read_text() == "there\n"  # the user's checkout came along
    assert_nothing_left(repo)
    assert_nothing_left_on_the_host(clone, git(repo, "rev-parse", "main~1"))
    config.write_text(text.replace(f'[repo]\npath = "{repo}"\n', ""))
    done = fleetdeck("validate", str(config))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"{config}: hosts.alpha.repo: needs a [repo] in the fleet "
        "(the repository its tasks' changes land on)"
    ]


async def test_a_host_lost_while_the_worktree_is_made_there_reruns_elsewhere(
    harness: EngineHarness, tmp_path: Path, clone_dir: Path
) -> None:
    """The host's connection goes while fleetdeck makes the task's worktree there
    (its [repo] setup is running): the attempt is lost, not failed, and runs on
    the other host without spending a retry."""
    lab = SshLab.create()
    try:
        gamma, delta = lab.start_server("gamma"), lab.start_server("delta")
        repo = make_repo(tmp_path / "repo")
        clones = {}
        for name in ("gamma", "delta"):
            (clone_dir / name).mkdir()
            clones[name] = host_clone(repo, clone_dir / name)
        mark = clone_dir / "gamma" / "mark"  # the test user's to write
        setup = f'case "$PWD" in */gamma/*) touch {mark}; sleep 5;; esac'
        data = {
            "fleet": {"name": "land", "state_dir": "state", "grace_period": 0.5},
            "repo": {"path": str(repo), "setup": ["sh", "-c", setup]},
            "hosts": {
                "gamma": gamma.host(repo=str(clones["gamma"])),
                "delta": delta.host(repo=str(clones["delta"])),
            },
            "agents": {"far": {"command": ["sh", "-c", "{prompt}"], "hosts": ["gamma", "delta"]}},
            "tasks": [{"id": "a", "agent": "far", "prompt": "echo a > a.txt", "retries": 0}],
        }
        fleet = build_fleet(data, source="land.toml", base_dir=tmp_path)
        up: set[str] = set()

        def during(engine: Engine, event: Event) -> None:
            if event.kind is EventKind.RUN_STARTED:
                engine.pause()  # until both hosts are up: gamma first (config order)
            elif event.kind is EventKind.HOST_UP:
                up.add(event.data["host"])
                if len(up) == 2:
                    engine.resume()

        async def cut_gamma() -> None:
            while not mark.exists():
                await asyncio.sleep(0.02)
            await asyncio.to_thread(gamma.stop)

        cutter = asyncio.ensure_future(cut_gamma())
        executors = build_executors(fleet)
        workspace = GitWorkspace(fleet, tmp_path / "state", executors)
        executors[TRAIN_HOST] = Train(fleet, workspace)
        run = await harness.run(fleet, during=during, workspace=workspace, executors=executors)
        await cutter
        agents = run.of(EventKind.ATTEMPT_FINISHED, "a", stage="agent")
        assert [e.data["outcome"] for e in agents] == ["lost", "ok"], agents
        started = run.of(EventKind.ATTEMPT_STARTED, "a", stage="agent")
        assert [e.data["host"] for e in started] == ["gamma", "delta"]
        assert run.state("a") == "succeeded"
        assert git(repo, "show", "main:a.txt") == "a"
    finally:
        lab.close()


async def test_a_clone_named_from_the_login_home(
    harness: EngineHarness, tmp_path: Path, alpha: SshServer
) -> None:
    home = Path(as_user("sh", "-c", 'echo "$HOME"'))
    where = Path(tempfile.mkdtemp(prefix="fleetdeck-clone-", dir=home))
    try:
        repo = make_repo(tmp_path / "repo")
        clone = host_clone(repo, where)
        named = f"~/{clone.relative_to(home)}"
        fleet = ssh_land_fleet(
            tmp_path, repo, alpha, named, [{"id": "a", "agent": "far", "prompt": "pwd > at.txt"}]
        )
        run = await land(harness, fleet, tmp_path)
        assert run.state("a") == "succeeded"
        assert git(repo, "show", "main:at.txt") == str(clone / ".git" / "fleetdeck-worktrees" / "a")
        assert_nothing_left(repo)
    finally:
        shutil.rmtree(where, ignore_errors=True)
