"""The scorer's connection guards that need no server: the protocol factory and the
open-file limit (the deadline itself is tested against real uvicorn in
tests/integration/test_serving_hostile.py)."""

from __future__ import annotations

import math
import resource
from collections.abc import Iterator

import pytest

from churn_assets.limits import DEFAULT_HEADER_TIMEOUT_SECONDS
from churn_assets.serving.connections import (
    PROTOCOLS,
    H11HeaderTimeout,
    header_timeout_protocol,
    raise_open_file_limit,
)


@pytest.mark.parametrize("seconds", [0.0, -1.0, math.nan, math.inf])
def test_header_timeout_protocol_refuses_a_timeout_that_is_not_positive_and_finite(
    seconds: float,
) -> None:
    with pytest.raises(ValueError, match="must be a finite number of seconds > 0"):
        header_timeout_protocol(seconds)


def test_header_timeout_protocol_picks_uvicorns_parser_and_carries_the_timeout() -> None:
    auto = header_timeout_protocol()
    expected = PROTOCOLS.get("httptools", H11HeaderTimeout)  # uvicorn's "auto" choice
    assert issubclass(auto, expected)
    assert auto.header_timeout == DEFAULT_HEADER_TIMEOUT_SECONDS
    h11 = header_timeout_protocol(2.5, "h11")
    assert issubclass(h11, H11HeaderTimeout)
    assert h11.header_timeout == 2.5
    assert H11HeaderTimeout.header_timeout == DEFAULT_HEADER_TIMEOUT_SECONDS  # untouched


@pytest.fixture
def lowered_soft_limit() -> Iterator[int]:
    """The soft open-file limit one below the hard one (restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 2:
        pytest.skip(f"no finite hard open-file limit to raise to ({hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard - 1, hard))
    yield hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raise_open_file_limit_lifts_the_soft_limit_to_the_hard_one(
    lowered_soft_limit: int,
) -> None:
    # Each held connection is a file descriptor: a soft limit of 1,024 ends the service
    # at ~1,000 of them, while the hard limit is usually far higher.
    assert raise_open_file_limit() == lowered_soft_limit
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (lowered_soft_limit, lowered_soft_limit)
    assert raise_open_file_limit() == lowered_soft_limit  # already there: no change
