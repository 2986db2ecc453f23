"""The supervisor in the background: `fleetdeck start` spawns it, and this module
is what it runs (`fleetdeck run --supervise`, from `run_command` once the
engine is built), plus the registry `fleetdeck ps` reads.

The supervisor is the engine, headless (its events go to `supervisor.log` in
the state directory), with the control socket. `start` waits until the run is
journaled as started and the socket listens (the supervisor says `ready` on a
pipe), or until it exits without (the reason is the end of its log).

After the run ends, the supervisor stays while a view is attached (its screen
is left for browsing, as in-process) and exits when the last one detaches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetdeck.remote.protocol import LOG_NAME

if TYPE_CHECKING:
    from fleetdeck.client import RunOutcome
    from fleetdeck.config import Fleet
    from fleetdeck.inprocess import InProcessClient
    from fleetdeck.journal import Journal
    from fleetdeck.lifecycle import RunLifecycle

# The pipe's fd on which a spawned supervisor says it is ready.
READY_FD = "FLEETDECK_READY_FD"
# How long `start` waits for the run to be journaled as started.
START_SECONDS = 120.0


# --- the registry -------------------------------------------------------------------


def registry_dir() -> Path:
    """Where running supervisors are listed, one file each: $XDG_RUNTIME_DIR/fleetdeck,
    else ~/.local/state/fleetdeck/running."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "fleetdeck"
    return Path.home() / ".local" / "state" / "fleetdeck" / "running"


def register(state_dir: Path, fleet: str, config: str) -> Path:
    """List this process as the supervisor of `state_dir`; returns its entry."""
    directory = registry_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = directory / f"{os.getpid()}.json"
    data = {
        "pid": os.getpid(),
        "state_dir": str(Path(state_dir).resolve()),
        "fleet": fleet,
        "config": config,
        "started": time.time(),
    }
    tmp = entry.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(entry)
    return entry


def registered() -> Iterator[dict[str, Any]]:
    """The supervisors running now (entries of exited ones are removed)."""
    directory = registry_dir()
    if not directory.is_dir():
        return
    for entry in sorted(directory.glob("*.json")):
        try:
            data = json.loads(entry.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _is_supervisor(pid):
            with contextlib.suppress(OSError):
                entry.unlink()
            continue
        yield data


def _is_supervisor(pid: int) -> bool:
    """Whether `pid` is alive and a fleetdeck (not another process given the pid since)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"fleetdeck" in cmdline


# --- the supervisor's side ----------------------------------------------------------


def supervise(
    client: InProcessClient,
    lifecycle: RunLifecycle,
    *,
    state_dir: Path,
    config: str,
    add: Callable[[Any], list[str]] | None,
    view: Callable[[Any], None],
    finish: Callable[[RunOutcome], None],
) -> int:
    """Run the engine to its end with the control socket open; returns the exit code.

    `view` hears every event (the log's lines); `finish` prints the end."""
    return asyncio.run(_supervise(client, lifecycle, state_dir, config, add, view, finish))


async def _supervise(
    client: InProcessClient,
    lifecycle: RunLifecycle,
    state_dir: Path,
    config: str,
    add: Callable[[Any], list[str]] | None,
    view: Callable[[Any], None],
    finish: Callable[[RunOutcome], None],
) -> int:
    from fleetdeck.notify import Notifier
    from fleetdeck.remote.server import ControlServer

    engine = client.engine
    server = ControlServer(client, state_dir, add=add, log=sys.stdout)
    client.subscribe(view)
    notifier = Notifier.of(engine.fleet)  # [fleet] notify, notify_url
    if notifier is not None:
        client.subscribe(notifier)
    lifecycle.start()
    # The run is journaled as started once the engine has its id (run() sets it
    # before its first await that waits on anything).
    while engine.run_id is None and not lifecycle.finished:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    entry: Path | None = None
    try:
        if not lifecycle.finished:
            await server.start()
            entry = register(state_dir, engine.fleet.name, config)
        if engine.run_id is not None:
            # Journaled as started: so it did start, even when a fleet of quick
            # tasks was already done by the time this loop looked again.
            _say_ready(f"ready {engine.run_id}")
        if entry is not None:
            print(
                f"fleetdeck: supervisor {os.getpid()} of run {engine.run_id}: "
                f"control socket {server.path}",
                flush=True,
            )
        for task in engine.added_skipped:
            print(
                f"fleetdeck: task '{task}' added to the run is left out: the config "
                "defines it now, or no longer has its agent or a dependency",
                flush=True,
            )
        try:
            result = await lifecycle.wait()
        except BaseException:
            await lifecycle.close()
            raise
        server.push()  # every screen sees the end
        finish(result)
        if notifier is not None:
            await notifier.close()
        # The screens attached stay for browsing; the supervisor goes with the last.
        while server.clients and not lifecycle.stopped_from_outside:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        return result.exit_code
    finally:
        await server.close()
        await lifecycle.close()
        client.close()
        if entry is not None:
            with contextlib.suppress(OSError):
                entry.unlink()


def _say_ready(line: str) -> None:
    """Tell `fleetdeck start` the run has started (once)."""
    fd = os.environ.pop(READY_FD, None)
    if fd is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), line.encode() + b"\n")
        os.close(int(fd))


