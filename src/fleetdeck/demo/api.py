"""A local OpenAI- and Anthropic-compatible server for the example fleets and tests.

    python -m fleetdeck.demo.api [--port 0] [--latency 0.2] [--chunk-delay 0.02]
                                 [--rpm 600] [--burst N] [--tpm T] [--tpm-burst N]
                                 [--words 40]

It answers `POST /v1/chat/completions` (OpenAI's format, also vLLM's, Ollama's
and llama.cpp's) and `POST /v1/messages` (Anthropic's), streamed (SSE) or not,
with canned text drawn from the prompt, after `--latency` seconds and
`--chunk-delay` between streamed pieces, as a slow model would. It enforces a
requests-per-minute limit the way providers do (a token bucket refilled at
`rpm / 60` a second, holding at most `--burst`, one second's worth by default):
a request over it gets `429` with `Retry-After`. `--tpm` limits tokens per
minute the same way, charging each request on arrival its prompt (a token per
four characters) plus its `max_tokens`, as OpenAI counts them. `GET /stats` reports what it
saw (requests, answers by status, over-limit requests, the most in flight at
once, streams the client closed early), so a test or a benchmark judges a
client by the server's own count. `POST /stats/reset` clears it.

A model name may ask for a failure, for tests and demos: `error-401` (any
status) answers that status with an error message; `error-429` and
`error-529` carry `Retry-After: 1`.

The first line printed is `listening on http://127.0.0.1:PORT`. No key is
checked (any `Authorization` or `x-api-key` is accepted), nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_MODEL = re.compile(r"error-(\d{3})")
_TEXT = (
    "the quick draft covers each point of the brief in plain words and keeps "
    "the tone of the product while naming what changed and why it matters to "
    "the reader who skims the first lines before deciding to read on"
)
_WORDS = tuple(_TEXT.split(" "))


def count_tokens(text: str) -> int:
    """The server's own token count: a word of four characters is one token."""
    return math.ceil(len(text) / 4)


