"""fleetdeck's command line, as is or with the journal's writes switched off.

    python benchmarks/cli_variant.py as-is|no-journal-writes FLEETDECK-ARGS...

For benchmarks/journal_cost.py only: both variants start the same way (this file,
then `fleetdeck.cli.main`), so the only difference between them is the journal.
`no-journal-writes` replaces the journal's commit of a batch (`fleetdeck.journal._write_rows`,
which inserts a batch of events and attempt rows in one transaction) with one that
does nothing. Everything else is untouched: the engine still encodes and buffers
every row and commits once per turn of its loop before telling anyone or starting
a process; the run's own row (begin_run, finish_run) is still written. So the
difference is what SQLite costs, the part that makes events durable.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

import fleetdeck.journal
from fleetdeck.cli import main

VARIANTS = ("as-is", "no-journal-writes")


def _write_nothing(db: sqlite3.Connection, rows: Any) -> None:
    """A batch's commit, minus the writing."""


def run(argv: list[str]) -> int:
    """Entry point: the variant, then fleetdeck's own arguments."""
    if not argv or argv[0] not in VARIANTS:
        print(f"usage: cli_variant.py {'|'.join(VARIANTS)} FLEETDECK-ARGS...", file=sys.stderr)
        return 2
    if argv[0] == "no-journal-writes":
        if not callable(getattr(fleetdeck.journal, "_write_rows", None)):
            print("cli_variant.py: fleetdeck.journal._write_rows is gone", file=sys.stderr)
            return 2
        fleetdeck.journal._write_rows = _write_nothing
    return main(argv[1:])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
