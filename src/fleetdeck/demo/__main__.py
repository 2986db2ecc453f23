"""Simulated agents and CI jobs for the example fleets: `python -m fleetdeck.demo`.

    python -m fleetdeck.demo agent [--seconds S] [--jitter J] [--fail-rate P] [--seed N]
    python -m fleetdeck.demo ci    [same options]

They print progress lines, take a seeded, varied time, write an output for their
dependents, and fail now and then, the same way every run for the same seed,
task and attempt. A prompt may force behaviour, which the example fleets use to
show a retry and a blocked dependent on every run:

    [fails:1,2]      fail on these attempt numbers
    [fails:always]   never succeed
    [ci-fails:1]     the CI job fails on these attempt numbers
    [takes:4.5]      the agent takes this many seconds (before jitter)
    [ci-takes:3]     the CI job takes this many seconds (before jitter)

No API key, no network: everything happens on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time

_DIRECTIVE = re.compile(r"\[(fails|ci-fails|takes|ci-takes):([^\]]+)\]")

_AGENT_STEPS = (
    "reading the task",
    "exploring the repository",
    "planning the change",
    "editing files",
    "running the formatter",
    "writing tests",
    "summarising the change",
)
_CI_STEPS = (
    "checking out the change",
    "installing dependencies",
    "building",
    "running unit tests",
    "running integration tests",
    "collecting coverage",
)


def _unit(seed: int, *parts: str) -> float:
    """A number in [0, 1) fixed by the seed and the parts (stable across runs)."""
    digest = hashlib.sha256("|".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _directives(prompt: str) -> dict[str, str]:
    return {name: value.strip() for name, value in _DIRECTIVE.findall(prompt)}


def _fails(rule: str | None, attempt: int) -> bool | None:
    if rule is None:
        return None
    if rule == "always":
        return True
    numbers = {int(part) for part in rule.split(",") if part.strip().isdigit()}
    return attempt in numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleetdeck.demo")
    parser.add_argument("role", choices=("agent", "ci"))
    parser.add_argument("--seconds", type=float, default=2.0, help="typical duration")
    parser.add_argument("--jitter", type=float, default=0.3, help="+/- this fraction")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="chance of failing")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    task = os.environ.get("FLEETDECK_TASK", "task")
    attempt = int(os.environ.get("FLEETDECK_ATTEMPT", "1"))
    prompt = os.environ.get("FLEETDECK_PROMPT", "")
    rules = _directives(prompt)

    seconds = float(rules.get("takes" if args.role == "agent" else "ci-takes", args.seconds))
    spread = (2 * _unit(args.seed, task, str(attempt), args.role, "time") - 1) * args.jitter
    seconds = max(0.05, seconds * (1 + spread))
    forced = _fails(rules.get("fails" if args.role == "agent" else "ci-fails"), attempt)
    if forced is None:
        forced = _unit(args.seed, task, str(attempt), args.role, "fail") < args.fail_rate

    steps = _AGENT_STEPS if args.role == "agent" else _CI_STEPS
    print(f"[{args.role}] {task} attempt {attempt}: {prompt or '(no prompt)'}", flush=True)
    if args.role == "agent":
        inputs_path = os.environ.get("FLEETDECK_INPUTS")
        if inputs_path:
            with open(inputs_path, encoding="utf-8") as handle:
                inputs = json.load(handle)
            for dependency, output in inputs.items():
                print(f"  input from {dependency}: {output.strip()[:60]}", flush=True)
    started = time.monotonic()
    for i, step in enumerate(steps):
        # Spread the steps over the duration; stop early on a failure.
        time.sleep(seconds / len(steps))
        print(f"  {step}... ({time.monotonic() - started:.1f}s)", flush=True)
        if forced and i == len(steps) * 2 // 3:
            kind = "tests failed: 3 of 41" if args.role == "ci" else "the change does not compile"
            print(f"error: {kind}", file=sys.stderr, flush=True)
            return 1

    output_path = os.environ.get("FLEETDECK_OUTPUT")
    if output_path:
        with open(output_path, "w", encoding="utf-8") as handle:
            handle.write(f"{task}: done in attempt {attempt} ({seconds:.1f}s)\n")
    print(f"done: {task}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
