"""Every run reachable: the in-process `fleetdeck run` (TUI or headless) serves
the same control socket as a background supervisor, beside its own view.

`HostedRun` wraps the run's `RunLifecycle` (it is the `RunHandle` the view
holds, so the views do not change): once the run is journaled as started it
opens `ControlServer` on `control.sock` in the state directory, lists the
process for `fleetdeck ps`, and subscribes the fleet's `Notifier` (`[fleet]
notify`, `notify_url`). So `fleetdeck status/logs/retry/pause/stop STATE_DIR`
and `fleetdeck attach` reach a run in a terminal exactly as a background one.
When the view closes the run, the socket and the registry entry go with it.

A socket that cannot be opened (a state directory on a file system without Unix
sockets, say) never stops the run: the run goes on unreachable, and `problem`
says why (the command line prints it after the run).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from fleetdeck.client import RunOutcome
    from fleetdeck.inprocess import InProcessClient
    from fleetdeck.lifecycle import RunLifecycle
    from fleetdeck.notify import Notifier
    from fleetdeck.remote.server import ControlServer

# The log of the in-process run's control socket (refusals, dropped clients):
# a view on the terminal must not be written over.
CONTROL_LOG = "control.log"


class HostedRun:
    """A run in this process with its control socket, registry entry and notifier
    (a `RunHandle`: what the view reads is the lifecycle's)."""

    def __init__(
        self,
        client: InProcessClient,
        lifecycle: RunLifecycle,
        *,
        state_dir: Path,
        config: str,
    ) -> None:
        self.client = client
        self.lifecycle = lifecycle
        self.state_dir = Path(state_dir)
        self.config = config
        self.server: ControlServer | None = None
        self.notifier: Notifier | None = None
        self.problem: str | None = None  # why the socket is not served, if it is not
        self._entry: Path | None = None
        self._log: IO[str] | None = None
        self._opening: asyncio.Task[None] | None = None

    # --- RunHandle: what the view reads, the lifecycle's ------------------------------

    @property
    def finished(self) -> bool:
        """Whether the run has ended."""
        return self.lifecycle.finished

    @property
    def result(self) -> RunOutcome | None:
        """How the run ended, once it has."""
        return self.lifecycle.result

    @property
    def failure(self) -> BaseException | None:
        """What stopped the engine, if it failed."""
        return self.lifecycle.failure

    @property
    def stopped_from_outside(self) -> bool:
        """Whether a signal stopped the run."""
        return self.lifecycle.stopped_from_outside

    def start(
        self,
        *,
        on_finish: Callable[[], None] | None = None,
        on_stop_signal: Callable[[], None] | None = None,
    ) -> None:
        """Start the run, its notifier, and (once it is journaled) its socket."""
        from fleetdeck.notify import Notifier

        self.notifier = Notifier.of(self.client.engine.fleet)
        if self.notifier is not None:
            self.client.subscribe(self.notifier)
        self.lifecycle.start(on_finish=on_finish, on_stop_signal=on_stop_signal)
        self._opening = asyncio.get_running_loop().create_task(self._open())

    async def wait(self) -> RunOutcome:
        """Wait for the run's end."""
        return await self.lifecycle.wait()

    async def close(self) -> None:
        """End the run (as the lifecycle does), then close the socket, say goodbye
        to every attached view, leave the registry and send what the notifier holds."""
        try:
            await self.lifecycle.close()
        finally:
            await self._close_services()

    # --- the socket ------------------------------------------------------------------

    async def _open(self) -> None:
        from fleetdeck.remote.server import ControlServer
        from fleetdeck.remote.supervise import register

        engine = self.client.engine
        # The run is journaled as started once the engine has its id.
        while engine.run_id is None and not self.lifecycle.finished:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if engine.run_id is None:
            return
        try:
            # Private as the rest of the state directory, whatever the umask.
            fd = os.open(
                self.state_dir / CONTROL_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
            os.fchmod(fd, 0o600)
            self._log = os.fdopen(fd, "a", encoding="utf-8")
            server = ControlServer(self.client, self.state_dir, log=self._log)
            await server.start()
        except OSError as exc:
            self.problem = f"control socket not served: {exc.strerror or exc}"
            return
        self.server = server
        with contextlib.suppress(OSError):
            self._entry = register(self.state_dir, engine.fleet.name, self.config)

    async def _close_services(self) -> None:
        opening, self._opening = self._opening, None
        if opening is not None and not opening.done():
            opening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opening
        server, self.server = self.server, None
        if server is not None:
            server.push()  # every attached screen sees the end
            await server.close()
        entry, self._entry = self._entry, None
        if entry is not None:
            with contextlib.suppress(OSError):
                entry.unlink()
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
        notifier, self.notifier = self.notifier, None
        if notifier is not None:
            await notifier.close()
