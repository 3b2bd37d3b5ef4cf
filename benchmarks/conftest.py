"""What every benchmark module shares."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def timed(request: pytest.FixtureRequest) -> bool:
    """Whether the benchmarks run for real (``make bench``) rather than once for correctness
    (``make test`` passes ``--benchmark-disable``): smoke runs use small sizes and never
    judge a budget."""
    return not request.config.getoption("benchmark_disable")
