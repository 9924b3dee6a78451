"""The FHIR door's audit records (issue 16 item 4; docs/audit.md), from a real server over a
real database: each transaction's record, the refused and failed requests', and the redacted
query."""

from __future__ import annotations

import json
from typing import Any

import pytest

from identity.audit.record import (
    DESTINATION,
    LOGIN,
    SOURCE,
    USER_AUTHENTICATION,
    AuditRecord,
)
from identity.auth import READ, WRITE
from identity.fhir.auditing import match_params, pix_params, redacted_query, redacted_reason
from identity.mpi import Mpi
from tests.fhir import test_auth
from tests.fhir.conftest import HOSPA, HOSPB, Fhir, patient
from tests.fhir.test_auth import bearer, token
from tests.fhir.test_pixm import linked_pair
from tests.fhir.test_pmir import create, message, post, statuses

A = "1.2.3.4.5.1"
B = "1.2.3.4.5.2"
NATIONAL_OID = "2.16.840.1.113883.4.1"

# the door with [auth] mode = "jwt" (tests/fhir/test_auth.py)
jwks_file = test_auth.jwks_file
secured = test_auth.secured


def cx(value: str, oid: str = A) -> str:
    return f"{value}^^^&{oid}&ISO"


async def records(mpi: Mpi) -> list[AuditRecord]:
    """Every audit record so far, in order (the queued ones written first)."""
    await mpi.audit.flush()
    async with mpi.db.read() as conn:
        rows = await conn.fetch("SELECT record FROM audit_event ORDER BY id")
    return [AuditRecord.from_json(r["record"]) for r in rows]


async def fresh(mpi: Mpi, before: int) -> list[AuditRecord]:
    return (await records(mpi))[before:]


def caller_and_us(record: AuditRecord, fhir: Fhir, client: str | None) -> None:
    """The participants of a FHIR door record: the client (id, address) and this server."""
    source = [p for p in record.participants if p.has_role(SOURCE)]
    server = [p for p in record.participants if p.has_role(DESTINATION)]
    assert len(source) == 1 and len(server) == 1, record.participants
    assert source[0].user_id == (client or "anonymous")
    assert source[0].network_id == "127.0.0.1"
    assert server[0].user_id == fhir.base
    assert record.source.id == "identity"


async def source_records(mpi: Mpi) -> int:
    async with mpi.db.read() as conn:
        count: int = await conn.fetchval("SELECT count(*) FROM source_record")
    return count


# --- the redacted query (a pure function) -------------------------------------------------


def test_a_search_is_recorded_without_the_values_searched_for() -> None:
    query = redacted_query("GET", "/fhir/Patient", [
        ("family", "Smith"), ("given", "John"), ("birthdate", "1980-03-12"),
        ("identifier", f"urn:oid:{A}|A1"), ("_count", "5"), ("gender:missing", "false"),
        ("Jane Doe 1970", "x"),
    ])  # fmt: skip
    assert query == ("GET /fhir/Patient?family=*&given=*&birthdate=*"
                     f"&identifier=urn:oid:{A}|A1&_count=5&gender:missing=*&*=*")


def test_identifier_parameters_and_controls_keep_their_values() -> None:
    query = redacted_query("GET", "/fhir/Patient/$ihe-pix", [
        ("sourceIdentifier", f"urn:oid:{A}|A 1&2"), ("targetSystem", f"urn:oid:{B}"),
        ("_format", "json")])  # fmt: skip
    assert query == (f"GET /fhir/Patient/$ihe-pix?sourceIdentifier=urn:oid:{A}|A%201%262"
                     f"&targetSystem=urn:oid:{B}&_format=json")
    assert redacted_query("GET", "/fhir/Patient/12") == "GET /fhir/Patient/12"


