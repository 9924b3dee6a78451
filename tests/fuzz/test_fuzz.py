"""A short, bounded and reproducible run of every fuzz target (docs/fuzzing.md).

The same targets and strategies as ``python -m fuzz``, with few examples and a derandomized
hypothesis (the same inputs on every run), so that the suite stays quick and a failure here is
reproducible; the long, random runs are the runner's. The live targets run over the real
PostgreSQL of tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given

from fuzz import live, strategies
from fuzz.run import HANG_SECONDS, hypothesis_settings, watchdog
from fuzz.targets import TARGETS
from identity.mpi import Mpi

PURE_EXAMPLES = 100
LIVE_EXAMPLES = 25


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_pure_target(name: str) -> None:
    target = TARGETS[name]

    @hypothesis_settings(PURE_EXAMPLES, derandomize=True)
    @given(target.strategy())
    def run(value: Any) -> None:
        with watchdog(HANG_SECONDS):
            target.check(value)

    run()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_takes_its_seeds(name: str) -> None:
    """Every seed passes its target, through the atheris byte form as well."""
    target = TARGETS[name]
    if target.from_bytes is None or target.seed_bytes is None:
        pytest.skip("no byte-level form")
    for seed in target.seed_bytes():
        value = target.from_bytes(seed)
        assert value is not None
        target.check(value)


@pytest.fixture
async def door(mpi: Mpi) -> AsyncIterator[live.Live]:
    async with live.serve(mpi) as served:
        yield served


@hypothesis_settings(LIVE_EXAMPLES, derandomize=True)
@given(raw=strategies.hl7_messages(fresh_control_id=True))
async def test_hl7_door(door: live.Live, raw: bytes) -> None:
    await live.check_hl7_door(door, raw)


@hypothesis_settings(LIVE_EXAMPLES, derandomize=True)
@given(request=strategies.http_requests())
async def test_fhir_http(door: live.Live, request: dict[str, Any]) -> None:
    await live.check_fhir_http(door, request)
