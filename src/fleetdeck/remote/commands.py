"""`fleetdeck start|attach|ps|stop|status|retry|cancel|pause|resume|policy|logs|add`:
a fleet in the background, and the commands that look at it and steer it
through its control socket (the same commands the TUI's keys send).

Exit codes: 0 done; 1 the fleet's run ended with tasks not succeeded (`stop`);
2 bad input: no fleet running there, a command the fleet refused (the message
says why, in one line).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetdeck.policy import POLICY_NAMES

if TYPE_CHECKING:
    from fleetdeck.config import Fleet

EXIT_USAGE = 2

COMMANDS = (
    "start",
    "attach",
    "ps",
    "stop",
    "status",
    "retry",
    "cancel",
    "pause",
    "resume",
    "policy",
    "logs",
    "add",
)


def add_parsers(commands: Any) -> None:
    """The remote commands, added to `fleetdeck`'s subcommands."""
    start = commands.add_parser(
        "start", help="run a fleet in the background (attach to it, stop it, from anywhere)"
    )
    start.add_argument("config", metavar="CONFIG", help="the fleet's TOML file")
    start.add_argument("--policy", choices=POLICY_NAMES, help="override the config's policy")
    start.add_argument("--state-dir", metavar="DIR", help="journal and logs here")
    start.add_argument("--fresh", action="store_true", help="a new run, as `run --fresh`")

    attach = commands.add_parser(
        "attach", help="the TUI of a fleet running in the background (q detaches)"
    )
    attach.add_argument(
        "target",
        nargs="?",
        metavar="STATE_DIR|CONFIG",
        help="the fleet's state directory or TOML file (default: the one fleet running), "
        "or ssh://[user@]host[:port]/path/to/state_dir on another machine",
    )

    ps = commands.add_parser("ps", help="the fleets running on this machine for this user")
    ps.add_argument("--json", action="store_true", help="one JSON object per fleet")

    stop = commands.add_parser("stop", help="stop a background fleet cleanly, as Ctrl-C")
    stop.add_argument("state_dir", metavar="STATE_DIR")
    stop.add_argument("--now", action="store_true", help="no grace period (a second Ctrl-C)")
    stop.add_argument("--no-wait", action="store_true", help="do not wait for the run's end")

    status = commands.add_parser("status", help="a background fleet's progress")
    status.add_argument("state_dir", metavar="STATE_DIR")
    status.add_argument("--json", action="store_true", help="one JSON object")

    for name, text in (("retry", "run a task again"), ("cancel", "cancel a task")):
        command = commands.add_parser(name, help=f"{text} in a background fleet")
        command.add_argument("state_dir", metavar="STATE_DIR")
        command.add_argument("task", metavar="TASK")
        if name == "retry":
            command.add_argument(
                "--stage", choices=("agent", "ci"), help="ci: rerun CI alone on the agent's work"
            )
    for name, text in (("pause", "hold back new launches"), ("resume", "let launches go")):
        command = commands.add_parser(name, help=f"{text} in a background fleet")
        command.add_argument("state_dir", metavar="STATE_DIR")

    policy = commands.add_parser("policy", help="switch a background fleet's policy")
    policy.add_argument("state_dir", metavar="STATE_DIR")
    policy.add_argument("name", metavar="NAME", choices=POLICY_NAMES)

    logs = commands.add_parser("logs", help="a task's latest attempt log")
    logs.add_argument("state_dir", metavar="STATE_DIR")
    logs.add_argument("task", metavar="TASK")
    logs.add_argument("-f", "--follow", action="store_true", help="go on printing as it grows")
    logs.add_argument("-n", "--lines", type=int, default=50, metavar="N", help="last N lines")

    from fleetdeck.remote import add

    add.add_parser(commands)


