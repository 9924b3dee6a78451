"""Plain FHIR REST on Patient (issue 18 item 1): create, update and delete by id, history,
conditional create and batch/transaction Bundles, over a real socket."""

from __future__ import annotations

import asyncio
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient

from identity.auth import READ
from tests.fhir import test_auth
from tests.fhir.conftest import HOSPA, HOSPB, MPI_SYSTEM, NATIONAL, Fhir, patient
from tests.fhir.test_audit_hooks import cx, fresh, records
from tests.fhir.test_pixm import outcome
from tests.fhir.test_pmir import create as pmir_create
from tests.fhir.test_pmir import message, statuses


def own(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["system"], i["value"]) for i in body.get("identifier", [])
            if i["system"] != MPI_SYSTEM]


async def post(fhir: Fhir, resource: dict[str, Any], client: str = "ADT_A",
               **headers: str) -> tuple[int, Any, Any]:  # fmt: skip
    return await fhir.call("POST", "/Patient", resource, client=client, headers=headers)


# --- create -------------------------------------------------------------------------------


async def test_post_patient_creates_the_record_in_its_identifiers_domain(fhir: Fhir) -> None:
    status, body, response = await post(fhir, patient(HOSPA, "C1", "Carlsen", "Carl"))
    assert status == 201, body
    Patient.model_validate(body)
    assert response.headers["Location"].endswith(f"/Patient/{body['id']}/_history/1")
    assert response.headers["ETag"] == 'W/"1"' and body["meta"]["versionId"] == "1"
    assert (HOSPA, "C1") in own(body)
    status, read, _ = await fhir.call("GET", f"/Patient/{body['id']}")
    assert status == 200 and read["name"][0]["family"] == "Carlsen"


async def test_post_of_an_identifier_already_registered_returns_it_unchanged(
    fhir: Fhir,
) -> None:
    _, first, _ = await post(fhir, patient(HOSPA, "C2", "Carlsen"))
    status, again, response = await post(fhir, patient(HOSPA, "C2", "Other"))
    assert status == 200
    assert again["id"] == first["id"] and again["name"][0]["family"] == "Carlsen"
    assert again["meta"]["versionId"] == "1" and "Location" not in response.headers