def test_a_post_body_is_recorded_by_its_parameter_names() -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient(HOSPA, "A1", family="Smith",
                                                 address=[{"city": "Springfield"}])},
        {"name": "onlyCertainMatches", "valueBoolean": True},
        {"name": "count", "valueInteger": 3}]}  # fmt: skip
    query = redacted_query("POST", "/fhir/Patient/$match", [], match_params(body))
    assert query == ("POST /fhir/Patient/$match\n\n"
                     f"resource.identifier=urn:oid:{A}|A1&resource.name=*&resource.birthDate=*"
                     "&resource.gender=*&resource.address=*&onlyCertainMatches=true&count=3")
    for data in ("Smith", "John", "1980", "male", "Springfield"):
        assert data not in query
    pix = {"resourceType": "Parameters", "parameter": [
        {"name": "sourceIdentifier", "valueIdentifier": {"system": HOSPA, "value": "A1"}},
        {"name": "targetSystem", "valueUri": HOSPB}]}  # fmt: skip
    assert redacted_query("POST", "/fhir/Patient/$ihe-pix", [], pix_params(pix)) == (
        f"POST /fhir/Patient/$ihe-pix\n\nsourceIdentifier={HOSPA}|A1&targetSystem={HOSPB}")
    form = redacted_query("POST", "/fhir/Patient/_search", [("_format", "json")],
                          [("family", "Smith"), ("identifier", f"{HOSPA}|A1")])
    assert form == f"POST /fhir/Patient/_search?_format=json\n\nfamily=*&identifier={HOSPA}|A1"


def test_a_reason_loses_the_values_it_quotes() -> None:
    assert redacted_reason("birthdate: not a date: '1980-13-45'") == "birthdate: not a date: '*'"
    assert redacted_reason("""unknown parameter "Smith", code 'x'""") == (
        "unknown parameter '*', code '*'")
    assert redacted_reason("x" * 600) == "x" * 500


