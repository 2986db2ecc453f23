"""A stand-in for a chatty coding agent, for benchmarks/ui.py.

    python chatty_agent.py SECONDS RATE [SEED]

Prints RATE lines a second (80-120 characters each, like an agent's log: tool
calls, test results, diffs) to stdout for SECONDS seconds, then exits 0. RATE 0
is an idle agent: one line, then silence until the end. Lines go out in small
bursts every 50 ms, as a real agent's output does, paced against the clock so
that a slow moment is caught up rather than lost. Standard library only, so it
can run with `python -S` and start fast.
"""

from __future__ import annotations

import random
import sys
import time

BURST_SECONDS = 0.05
SHORTEST, LONGEST = 80, 120

_VOCABULARY = (
    "tool_use read_file src/app/models.py lines 120-184 ok tests passed failed collected "
    "edit apply patch hunk context def class return import from await async self config "
    "assert expected actual diff --git a/src b/src @@ -12,7 +12,9 @@ running pytest -q "
    "tests/test_api.py::test_login PASSED FAILED warning: unused variable token budget "
    "thinking planning next step: update the handler and add a regression test for it"
)


def lines(rng: random.Random, count: int) -> list[str]:
    """`count` log-like lines of 80-120 characters."""
    words = _VOCABULARY.split()
    out = []
    for number in range(count):
        length = rng.randint(SHORTEST, LONGEST)
        text = f"[{number:05d}] "
        while len(text) < length:
            text += rng.choice(words) + " "
        out.append(text[:length].rstrip().ljust(length, "."))
    return out


def main(argv: list[str]) -> int:
    """Print for the given time at the given rate, then exit 0."""
    seconds, rate = float(argv[1]), float(argv[2])
    rng = random.Random(argv[3] if len(argv) > 3 else None)
    out = sys.stdout
    started = time.monotonic()
    end = started + seconds
    if rate <= 0:
        out.write("idle agent: thinking quietly\n")
        out.flush()
        time.sleep(max(0.0, end - time.monotonic()))
        return 0
    pool = lines(rng, 512)
    written = 0
    while True:
        now = time.monotonic()
        if now >= end:
            return 0
        due = int((now - started) * rate)
        if due > written:
            burst = [pool[i % len(pool)] for i in range(written, due)]
            out.write("\n".join(burst) + "\n")
            out.flush()
            written = due
        time.sleep(min(BURST_SECONDS, max(0.0, end - time.monotonic())))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