async def test_concurrent_creates_of_one_identifier_make_one_record(fhir: Fhir) -> None:
    """Six clients create the same Patient at once (a retrying client, two desks): one 201,
    five 200 with that record, one record in the index."""
    results = await asyncio.gather(
        *[post(fhir, patient(HOSPA, "RACE1", "Racer")) for _ in range(6)])
    assert sorted(status for status, _, _ in results) == [200] * 5 + [201]
    assert len({body["id"] for _, body, _ in results}) == 1
    found = (await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|RACE1"}))[1]
    assert found["total"] == 1


async def test_post_in_a_domain_the_client_may_not_assign_in_is_403(fhir: Fhir) -> None:
    status, body, _ = await post(fhir, patient(HOSPA, "C3"), client="ADT_B")
    assert status == 403
    outcome(body, "forbidden")
    status, _, _ = await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|C3"})
    found = (await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|C3"}))[1]
    assert found["total"] == 0


async def test_conditional_create_with_if_none_exist(fhir: Fhir) -> None:
    _, a, _ = await post(fhir, patient(HOSPA, "C4", "Ibsen", "Ida", "1950-01-01"))
    status, same, _ = await post(fhir, patient(HOSPA, "C5", "Ibsen", "Ida", "1950-01-01"),
                                 **{"If-None-Exist": "family=ibsen&birthdate=1950-01-01"})
    assert status == 200 and same["id"] == a["id"]
    status, created, _ = await post(fhir, patient(HOSPA, "C5", "Ibsen", "Ida", "1950-01-01"),
                                    **{"If-None-Exist": f"identifier={HOSPA}|C5"})
    assert status == 201 and created["id"] != a["id"]
    status, body, _ = await post(fhir, patient(HOSPA, "C6", "Ibsen"),
                                 **{"If-None-Exist": "family=ibsen"})
    assert status == 412
    outcome(body, "multiple-matches")


# --- update and delete by id --------------------------------------------------------------


async def test_put_by_id_updates_the_record_and_honours_if_match(fhir: Fhir) -> None:
    _, body, _ = await post(fhir, patient(HOSPA, "U1", "Undset", "Una", "1960-02-02"))
    changed = {**body, "birthDate": "1960-02-03"}
    status, updated, response = await fhir.call("PUT", f"/Patient/{body['id']}", changed,
                                                client="ADT_A", headers={"If-Match": 'W/"1"'})
    assert status == 200, updated
    assert updated["birthDate"] == "1960-02-03" and updated["meta"]["versionId"] == "2"
    assert response.headers["ETag"] == 'W/"2"'
    # the enterprise identifier and links read back are accepted and not stored as given
    assert own(updated) == [(HOSPA, "U1")]
    status, stale, _ = await fhir.call("PUT", f"/Patient/{body['id']}", changed,
                                       client="ADT_A", headers={"If-Match": 'W/"1"'})
    assert status == 412
    outcome(stale, "conflict")


async def test_put_by_id_refuses_what_is_not_an_update_of_that_record(fhir: Fhir) -> None:
    _, body, _ = await post(fhir, patient(HOSPA, "U2"))
    rid = body["id"]
    status, _, _ = await fhir.call("PUT", f"/Patient/{rid}", {**body, "id": "999"},
                                   client="ADT_A")
    assert status == 400
    status, _, _ = await fhir.call("PUT", "/Patient/999999", {**body, "id": "999999"},
                                   client="ADT_A")
    assert status == 404
    renamed = {**body, "identifier": [{"system": HOSPA, "value": "U3"}]}
    status, _, _ = await fhir.call("PUT", f"/Patient/{rid}", renamed, client="ADT_A")
    assert status == 422
    status, _, _ = await fhir.call("PUT", f"/Patient/{rid}", body, client="ADT_B")
    assert status == 403


async def test_delete_by_id_removes_the_record_and_is_idempotent(fhir: Fhir) -> None:
    _, body, _ = await post(fhir, patient(HOSPA, "D1"))
    status, _, _ = await fhir.call("DELETE", f"/Patient/{body['id']}", client="ADT_A")
    assert status == 204
    status, gone, _ = await fhir.call("GET", f"/Patient/{body['id']}")
    assert status == 410
    outcome(gone, "deleted")
    status, _, _ = await fhir.call("DELETE", f"/Patient/{body['id']}", client="ADT_A")
    assert status == 204
    status, _, _ = await fhir.call("DELETE", "/Patient/999999", client="ADT_A")
    assert status == 404


async def test_create_update_delete_by_id_are_audited_as_balp_rest(fhir: Fhir) -> None:
    before = len(await records(fhir.mpi))
    _, body, _ = await post(fhir, patient(HOSPA, "AU1"))
    await fhir.call("PUT", f"/Patient/{body['id']}", {**body, "birthDate": "1981-01-01"},
                    client="ADT_A")
    await fhir.call("DELETE", f"/Patient/{body['id']}", client="ADT_A")
    await fhir.call("GET", f"/Patient/{body['id']}/_history", client="ADT_A")
    await fhir.call("GET", f"/Patient/{body['id']}/_history/1", client="ADT_A")
    found = await fresh(fhir.mpi, before)
    assert [(r.transaction, r.action, r.interaction, r.outcome) for r in found] == [
        ("ITI-104", "C", "create", 0), ("ITI-104", "U", "update", 0),
        ("ITI-104", "D", "delete", 0), ("ITI-78", "R", "history-instance", 0),
        ("ITI-78", "R", "vread", 0)]
    assert all(r.patients == (cx("AU1"),) for r in found)
    assert all(r.resource == f"Patient/{body['id']}" for r in found)


# --- history ------------------------------------------------------------------------------


async def test_an_older_version_shows_the_other_identifiers_it_carried(fhir: Fhir) -> None:
    """A vread of version 1 shows the national identifier version 1 carried, though version
    2 replaced it; the current version shows the new one."""
    first = patient(HOSPA, "HI1", "Ibsen", "Henrik", "1928-03-20")
    first["identifier"].append({"system": NATIONAL, "value": "111-22-3333"})
    _, body, _ = await post(fhir, first)
    rid = body["id"]
    second = {**first, "identifier": [first["identifier"][0],
                                      {"system": NATIONAL, "value": "444-55-6666"}]}
    status, _, _ = await fhir.call("PUT", f"/Patient/{rid}", {**second, "id": rid},
                                   client="ADT_A")
    assert status == 200

    def national(resource: dict[str, Any]) -> list[str]:
        return [i["value"] for i in resource["identifier"] if i["system"] == NATIONAL]

    status, old, _ = await fhir.call("GET", f"/Patient/{rid}/_history/1")
    assert status == 200 and national(old) == ["111-22-3333"]
    status, history, _ = await fhir.call("GET", f"/Patient/{rid}/_history")
    assert [national(e["resource"]) for e in history["entry"]] == [
        ["444-55-6666"], ["111-22-3333"]]


async def test_history_lists_every_version_newest_first_and_vread_reads_old_ones(
    fhir: Fhir,
) -> None:
    _, body, _ = await post(fhir, patient(HOSPA, "H1", "Hamsun", "Hans", "1940-01-01"))
    rid = body["id"]
    await fhir.call("PUT", f"/Patient/{rid}", {**body, "birthDate": "1940-01-02"},
                    client="ADT_A")
    await fhir.call("DELETE", f"/Patient/{rid}", client="ADT_A")
    status, history, _ = await fhir.call("GET", f"/Patient/{rid}/_history")
    assert status == 200, history
    Bundle.model_validate(history)
    assert history["type"] == "history" and history["total"] == 3
    entries = history["entry"]
    assert [e["response"]["etag"] for e in entries] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert [e["request"]["method"] for e in entries] == ["DELETE", "PUT", "POST"]
    assert "resource" not in entries[0]
    assert entries[1]["resource"]["birthDate"] == "1940-01-02"
    assert entries[2]["resource"]["birthDate"] == "1940-01-01"
    status, old, response = await fhir.call("GET", f"/Patient/{rid}/_history/1")
    assert status == 200 and old["birthDate"] == "1940-01-01"
    assert old["meta"]["versionId"] == "1" and response.headers["ETag"] == 'W/"1"'
    status, _, _ = await fhir.call("GET", f"/Patient/{rid}/_history/3")
    assert status == 410
    status, _, _ = await fhir.call("GET", f"/Patient/{rid}/_history/9")
    assert status == 404
    status, newest, _ = await fhir.call("GET", f"/Patient/{rid}/_history",
                                        params={"_count": "1"})
    assert [e["response"]["etag"] for e in newest["entry"]] == ['W/"3"']


# --- batch and transaction ----------------------------------------------------------------


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def entry(method: str, url: str, resource: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url}}
    if resource is not None:
        out["resource"] = resource
    return out


async def test_batch_applies_each_entry_on_its_own(fhir: Fhir) -> None:
    _, existing, _ = await post(fhir, patient(HOSPA, "B0"))
    status, body, _ = await fhir.call("POST", "", bundle(
        "batch",
        entry("POST", "Patient", patient(HOSPA, "B1", "Bjornson")),
        entry("POST", "Patient", patient(HOSPB, "B2")),  # ADT_A may not assign in HOSPB
        entry("PUT", f"Patient/{existing['id']}", {**existing, "birthDate": "1999-09-09"}),
        entry("DELETE", f"Patient?identifier={HOSPA}|B0"),
        entry("GET", f"Patient/{existing['id']}"),
    ), client="ADT_A")
    assert status == 200, body
    Bundle.model_validate(body)
    assert body["type"] == "batch-response"
    assert [e["response"]["status"] for e in body["entry"]] == [
        "201 Created", "403 Forbidden", "200 OK", "204 No Content", "410 Gone"]
    assert body["entry"][0]["resource"]["name"][0]["family"] == "Bjornson"
    assert body["entry"][1]["response"]["outcome"]["issue"][0]["code"] == "forbidden"


async def test_batch_entries_are_audited_each_as_its_interaction(fhir: Fhir) -> None:
    _, existing, _ = await post(fhir, patient(HOSPA, "BA0"))
    before = len(await records(fhir.mpi))
    status, _, _ = await fhir.call("POST", "", bundle(
        "batch",
        entry("POST", "Patient", patient(HOSPA, "BA1")),
        entry("POST", "Patient", patient(HOSPB, "BA2")),
        entry("DELETE", f"Patient/{existing['id']}"),
    ), client="ADT_A")
    assert status == 200
    found = await fresh(fhir.mpi, before)
    assert sorted((r.action, r.interaction, r.outcome, r.patients) for r in found) == sorted([
        ("C", "create", 0, (cx("BA1"),)),
        ("C", "create", 4, (cx("BA2", "1.2.3.4.5.2"),)),
        ("D", "delete", 0, (cx("BA0"),))])
    assert {r.transaction for r in found} == {"ITI-104"}


async def test_a_create_refused_is_recorded_as_a_failed_create(fhir: Fhir) -> None:
    before = len(await records(fhir.mpi))
    status, _, _ = await post(fhir, {"resourceType": "Patient", "name": [{"family": "X"}]})
    assert status == 400
    (record,) = await fresh(fhir.mpi, before)
    assert (record.transaction, record.action, record.interaction, record.outcome) == (
        "ITI-104", "C", "create", 4)


async def test_prefer_return_minimal_sends_no_body(fhir: Fhir) -> None:
    async with fhir.session.post(
        fhir.base + "/Patient", json=patient(HOSPA, "PR1"),
        headers={"X-Client-Id": "ADT_A", "Prefer": "return=minimal",
                 "Content-Type": "application/fhir+json"}) as response:
        assert response.status == 201
        assert await response.read() == b""
        assert response.headers["Location"].endswith("/_history/1")


async def test_transaction_is_all_or_nothing(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("POST", "", bundle(
        "transaction",
        entry("POST", "Patient", patient(HOSPA, "T1")),
        entry("POST", "Patient", patient(HOSPB, "T2")),
    ), client="ADT_A")
    assert status == 403, body
    outcome(body, "forbidden")
    assert "entry[1]" in body["issue"][0]["diagnostics"]
    found = (await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|T1"}))[1]
    assert found["total"] == 0
    status, body, _ = await fhir.call("POST", "", bundle(
        "transaction",
        entry("POST", "Patient", patient(HOSPA, "T1")),
        entry("PUT", f"Patient?identifier={HOSPA}|T3", patient(HOSPA, "T3")),
    ), client="ADT_A")
    assert status == 200, body
    Bundle.model_validate(body)
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created", "201 Created"]


async def test_a_transaction_resolves_references_to_its_own_entries(fhir: Fhir) -> None:
    """FHIR R4 3.1.0.11.2: a transaction's entries are processed DELETE, POST, PUT, GET, and a
    reference to another entry's urn:uuid fullUrl becomes the id it was given. Here a merge
    (PUT active=false, replaced-by) listed first names the Patient a later POST creates; the
    answer keeps the Bundle's order. A reference to no entry fails the whole transaction."""
    _, old, _ = await post(fhir, patient(HOSPA, "TM1", "Mergeme"))
    new = "urn:uuid:7d1c7e0a-5b86-4f8e-9e2c-2b1f0d6c9a11"
    retired = {**patient(HOSPA, "TM1", "Mergeme"), "active": False,
               "link": [{"type": "replaced-by", "other": {"reference": new}}]}
    created = {**entry("POST", "Patient", patient(HOSPA, "TM2", "Mergeme")), "fullUrl": new}
    status, body, _ = await fhir.call("POST", "", bundle(
        "transaction", entry("PUT", f"Patient?identifier={HOSPA}|TM1", retired), created,
    ), client="ADT_A")
    assert status == 200, body
    Bundle.model_validate(body)
    first, second = body["entry"]
    assert second["response"]["status"] == "201 Created"
    survivor = second["resource"]["id"]
    assert first["resource"]["id"] == old["id"] and first["resource"]["active"] is False
    assert [link["other"]["reference"] for link in first["resource"]["link"]
            if link["type"] == "replaced-by"] == [f"Patient/{survivor}"]
    nowhere = "urn:uuid:00000000-0000-4000-8000-000000000000"
    dangling = {**patient(HOSPA, "TM3"),
                "link": [{"type": "seealso", "other": {"reference": nowhere}}]}
    status, body, _ = await fhir.call("POST", "", bundle(
        "transaction", entry("POST", "Patient", patient(HOSPA, "TM4")),
        entry("POST", "Patient", dangling)), client="ADT_A")
    assert status == 400 and "entry[1]" in body["issue"][0]["diagnostics"], body
    found = (await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|TM4"}))[1]
    assert found["total"] == 0


async def test_a_pmir_message_at_the_base_still_goes_to_pmir(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("POST", "", message([pmir_create("PM1")]),
                                      client="ADT_A")
    assert status == 200, body
    assert statuses(body) == ["201"]


# --- scopes -------------------------------------------------------------------------------

jwks_file = test_auth.jwks_file
secured = test_auth.secured


async def test_rest_writes_need_the_write_scope_and_each_bundle_kind_its_transaction(
    secured: Fhir,
) -> None:
    read_only = test_auth.bearer(test_auth.token(scope=READ))
    status, _, _ = await secured.call("POST", "/Patient", patient(HOSPA, "SC1"),
                                      headers=read_only)
    assert status == 403
    status, created, _ = await secured.call("POST", "/Patient", patient(HOSPA, "SC1"),
                                            headers=test_auth.bearer(test_auth.token()))
    assert status == 201, created
    status, _, _ = await secured.call("DELETE", f"/Patient/{created['id']}", headers=read_only)
    assert status == 403
    status, _, _ = await secured.call("GET", f"/Patient/{created['id']}/_history",
                                      headers=read_only)
    assert status == 200
    pmir_only = test_auth.bearer(test_auth.token(scope="ITI-93"))
    batch = bundle("batch", entry("POST", "Patient", patient(HOSPA, "SC2")))
    status, body, _ = await secured.call("POST", "", batch, headers=pmir_only)
    assert status == 403, body
    status, body, _ = await secured.call("POST", "", message([pmir_create("SC3")]),
                                         headers=pmir_only)
    assert status == 200, body
    feed_only = test_auth.bearer(test_auth.token(scope="ITI-104"))
    status, body, _ = await secured.call("POST", "", message([pmir_create("SC4")]),
                                         headers=feed_only)
    assert status == 403, body
    status, body, _ = await secured.call("POST", "", batch, headers=feed_only)
    assert status == 200, body


async def test_put_by_id_with_a_replaced_by_link_merges_and_then_refuses_changes(
    fhir: Fhir,
) -> None:
    _, survivor, _ = await post(fhir, patient(HOSPA, "MG1"))
    _, retired, _ = await post(fhir, patient(HOSPA, "MG2", family="Smyth"))
    merged = {**retired, "active": False, "link": [
        {"type": "replaced-by", "other": {"reference": f"Patient/{survivor['id']}"}}]}
    status, body, _ = await fhir.call("PUT", f"/Patient/{retired['id']}", merged,
                                      client="ADT_A")
    assert status == 200, body
    assert body["active"] is False
    assert body["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"},
                             "type": "replaced-by"}]
    status, body, _ = await fhir.call("PUT", f"/Patient/{retired['id']}", retired,
                                      client="ADT_A")
    assert status == 422
    outcome(body, "business-rule")
    status, body, _ = await fhir.call("DELETE", f"/Patient/{retired['id']}", client="ADT_A")
    assert status == 422


async def test_history_since_keeps_the_versions_written_from_then(fhir: Fhir) -> None:
    _, body, _ = await post(fhir, patient(HOSPA, "HS1"))
    _, second, _ = await fhir.call("PUT", f"/Patient/{body['id']}",
                                   {**body, "birthDate": "1981-01-01"}, client="ADT_A")
    await fhir.call("PUT", f"/Patient/{body['id']}", {**body, "birthDate": "1982-01-01"},
                    client="ADT_A")
    status, history, _ = await fhir.call("GET", f"/Patient/{body['id']}/_history",
                                         params={"_since": second["meta"]["lastUpdated"]})
    assert status == 200
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"']
