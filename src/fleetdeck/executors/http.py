"""API agents: an attempt is one HTTP request to a model, streamed into its log.

One `httpx.AsyncClient` per agent (its connection pool), and a limiter per agent
for requests and tokens per minute (fleetdeck.ratelimit). The request is built
from the task's prompt (`FLEETDECK_PROMPT`) and its dependencies' outputs
(`{inputs}` in the prompt, or a section appended to it); the streamed text goes
to the attempt's log as it arrives and, whole, to its output file: an API task's
output is what a process task writes to `FLEETDECK_OUTPUT`, so both kinds mix in
one DAG and a CI runner can check what a model wrote.

How an attempt ends:
- 2xx: `ok`, with `usage` (tokens in and out, and cost from the agent's `price`).
- 429, 503, 529: `throttled` with `retry_after` (Retry-After and the providers'
  reset headers): the core pauses the agent and runs the task again, no retry spent.
- another 5xx, a connection error: failed (the task's retries, with backoff).
- another 4xx: failed at once (`permanent`), with the server's message; a 401
  or 403 also pauses the agent (`auth`) until the operator looks.
- stop (cancel, timeout, quit): the request is cancelled and its connection closed.

The key (`api_key_env`'s value) only goes into a request header: it is one of
the fleet's secrets, masked wherever fleetdeck records or shows text.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import os
import re
import time
from collections.abc import Mapping
from typing import Any, BinaryIO

import httpx

from fleetdeck.apispec import API_KINDS, base_url
from fleetdeck.config import Fleet, WorkerSpec
from fleetdeck.executors.base import AttemptProcess, Executor, LaunchError, LaunchRequest
from fleetdeck.model import API_HOST, Outcome
from fleetdeck.ratelimit import TokenBucket, estimate_tokens, requests_bucket, tokens_bucket
from fleetdeck.redact import Redactor

THROTTLE_STATUSES = frozenset({429, 503, 529})
# When a throttled answer says nothing of when to come back.
DEFAULT_RETRY_AFTER = 30.0
ANTHROPIC_VERSION = "2023-06-01"
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?")
_DURATION_MS = re.compile(r"(\d+(?:\.\d+)?)ms")


class _Agent:
    """One API agent: its client, limiters and settings."""

    def __init__(self, name: str, spec: WorkerSpec, key: str | None) -> None:
        self.name = name
        self.spec = spec
        self.kind = spec.kind
        self.key = key
        path = "/messages" if spec.kind == "anthropic" else "/chat/completions"
        self.url = base_url(spec) + path
        # Connection pooling sized to the agent's slots: a request never waits
        # for a connection another agent holds.
        limits = httpx.Limits(max_connections=spec.slots, max_keepalive_connections=spec.slots)
        self.client = httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None, connect=30.0))
        now = time.monotonic()
        self.requests: TokenBucket | None = (
            requests_bucket(spec.requests_per_minute, now) if spec.requests_per_minute else None
        )
        self.tokens: TokenBucket | None = (
            tokens_bucket(spec.tokens_per_minute, now) if spec.tokens_per_minute else None
        )

    def headers(self) -> dict[str, str]:
        if self.kind == "anthropic":
            headers = {"anthropic-version": ANTHROPIC_VERSION}
            if self.key:
                headers["x-api-key"] = self.key
            return headers
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def body(self, prompt: str) -> dict[str, Any]:
        spec = self.spec
        body: dict[str, Any] = {"model": spec.model, "max_tokens": spec.max_tokens, "stream": True}
        if spec.temperature is not None:
            body["temperature"] = spec.temperature
        messages: list[dict[str, str]] = []
        if self.kind == "anthropic":
            if spec.system:
                body["system"] = spec.system
        else:
            if spec.system:
                messages.append({"role": "system", "content": spec.system})
            body["stream_options"] = {"include_usage": True}
        messages.append({"role": "user", "content": prompt})
        body["messages"] = messages
        return body


def prompt_with_inputs(prompt: str, inputs: Mapping[str, str]) -> str:
    """The prompt sent: `{inputs}` replaced by the dependencies' outputs, or
    (without it) those outputs appended in a section of their own."""
    if not inputs:
        return prompt.replace("{inputs}", "")
    block = "\n\n".join(f"## {task}\n{output.strip()}" for task, output in inputs.items())
    if "{inputs}" in prompt:
        return prompt.replace("{inputs}", block)
    return f"{prompt}\n\n# Inputs\n\n{block}"


class HttpAttempt(AttemptProcess):
    """One request in flight, as an attempt the engine waits for and stops."""

    def __init__(self, agent: _Agent, request: LaunchRequest, redactor: Redactor) -> None:
        self._agent = agent
        self._request = request
        self._redactor = redactor
        self._task: asyncio.Task[int] | None = None
        self.stopped = False

    def begin(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def wait(self) -> int:
        assert self._task is not None
        try:
            return await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self.stopped:
                return -15
            raise

    async def stop(self, grace: float) -> None:
        """Cancel the request: httpx closes its connection, the server sees it go."""
        task = self._task
        if task is None or task.done():
            return
        self.stopped = True
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    async def _run(self) -> int:
        agent, request = self._agent, self._request
        prompt = prompt_with_inputs(request.env.get("FLEETDECK_PROMPT", ""), request.inputs)
        body = agent.body(prompt)
        estimate = estimate_tokens(prompt + (agent.spec.system or ""))
        reserved = estimate + agent.spec.max_tokens
        # A local file, written a piece at a time as it streams in (as the shim
        # writes a process's output): small writes that do not block the loop.
        with open(request.log_path, "ab", buffering=0) as log:  # noqa: ASYNC230
            log.write(f"{agent.kind} {agent.url} model={agent.spec.model}\n".encode())
            limit = agent.spec.tokens_per_minute
            if limit is not None and reserved > limit:
                self.outcome = Outcome.FAILED
                self.details = {"permanent": True}
                self.error = (
                    f"the request needs about {reserved} tokens, over the agent's "
                    f"tokens_per_minute ({limit})"
                )
                return 1
            await self._pace(reserved)
            try:
                return await self._send(body, log, reserved, estimate)
            except httpx.HTTPError as exc:
                self._refund(reserved)
                self.outcome = Outcome.FAILED
                self.error = self._redactor.text(
                    f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                )
                log.write(f"\n[request failed: {self.error}]\n".encode())
                return 1

    async def _pace(self, reserved: int) -> None:
        """Wait for the agent's limiters: a request, and `reserved` tokens."""
        agent = self._agent
        now = time.monotonic()
        wait = 0.0
        if agent.requests is not None:
            wait = agent.requests.reserve(1, now)
        if agent.tokens is not None:
            wait = max(wait, agent.tokens.reserve(reserved, now))
        if wait > 0:
            await asyncio.sleep(wait)

    def _refund(self, amount: int) -> None:
        if self._agent.tokens is not None and amount > 0:
            self._agent.tokens.refund(amount, time.monotonic())

    async def _send(self, body: dict[str, Any], log: BinaryIO, reserved: int, estimate: int) -> int:
        agent, request = self._agent, self._request
        parts: list[str] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        async with agent.client.stream(
            "POST", agent.url, json=body, headers=agent.headers()
        ) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                self._refund(reserved)
                return self._refused(resp, log)
            held = ""  # masking: the end of the text after its last blank (see below)
            async for line in resp.aiter_lines():
                text = self._take(line, usage)
                if not text:
                    continue
                parts.append(text)
                if not self._redactor:
                    log.write(text.encode())
                    continue
                # A secret may come split over two pieces: what follows the last
                # blank waits for the next one, so each word is masked whole.
                held += text
                cut = max(held.rfind(" "), held.rfind("\n")) + 1
                if cut:
                    log.write(self._redactor.text(held[:cut]).encode())
                    held = held[cut:]
            if held:
                log.write(self._redactor.text(held).encode())
        output = "".join(parts)
        if not output.endswith("\n"):
            log.write(b"\n")
        with open(request.output_path, "w", encoding="utf-8") as out:  # noqa: ASYNC230
            out.write(output)
        if usage["input_tokens"]:
            # The prompt's estimate was cautious: give back what it overcounted
            # (max_tokens stays charged, as the provider counts it).
            self._refund(estimate - usage["input_tokens"])
        details: dict[str, Any] = {"usage": dict(usage)}
        if agent.spec.price is not None:
            cost = agent.spec.price.cost(usage["input_tokens"], usage["output_tokens"])
            details["usage"]["cost"] = round(cost, 6)
        self.details = details
        self.outcome = Outcome.OK
        return 0

    def _take(self, line: str, usage: dict[str, int]) -> str:
        """The text of one SSE line (a `data:` line), noting the usage it reports."""
        if not line.startswith("data:"):
            return ""
        data = line[5:].strip()
        if not data or data == "[DONE]":
            return ""
        try:
            event = json.loads(data)
        except ValueError:
            return ""
        if not isinstance(event, dict):
            return ""
        if self._agent.kind == "anthropic":
            kind = event.get("type")
            if kind == "message_start":
                got = (event.get("message") or {}).get("usage") or {}
                usage["input_tokens"] = int(got.get("input_tokens") or 0)
            elif kind == "message_delta":
                got = event.get("usage") or {}
                usage["output_tokens"] = int(got.get("output_tokens") or usage["output_tokens"])
            elif kind == "content_block_delta":
                return str((event.get("delta") or {}).get("text") or "")
            return ""
        got = event.get("usage")
        if isinstance(got, dict):
            usage["input_tokens"] = int(got.get("prompt_tokens") or 0)
            usage["output_tokens"] = int(got.get("completion_tokens") or 0)
        choices = event.get("choices") or []
        if choices and isinstance(choices[0], dict):
            return str((choices[0].get("delta") or {}).get("content") or "")
        return ""

    def _refused(self, resp: httpx.Response, log: BinaryIO) -> int:
        """An error status: throttled, or failed (at once for a client error)."""
        status = resp.status_code
        message = _server_message(resp)
        self.error = self._redactor.text(f"HTTP {status}: {message}")
        log.write(f"[{self.error}]\n".encode())
        if status in THROTTLE_STATUSES:
            self.outcome = Outcome.THROTTLED
            self.details = {"retry_after": retry_after(resp.headers, time.time())}
        else:
            self.outcome = Outcome.FAILED
            if status < 500:
                details: dict[str, Any] = {"permanent": True, "status": status}
                if status in (401, 403):
                    details["auth"] = True
                self.details = details
            else:
                self.details = {"status": status}
        return 1


