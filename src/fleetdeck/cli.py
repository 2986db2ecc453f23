"""Command line: `fleetdeck run|validate|report|schema|simulate`, and the choice of TUI or headless.

Exit codes: 0 every task succeeded; 1 some task failed, was blocked or cancelled;
2 usage or configuration error; 130 interrupted (work stopped, journal intact).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from fleetdeck import __version__
from fleetdeck.policy import POLICY_NAMES
from fleetdeck.text import plural

if TYPE_CHECKING:
    from fleetdeck.client import EngineClient, RunHandle
    from fleetdeck.config import Fleet
    from fleetdeck.engine import Engine
    from fleetdeck.remote.hosted import HostedRun

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The `fleetdeck` argument parser."""
    parser = argparse.ArgumentParser(
        prog="fleetdeck",
        description="A terminal supervisor for fleets of AI coding agents and CI runners.",
    )
    parser.add_argument("--version", action="version", version=f"fleetdeck {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run a fleet (the TUI on a terminal, else headless)")
    run.add_argument("config", metavar="CONFIG", help="the fleet's TOML file")
    run.add_argument("--policy", choices=POLICY_NAMES, help="override the config's policy")
    run.add_argument("--no-tui", action="store_true", help="print events instead of the TUI")
    run.add_argument("--json", action="store_true", help="headless, one JSON object per event")
    run.add_argument(
        "--state-dir", metavar="DIR", help="journal and logs here (default: the config's)"
    )
    run.add_argument(
        "--fresh",
        action="store_true",
        help="start a new run from scratch: do not resume the last run nor reuse its "
        "successes (it stays in the journal)",
    )

    validate = commands.add_parser("validate", help="check a fleet's config and print its shape")
    validate.add_argument("config", metavar="CONFIG")

    report = commands.add_parser(
        "report", help="print a run's tasks and report from its journal (read only)"
    )
    report.add_argument("state_dir", metavar="STATE_DIR", help="the fleet's state directory")
    report.add_argument(
        "--run", type=_run_number, metavar="N", help="which run (default: the latest)"
    )
    report.add_argument("--json", action="store_true", help="one JSON object")

    clean = commands.add_parser(
        "clean",
        help="remove the worktrees and branches failed or cancelled tasks left "
        "(never one with work on no other branch)",
    )
    clean.add_argument("state_dir", metavar="STATE_DIR", help="the fleet's state directory")
    clean.add_argument("--dry-run", action="store_true", help="list what it would remove, only")

    commands.add_parser("schema", help="print the config format as JSON Schema")

    simulate = commands.add_parser("simulate", help="compare policies on a fleet in virtual time")
    simulate.add_argument("config", metavar="CONFIG", help="the fleet's TOML file")
    simulate.add_argument("--policy", action="append", choices=POLICY_NAMES, help="(repeatable)")
    simulate.add_argument("--from", dest="state_dir", metavar="STATE_DIR", help="history here")
    simulate.add_argument("--runs", type=_run_number, default=20, metavar="N", help="per policy")
    simulate.add_argument("--seed", type=int, metavar="S", help="repeat a comparison exactly")
    simulate.add_argument("--json", action="store_true", help="one JSON object per policy")
    # The fleet in the background, and the commands that steer it (fleetdeck.remote).
    run.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)
    from fleetdeck.remote.commands import add_parsers

    add_parsers(commands)
    return parser


