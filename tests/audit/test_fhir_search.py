"""GET /fhir/AuditEvent on a small aiohttp app over a real database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fhir.resources.R4B.bundle import Bundle

from identity.audit.record import AuditRecord
from identity.config import Settings
from identity.fhir.audit import add_audit_routes, date_bounds
from identity.fhir.wire import FhirError, error_middleware
from identity.mpi.audit import AuditTrail
from identity.store.audit import AuditStore
from identity.store.db import Database

from .helpers import (
    AT,
    HOSPA,
    feed,
    pdq_query,
    pix_query,
    pixm_feed,
    pixm_query,
    refused_feed,
    refused_query,
    steward_link,
)


def corpus() -> list[AuditRecord]:
    records = [feed("C"), feed("U"), pix_query(), *pdq_query(), pixm_query(), pixm_feed("C"),
               refused_feed(), refused_query(), steward_link()]  # fmt: skip
    return [replace(r, recorded=AT + timedelta(hours=i)) for i, r in enumerate(records)]


@dataclass
class Api:
    base: str
    session: aiohttp.ClientSession
    ids: list[int]

    async def get(self, path: str, params: Any = None, headers: dict[str, str] | None = None,
                  ) -> tuple[int, Any]:  # fmt: skip
        url = path if path.startswith("http") else self.base + path
        async with self.session.get(url, params=params, headers=headers) as response:
            text = await response.text()
            if response.content_type.endswith("xml"):
                return response.status, text
            return response.status, json.loads(text) if text else None

    async def found(self, **params: str) -> list[int]:
        status, bundle = await self.get("/AuditEvent", {**params, "_count": "100"})
        assert status == 200, bundle
        Bundle.model_validate(bundle)
        return [int(e["resource"]["id"]) for e in bundle.get("entry", [])]


async def refuse_without_scope(request: web.Request) -> str | None:
    if request.headers.get("Authorization") != "Bearer audit":
        raise FhirError(403, "forbidden", "the audit scope is needed")
    return "AUDITOR_APP"


async def serve(db: Database, settings: Settings, **kw: Any) -> AsyncIterator[Api]:
    async with db.transaction() as conn:
        ids = await AuditStore(conn).insert(corpus())
    fhir = web.Application(middlewares=[error_middleware])
    add_audit_routes(fhir, AuditTrail(db, settings), settings, **kw)
    app = web.Application()
    app.add_subapp("/fhir", fhir)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{port}/fhir", session, ids)
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(db: Database, make_settings: Callable[..., Settings]) -> AsyncIterator[Api]:
    async for served in serve(db, make_settings(), record_access=False):
        yield served


async def test_search_by_each_parameter(api: Api) -> None:
    ids = api.ids
    newest_first = sorted(ids, reverse=True)
    assert await api.found() == newest_first
    hospa = f"urn:oid:{HOSPA}"
    assert await api.found(patient=f"{hospa}|HA1001") == [ids[i] for i in (9, 7, 5, 3, 2, 1, 0)]
    assert await api.found(**{"patient:identifier": "HOSPB|B-77001"}) == [ids[9], ids[4]]
    assert await api.found(patient=f"{hospa}|nobody") == []
    assert await api.found(date=["ge2026-12-03T04:00Z", "lt2026-12-03T06:00Z"]) == [ids[3],
                                                                                    ids[2]]
    assert await api.found(date="2026-12-03T05:28:40.123Z") == [ids[3]]
    assert await api.found(date="2026-12") == newest_first
    assert await api.found(date="gt2026-12-03") == []
    assert await api.found(type="110110") == [ids[9], ids[7], ids[1], ids[0]]
    assert await api.found(
        type="http://terminology.hl7.org/CodeSystem/audit-event-type|rest"
    ) == [ids[8], ids[6], ids[5]]
    assert await api.found(type="http://dicom.nema.org/resources/ontology/DCM|rest") == []
    assert await api.found(subtype="urn:ihe:event-type-code|ITI-9") == [ids[2]]
    assert await api.found(subtype="ITI-21,ITI-83") == [ids[5], ids[4], ids[3]]
    assert await api.found(subtype="steward-link") == [ids[9]]
    assert await api.found(outcome="4") == [ids[8], ids[7]]
    assert await api.found(agent="ADT_A|HOSPA") == [ids[1], ids[0]]
    assert await api.found(agent="steward.sue") == [ids[9]]
    assert await api.found(patient=f"{hospa}|HA1001", outcome="0", type="110110") == [
        ids[9], ids[1], ids[0]]


async def test_agent_token_form(api: Api) -> None:
    """``agent`` matches as a whole string (an HL7 source is ``APP|FACILITY``) or as a token
    by its value."""
    assert await api.found(agent="|ADT_A|HOSPA") == [api.ids[1], api.ids[0]]
    assert await api.found(agent="urn:x|steward.sue") == [api.ids[9]]


async def test_entries_are_audit_events_and_paging_follows_next(api: Api) -> None:
    status, bundle = await api.get("/AuditEvent", {"_count": "4", "outcome": "0,4"})
    assert status == 200
    Bundle.model_validate(bundle)
    assert bundle["type"] == "searchset" and "total" not in bundle
    seen = []
    pages = 0
    while True:
        pages += 1
        for entry in bundle.get("entry", []):
            assert entry["fullUrl"].endswith(f"/AuditEvent/{entry['resource']['id']}")
            assert entry["resource"]["resourceType"] == "AuditEvent"
            seen.append(int(entry["resource"]["id"]))
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        assert "outcome=0%2C4" in links["self"]
        if "next" not in links:
            break
        status, bundle = await api.get(links["next"])
        assert status == 200
    assert seen == sorted(api.ids, reverse=True) and pages == 3


async def test_read_one(api: Api) -> None:
    status, event = await api.get(f"/AuditEvent/{api.ids[2]}")
    assert status == 200 and event["id"] == str(api.ids[2])
    assert event["subtype"][0]["code"] == "ITI-9"
    status, outcome = await api.get("/AuditEvent/999999999")
    assert status == 404 and outcome["resourceType"] == "OperationOutcome"
    status, _ = await api.get("/AuditEvent/abc")
    assert status == 404


async def test_xml(api: Api) -> None:
    status, text = await api.get("/AuditEvent", {"subtype": "ITI-9", "_format": "xml"})
    assert status == 200 and "<AuditEvent" in text and 'value="ITI-9"' in text


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"date": "2026-13"}, None),
        ({"date": "ne2026-12-03"}, None),
        ({"date": "yesterday"}, None),
        ({"outcome": "3"}, None),
        ({"patient": "HA1001"}, None),
        ({"patient": "Patient/12"}, None),
        ({"_count": "-1"}, None),
        ({"_after": "x"}, None),
        ({"date": "2026-12-03T04"}, None),
        ({"type": "110110", "unknown": "1"}, {"Prefer": "handling=strict"}),
    ],
)
async def test_bad_requests_are_400(api: Api, params: dict[str, str],
                                    headers: dict[str, str] | None) -> None:  # fmt: skip
    status, outcome = await api.get("/AuditEvent", params, headers)
    assert status == 400, outcome
    assert outcome["resourceType"] == "OperationOutcome"


async def test_unknown_parameters_are_ignored_without_strict(api: Api) -> None:
    status, bundle = await api.get("/AuditEvent", {"subtype": "ITI-9", "color": "red"})
    assert status == 200 and len(bundle["entry"]) == 1
    assert "color" not in bundle["link"][0]["url"]


def test_date_bounds() -> None:
    from datetime import UTC, datetime

    day = datetime(2026, 12, 3, tzinfo=UTC)
    assert date_bounds("2026-12-03") == (day, day + timedelta(days=1))
    assert date_bounds("ge2026-12-03") == (day, None)
    assert date_bounds("gt2026-12-03") == (day + timedelta(days=1), None)
    assert date_bounds("le2026-12-03") == (None, day + timedelta(days=1))
    assert date_bounds("lt2026-12-03") == (None, day)
    assert date_bounds("2026") == (datetime(2026, 1, 1, tzinfo=UTC),
                                   datetime(2027, 1, 1, tzinfo=UTC))  # fmt: skip
    assert date_bounds("2026-12")[1] == datetime(2027, 1, 1, tzinfo=UTC)
    low, high = date_bounds("2026-12-03T10:00+02:00")
    assert low == datetime(2026, 12, 3, 8, 0, tzinfo=UTC) and high - low == timedelta(minutes=1)


async def test_the_authorize_hook_and_audit_log_used(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    async for api in serve(db, make_settings(), authorize=refuse_without_scope):
        status, outcome = await api.get("/AuditEvent")
        assert status == 403 and outcome["issue"][0]["code"] == "forbidden"
        auth = {"Authorization": "Bearer audit", "X-Request-Id": "rq-1"}
        status, bundle = await api.get("/AuditEvent", {"subtype": "ITI-9"}, auth)
        assert status == 200 and len(bundle["entry"]) == 1
        status, bundle = await api.get("/AuditEvent", {"type": "110101"}, auth)
        [used] = [e["resource"] for e in bundle["entry"]]
        Bundle.model_validate(bundle)
        assert used["type"]["code"] == "110101" and used["action"] == "R"
        client = [a for a in used["agent"] if a["type"]["coding"][0]["code"] == "110153"][0]
        assert client["who"]["identifier"]["value"] == "AUDITOR_APP"
        assert client["network"]["address"] == "127.0.0.1"
        log = [e for e in used["entity"] if e["type"]["code"] == "2" and
               e.get("role", {}).get("code") == "13"][0]  # fmt: skip
        assert log["what"]["display"].endswith("/fhir/AuditEvent")
        status, bundle = await api.get("/AuditEvent", {"agent": "AUDITOR_APP"}, auth)
        assert len(bundle["entry"]) == 2  # the two searches before this one