class Limiter:
    """A token bucket (of requests, or of tokens): `rate` a second, `burst` at most."""

    def __init__(self, rpm: float, burst: float | None) -> None:
        self.rate = rpm / 60.0
        self.burst = burst if burst is not None else max(1.0, self.rate)
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self, amount: float = 1.0) -> float:
        """0 when a request of `amount` may go now (and counts it), else seconds to wait."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate


class Stats:
    """What the server saw, under a lock (handlers run in threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.requests = 0
        self.by_status: dict[str, int] = {}
        self.over_limit = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed_early = 0
        self.completed = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.authorization: list[str] = []

    def as_json(self) -> dict[str, Any]:
        """The figures `GET /stats` answers."""
        return {
            "requests": self.requests,
            "by_status": dict(self.by_status),
            "over_limit": self.over_limit,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "closed_early": self.closed_early,
            "completed": self.completed,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "keys_seen": len(set(self.authorization)),
        }


class ApiServer(ThreadingHTTPServer):
    """The server and its settings."""

    daemon_threads = True
    allow_reuse_address = True
    # Many connections open at once (a fleet of 50 slots): the default backlog
    # of 5 would reset some of them.
    request_queue_size = 1024

    def __init__(self, port: int, args: argparse.Namespace) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.latency: float = args.latency
        self.chunk_delay: float = args.chunk_delay
        self.words: int = args.words
        self.limiter = Limiter(args.rpm, args.burst) if args.rpm else None
        # Tokens per minute, charged on arrival: the prompt plus max_tokens.
        self.tokens = (
            Limiter(args.tpm, args.tpm_burst if args.tpm_burst else args.tpm) if args.tpm else None
        )
        self.stats = Stats()


class Handler(BaseHTTPRequestHandler):
    """One connection: HTTP/1.1 with keep-alive, as httpx pools them."""

    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Quiet: a benchmark sends thousands of requests."""

    def do_GET(self) -> None:
        if self.path == "/stats":
            with self.server.stats.lock:
                body = self.server.stats.as_json()
            self._json(200, body)
        else:
            self._json(404, {"error": {"message": f"no such path: {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/stats/reset":
            with self.server.stats.lock:
                self.server.stats.reset()
            self._json(200, {"ok": True})
            return
        anthropic = self.path.rstrip("/").endswith("/messages")
        if not (anthropic or self.path.rstrip("/").endswith("/chat/completions")):
            self._json(404, {"error": {"message": f"no such path: {self.path}"}})
            return
        stats = self.server.stats
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        prompt_seen = isinstance(body, dict) and _prompt_text(body, anthropic)
        charge = 0
        if isinstance(body, dict):
            charge = count_tokens(prompt_seen or "") + int(body.get("max_tokens") or 0)
        with stats.lock:
            stats.requests += 1
            wait = self.server.limiter.take() if self.server.limiter else 0.0
            what = "requests"
            if not wait and self.server.tokens is not None:
                wait = self.server.tokens.take(charge)
                what = "tokens"
            if wait:
                stats.over_limit += 1
            key = self.headers.get("Authorization") or self.headers.get("x-api-key") or ""
            stats.authorization.append(key)
        if not isinstance(body, dict):
            self._answer_error(400, "the body is not a JSON object")
            return
        if wait:
            self._answer_error(429, f"rate limit reached for {what}", retry_after=wait)
            return
        model = str(body.get("model", ""))
        forced = _ERROR_MODEL.fullmatch(model)
        if forced:
            status = int(forced.group(1))
            retry = 1.0 if status in (429, 503, 529) else None
            self._answer_error(status, f"model {model} answers {status}", retry_after=retry)
            return
        if not model:
            self._answer_error(400, "'model' is required")
            return
        prompt = _prompt_text(body, anthropic)
        words = _reply(prompt, self.server.words)
        with stats.lock:
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            time.sleep(self.server.latency)
            if body.get("stream"):
                finished = self._stream(words, model, prompt, anthropic)
            else:
                self._whole(words, model, prompt, anthropic)
                finished = True
        except (BrokenPipeError, ConnectionResetError):
            finished = False
        with stats.lock:
            stats.in_flight -= 1
            if finished:
                stats.completed += 1
                stats.input_tokens += count_tokens(prompt)
                stats.output_tokens += len(words)
                stats.by_status["200"] = stats.by_status.get("200", 0) + 1
            else:
                stats.closed_early += 1
        if not finished:
            self.close_connection = True

    def _whole(self, words: list[str], model: str, prompt: str, anthropic: bool) -> None:
        text = "".join(words)
        usage_in, usage_out = count_tokens(prompt), len(words)
        if anthropic:
            body: dict[str, Any] = {
                "id": "msg_local",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": usage_in, "output_tokens": usage_out},
            }
        else:
            body = {
                "id": "chatcmpl-local",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": usage_in,
                    "completion_tokens": usage_out,
                    "total_tokens": usage_in + usage_out,
                },
            }
        time.sleep(self.server.chunk_delay * len(words))
        self._json(200, body)

    def _stream(self, words: list[str], model: str, prompt: str, anthropic: bool) -> bool:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        usage_in, usage_out = count_tokens(prompt), len(words)
        if anthropic:
            self._event(
                "message_start",
                {
                    "type": "message_start",
                    "message": {"model": model, "usage": {"input_tokens": usage_in}},
                },
            )
        for word in words:
            if anthropic:
                self._event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": word},
                    },
                )
            else:
                self._event(None, {"choices": [{"index": 0, "delta": {"content": word}}]})
            time.sleep(self.server.chunk_delay)
        if anthropic:
            self._event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": usage_out},
                },
            )
            self._event("message_stop", {"type": "message_stop"})
        else:
            usage = {
                "prompt_tokens": usage_in,
                "completion_tokens": usage_out,
                "total_tokens": usage_in + usage_out,
            }
            self._event(None, {"choices": [], "usage": usage})
            self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")
        return True

    def _event(self, name: str | None, data: dict[str, Any]) -> None:
        head = f"event: {name}\n" if name else ""
        self._chunk(f"{head}data: {json.dumps(data)}\n\n".encode())

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _answer_error(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        stats = self.server.stats
        with stats.lock:
            stats.by_status[str(status)] = stats.by_status.get(str(status), 0) + 1
        headers = {}
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
            headers["retry-after-ms"] = str(max(1, math.ceil(retry_after * 1000)))
        self._json(status, {"error": {"type": "error", "message": message}}, headers)

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _prompt_text(body: dict[str, Any], anthropic: bool) -> str:
    parts: list[str] = []
    if anthropic and isinstance(body.get("system"), str):
        parts.append(body["system"])
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    return "\n".join(parts)


def _reply(prompt: str, count: int) -> list[str]:
    """The canned answer, one streamed piece a word: names the prompt's first line."""
    lines = [line for line in prompt.splitlines() if line.strip()]
    topic = " ".join(lines[-1].split()[:8]) if lines else "nothing"
    start = sum(map(ord, prompt)) % len(_WORDS)
    words = [f"On {topic}: "] + [
        _WORDS[(start + i) % len(_WORDS)] + " " for i in range(max(0, count - 1))
    ]
    words[-1] = words[-1].rstrip() + ".\n"
    return words


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m fleetdeck.demo.api", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds to first token")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="seconds per piece")
    parser.add_argument("--words", type=int, default=40, help="pieces of each answer")
    parser.add_argument("--rpm", type=float, default=0, help="requests per minute (0: none)")
    parser.add_argument("--burst", type=float, default=None, help="bucket size (default rpm/60)")
    parser.add_argument("--tpm", type=float, default=0, help="tokens per minute (0: none)")
    parser.add_argument("--tpm-burst", type=float, default=None, help="default: a minute's worth")
    args = parser.parse_args(argv)
    server = ApiServer(args.port, args)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