async def test_a_failed_search_records_neither_the_value_nor_its_echo(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("GET", "/Patient", client="PDQC",
                                      params={"family": "Quist", "birthdate": "1980-13-45"})
    assert status == 400 and "1980-13-45" in body["issue"][0]["diagnostics"]
    (record,) = await records(fhir.mpi)
    assert (record.transaction, record.outcome) == ("ITI-78", 4)
    assert record.query == b"GET /fhir/Patient?family=*&birthdate=*"
    assert "not a date" in (record.outcome_description or "")
    stored = json.dumps(record.to_json())
    assert "1980" not in stored and "Quist" not in stored


# --- ITI-104 ------------------------------------------------------------------------------


async def test_iti104_create_and_update(fhir: Fhir) -> None:
    status, body, _ = await fhir.call(
        "PUT", "/Patient", patient(HOSPA, "A1"), client="ADT_A",
        params={"identifier": f"{HOSPA}|A1"}, headers={"X-Request-Id": "req-1"})
    assert status == 201
    status, _, _ = await fhir.put_patient(HOSPA, "A1", patient(HOSPA, "A1", family="Smyth"))
    assert status == 200
    created, updated = await records(fhir.mpi)
    for record, action in ((created, "C"), (updated, "U")):
        assert record.transaction == "ITI-104"
        assert record.event_id.code == "110110"
        assert record.action == action
        assert record.interaction == {"C": "create", "U": "update"}[action]
        assert record.outcome == 0
        assert record.patients == (cx("A1"),)
        assert record.resource == f"Patient/{body['id']}"
        caller_and_us(record, fhir, "ADT_A")
    assert created.message_id == "req-1" and created.message_id_kind == "X-Request-Id"


async def test_a_patients_records_are_found_by_its_identifier(fhir: Fhir) -> None:
    _, body, _ = await fhir.put_patient(HOSPA, "F1", patient(HOSPA, "F1"))
    await fhir.call("GET", f"/Patient/{body['id']}", client="PDQC")
    await fhir.mpi.audit.flush()
    status, found, _ = await fhir.call("GET", "/AuditEvent", client="AUDITOR",
                                       params={"patient": f"{HOSPA}|F1"})
    assert status == 200
    kinds = sorted(c["code"] for e in found["entry"] for c in e["resource"]["subtype"]
                   if c["code"] in ("create", "read"))  # fmt: skip
    assert kinds == ["create", "read"]


async def test_iti104_delete(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "D1", patient(HOSPA, "D1"))
    status, _, response = await fhir.call("DELETE", "/Patient", client="ADT_A",
                                          params={"identifier": f"{HOSPA}|D1"})
    assert status == 204
    record = (await records(fhir.mpi))[-1]
    assert (record.transaction, record.action, record.outcome) == ("ITI-104", "D", 0)
    assert record.interaction == "delete"
    assert record.patients == (cx("D1"),)
    assert record.message_id == response.headers["X-Request-Id"]
    caller_and_us(record, fhir, "ADT_A")


async def test_iti104_merge_is_two_records(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "S1", patient(HOSPA, "S1"))
    await fhir.put_patient(HOSPA, "R1", patient(HOSPA, "R1", family="Smyth"))
    before = len(await records(fhir.mpi))
    retired = patient(HOSPA, "R1", active=False, link=[
        {"type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "S1"}}}])
    status, body, _ = await fhir.put_patient(HOSPA, "R1", retired)
    assert status == 200, body
    gone, survivor = await fresh(fhir.mpi, before)
    assert (gone.transaction, gone.action, gone.outcome, gone.patients) == (
        "ITI-104", "D", 0, (cx("R1"),))
    assert (survivor.transaction, survivor.action, survivor.outcome, survivor.patients) == (
        "ITI-104", "U", 0, (cx("S1"),))
    assert gone.resource == f"Patient/{body['id']}"
    caller_and_us(gone, fhir, "ADT_A")
    caller_and_us(survivor, fhir, "ADT_A")


async def test_a_source_not_allowed_is_one_record_and_nothing_written(fhir: Fhir) -> None:
    status, _, _ = await fhir.put_patient(HOSPA, "X1", patient(HOSPA, "X1"), client="LIS")
    assert status == 403
    (record,) = await records(fhir.mpi)
    assert (record.transaction, record.outcome, record.patients) == ("ITI-104", 4, (cx("X1"),))
    assert "SourceNotAuthorized" in (record.outcome_description or "")
    caller_and_us(record, fhir, "LIS")
    assert await source_records(fhir.mpi) == 0


async def test_a_put_refused_by_the_door_is_recorded_once(fhir: Fhir) -> None:
    status, _, _ = await fhir.put_patient(HOSPA, "N1", {"resourceType": "Patient",
                                                        "identifier": [{"system": HOSPA,
                                                                        "value": "N1"}]})
    assert status == 400
    (record,) = await records(fhir.mpi)
    assert (record.transaction, record.action, record.outcome) == ("ITI-104", "U", 4)
    assert record.patients == (cx("N1"),)
    assert "Patient.name is required" in (record.outcome_description or "")


# --- ITI-93 -------------------------------------------------------------------------------


async def test_iti93_records_each_patient_with_action_e(fhir: Fhir) -> None:
    reply = await post(fhir, message([create("M1"), create("M2", family="Smyth")]))
    assert statuses(reply) == ["201", "201"]
    found = await records(fhir.mpi)
    assert [(r.transaction, r.action, r.outcome) for r in found] == [("ITI-93", "E", 0)] * 2
    assert [r.patients for r in found] == [(cx("M1"),), (cx("M2"),)]
    for record in found:
        caller_and_us(record, fhir, "ADT_A")


async def test_iti93_a_message_not_applied_is_recorded_for_each_entry(fhir: Fhir) -> None:
    bad = create("M4")
    bad["resource"]["active"] = False  # no replaced-by link: 422 from the door
    reply = await post(fhir, message([create("M3"), bad]))
    assert reply["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    found = await records(fhir.mpi)
    assert [(r.transaction, r.action, r.outcome, r.patients) for r in found] == [
        ("ITI-93", "E", 4, (cx("M3"),)), ("ITI-93", "E", 4, (cx("M4"),))]
    assert "not applied: entry[1] failed" in (found[0].outcome_description or "")
    assert "entry[1]" in (found[1].outcome_description or "")
    assert await source_records(fhir.mpi) == 0


def put(value: str) -> dict[str, Any]:
    return {"resource": patient(HOSPA, value),
            "request": {"method": "PUT", "url": f"Patient?identifier={HOSPA}|{value}"}}


async def test_iti93_an_entry_refused_by_the_core_is_recorded_once(fhir: Fhir) -> None:
    status, reply, _ = await fhir.call("POST", "/$process-message",
                                       message([put("M5"), put("M6")]), client="LIS")
    assert status == 200 and reply["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    found = await records(fhir.mpi)
    assert sorted((r.outcome, r.patients) for r in found) == [
        (4, (cx("M5"),)), (4, (cx("M6"),))]
    assert any("SourceNotAuthorized" in (r.outcome_description or "") for r in found)
    assert await source_records(fhir.mpi) == 0


# --- ITI-83 -------------------------------------------------------------------------------


async def test_iti83_records_the_queried_and_returned_identifiers(fhir: Fhir) -> None:
    _, _, eid = await linked_pair(fhir)
    before = len(await records(fhir.mpi))
    status, _, response = await fhir.call("GET", "/Patient/$ihe-pix", client="PIXC",
                                          params={"sourceIdentifier": f"{HOSPA}|A1"})
    assert status == 200
    (record,) = await fresh(fhir.mpi, before)
    assert (record.transaction, record.event_id.code, record.action, record.outcome) == (
        "ITI-83", "110112", "E", 0)
    assert record.interaction == "search"
    assert record.patients[0] == cx("A1")
    assert set(record.patients) == {cx("A1"), cx("B1", B), cx("123-45-6789", NATIONAL_OID),
                                    f"{eid}^^^&1.3.6.1.4.1.21367.2026.1.1&ISO"}
    assert record.query == f"GET /fhir/Patient/$ihe-pix?sourceIdentifier={HOSPA}|A1".encode()
    assert record.message_id == response.headers["X-Request-Id"]
    caller_and_us(record, fhir, "PIXC")


async def test_iti83_an_unknown_identifier_is_a_failure_record(fhir: Fhir) -> None:
    status, _, _ = await fhir.call("GET", "/Patient/$ihe-pix", client="PIXC",
                                   params={"sourceIdentifier": f"{HOSPA}|NOPE"})
    assert status == 404
    (record,) = await records(fhir.mpi)
    assert (record.transaction, record.outcome, record.patients) == (
        "ITI-83", 4, (cx("NOPE"),))
    assert "not found" in (record.outcome_description or "")


# --- ITI-78 -------------------------------------------------------------------------------


async def test_iti78_search_one_record_per_patient_without_demographics(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "P1", patient(HOSPA, "P1", family="Quist", given="Ann"))
    await fhir.put_patient(HOSPB, "P2", patient(HOSPB, "P2", family="Quist", given="Bo"),
                           client="ADT_B")
    before = len(await records(fhir.mpi))
    status, body, _ = await fhir.call("GET", "/Patient", client="PDQC", params=[
        ("family", "Quist"), ("birthdate", "1980-03-12"), ("_count", "10")])
    assert status == 200 and body["total"] == 2
    found = await fresh(fhir.mpi, before)
    assert [(r.transaction, r.action, r.outcome, r.interaction) for r in found] == [
        ("ITI-78", "E", 0, "search")] * 2
    assert sorted(r.patients for r in found) == [(cx("P1"),), (cx("P2", B),)]
    for record in found:
        assert record.query == b"GET /fhir/Patient?family=*&birthdate=*&_count=10"
        caller_and_us(record, fhir, "PDQC")
    stored = json.dumps([r.to_json() for r in found])
    for data in ("Quist", "1980", "Ann"):
        assert data not in stored
    # nobody found: one record without a patient
    status, body, _ = await fhir.call("GET", "/Patient", client="PDQC",
                                      params={"family": "Nobody"})
    assert status == 200 and body["total"] == 0
    (none,) = await fresh(fhir.mpi, before + 2)
    assert none.patients == () and none.query == b"GET /fhir/Patient?family=*"


async def test_iti78_post_search_records_the_form_by_name(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "P3", patient(HOSPA, "P3", family="Quist"))
    before = len(await records(fhir.mpi))
    async with fhir.session.post(fhir.base + "/Patient/_search",
                                 data={"family": "Quist", "identifier": f"{HOSPA}|P3"},
                                 headers={"X-Client-Id": "PDQC"}) as response:
        assert response.status == 200
    (record,) = await fresh(fhir.mpi, before)
    assert record.query == f"POST /fhir/Patient/_search\n\nfamily=*&identifier={HOSPA}|P3".encode()
    assert record.patients == (cx("P3"),)


async def test_iti78_read_and_its_failure(fhir: Fhir) -> None:
    _, body, _ = await fhir.put_patient(HOSPA, "R7", patient(HOSPA, "R7"))
    before = len(await records(fhir.mpi))
    status, _, _ = await fhir.call("GET", f"/Patient/{body['id']}", client="PDQC")
    assert status == 200
    status, _, _ = await fhir.call("GET", "/Patient/999999", client="PDQC")
    assert status == 404
    read, missing = await fresh(fhir.mpi, before)
    assert (read.transaction, read.event_id.code, read.action, read.outcome) == (
        "ITI-78", "110110", "R", 0)
    assert read.interaction == "read"
    assert read.patients == (cx("R7"),) and read.resource == f"Patient/{body['id']}"
    caller_and_us(read, fhir, "PDQC")
    assert (missing.transaction, missing.action, missing.outcome, missing.patients) == (
        "ITI-78", "R", 4, ())
    assert missing.resource == "Patient/999999"


# --- ITI-119 ------------------------------------------------------------------------------


async def test_iti119_one_record_per_patient_returned(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "Q1", patient(HOSPA, "Q1", family="Varga", given="Eva"))
    before = len(await records(fhir.mpi))
    query = patient(HOSPB, "Q9", family="Varga", given="Eva")
    status, body, _ = await fhir.call(
        "POST", "/Patient/$match", {"resourceType": "Parameters", "parameter": [
            {"name": "resource", "resource": query}, {"name": "count", "valueInteger": 5}]},
        client="MATCHER")  # fmt: skip
    assert status == 200 and body["total"] >= 1
    found = await fresh(fhir.mpi, before)
    assert len(found) == body["total"]
    assert [(r.transaction, r.action, r.outcome, r.interaction) for r in found][0] == (
        "ITI-119", "E", 0, "operation")
    assert found[0].patients == (cx("Q1"),)
    text = (found[0].query or b"").decode()
    assert text.startswith("POST /fhir/Patient/$match\n\n")
    assert f"resource.identifier={HOSPB}|Q9" in text and "resource.name=*" in text
    for data in ("Varga", "Eva", "1980"):
        assert data not in text
    caller_and_us(found[0], fhir, "MATCHER")


# --- refusals of the access control ------------------------------------------------------


async def test_a_401_is_an_authentication_failure_without_the_token(secured: Fhir) -> None:
    expired = token(expires_in=-3600)
    status, _, _ = await secured.call("GET", "/Patient", params={"family": "Smith"},
                                      headers=bearer(expired))
    assert status == 401
    (record,) = await records(secured.mpi)
    assert record.event_id == USER_AUTHENTICATION
    assert record.event_types[0] == LOGIN
    assert [c.code for c in record.event_types] == ["110122", "ITI-78"]
    assert (record.transaction, record.outcome) == ("ITI-78", 4)
    assert "expired" in (record.outcome_description or "")
    caller_and_us(record, secured, None)
    stored = json.dumps(record.to_json())
    assert expired not in stored and expired.split(".")[1] not in stored


async def test_a_missing_scope_is_a_refused_transaction(secured: Fhir) -> None:
    status, _, _ = await secured.put_patient(HOSPA, "T1", patient(HOSPA, "T1"))
    assert status == 401  # no token at all
    status, _, _ = await secured.call(
        "PUT", "/Patient", patient(HOSPA, "T1"), params={"identifier": f"{HOSPA}|T1"},
        headers=bearer(token(scope=READ)))
    assert status == 403
    no_token, refused = await records(secured.mpi)
    assert (no_token.event_id, no_token.transaction) == (USER_AUTHENTICATION, "ITI-104")
    assert (refused.transaction, refused.event_id.code, refused.action, refused.outcome) == (
        "ITI-104", "110110", "U", 4)
    assert refused.patients == (cx("T1"),)
    assert WRITE in (refused.outcome_description or "")
    caller_and_us(refused, secured, "ADT_A")
    assert await source_records(secured.mpi) == 0


async def test_a_token_of_a_person_names_the_human_requestor(secured: Fhir) -> None:
    await secured.put_patient(HOSPA, "H1", patient(HOSPA, "H1"))  # 401: no token
    status, _, _ = await secured.call(
        "GET", "/Patient", params={"identifier": f"{HOSPA}|H1"},
        headers=bearer(token(scope=READ, client="portal", sub="dr.who",
                             extensions={"ihe_iua": {"subject_name": "Dr Who"}})))
    assert status == 200
    record = (await records(secured.mpi))[-1]
    assert record.transaction == "ITI-78" and record.requestor == "dr.who"
    person = next(p for p in record.participants if p.human)
    assert person.user_name == "Dr Who" and person.requestor
    assert [r.code for r in person.roles] == [READ]
    assert record.agent == "portal"
    # a token of a system (sub is its own service account) names no person
    status, _, _ = await secured.call("GET", "/Patient", params={"identifier": f"{HOSPA}|H1"},
                                      headers=bearer(token(scope=READ)))
    assert (await records(secured.mpi))[-1].requestor is None


@pytest.mark.parametrize("scope", [WRITE])
async def test_an_audit_event_search_refused_is_recorded(secured: Fhir, scope: str) -> None:
    status, _, _ = await secured.call("GET", "/AuditEvent", headers=bearer(token(scope=scope)))
    assert status == 403
    (record,) = await records(secured.mpi)
    assert (record.transaction, record.event_id.code, record.outcome) == ("audit-log", "110101", 4)
