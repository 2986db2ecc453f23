"""`fleetdeck add STATE_DIR --id ID --agent A --prompt P ...` (or `-`: a TOML
fragment of `[[tasks]]` tables on stdin): tasks added to a running fleet.

The tables are sent as they are; the supervisor validates them with the
config's own checks against the fleet as it is now (a bad one is refused with
the config's message, and nothing changes), journals them and only then
answers, so an added task survives its supervisor being killed.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from typing import Any

EXIT_USAGE = 2


def add_parser(commands: Any) -> None:
    """`fleetdeck add`, added to `fleetdeck`'s subcommands."""
    add = commands.add_parser(
        "add",
        help="add tasks to a background fleet (flags for one, or `-`: [[tasks]] TOML on stdin)",
    )
    add.add_argument("state_dir", metavar="STATE_DIR")
    add.add_argument(
        "stdin", nargs="?", choices=("-",), help="read [[tasks]] tables (TOML) from stdin"
    )
    add.add_argument("--id", dest="task_id", metavar="ID", help="the new task's id")
    add.add_argument("--agent", metavar="A", help="its agent")
    add.add_argument("--prompt", metavar="P", help="its prompt")
    add.add_argument("--ci", metavar="R", help="the runner of its CI stage")
    add.add_argument(
        "--depends-on", action="append", default=[], metavar="T", help="a task it waits for"
    )
    add.add_argument("--priority", type=int, metavar="N", help="higher starts first")
    add.add_argument("--retries", type=int, metavar="N", help="retries after a failure")
    add.add_argument("--timeout", type=float, metavar="S", help="seconds per attempt")


def tables_of(args: argparse.Namespace, stdin: str | None = None) -> list[dict[str, Any]]:
    """The `[[tasks]]` tables the command line gives (ValueError: what is wrong,
    in one line)."""
    flags = {
        "id": args.task_id,
        "agent": args.agent,
        "prompt": args.prompt,
        "ci": args.ci,
        "priority": args.priority,
        "retries": args.retries,
        "timeout": args.timeout,
    }
    given = {key: value for key, value in flags.items() if value is not None}
    if args.depends_on:
        given["depends_on"] = list(args.depends_on)
    if args.stdin == "-":
        if given:
            raise ValueError("give the tasks either as flags or as TOML on stdin, not both")
        text = sys.stdin.read() if stdin is None else stdin
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"<stdin>: invalid TOML: {exc}") from None
        unknown = sorted(set(data) - {"tasks"})
        if unknown:
            raise ValueError(f"<stdin>: only [[tasks]] tables can be added, not {unknown[0]!r}")
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise ValueError("<stdin>: no tasks: give at least one [[tasks]] table")
        return [dict(task) for task in tasks]
    missing = [flag for flag, key in (("--id", "id"), ("--agent", "agent")) if key not in given]
    if missing:
        raise ValueError(f"{' and '.join(missing)} needed (or `-` and [[tasks]] TOML on stdin)")
    return [given]


def main(args: argparse.Namespace) -> int:
    """`fleetdeck add`: sends the tables; 0 once the fleet has journaled them."""
    from fleetdeck.remote.socket_client import SocketClient, state_dir_of

    try:
        tables = tables_of(args)
    except ValueError as exc:
        print(f"fleetdeck: add: {exc}", file=sys.stderr)
        return EXIT_USAGE
    client = SocketClient.connect(state_dir_of(args.state_dir), stream=False)
    try:
        source = "<stdin>" if args.stdin == "-" else "<command line>"
        ids = client.request("add", tasks=tables, source=source)
    finally:
        client.close()
    for task_id in ids:
        print(f"{task_id}: added")
    return 0
