"""Executors that run nothing: attempts end when a test says so, or at once.

With `ManualExecutor` a test decides the end of every attempt (an exit status,
or a host lost under it) and when it comes, so the engine's behaviour can be
followed one step at a time, the same way every run. `InstantExecutor` ends
every attempt with success as soon as it starts, for benchmarks of the engine
alone.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from fleetdeck.executors.base import (
    AttemptProcess,
    Executor,
    HealthListener,
    HostHealth,
    HostLostError,
    HostState,
    LaunchRequest,
)
from fleetdeck.model import LOCAL_HOST, Stage

# The pid of a manual executor's first attempt: far from this machine's own
# processes in screenshots, and the same every run.
FIRST_PID = 40000


class Lost:
    """The ending of an attempt whose host went away under it (outcome `lost`)."""

    def __repr__(self) -> str:
        return "LOST"


LOST: Final = Lost()

# How a scripted attempt ends: an exit status (-N for a death by signal N), or LOST.
Ending = int | Lost


class ManualProcess(AttemptProcess):
    """One attempt of a `ManualExecutor`: it ends when `end()` is called, or when stopped."""

    def __init__(self, request: LaunchRequest, pid: int) -> None:
        self.request = request
        self.pid = pid
        # The grace of the first stop() (None: never stopped), for tests of who
        # stops what and how patiently.
        self.stopped_with: float | None = None
        self._ended: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # A lost attempt nobody waited for must not be reported as an error
        # nobody retrieved when the loop closes.
        self._ended.add_done_callback(lambda ended: ended.cancelled() or ended.exception())

    @property
    def ended(self) -> bool:
        """True once the attempt has an ending (an exit status or lost)."""
        return self._ended.done()

    def end(self, ending: Ending) -> None:
        """End the attempt with an exit status, or as lost; nothing once it has ended."""
        if self._ended.done():
            return
        if isinstance(ending, Lost):
            self._ended.set_exception(HostLostError("the host stopped answering"))
        else:
            self._ended.set_result(ending)

    async def wait(self) -> int:
        """The exit status the test gave; raises HostLostError for a lost attempt."""
        return await asyncio.shield(self._ended)

    async def stop(self, grace: float) -> None:
        """End the attempt as a SIGTERM would (a no-op once it has ended)."""
        if self.stopped_with is None:
            self.stopped_with = grace
        self.end(-signal.SIGTERM)


class ManualExecutor(Executor):
    """Runs nothing: records each launch and ends its attempt when the test says so.

    `started` holds every launch request in order, `current` the last attempt of
    each task. An attempt ends with `finish(task, exit_code)` or `lose(task)`,
    or at once when `script` still holds an ending: the first attempts started
    take its endings in turn (`[LOST, LOST, 0]`; `itertools.repeat(0)` for a
    host where everything succeeds). With `announce`, each attempt writes a
    first line to its log, as a real agent would print.

    The host is up once the engine opens the executor, unless `up` is False:
    then it is down until the test calls `report()`.
    """

    def __init__(
        self,
        host: str = LOCAL_HOST,
        *,
        script: Iterable[Ending] = (),
        up: bool = True,
        announce: bool = True,
    ) -> None:
        self.host = host
        self.started: list[LaunchRequest] = []
        self.current: dict[str, ManualProcess] = {}
        self._script = iter(script)
        self._announce = announce
        self._health: HostHealth | None = HostHealth(host, HostState.UP) if up else None
        self._on_health: HealthListener | None = None

    async def open(self, on_health: HealthListener) -> None:
        """Report the host's health as it stands (up, unless the test said otherwise)."""
        self._on_health = on_health
        if self._health is not None:
            on_health(self._health)

    @property
    def opened(self) -> bool:
        """True once the engine opened the executor (it listens to health reports)."""
        return self._on_health is not None

    def report(
        self,
        state: HostState,
        *,
        latency: float | None = None,
        load: tuple[float, float, float] | None = None,
        reason: str | None = None,
    ) -> None:
        """Change the host's health: reported at once if the executor is open, else
        when the engine opens it."""
        self._health = HostHealth(self.host, state, latency=latency, load=load, reason=reason)
        if self._on_health is not None:
            self._on_health(self._health)

    async def start(self, request: LaunchRequest) -> ManualProcess:
        """Record `request`; its attempt ends as scripted, or when the test says."""
        process = ManualProcess(request, pid=FIRST_PID + len(self.started))
        self.current[request.task] = process
        self.started.append(request)
        if self._announce:
            self.say(
                request.task,
                f"[{request.stage}] {request.task}: starting attempt {request.number}",
            )
        ending = next(self._script, None)
        if ending is not None:
            process.end(ending)
        return process

    def attempts(self) -> list[tuple[str, Stage, int]]:
        """(task, stage, attempt number) of every launch, in order."""
        return [(request.task, request.stage, request.number) for request in self.started]

    def say(self, task: str, line: str) -> None:
        """Append a line to the log of the task's current attempt."""
        with open(self.current[task].request.log_path, "a") as log:
            log.write(line + "\n")

    def finish(self, task: str, exit_code: int = 0, output: str | None = None) -> None:
        """End the task's current attempt with `exit_code`, writing `output` first
        (what the attempt leaves in $FLEETDECK_OUTPUT)."""
        process = self.current[task]
        if output is not None:
            Path(process.request.output_path).write_text(output)
        process.end(exit_code)

    def lose(self, task: str) -> None:
        """End the task's current attempt as lost: its host went away under it."""
        self.current[task].end(LOST)


class _Succeeded(AttemptProcess):
    """An attempt that has already succeeded."""

    async def wait(self) -> int:
        return 0

    async def stop(self, grace: float) -> None:
        return None


# One for every attempt: an instant executor costs the engine nothing per attempt.
_SUCCEEDED = _Succeeded()


class InstantExecutor(Executor):
    """Every attempt succeeds at once, in-process: the engine is all that runs."""

    host = LOCAL_HOST

    async def start(self, request: LaunchRequest) -> AttemptProcess:
        """An attempt that has already succeeded."""
        return _SUCCEEDED