# --- `fleetdeck start` --------------------------------------------------------------


class StartError(Exception):
    """The supervisor did not start; the message is why."""


def spawn(run_args: list[str], state_dir: Path) -> tuple[int, int]:
    """Start `fleetdeck run --supervise RUN_ARGS` in its own session, its output
    appended to the state directory's log; wait until it says its run has started.
    Returns its pid and the run's id (StartError with the log's last lines if it
    exits first)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = state_dir / LOG_NAME
    read, write = os.pipe()
    env = dict(os.environ, **{READY_FD: str(write)})
    # The supervisor has no terminal: nothing it starts may ask one anything.
    with open(log_path, "ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            [sys.executable, "-m", "fleetdeck", "run", *run_args, "--no-tui", "--supervise"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(write,),
            env=env,
        )
    os.close(write)
    try:
        line = _read_line(read, START_SECONDS)
    finally:
        os.close(read)
    if line.startswith("ready "):
        return process.pid, int(line.split()[1])
    # It exited (or hangs): say why, from its log; leave nothing behind.
    try:
        code = process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        code = process.wait()
    why = _log_tail(log_path, offset) or f"the supervisor exited with status {code}"
    raise StartError(why)


def _read_line(fd: int, timeout: float) -> str:
    import select

    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _log_tail(path: Path, offset: int) -> str:
    """What the supervisor wrote from `offset`, its last few lines."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-5:])


def run_supervisor(
    client: InProcessClient,
    lifecycle: RunLifecycle,
    *,
    fleet: Fleet,
    state_dir: Path,
    args: Any,
    journal: Journal,
) -> int:
    """`fleetdeck run --supervise` (what `fleetdeck start` spawns): the run, its
    events printed to the log as headless prints them, and the control socket."""
    from fleetdeck.cli import _rerun_command, print_where
    from fleetdeck.headless import HeadlessView

    width = min(24, max((len(task.id) for task in fleet.tasks), default=4))
    view = HeadlessView(task_width=width, run_dirs=journal.run_dir, logs=client)

    def finish(result: RunOutcome) -> None:
        view.finish(result.tasks, result.report)
        rerun = _rerun_command(args).replace("fleetdeck run", "fleetdeck start", 1)
        print_where(client.engine, result.exit_code, state_dir, rerun=rerun, out=sys.stdout)

    return supervise(
        client,
        lifecycle,
        state_dir=state_dir,
        config=str(Path(args.config).resolve()),
        add=None,
        view=view,
        finish=finish,
    )