def _run_number(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a run number (1, 2, ...), got {text!r}")
    return number


@contextlib.contextmanager
def starting_up() -> Iterator[None]:
    """Start-up, with the cyclic garbage collector paused; what it made is frozen after.

    Start-up builds what lives as long as the process (modules, pydantic's
    validators, the fleet, the engine) and drops little in cycles: a one-task run
    collected 82 times to free 883 objects (~19 ms here), validating 20,000 tasks
    238 times (~80 ms), and the full collection at exit walked it all once more
    (~12 ms). Frozen, no collection walks it again (the TUI freezes what exists
    after its first refresh for the same reason). A cycle start-up leaves is not
    freed; refcounting still frees the rest (the TOML tables, once validated).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


# The exit code of a command whose reader went away (`fleetdeck report | head`):
# what a shell reports for a process SIGPIPE ended.
EXIT_BROKEN_PIPE = 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fleetdeck` command; returns the exit code."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader has what it wanted (`| head`): no traceback, and nothing more
        # written; stdout points at nothing so that the flush at exit is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "schema":
        from fleetdeck.config import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "report":
        return report_command(args)
    if args.command == "clean":
        return clean_command(args)
    from fleetdeck.remote.commands import COMMANDS as REMOTE_COMMANDS

    if args.command in REMOTE_COMMANDS:
        from fleetdeck.remote.commands import main as remote_main

        return remote_main(args)
    with starting_up():
        # The config, and pydantic with it, is imported here, not with this module:
        # in starting_up(), and not at all for `--help` or a mistyped command.
        from fleetdeck.config import ConfigError, load_fleet

        try:
            fleet = load_fleet(args.config)
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            return EXIT_USAGE
    if args.command == "validate":
        from fleetdeck.checks import config_warnings
        from fleetdeck.config import printable

        for warning in config_warnings(fleet):
            print(printable(f"{fleet.source}: {warning}"), file=sys.stderr)
        if not _repo_ok(fleet, fleet.state_dir):
            return EXIT_USAGE
        print(describe(fleet))
        return 0
    if args.command == "simulate":
        from fleetdeck.lab import simulate_command

        return simulate_command(fleet, args)
    return run_command(fleet, args)


def _repo_ok(fleet: Fleet, state_dir: Path) -> bool:
    """Check `[repo]` against the repository; print each problem, one a line."""
    if fleet.config.repo is None:
        return True
    from fleetdeck.config import printable
    from fleetdeck.workspace.checks import repo_problems

    problems = repo_problems(fleet, state_dir)
    for problem in problems:
        print(printable(f"{fleet.source}: {problem}"), file=sys.stderr)
    return not problems


def describe(fleet: Fleet) -> str:
    """One line saying a config is valid and what it holds."""
    from fleetdeck.config import printable

    config = fleet.config
    waves = fleet.dag.depth
    longest = int(fleet.dag.critical_path_length())
    return printable(
        f"{fleet.source}: ok: fleet '{fleet.name}', {plural(len(config.tasks), 'task')} in "
        f"{plural(waves, 'wave')} (longest chain {longest}), "
        f"{plural(len(config.agents), 'agent')}, {plural(len(config.runners), 'runner')}, "
        f"policy {config.fleet.policy}"
    )


def report_command(args: argparse.Namespace) -> int:
    """`fleetdeck report`: a run's table and report, from the journal, read only."""
    with starting_up():
        from fleetdeck.report import ReportError, format_replay, load_run, replay_json

        try:
            replay = load_run(args.state_dir, args.run)
        except ReportError as exc:
            print(f"fleetdeck: {exc}", file=sys.stderr)
            return EXIT_USAGE
    if args.json:
        print(json.dumps(replay_json(replay)))
    else:
        print(format_replay(replay))
    return 0


def clean_command(args: argparse.Namespace) -> int:
    """`fleetdeck clean`: what the last run's ended tasks left in the repository,
    removed (or, with --dry-run, listed); work on no other branch is kept."""
    with starting_up():
        from fleetdeck.report import RUNNING, ReportError, load_run
        from fleetdeck.workspace.clean import CleanError, clean, recorded_repo

        try:
            replay = load_run(args.state_dir)
        except ReportError as exc:
            print(f"fleetdeck: {exc}", file=sys.stderr)
            return EXIT_USAGE
    state_dir = Path(args.state_dir)
    if replay.status == RUNNING:
        print(f"fleetdeck: a run is going on in {state_dir}: stop it first", file=sys.stderr)
        return EXIT_USAGE
    root = replay.fleet.worktrees_dir(state_dir)
    repo = None if root is None else recorded_repo(root) or replay.fleet.repo_path
    if root is None or repo is None:
        print(f"fleetdeck: {state_dir}: its fleet has no [repo]: nothing to clean")
        return 0
    states = {task.task: task.state.value for task in replay.tasks}
    try:
        lines = clean(
            repo,
            root,
            states=states,
            active={task.task for task in replay.unfinished},
            copied=replay.fleet.config.repo.copy if replay.fleet.config.repo else (),
            dry_run=args.dry_run,
        )
    except CleanError as exc:
        print(f"fleetdeck: {exc}", file=sys.stderr)
        return 1
    if any(spec.repo for spec in replay.fleet.config.hosts.values()):
        from fleetdeck.workspace.remote_clean import clean_hosts

        lines += clean_hosts(
            replay.fleet,
            repo,
            root,
            states=states,
            active={task.task for task in replay.unfinished},
            dry_run=args.dry_run,
        )
    for line in lines or [f"nothing to clean in {root}"]:
        print(line)
    return 0


def _clean_for_fresh(fleet: Fleet, state_dir: Path) -> bool:
    """A --fresh run starts without what earlier runs' tasks left: work on no
    other branch is kept, and set aside (`fleetdeck/<task>@N`) where the new run
    will not make its worktrees over it. False when git cannot say what is safe."""
    root = fleet.worktrees_dir(state_dir)
    repo = fleet.repo_path
    if root is None or repo is None or fleet.config.repo is None:
        return True
    # Only a fleet with a [repo] pays for the git side's import.
    from fleetdeck.workspace.clean import CleanError, clean

    try:
        lines = clean(repo, root, copied=fleet.config.repo.copy, aside=True)
    except CleanError as exc:
        print(f"fleetdeck: cannot clean {root}: {exc}", file=sys.stderr)
        return False
    if any(spec.repo for spec in fleet.config.hosts.values()):
        from fleetdeck.workspace.remote_clean import clean_hosts

        lines += clean_hosts(fleet, repo, root, aside=True)
    for line in lines:
        print(f"fleetdeck: {line}", file=sys.stderr)
    return True


def run_command(fleet: Fleet, args: argparse.Namespace) -> int:
    """`fleetdeck run`: open the journal, pick the view, run to the end."""
    if _detached_run(fleet, args):
        # The fleet in the background from the start, the TUI attached to it:
        # losing the terminal (or `d`) leaves it running (fleetdeck.remote).
        from fleetdeck.remote.commands import run_detached

        state_dir = Path(args.state_dir) if args.state_dir else fleet.state_dir
        return run_detached(args, fleet, state_dir)
    with starting_up():
        # Only a run needs these (and asyncio and sqlite3 with them): imported here,
        # `validate` and `schema` start without them.
        from fleetdeck.engine import Engine
        from fleetdeck.executors import LaunchError, build_executors
        from fleetdeck.executors.proctree import become_subreaper
        from fleetdeck.headless import run_headless
        from fleetdeck.inprocess import InProcessClient
        from fleetdeck.journal import Journal, JournalError
        from fleetdeck.lifecycle import RunLifecycle
        from fleetdeck.redact import MIN_LENGTH as MIN_SECRET_LENGTH
        from fleetdeck.resume import ResumeError, choose_run

        state_dir = Path(args.state_dir) if args.state_dir else fleet.state_dir
        if not _repo_ok(fleet, state_dir):
            return EXIT_USAGE
        use_tui = not (args.no_tui or args.json) and _on_terminal()
        # Orphans an attempt leaves behind (double fork) are re-parented to us, so we
        # can stop them with their attempt instead of leaving them to init.
        adopt = become_subreaper()
        try:
            executors = build_executors(fleet, adopt_orphans=adopt)
        except LaunchError as exc:
            print(f"fleetdeck: {fleet.source}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            journal = Journal(state_dir)
        except JournalError as exc:
            print(f"fleetdeck: {exc}", file=sys.stderr)
            return EXIT_USAGE
        try:
            resume = None
            latest = journal.latest_run()
            if not args.fresh:
                resume = choose_run(latest, fleet.name, str(state_dir))
        except (ResumeError, JournalError) as exc:
            journal.close()
            print(f"fleetdeck: {exc}", file=sys.stderr)
            return EXIT_USAGE
        # After the journal's lock: no other run is using the worktrees.
        if args.fresh and not _clean_for_fresh(fleet, state_dir):
            journal.close()
            return EXIT_USAGE
        if resume is not None and resume.status == "finished":
            print(
                f"fleetdeck: run {resume.run_id} in {state_dir} finished; starting a new run "
                "that reuses its tasks that succeeded and did not change (--fresh runs all)",
                file=sys.stderr,
            )
        elif resume is not None:
            print(
                f"fleetdeck: resuming run {resume.run_id} ({resume.status}) from {state_dir}; "
                "--fresh starts a new run instead",
                file=sys.stderr,
            )
        elif latest is not None and latest.status != "finished":
            # A finished run needs no word: a new run is what `run` does after one.
            # An unfinished one set aside by --fresh is said once, with how to find it.
            print(
                f"fleetdeck: run {latest.run_id} did not finish; --fresh starts a new run "
                f"(`fleetdeck report {shlex.quote(str(state_dir))} --run {latest.run_id}` "
                "still reads it)",
                file=sys.stderr,
            )
        workspace = None
        if fleet.config.repo is not None:
            from fleetdeck.model import TRAIN_HOST
            from fleetdeck.workspace.train import Train
            from fleetdeck.workspace.worktrees import GitWorkspace

            workspace = GitWorkspace(fleet, state_dir, executors)
            executors[TRAIN_HOST] = Train(fleet, workspace)
        engine = Engine(
            fleet,
            journal=journal,
            executors=executors,
            policy=args.policy,
            resume=resume,
            workspace=workspace,
        )
        for name in engine.redactor.too_short:
            print(
                f"fleetdeck: {fleet.source}: warning: secret {name} is shorter than "
                f"{MIN_SECRET_LENGTH} characters: it is not masked",
                file=sys.stderr,
            )
        run_tui = _tui_runner() if use_tui else None  # Textual's import is start-up too
        # The view gets a client of the engine and a handle on its run, nothing more;
        # the run's lifecycle owns the stop signals (SIGINT too, where it is no key).
        client = InProcessClient(engine)
        lifecycle = RunLifecycle(engine, interrupt=run_tui is None)
    failure: str | None = None
    try:
        if args.supervise:
            # `fleetdeck start`'s background supervisor: headless, with the control socket.
            from fleetdeck.remote.supervise import run_supervisor

            return run_supervisor(
                client, lifecycle, fleet=fleet, state_dir=state_dir, args=args, journal=journal
            )
        # Every run is reachable: the control socket, `ps` and notifications
        # beside this process's own view (fleetdeck.remote.hosted).
        from fleetdeck.remote.hosted import HostedRun

        hosted = HostedRun(
            client, lifecycle, state_dir=state_dir, config=str(Path(args.config).resolve())
        )
        if run_tui is not None:
            code = run_tui(client, hosted)
            _say_unreachable(hosted)
            # The TUI's screen is gone with it: what the run did stays on the terminal.
            print_after_tui(engine, code, state_dir, rerun=_rerun_command(args))
            return code
        code = run_headless(
            client,
            hosted,
            task_ids=(task.id for task in fleet.tasks),
            json_lines=args.json,
            run_dirs=journal.run_dir,
        )
        # Where it all is, on stderr: stdout stays the events and the report (or,
        # with --json, JSON lines only) for whatever reads them.
        _say_unreachable(hosted)
        print_where(engine, code, state_dir, rerun=_rerun_command(args), out=sys.stderr)
        return code
    except JournalError as exc:
        # The disk filled up or went read-only mid-run: the engine stopped every
        # attempt; what the journal committed before stays readable.
        failure = str(exc)
        print(f"fleetdeck: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            journal.close()
        except JournalError as exc:
            if str(exc) != failure:  # the same failure again, as the last commit retries
                print(f"fleetdeck: {exc}", file=sys.stderr)


def _say_unreachable(hosted: HostedRun) -> None:
    """Why the run had no control socket, if it had none (on stderr, after its view)."""
    if hosted.problem is not None:
        print(f"fleetdeck: {hosted.state_dir}: {hosted.problem}", file=sys.stderr)


def print_after_tui(
    engine: Engine, code: int, state_dir: Path, *, rerun: str, out: TextIO | None = None
) -> None:
    """After the TUI: the per-task table and the report, as headless ends; where the
    journal is and how to read it again; for an interrupted run, how to resume it."""
    from fleetdeck.headless import format_report, format_task_table

    out = out or sys.stdout
    lines = [
        format_task_table(engine.summaries()),
        "",
        format_report(engine.report()),
        "",
        *_where(engine, code, state_dir, rerun=rerun),
    ]
    try:
        out.write("\n".join(lines) + "\n")
        out.flush()
    except OSError:
        # The terminal went away (the SIGHUP that stopped the run): nobody to tell,
        # and the journal has it all. What stays buffered must not fail the exit.
        _discard_output(out)


def print_where(engine: Engine, code: int, state_dir: Path, *, rerun: str, out: TextIO) -> None:
    """Where the run's journal is, how to read it again and, for an interrupted
    run, how to resume it (after a headless run: on stderr)."""
    try:
        out.write("\n".join(_where(engine, code, state_dir, rerun=rerun)) + "\n")
        out.flush()
    except OSError:
        _discard_output(out)


def _where(engine: Engine, code: int, state_dir: Path, *, rerun: str) -> list[str]:
    directory = shlex.quote(str(state_dir))
    which = "" if engine.run_id is None else f"run {engine.run_id}: "
    lines = [
        f"{which}journal and logs in {state_dir}; "
        f"`fleetdeck report {directory}` prints this report again"
    ]
    if code == EXIT_INTERRUPTED:
        lines.append(f"the run stopped before every task ended: `{rerun}` resumes it")
    return lines


def _discard_output(out: TextIO) -> None:
    """Send what `out` still holds, and anything after, to /dev/null."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)


def _rerun_command(args: argparse.Namespace) -> str:
    """The `fleetdeck run` command that takes this run up again (without --fresh,
    which would start another)."""
    words = ["fleetdeck", "run", args.config]
    if args.state_dir:
        words += ["--state-dir", args.state_dir]
    if args.policy:
        words += ["--policy", args.policy]
    return shlex.join(words)


def _detached_run(fleet: Fleet, args: argparse.Namespace) -> bool:
    """Whether `run` starts the fleet in the background and attaches to it:
    `[fleet] on_hangup = "detach"`, on a terminal (not the supervisor itself)."""
    if args.supervise or args.no_tui or args.json:
        return False
    return fleet.config.fleet.on_hangup == "detach" and _on_terminal()


def _on_terminal() -> bool:
    """True when both ends are a terminal: the TUI's place."""
    return sys.stdout.isatty() and sys.stdin.isatty()


def _tui_runner() -> Callable[[EngineClient, RunHandle], int]:
    """The TUI's entry point, imported only when a terminal wants it (Textual is big)."""
    from fleetdeck.tui import run_tui

    return run_tui


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
