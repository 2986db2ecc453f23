"""PidfdWatch: many pidfds watched through one descriptor of the event loop."""

from __future__ import annotations

import asyncio
import os
import time

from fleetdeck.executors.pidwatch import PidfdWatch


def _spawn(*argv: str) -> tuple[int, int]:
    pid = os.posix_spawnp(argv[0], list(argv), os.environ)
    return pid, os.pidfd_open(pid)


async def _exits_in_order(watch: PidfdWatch, seconds: list[float]) -> list[int]:
    """Start one `sleep` per entry; the indexes of the ones that ended, in order."""
    ended: list[int] = []
    done = asyncio.get_running_loop().create_future()

    for index, duration in enumerate(seconds):
        pid, pidfd = _spawn("sleep", str(duration))

        def exited(index: int = index, pid: int = pid, pidfd: int = pidfd) -> None:
            os.waitpid(pid, 0)
            watch.forget(pidfd)
            os.close(pidfd)
            ended.append(index)
            if len(ended) == len(seconds):
                done.set_result(None)

        watch.watch(pidfd, exited)
    await asyncio.wait_for(done, 10)
    return ended


def test_each_exit_is_told_once_to_its_own_callback() -> None:
    watch = PidfdWatch()
    ended = asyncio.run(_exits_in_order(watch, [0.3, 0.0, 0.15]))
    assert ended == [1, 2, 0]
    assert len(watch) == 0
    watch.close()


def test_a_watch_serves_one_event_loop_after_another() -> None:
    watch = PidfdWatch()
    assert asyncio.run(_exits_in_order(watch, [0.0])) == [0]
    assert asyncio.run(_exits_in_order(watch, [0.1, 0.0])) == [1, 0]
    watch.close()


def test_a_callback_is_called_again_while_its_pidfd_is_readable() -> None:
    # Level-triggered, like add_reader: a callback that does not reap (a process
    # not ended yet, as far as waitpid knows) is asked again at the next turn.
    async def main() -> int:
        watch = PidfdWatch()
        pid, pidfd = _spawn("true")
        calls = 0

        def exited() -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                os.waitpid(pid, 0)
                watch.forget(pidfd)
                os.close(pidfd)

        watch.watch(pidfd, exited)
        deadline = time.monotonic() + 10
        while len(watch) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        watch.close()
        return calls

    assert asyncio.run(main()) == 3
