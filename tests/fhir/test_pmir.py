"""PMIR ITI-93 Mobile Patient Identity Feed, on a real socket."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle

from identity.fhir.pmir import FEED_EVENT, RESPONSE_EVENT
from tests.fhir.conftest import HOSPA, Fhir, patient

HISTORY = "urn:uuid:22222222-2222-2222-2222-222222222222"


def message(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "message",
        "entry": [
            {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
             "resource": {"resourceType": "MessageHeader", "id": "hdr-1",
                          "eventUri": FEED_EVENT,
                          "source": {"endpoint": "http://example.org/source"},
                          "focus": [{"reference": HISTORY}]}},
            {"fullUrl": HISTORY,
             "resource": {"resourceType": "Bundle", "type": "history", "entry": entries}},
        ],
    }


def create(value: str, **kw: Any) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:00000000-0000-0000-0000-00000000000{value[-1]}",
            "resource": patient(HOSPA, value, **kw),
            "request": {"method": "POST", "url": "Patient"},
            "response": {"status": "201"}}


async def post(fhir: Fhir, body: dict[str, Any], status: int = 200) -> Any:
    got, reply, _ = await fhir.call("POST", "/$process-message", body, client="ADT_A")
    assert got == status, reply
    if status == 200:
        Bundle.model_validate(reply)
        assert reply["type"] == "message"
        header = reply["entry"][0]["resource"]
        assert header["eventUri"] == RESPONSE_EVENT
        assert header["response"]["identifier"] == "hdr-1"
    return reply


def statuses(reply: Any) -> list[str]:
    return [e["response"]["status"] for e in reply["entry"][1]["resource"]["entry"]]


async def test_create_update_merge_delete_in_messages(fhir: Fhir) -> None:
    reply = await post(fhir, message([create("M1"), create("M2", family="Smyth")]))
    assert reply["entry"][0]["resource"]["response"]["code"] == "ok"
    assert statuses(reply) == ["201", "201"]
    ids = [e["resource"]["id"] for e in reply["entry"][1]["resource"]["entry"]]

    update = {"fullUrl": f"{fhir.base}/Patient/{ids[0]}",
              "resource": patient(HOSPA, "M1", family="Smithe"),
              "request": {"method": "PUT", "url": f"Patient/{ids[0]}"},
              "response": {"status": "200"}}
    reply = await post(fhir, message([update]))
    assert statuses(reply) == ["200"]
    assert reply["entry"][1]["resource"]["entry"][0]["resource"]["name"][0]["family"] == "Smithe"

    merge = {"fullUrl": f"{fhir.base}/Patient/{ids[1]}",
             "resource": patient(HOSPA, "M2", active=False, link=[
                 {"type": "replaced-by", "other": {"reference": f"Patient/{ids[0]}"}}]),
             "request": {"method": "PUT", "url": f"Patient?identifier={HOSPA}|M2"},
             "response": {"status": "200"}}
    reply = await post(fhir, message([merge]))
    assert statuses(reply) == ["200"]
    merged = reply["entry"][1]["resource"]["entry"][0]["resource"]
    assert merged["active"] is False and merged["link"][0]["type"] == "replaced-by"

    # unmerge (a PUT of the merged patient as active) is refused
    unmerge = {**merge, "resource": patient(HOSPA, "M2")}
    reply = await post(fhir, message([unmerge]))
    assert reply["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    assert statuses(reply) == ["422"]

    delete = {"request": {"method": "DELETE", "url": f"Patient/{ids[0]}"},
              "response": {"status": "200"}}
    reply = await post(fhir, message([delete]))
    assert statuses(reply) == ["204"]
    status, _, _ = await fhir.call("GET", f"/Patient/{ids[0]}")
    assert status == 410


async def test_a_failed_entry_applies_nothing(fhir: Fhir) -> None:
    """The message is atomic: the create before the failed entry is rolled back too."""
    bad = create("M3")
    bad["resource"]["identifier"] = [{"system": "urn:oid:1.2.3.4.5.2", "value": "X"}]
    reply = await post(fhir, message([create("M4"), bad, create("M6")]))
    assert statuses(reply) == ["409", "403", "409"]
    header = reply["entry"][0]["resource"]
    assert header["response"]["code"] == "fatal-error"
    outcome = reply["entry"][2]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert "entry[1]" in outcome["issue"][0]["diagnostics"]
    for value in ("M4", "M6"):
        status, _, _ = await fhir.call("GET", f"/Patient?identifier={HOSPA}|{value}")
        assert status == 200
        _, found, _ = await fhir.call("GET", f"/Patient?identifier={HOSPA}|{value}")
        assert found["total"] == 0, found


async def test_later_entries_see_earlier_ones(fhir: Fhir) -> None:
    """Inside one message, a merge may name a patient created by an earlier entry."""
    survivor, retired = create("M7"), create("M8", family="Smyth")
    merge = {"resource": patient(HOSPA, "M8", family="Smyth", active=False, link=[
                 {"type": "replaced-by", "other": {"identifier": {"system": HOSPA,
                                                                  "value": "M7"}}}]),
             "request": {"method": "PUT", "url": f"Patient?identifier={HOSPA}|M8"}}
    reply = await post(fhir, message([survivor, retired, merge]))
    assert reply["entry"][0]["resource"]["response"]["code"] == "ok", reply
    assert statuses(reply) == ["201", "201", "200"]
    merged = reply["entry"][1]["resource"]["entry"][2]["resource"]
    assert merged["active"] is False and merged["link"][0]["type"] == "replaced-by"
    status, read, _ = await fhir.call("GET", f"/Patient/{merged['id']}")
    assert status == 200 and read["active"] is False


async def test_wrong_event_or_shape_is_400(fhir: Fhir) -> None:
    body = message([create("M5")])
    body["entry"][0]["resource"]["eventUri"] = "urn:example:other"
    await post(fhir, body, status=400)
    await post(fhir, {"resourceType": "Bundle", "type": "collection"}, status=400)
    await post(fhir, {"resourceType": "Bundle", "type": "message", "entry": "nope"}, status=400)
