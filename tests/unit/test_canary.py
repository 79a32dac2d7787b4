"""Who the canary serves: a stable, proportional choice of customers by id."""

from __future__ import annotations

import hashlib

import pytest

from churn_assets.serving.challenger import canary_bucket, in_canary

IDS = [f"customer-{i}" for i in range(20_000)]


def test_bucket_is_the_first_eight_bytes_of_the_ids_sha256() -> None:
    digest = hashlib.sha256(b"c42").digest()
    assert canary_bucket("c42") == int.from_bytes(digest[:8], "big") % 10_000


@pytest.mark.parametrize("percent", [1.0, 10.0, 33.3])
def test_the_canary_holds_its_share_of_customers(percent: float) -> None:
    share = sum(in_canary(c, percent) for c in IDS) / len(IDS)
    # binomial standard error at 20,000 ids is at most 0.35 points: 4 of them
    assert share == pytest.approx(percent / 100, abs=0.014)


def test_raising_the_share_only_adds_customers() -> None:
    at_5 = {c for c in IDS if in_canary(c, 5.0)}
    at_10 = {c for c in IDS if in_canary(c, 10.0)}
    assert at_5 < at_10


def test_zero_and_a_hundred_percent_are_none_and_all() -> None:
    assert not any(in_canary(c, 0.0) for c in IDS)
    assert all(in_canary(c, 100.0) for c in IDS)
