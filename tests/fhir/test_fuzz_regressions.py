"""Defects the fuzzers found in the FHIR door (docs/fuzzing.md), each with the input that showed
it, on a real socket: every one was a 500 and is now a 4xx OperationOutcome."""

from __future__ import annotations

from typing import Any

from tests.fhir.conftest import Fhir


async def refused(fhir: Fhir, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, reply, _ = await fhir.call(method, path, body, **kw)
    assert 400 <= status < 500, (status, reply)
    assert reply["resourceType"] == "OperationOutcome"
    return reply


async def test_birthdate_prefix_past_the_calendar_is_400(fhir: Fhir) -> None:
    # lt0001-01-01 and gt9999-12-31: the day before / after overflowed Python's date.
    for value in ("lt0001-01-01", "eb0001", "gt9999-12-31", "sa9999"):
        reply = await refused(fhir, "GET", "/Patient",
                              params=[("address-city", "X"), ("birthdate", value)])
        assert "out of range" in reply["issue"][0]["diagnostics"]