def main(args: argparse.Namespace) -> int:
    """Run one remote command; returns its exit code."""
    from fleetdeck.client import CommandError
    from fleetdeck.remote.socket_client import AttachError

    try:
        return _COMMAND[args.command](args)
    except (AttachError, CommandError) as exc:
        print(f"fleetdeck: {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _connect(state_dir: str, *, stream: bool = False) -> Any:
    from fleetdeck.remote.socket_client import SocketClient, state_dir_of

    return SocketClient.connect(state_dir_of(state_dir), stream=stream)


# --- start and attach ---------------------------------------------------------------


def start(args: argparse.Namespace) -> int:
    """`fleetdeck start`: the supervisor in the background, once its run has started."""
    from fleetdeck.config import ConfigError, load_fleet
    from fleetdeck.remote.socket_client import AttachError, SocketClient
    from fleetdeck.remote.supervise import StartError, spawn

    try:
        fleet = load_fleet(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_USAGE
    state_dir = Path(args.state_dir) if args.state_dir else fleet.state_dir
    try:
        running = SocketClient.connect(state_dir, stream=False)
    except AttachError:
        pass
    else:
        pid = running.hello.get("pid")
        running.close()
        print(
            f"fleetdeck: start: fleet {fleet.name!r} is already running in {state_dir} "
            f"(pid {pid}): `fleetdeck attach {shlex.quote(str(state_dir))}`",
            file=sys.stderr,
        )
        return EXIT_USAGE
    run_args = _run_args(args)
    try:
        pid, run_id = spawn(run_args, state_dir)
    except StartError as exc:
        print(f"fleetdeck: start: the fleet did not start:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    where = shlex.quote(str(state_dir))
    print(f"fleet {fleet.name!r}: run {run_id} started in the background (supervisor pid {pid})")
    print(f"state dir: {state_dir} (its output: {state_dir / 'supervisor.log'})")
    print(f"attach:    fleetdeck attach {where}   (q detaches; the fleet goes on)")
    print(f"progress:  fleetdeck status {where}; stop it: fleetdeck stop {where}")
    return 0


def _run_args(args: argparse.Namespace) -> list[str]:
    """The `fleetdeck run` arguments a background supervisor is started with."""
    run_args = [args.config]
    if args.state_dir:
        run_args += ["--state-dir", args.state_dir]
    if args.policy:
        run_args += ["--policy", args.policy]
    if args.fresh:
        run_args.append("--fresh")
    return run_args


def run_detached(args: argparse.Namespace, fleet: Fleet, state_dir: Path) -> int:
    """`fleetdeck run` on a terminal with `[fleet] on_hangup = "detach"`: the
    fleet is started in the background as `start` does, and the TUI attached to
    it; `d` or q detach, Q stops the fleet, and losing the terminal leaves it
    running."""
    from fleetdeck.remote.socket_client import AttachError, SocketClient
    from fleetdeck.remote.supervise import StartError, spawn

    run_args = _run_args(args)
    try:
        running = SocketClient.connect(state_dir, stream=False)
    except AttachError:
        try:
            spawn(run_args, state_dir)
        except StartError as exc:
            print(f"fleetdeck: run: the fleet did not start:\n{exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        running.close()  # already in the background: attach to it
    return _attach_to(state_dir)


def attach(args: argparse.Namespace) -> int:
    """`fleetdeck attach`: the TUI over the socket; q detaches."""
    from fleetdeck.remote.socket_client import state_dir_of

    target = args.target
    if target is None:
        target = _only_fleet()
        if target is None:
            return EXIT_USAGE
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        print("fleetdeck: attach: needs a terminal (try `fleetdeck status`)", file=sys.stderr)
        return EXIT_USAGE
    return _attach_to(state_dir_of(target))


def _attach_to(state_dir: Path | str) -> int:
    from fleetdeck.remote.socket_client import RemoteRun, SocketClient, is_ssh_target

    client = SocketClient.connect(state_dir, stream=True)
    from fleetdeck.tui import run_tui

    run = RemoteRun(client)
    code = run_tui(client, run, attached=True)
    where = shlex.quote(str(state_dir))
    if run.finished and run.result is not None:
        # The report is read from the journal, on the fleet's machine.
        report = f"`fleetdeck report {where}`"
        if is_ssh_target(state_dir):
            there = shlex.quote(str(client.hello.get("state_dir")))
            report = f"`fleetdeck report {there}` on that machine"
        print(
            f"the fleet's run has ended (exit {run.result.exit_code}): {report} prints its report"
        )
        return run.result.exit_code
    if client.gone is not None and run.failure is not None:
        print(f"fleetdeck: attach: {client.gone}", file=sys.stderr)
        return 1
    print(f"detached; the fleet goes on: `fleetdeck attach {where}` to come back")
    return code if code != 130 else 0


def _only_fleet() -> str | None:
    from fleetdeck.remote.supervise import registered

    fleets = list(registered())
    if len(fleets) == 1:
        return str(fleets[0]["state_dir"])
    if not fleets:
        print("fleetdeck: attach: no fleet is running (`fleetdeck start CONFIG`)", file=sys.stderr)
    else:
        names = ", ".join(str(fleet["state_dir"]) for fleet in fleets)
        print(f"fleetdeck: attach: which fleet? {names}", file=sys.stderr)
    return None


# --- looking ------------------------------------------------------------------------


def _status_of(client: Any) -> dict[str, Any]:
    snapshot = client.snapshot()
    hello = client.hello
    states: dict[str, int] = {}
    for task in snapshot.tasks:
        states[task.state.value] = states.get(task.state.value, 0) + 1
    return {
        "fleet": snapshot.fleet,
        "state_dir": hello.get("state_dir"),
        "pid": hello.get("pid"),
        "run": hello.get("run_id"),
        "policy": str(snapshot.policy),
        "done": snapshot.done,
        "total": snapshot.total,
        "in_flight": snapshot.in_flight,
        "paused": snapshot.paused,
        "stopping": snapshot.stopping,
        "elapsed": round(snapshot.elapsed, 1),
        "exit_code": snapshot.exit_code,
        "states": states,
        "running": [
            {"task": a.task, "stage": a.stage.value, "worker": a.worker, "host": a.host}
            for a in snapshot.running
        ],
        "attention": [
            {"task": item.task, "state": item.state.value, "reason": item.reason}
            for item in snapshot.attention
        ],
    }


def _progress(status: dict[str, Any]) -> str:
    words = [f"{status['done']}/{status['total']} done", f"{status['in_flight']} in flight"]
    if status["exit_code"] is not None:
        words.append(f"finished (exit {status['exit_code']})")
    elif status["stopping"]:
        words.append("stopping")
    elif status["paused"]:
        words.append("paused")
    return ", ".join(words)


def ps(args: argparse.Namespace) -> int:
    """`fleetdeck ps`: every fleet running here for this user."""
    from fleetdeck.remote.socket_client import AttachError, SocketClient
    from fleetdeck.remote.supervise import registered

    rows = []
    for entry in registered():
        try:
            client = SocketClient.connect(entry["state_dir"], stream=False)
        except AttachError:
            continue  # starting, or exiting: not one to steer
        try:
            rows.append(_status_of(client))
        finally:
            client.close()
    if args.json:
        for row in rows:
            print(json.dumps({k: row[k] for k in row if k not in ("running", "attention")}))
        return 0
    if not rows:
        print("no fleet is running")
        return 0
    width = max(len(str(row["state_dir"])) for row in rows)
    print(f"{'STATE DIR':<{width}}  {'PID':>7}  {'FLEET':<16}  PROGRESS")
    for row in rows:
        print(f"{row['state_dir']:<{width}}  {row['pid']:>7}  {row['fleet']:<16}  {_progress(row)}")
    return 0


def status(args: argparse.Namespace) -> int:
    """`fleetdeck status`: one fleet's progress, what runs and what needs the operator."""
    client = _connect(args.state_dir)
    try:
        row = _status_of(client)
    finally:
        client.close()
    if args.json:
        print(json.dumps(row))
        return 0
    print(f"fleet {row['fleet']!r}, run {row['run']} (pid {row['pid']}): {_progress(row)}")
    print(f"policy {row['policy']}, {row['elapsed']:g}s elapsed; state dir {row['state_dir']}")
    for attempt in row["running"]:
        where = f"{attempt['worker']}@{attempt['host']}"
        print(f"  running  {attempt['task']}  {attempt['stage']} on {where}")
    for item in row["attention"]:
        why = f" ({item['reason']})" if item["reason"] else ""
        print(f"  needs you  {item['task']}  {item['state']}{why}")
    return 0


def logs(args: argparse.Namespace) -> int:
    """`fleetdeck logs`: a task's latest attempt log (masked by the supervisor)."""
    client = _connect(args.state_dir)
    try:
        attempts = client.task_detail(args.task).attempts
        if not attempts:
            print(f"fleetdeck: logs: {args.task} has not started yet", file=sys.stderr)
            return 1
        log = attempts[-1].log_path
        if not args.follow:
            for line in client.last_lines([log], count=max(1, args.lines)).get(log, []):
                print(line)
            return 0
        feed = client.follow_log(log)
        try:
            while True:
                for line in feed.read():
                    print(line, flush=True)
                if client.task_detail(args.task).attempts[-1].finished_at is not None:
                    for line in feed.read():
                        print(line, flush=True)
                    return 0
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    finally:
        client.close()


# --- steering -----------------------------------------------------------------------


def _one(args: argparse.Namespace, op: str, done: str, **request: Any) -> int:
    client = _connect(args.state_dir)
    try:
        client.request(op, **request)
    finally:
        client.close()
    print(done)
    return 0


def retry(args: argparse.Namespace) -> int:
    """`fleetdeck retry STATE_DIR TASK [--stage ci]`."""
    which = " (CI only)" if args.stage == "ci" else ""
    return _one(args, "retry", f"{args.task}: retrying{which}", task=args.task, stage=args.stage)


def cancel(args: argparse.Namespace) -> int:
    """`fleetdeck cancel STATE_DIR TASK`."""
    return _one(args, "cancel", f"{args.task}: cancelling", task=args.task)


def pause(args: argparse.Namespace) -> int:
    """`fleetdeck pause STATE_DIR`."""
    return _one(args, "pause", "paused: no new launches (work in flight goes on)")


def resume(args: argparse.Namespace) -> int:
    """`fleetdeck resume STATE_DIR`."""
    return _one(args, "resume", "resumed: launches go on")


def policy(args: argparse.Namespace) -> int:
    """`fleetdeck policy STATE_DIR NAME`."""
    return _one(args, "set_policy", f"policy: {args.name} (from the next launch)", name=args.name)


def stop(args: argparse.Namespace) -> int:
    """`fleetdeck stop STATE_DIR`: as Ctrl-C; waits for the run's end unless --no-wait."""
    # With the stream: the end is seen in the snapshots pushed, without asking for
    # a whole one (megabytes for a big fleet) again and again.
    client = _connect(args.state_dir, stream=True)
    try:
        pid = client.hello.get("pid")
        running = len(client.snapshot().running)
        client.request_stop(hurry=args.now)
        how = "at once" if args.now else "cleanly"
        print(f"stopping the fleet {how} (supervisor {pid}, {running} attempt(s) in flight)")
        if args.no_wait:
            return 0
        while client.gone is None:
            code = client.snapshot().exit_code
            if code is not None:
                print(f"stopped (exit {code}); `fleetdeck start` resumes it")
                return 0
            time.sleep(0.1)
        # Gone right after its last snapshot (a terminal's run exits at its end).
        code = client.snapshot().exit_code
        if code is not None:
            print(f"stopped (exit {code}); `fleetdeck start` resumes it")
            return 0
        print("stopped; `fleetdeck start` resumes it")
        return 0
    finally:
        client.close()


def _add(args: argparse.Namespace) -> int:
    """`fleetdeck add` (fleetdeck.remote.add)."""
    from fleetdeck.remote import add

    return add.main(args)


_COMMAND = {
    "start": start,
    "attach": attach,
    "ps": ps,
    "stop": stop,
    "status": status,
    "retry": retry,
    "cancel": cancel,
    "pause": pause,
    "resume": resume,
    "policy": policy,
    "logs": logs,
    "add": _add,
}