def _server_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300] or resp.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    return json.dumps(body)[:300]


def retry_after(headers: Mapping[str, str], now: float) -> float:
    """Seconds until a throttled agent may send again, from the answer's headers:
    `retry-after-ms`, `Retry-After` (seconds or a date), OpenAI's
    `x-ratelimit-reset-requests`/`-tokens` ("1s", "6m0s", "20ms") and Anthropic's
    `anthropic-ratelimit-*-reset` (a date); the longest one given."""
    lower = {k.lower(): v for k, v in headers.items()}
    found: list[float] = []
    if "retry-after-ms" in lower:
        with contextlib.suppress(ValueError):
            found.append(float(lower["retry-after-ms"]) / 1000)
    value = lower.get("retry-after")
    if value:
        try:
            found.append(float(value))
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                found.append(email.utils.parsedate_to_datetime(value).timestamp() - now)
    for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"):
        if name in lower:
            seconds = _duration(lower[name])
            if seconds is not None:
                found.append(seconds)
    for name, value in lower.items():
        if name.startswith("anthropic-ratelimit-") and name.endswith("-reset"):
            with contextlib.suppress(ValueError):
                from datetime import datetime

                found.append(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() - now)
    positive = [seconds for seconds in found if seconds > 0]
    return round(max(positive), 3) if positive else DEFAULT_RETRY_AFTER


