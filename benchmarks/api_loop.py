"""The plain way to make N chat-completion calls: an httpx asyncio loop with a semaphore.

    python benchmarks/api_loop.py BASE_URL N SLOTS

What a script without fleetdeck does: N streamed requests, SLOTS at a time, one
AsyncClient; a 429 is waited out (Retry-After) and sent again. No limiter of its
own: it learns the provider's limit from its refusals. Prints the requests it
sent and how many were refused, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx


async def main(base_url: str, n: int, slots: int) -> None:
    gate = asyncio.Semaphore(slots)
    sent = refused = 0
    limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(None, connect=30)) as client:

        async def call(i: int) -> None:
            nonlocal sent, refused
            body = {
                "model": "local",
                "stream": True,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"item {i}"}],
            }
            async with gate:
                while True:
                    sent += 1
                    async with client.stream(
                        "POST", base_url + "/chat/completions", json=body
                    ) as resp:
                        if resp.status_code == 429:
                            refused += 1
                            await resp.aread()
                            await asyncio.sleep(float(resp.headers.get("retry-after", "1")))
                            continue
                        resp.raise_for_status()
                        text = [line async for line in resp.aiter_lines() if line]
                        assert text
                        return

        await asyncio.gather(*(call(i) for i in range(n)))
    print(json.dumps({"sent": sent, "refused": refused}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
