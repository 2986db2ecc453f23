"""Token buckets for an API agent's requests and tokens per minute (pure).

A bucket refills at `rate` a second up to `capacity`. `reserve(n, now)` takes
`n` at once, going below zero if it must, and returns how long the caller waits
before it may go: reservations queue in the order they were made, and what is
sent never outruns the bucket. `refund` gives back what a request did not use
(its estimate of tokens was high, or it was never sent).

Tokens are charged as providers count them when a request arrives: the prompt
(estimated here, cautiously, then corrected by the `input_tokens` the answer
reports) plus `max_tokens`, the most it may write.
"""

from __future__ import annotations

import math

# The part of one second's worth of requests an agent sends at once: well under
# what the provider allows, so that requests whose sending was delayed (a busy
# event loop, a slow connect) and reach the server bunched together still fit in
# its bucket: half a second of lag at any rate. (With 90%, a CPU-bound run of
# 2,000 requests at 100 a second had 25 refused by the local server.)
BURST_SHARE = 0.5


class TokenBucket:
    """`capacity` at most, refilled at `rate` a second; may go into debt."""

    __slots__ = ("at", "capacity", "level", "rate")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.at = now

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount`; the seconds to wait before using it (0: now)."""
        self._refill(now)
        self.level -= amount
        return 0.0 if self.level >= 0 else -self.level / self.rate

    def refund(self, amount: float, now: float) -> None:
        """Give back `amount` taken but not used."""
        self._refill(now)
        self.level = min(self.capacity, self.level + amount)

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
            self.at = now


def requests_bucket(per_minute: float, now: float) -> TokenBucket:
    """Requests per minute, paced per second with a burst of `BURST_SHARE` of a
    second's worth (at least one request)."""
    rate = per_minute / 60.0
    return TokenBucket(rate, max(1.0, math.floor(BURST_SHARE * rate)), now)


def tokens_bucket(per_minute: float, now: float) -> TokenBucket:
    """Tokens per minute, paced per second like requests: a request bigger than
    the bucket goes once the bucket has refilled what it takes (a debt), so
    what is sent never runs ahead of the rate, whatever the requests' sizes."""
    rate = per_minute / 60.0
    return TokenBucket(rate, max(1.0, math.floor(BURST_SHARE * rate)), now)


def estimate_tokens(text: str) -> int:
    """A cautious count of `text`'s tokens before sending it: a token per three
    characters (English runs about four), plus a few for the message's framing."""
    return math.ceil(len(text) / 3) + 4
