"""The baseline of the overhead benchmark: the least a Python supervisor must do.

Starts N processes of `true` with `asyncio.create_subprocess_exec`, at most SLOTS at
a time (an `asyncio.Semaphore`), and waits for all of them. Run it as its own
process, like fleetdeck, so interpreter start-up is counted on both sides:

    python benchmarks/raw_loop.py N SLOTS
"""

from __future__ import annotations

import asyncio
import sys


async def run_all(count: int, slots: int) -> None:
    """Run `count` times `true`, `slots` at once; fail loudly if one fails."""
    gate = asyncio.Semaphore(slots)

    async def one() -> None:
        async with gate:
            process = await asyncio.create_subprocess_exec("true")
            code = await process.wait()
            if code != 0:
                raise RuntimeError(f"`true` exited with {code}")

    await asyncio.gather(*(one() for _ in range(count)))


def main() -> int:
    """Entry point: `raw_loop.py N SLOTS`."""
    count, slots = int(sys.argv[1]), int(sys.argv[2])
    asyncio.run(run_all(count, slots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
