"""The config of API agents and usage limits, and the checks that span their keys.

An agent of kind `openai` (chat completions, also vLLM, Ollama, llama.cpp) or
`anthropic` (the Messages API) makes HTTP requests instead of running a process
(fleetdeck.executors.http). Its keys live on `WorkerSpec` (the TOML table is
flat); their types and the rules that tie several keys together live here, so
that config.py only names them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import ConfigDict, Field, StrictStr

if TYPE_CHECKING:
    from fleetdeck.config import FleetConfig, Problem, WorkerSpec

_SCHEMA = ConfigDict(extra="forbid")
_Dollars = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]

AgentKind = Literal["process", "openai", "anthropic"]
API_KINDS = ("openai", "anthropic")
# Each kind's public endpoint, when the agent names no `base_url`.
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
}
# Keys only an API agent takes (a process agent that sets one is told so).
API_KEYS = (
    "model",
    "base_url",
    "api_key_env",
    "system",
    "temperature",
    "requests_per_minute",
    "tokens_per_minute",
)
# Keys only a process agent takes.
PROCESS_KEYS = ("host", "hosts", "env", "workdir", "usage_limit")


@dataclass(slots=True, frozen=True)
class Price:
    """`price = { input = 0.40, output = 1.60 }`: dollars per million tokens."""

    __pydantic_config__ = _SCHEMA

    input: _Dollars = 0.0
    output: _Dollars = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollars for that many tokens in and out."""
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


@dataclass(slots=True, frozen=True)
class UsageLimit:
    """`usage_limit = { pattern, resume_after }` of a CLI agent: output matching
    `pattern` (a regular expression, case-insensitive) ends the attempt as
    throttled; the agent resumes at the reset time the output gives, or after
    `resume_after` seconds."""

    __pydantic_config__ = _SCHEMA

    pattern: StrictStr
    resume_after: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)] = 300.0


def api_problems(config: FleetConfig) -> list[Problem]:
    """What is wrong with the API keys of `config`'s agents and runners."""
    return list(_problems(config))


def _problems(config: FleetConfig) -> Iterator[Problem]:
    from fleetdeck.config import Problem, suggest

    agents = list(config.agents)
    for name, agent in config.agents.items():
        if agent.fallback is not None and agent.fallback not in config.agents:
            hint = suggest(agent.fallback, agents)
            yield Problem(f"agents.{name}.fallback", f"unknown agent '{agent.fallback}'{hint}")
        elif agent.fallback == name:
            yield Problem(f"agents.{name}.fallback", "an agent cannot fall back to itself")
        if agent.fallback_after is not None and agent.fallback is None:
            yield Problem(f"agents.{name}.fallback_after", "needs a fallback agent")
    for i, task in enumerate(config.tasks):
        if task.fallback is not None and task.fallback not in config.agents:
            hint = suggest(task.fallback, agents)
            yield Problem(f"tasks[{i}].fallback", f"unknown agent '{task.fallback}'{hint}")

    for section, table in (("agents", config.agents), ("runners", config.runners)):
        for name, worker in table.items():
            where = f"{section}.{name}"
            if worker.kind == "process":
                if not worker.command:
                    yield Problem(where, "missing required key 'command'")
                for key in _set_keys(worker, API_KEYS):
                    yield Problem(
                        f"{where}.{key}",
                        "only an API agent takes it (kind = 'openai' or 'anthropic')",
                    )
                if worker.usage_limit is not None:
                    try:
                        re.compile(worker.usage_limit.pattern)
                    except re.error as exc:
                        yield Problem(
                            f"{where}.usage_limit.pattern", f"bad regular expression: {exc}"
                        )
                continue
            if section == "runners":
                yield Problem(
                    f"{where}.kind", "a runner runs a command; only agents may be API agents"
                )
                continue
            if config.repo is not None:
                # Its tasks would get a worktree, change nothing in it and have no
                # branch to land: not supported yet.
                yield Problem(
                    f"{where}.kind",
                    "API agents do not work in a fleet with [repo] yet: "
                    "run them in a fleet of their own",
                )
            if worker.command:
                yield Problem(
                    f"{where}.command", f"an agent of kind '{worker.kind}' runs no command"
                )
            for key in _set_keys(worker, PROCESS_KEYS):
                yield Problem(f"{where}.{key}", f"an agent of kind '{worker.kind}' takes no {key}")
            if not worker.model:
                yield Problem(
                    where, f"missing required key 'model' (an agent of kind '{worker.kind}')"
                )
            if worker.base_url is not None and not re.match(r"https?://[^/\s]+", worker.base_url):
                yield Problem(f"{where}.base_url", f"not an http(s) URL: {worker.base_url!r}")
            if worker.api_key_env is not None and not re.fullmatch(
                r"[A-Za-z_][A-Za-z0-9_]*", worker.api_key_env
            ):
                yield Problem(
                    f"{where}.api_key_env",
                    f"{worker.api_key_env!r} is not an environment variable name",
                )


def _set_keys(worker: WorkerSpec, keys: tuple[str, ...]) -> Iterator[str]:
    for key in keys:
        value = getattr(worker, key)
        if value is not None and value != {}:
            yield key


def base_url(worker: WorkerSpec) -> str:
    """Where `worker`'s requests go (its `base_url`, else its provider's)."""
    return (worker.base_url or DEFAULT_BASE_URLS[worker.kind]).rstrip("/")


__all__ = ["API_KINDS", "AgentKind", "Price", "UsageLimit", "api_problems", "base_url"]
