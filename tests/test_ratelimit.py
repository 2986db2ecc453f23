"""The token buckets of API agents (fleetdeck.ratelimit), in virtual time."""

from __future__ import annotations

import pytest

from fleetdeck.ratelimit import TokenBucket, estimate_tokens, requests_bucket, tokens_bucket


def test_reservations_queue_and_never_outrun_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, capacity=3.0, now=0.0)
    waits = [bucket.reserve(1, 0.0) for _ in range(6)]
    # Three at once (the burst), then one each tenth of a second, in order.
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])
    # Over any stretch of time, what is sent is at most the burst plus the rate's worth.
    sent_by = sorted(waits)
    for start in sent_by:
        within = [t for t in sent_by if start <= t < start + 0.25]
        assert len(within) <= 3 + 0.25 * 10


def test_a_request_bigger_than_the_bucket_waits_for_the_refill() -> None:
    bucket = TokenBucket(rate=100.0, capacity=90.0, now=0.0)
    assert bucket.reserve(500, 0.0) == pytest.approx(4.1)
    assert bucket.reserve(100, 4.1) == pytest.approx(1.0)


def test_refunds_give_back_up_to_the_capacity() -> None:
    bucket = TokenBucket(rate=1.0, capacity=10.0, now=0.0)
    assert bucket.reserve(10, 0.0) == 0
    bucket.refund(4, 0.0)
    assert bucket.reserve(4, 0.0) == 0 and bucket.reserve(1, 0.0) == pytest.approx(1.0)
    bucket.refund(100, 50.0)
    assert bucket.level == 10


def test_the_bursts_stay_at_half_a_second_of_the_providers_limit() -> None:
    assert requests_bucket(6000, 0.0).capacity == 50  # of 100 a second
    assert requests_bucket(30, 0.0).capacity == 1  # at least one request
    assert tokens_bucket(60_000, 0.0).capacity == 500


def test_the_estimate_is_cautious() -> None:
    # The local server counts a token per four characters, providers about as many.
    for text in ("", "hi", "Write the release notes for 2.0", "x" * 4000):
        assert estimate_tokens(text) >= -(-len(text) // 4)
