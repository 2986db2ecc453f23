"""The executor interface: how the engine starts, waits for and stops attempts.

One interface, several backends (local processes, SSH hosts, an in-process
executor for benchmarks). The engine owns scheduling, timeouts and retries; an
executor only runs what it is given and kills it completely when asked.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fleetdeck.model import Attempt, Outcome, Stage

# A word of the product that views show: model.py holds it, for views that must
# not import the executors; re-exported here, where executors report it.
from fleetdeck.model import HostState as HostState


class LaunchError(Exception):
    """An attempt could not be started (command not found, bad workdir...).

    The message is for the operator: it names what is wrong.
    """


class HostLostError(Exception):
    """The host went away under a running attempt (its outcome is `lost`)."""


@dataclass(slots=True)
class LaunchRequest:
    """Everything an executor needs to start one attempt (treat it as immutable).

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
    # The file where a local attempt's exit status is recorded, shared by the
    # attempts of a run ("": `status` in the log's directory).
    status_path: str = ""
    # Names of environment variables whose values are replaced by `***` in the log.
    redact: tuple[str, ...] = ()
    # The agent or runner that runs it (an API executor serves several agents).
    worker: str = ""


@dataclass(slots=True, frozen=True)
class HostHealth:
    """What an executor knows of its host's health, reported on every change."""

    host: str
    state: HostState
    latency: float | None = None  # seconds, round trip of the last health check
    load: tuple[float, float, float] | None = None  # /proc/loadavg: 1, 5, 15 min
    reason: str | None = None  # why it is down or failed, for the operator


@dataclass(slots=True, frozen=True)
class Usage:
    """Resources used by one attempt's process tree (sampled)."""

    cpu_percent: float  # of one core: 200.0 is two cores busy
    rss_bytes: int
    processes: int


HealthListener = Callable[[HostHealth], None]


class AttemptProcess(abc.ABC):
    """A started attempt: something to wait for and to stop."""

    pid: int | None = None
    # When `pid` started (seconds since the epoch), to find it again after a restart.
    pid_started: float | None = None
    # Set by an executor that knows more than an exit status, once `wait` returned:
    # how the attempt ended (a provider's rate limit: `throttled`), what its
    # attempt_finished adds (tokens used, when the limit resets), and why it failed.
    outcome: Outcome | None = None
    details: Mapping[str, Any] | None = None
    error: str | None = None

    @abc.abstractmethod
    async def wait(self) -> int:
        """Wait for the attempt's main process to end; return its exit status.

        A process killed by signal N returns -N. Raises HostLostError when the host
        stopped answering. It may return while what the main process left running
        is still being stopped (stop() waits for all of it).

        The status comes from a shell (the local shim, or the SSH wrapper's remote
        shell), which reports a death by signal N as 128+N, exactly as it reports
        `exit 128+N`: an exit status from 129 to 192 is returned as -(status - 128)
        (`exit 130` gives -2).
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

    async def open(self, on_health: HealthListener) -> None:
        """Get ready to run attempts, without waiting for a slow host.

        Called once before the first launch. An executor whose host may come and
        go (SSH) connects in the background and reports every change of health to
        `on_health`; until it reports UP, nothing is launched on its host. The
        default is a host that is always up.
        """
        on_health(HostHealth(host=self.host, state=HostState.UP))

    def usage(self) -> Mapping[int, Usage]:
        """Resources of running attempts by attempt id, as of the last `sample()`."""
        return {}

    def sample(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Measure the resources of running attempts (called about once a second)."""

    @abc.abstractmethod
    async def start(self, request: LaunchRequest) -> AttemptProcess:
        """Start the attempt described by `request`. Raises LaunchError."""

    async def recover(self, attempt: Attempt) -> AttemptProcess | int | None:
        """Find again an attempt started by an earlier supervisor that died.

        Returns the attempt's process if it still runs (the engine then waits for
        it as for its own), its exit status if it ended meanwhile and recorded
        one, or None when it is gone without a trace (its outcome is `lost`).
        The default knows nothing of earlier attempts: every one is lost.
        """
        return None

    def hurry(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Stops in progress skip what is left of their grace period (a second Ctrl-C)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Stop what still runs, wait until it is gone, release resources."""
