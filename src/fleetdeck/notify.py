"""Telling the operator when something needs them: `[fleet] notify` (a command of
theirs) and `notify_url` (a Slack-compatible JSON post, with httpx).

A `Notifier` hears the run's events (subscribed through the client, on the
engine's loop) and sends a message when a task fails or the run ends. Messages
are rate-limited: the first goes at once, and what comes within
`notify_interval` seconds after it is gathered into one message sent when the
interval is over ("3 tasks failed: a, b, c"), so a burst of failures is one
message. A notification that fails (a command not found, a server down) is said
on stderr once and never stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fleetdeck.model import Event, EventKind

if TYPE_CHECKING:
    from fleetdeck.config import Fleet

# How long a notification command or post may take.
SEND_SECONDS = 10.0


class Notifier:
    """Sends the notifications of one fleet's run."""

    def __init__(
        self,
        fleet_name: str,
        *,
        command: Sequence[str] = (),
        url: str | None = None,
        interval: float = 10.0,
    ) -> None:
        self.fleet_name = fleet_name
        self.command = tuple(command)
        self.url = url
        self.interval = interval
        self._failed: list[str] = []
        self._ended: str | None = None
        self._last_sent = -float("inf")
        self._flush: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._complained: set[str] = set()
        self.sent: list[str] = []  # what went out (for tests and the log)

    @classmethod
    def of(cls, fleet: Fleet) -> Notifier | None:
        """The fleet's notifier, or None when it asks for none."""
        settings = fleet.config.fleet
        if not settings.notify and settings.notify_url is None:
            return None
        return cls(
            fleet.name,
            command=settings.notify,
            url=settings.notify_url,
            interval=settings.notify_interval,
        )

    def __call__(self, event: Event) -> None:
        """Hear one event (on the engine's loop)."""
        if event.kind is EventKind.TASK_FAILED and event.task is not None:
            self._failed.append(event.task)
        elif event.kind is EventKind.RUN_FINISHED:
            status = event.data.get("status", "finished")
            code = event.data.get("exit_code")
            self._ended = f"run {status} (exit {code})"
        else:
            return
        self._due()

    def _due(self) -> None:
        if self._flush is not None:
            return  # gathered into the message already due
        loop = asyncio.get_running_loop()
        wait = self._last_sent + self.interval - time.monotonic()
        if self._ended is not None or wait <= 0:
            self._send_now()
        else:
            self._flush = loop.call_later(wait, self._send_now)

    def _send_now(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        parts = []
        if self._failed:
            count = len(self._failed)
            names = ", ".join(self._failed[:5]) + (", ..." if count > 5 else "")
            parts.append(f"{count} task{'s' if count > 1 else ''} failed: {names}")
        if self._ended is not None:
            parts.append(self._ended)
        self._failed, self._ended = [], None
        if not parts:
            return
        message = f"fleetdeck {self.fleet_name}: " + "; ".join(parts)
        self._last_sent = time.monotonic()
        self.sent.append(message)
        task = asyncio.get_running_loop().create_task(self._send(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, message: str) -> None:
        if self.command:
            argv = [word.replace("{message}", message) for word in self.command]
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    await asyncio.wait_for(process.wait(), SEND_SECONDS)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            except OSError as exc:
                self._complain("notify", f"{argv[0]}: {exc.strerror or exc}")
        if self.url is not None:
            import httpx

            try:
                async with httpx.AsyncClient(timeout=SEND_SECONDS) as client:
                    response = await client.post(self.url, json={"text": message})
                    response.raise_for_status()
            except httpx.HTTPError as exc:
                self._complain("notify_url", f"{self.url}: {exc}")

    def _complain(self, what: str, why: str) -> None:
        if what in self._complained:
            return
        self._complained.add(what)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"fleetdeck: {what} failed: {why}\n")

    async def close(self) -> None:
        """Send what is still gathered, and wait for what is being sent."""
        if self._failed or self._ended is not None:
            self._send_now()
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=SEND_SECONDS)
