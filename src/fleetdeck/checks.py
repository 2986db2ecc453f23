"""Warnings about a valid config: what is likely to fail when it runs on this machine.

`fleetdeck validate` prints them and still exits 0: a program missing here may be
installed before the run, a workdir may be created by then, and an empty prompt
may be meant (a runner-like agent whose command needs none). Only local workers
are checked: what an SSH host has, this machine cannot tell.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fleetdeck.config import Problem
from fleetdeck.model import LOCAL_HOST

if TYPE_CHECKING:
    from fleetdeck.config import Fleet, WorkerSpec

# Tasks without a prompt named one by one; past that, a count.
MAX_NAMED_TASKS = 5


def config_warnings(fleet: Fleet) -> list[Problem]:
    """Warnings about `fleet`, each with the key it is about."""
    warnings: list[Problem] = []
    config = fleet.config
    for section, workers in (("agents", config.agents), ("runners", config.runners)):
        for name, worker in workers.items():
            if worker.kind != "process":
                if worker.api_key_env and not os.environ.get(worker.api_key_env):
                    warnings.append(
                        Problem(
                            f"{section}.{name}.api_key_env",
                            f"warning: ${worker.api_key_env} is not set here "
                            "(every request of this agent would fail)",
                        )
                    )
            elif worker.host_names == (LOCAL_HOST,):
                warnings += _local_worker_warnings(fleet, f"{section}.{name}", worker)
    warnings += _prompt_warnings(fleet)
    return warnings


def _local_worker_warnings(fleet: Fleet, where: str, worker: WorkerSpec) -> Iterator[Problem]:
    workdir = fleet.workdir(worker)
    if not workdir.is_dir():
        yield Problem(
            f"{where}.workdir", f"warning: workdir {worker.workdir!r} does not exist ({workdir})"
        )
    program = worker.command[0]
    if "{" in program:
        return  # filled in per attempt: nothing to look for yet
    if "/" in program:
        # As the local executor runs it: relative to the workdir.
        if not os.access(workdir / program, os.X_OK):
            yield Problem(
                f"{where}.command", f"warning: {program!r} is not an executable file here"
            )
        return
    search = worker.env.get("PATH") or os.environ.get("PATH", os.defpath)
    if shutil.which(program, path=search) is None:
        yield Problem(
            f"{where}.command",
            f"warning: {program!r} is not on PATH on this machine "
            "(if it is on an SSH host, name that host with `host`)",
        )


def _prompt_warnings(fleet: Fleet) -> Iterator[Problem]:
    empty = [(i, task.id) for i, task in enumerate(fleet.tasks) if not task.prompt.strip()]
    for i, task_id in empty[:MAX_NAMED_TASKS]:
        yield Problem(
            f"tasks[{i}].prompt", f"warning: task '{task_id}' has no prompt ({{prompt}} is empty)"
        )
    hidden = len(empty) - MAX_NAMED_TASKS
    if hidden > 0:
        yield Problem("tasks", f"warning: ... and {hidden} more tasks without a prompt")