def _duration(text: str) -> float | None:
    text = text.strip()
    ms = _DURATION_MS.fullmatch(text)
    if ms:
        return float(ms.group(1)) / 1000
    match = _DURATION.fullmatch(text)
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class HttpExecutor(Executor):
    """Runs the attempts of every API agent of a fleet (its host is `api`)."""

    host = API_HOST

    def __init__(self, fleet: Fleet, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._agents: dict[str, _Agent] = {}
        self._environ = env
        self._specs = {
            name: spec for name, spec in fleet.config.agents.items() if spec.kind in API_KINDS
        }
        self._redactor = Redactor.for_fleet(fleet, env)

    def _agent(self, name: str) -> _Agent:
        agent = self._agents.get(name)
        if agent is None:
            spec = self._specs.get(name)
            if spec is None:
                raise LaunchError(f"agent '{name}' is not an API agent")
            key = None
            if spec.api_key_env:
                key = self._environ.get(spec.api_key_env)
                if not key:
                    raise LaunchError(f"agents.{name}.api_key_env: ${spec.api_key_env} is not set")
            agent = self._agents[name] = _Agent(name, spec, key)
        return agent

    async def start(self, request: LaunchRequest) -> AttemptProcess:
        attempt = HttpAttempt(self._agent(request.worker), request, self._redactor)
        attempt.begin()
        return attempt

    async def aclose(self) -> None:
        for agent in self._agents.values():
            await agent.client.aclose()
        self._agents.clear()
