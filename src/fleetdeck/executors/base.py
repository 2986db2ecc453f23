"""The executor interface: how the engine starts, waits for and stops attempts.

One interface, several backends (local processes, SSH hosts, an in-process
executor for benchmarks). The engine owns scheduling, timeouts and retries; an
executor only runs what it is given and kills it completely when asked.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

from fleetdeck.model import Stage


class LaunchError(Exception):
    """An attempt could not be started (command not found, bad workdir...).

    The message is for the operator: it names what is wrong.
    """


class HostLostError(Exception):
    """The host went away under a running attempt (its outcome is `lost`)."""


@dataclass(slots=True, frozen=True)
class LaunchRequest:
    """Everything an executor needs to start one attempt.

    `env` holds only what fleetdeck adds (the worker's `env` and the `FLEETDECK_*`
    variables); the executor adds it on top of the host's own environment.
    Output (stdout and stderr together) goes to `log_path` on this machine.

    Data between tasks is the executor's to deliver, because a remote host cannot
    read our files: it must set `FLEETDECK_INPUTS` to a JSON file holding `inputs`
    (dependency id -> output) and `FLEETDECK_OUTPUT` to a path whose content, once
    the attempt ends, is found at `output_path` on this machine. A local executor
    writes the inputs to `inputs_path`.
    """

    attempt_id: int
    task: str
    stage: Stage
    number: int
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None  # None: the host's default (the login directory on SSH hosts)
    log_path: str
    output_path: str
    inputs_path: str
    inputs: Mapping[str, str]


class AttemptProcess(abc.ABC):
    """A started attempt: something to wait for and to stop."""

    pid: int | None = None

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for the attempt's main process to end; return its exit status.

        A process killed by signal N returns -N. Raises HostLostError when the host
        stopped answering.
        """

    @abc.abstractmethod
    async def stop(self, grace: float) -> None:
        """End the attempt and everything it started, and return once all is gone.

        SIGTERM first, then after `grace` seconds SIGKILL for whatever is left,
        descendants included. Safe to call more than once and after the end.
        """


class Executor(abc.ABC):
    """Starts attempts on one host."""

    host: str

    @abc.abstractmethod
    async def start(self, request: LaunchRequest) -> AttemptProcess:
        """Start the attempt described by `request`. Raises LaunchError."""

    def hurry(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Stops in progress skip what is left of their grace period (a second Ctrl-C)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Stop what still runs, wait until it is gone, release resources."""
