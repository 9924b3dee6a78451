"""The steward API over HTTP: the queue, an item, every decision and its undo (a feed merge's
too), 409 on a stale version, problem JSON, persons, search, the decisions log, the dashboard
and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from identity.model import AuthorityRef, PersonStatus, RecordStatus
from identity.mpi import Envelope, Merge, Mpi, Register
from identity.steward import build_steward_app
from tests.core.helpers import person
from tests.steward.conftest import FEED, Api, duplicate_pair

LIS = Envelope(source="LIS", actor="hl7:LIS")


def assert_problem(body: Any, status: int, kind: str | None = None) -> None:
    assert set(body) >= {"type", "title", "status", "detail"}, body
    assert body["status"] == status
    if kind is not None:
        assert body["type"] == f"https://identity.example.org/problems/{kind}"


async def _records_of(api: Api, person_id: int) -> list[int]:
    view = await api.get(f"/persons/{person_id}")
    return sorted(r["id"] for r in view["person"]["records"])


# --- the queue and an item ---------------------------------------------------------------------


async def test_queue_page_has_items_counts_and_filters(api: Api) -> None:
    one, two, item = await duplicate_pair(api.mpi)
    page = await api.get("/review")
    assert page["total"] == 1 and page["sort"] == "oldest" and page["limit"] == 50
    (row,) = page["items"]
    assert row["id"] == item.id and row["version"] == 1
    assert row["record"]["identifier"] == "A2" and row["other"]["identifier"] == "A1"
    assert row["hard_rules"] == ["same_source_duplicate"]
    assert page["counts"]["open"] == 1 and page["counts"]["by_status"] is None
    counted = await api.get("/review", counts="all")
    assert counted["counts"]["by_status"] == {"open": 1, "linked": 0, "rejected": 0,
                                              "dismissed": 0}
    assert (await api.get("/review", counts="none"))["counts"] is None
    assert page["counts"]["open_by_domain"] == {"HOSPA": 1}
    assert (await api.get("/review", rule="possible_twin"))["total"] == 0
    assert (await api.get("/review", domain="HOSPA", min_probability="0.1"))["total"] == 1
    assert (await api.get("/review", status="all", sort="newest"))["total"] == 1
    assert (await api.get("/review", min_age_hours="1"))["total"] == 0
    assert (await api.get("/review", max_age_hours="1"))["total"] == 1
    assert (await api.get("/review", sort="impact"))["items"][0]["impact"] == 0


async def test_bad_queue_parameters_are_problems(api: Api) -> None:
    status, body, response = await api.call("GET", "/review", params={"limit": "many"})
    assert status == 400 and response.content_type == "application/problem+json"
    assert_problem(body, 400, "bad-query")
    assert body["errors"][0]["location"] == "limit"
    status, body, _ = await api.call("GET", "/review", params={"colour": "red"})
    assert status == 400 and body["errors"][0]["location"] == "colour"
    status, body, _ = await api.call("GET", "/review", params=[("sort", "oldest")] * 2)
    assert status == 400
    status, body, _ = await api.call("GET", "/review", params={"domain": "NOWHERE"})
    assert_problem(body, 422, "unknown-domain")
    status, body, _ = await api.call(
        "GET", "/review", params={"min_probability": "0.9", "max_probability": "0.1"}
    )
    assert_problem(body, 422, "invalid-input")


async def test_review_item_view(api: Api) -> None:
    one, two, item = await duplicate_pair(api.mpi)
    detail = await api.get(f"/review/{item.id}")
    assert detail["item"]["id"] == item.id and detail["item"]["explanation"] is None
    assert detail["explanation"]["decision"]["hard_rules"] == ["same_source_duplicate"]
    assert detail["record"]["record"]["identifier"] == "A2"
    assert detail["record"]["normalized"]["family"] == "SMITH"
    assert detail["other"]["record"]["demographics"]["names"][0]["family"] == "Smith"
    assert detail["person"]["id"] == one.person.id
    assert detail["candidates"][0]["person_id"] == one.person.id
    assert detail["history"]
    status, body, _ = await api.call("GET", "/review/999999")
    assert_problem(body, 404, "not-found")
    status, body, _ = await api.call("GET", "/review/abc")
    assert_problem(body, 400, "bad-request")


# --- decisions, versions, undo -----------------------------------------------------------------


async def test_same_person_then_undo(api: Api) -> None:
    one, two, item = await duplicate_pair(api.mpi)
    done = await api.post(f"/review/{item.id}/decision",
                          {"decision": "same_person", "version": 1, "reason": "same MRN typo"})
    assert done["review_item"]["status"] == "linked" and done["review_item"]["version"] == 2
    assert done["undo"] == f"/api/commands/{done['command_id']}/undo"
    assert await _records_of(api, one.person.id) == sorted([one.record.id, two.record.id])
    record = await api.get(f"/records/{two.record.id}")
    assert record["record"]["link"]["kind"] == "manual"
    assert record["record"]["link"]["actor"] == "steward:ann"
    undone = await api.post(done["undo"])
    assert undone["command_id"] != done["command_id"]
    assert await _records_of(api, one.person.id) == [one.record.id]
    assert (await api.get(f"/review/{item.id}"))["item"]["status"] == "open"
    # undone once: a second undo of the same command is a conflict
    status, body, _ = await api.call("POST", done["undo"])
    assert_problem(body, 409, "conflict")


async def test_different_persons_then_undo(api: Api) -> None:
    _, _, item = await duplicate_pair(api.mpi)
    done = await api.post(f"/review/{item.id}/decision",
                          {"decision": "different_persons", "version": 1, "reason": "twins"})
    assert done["review_item"]["status"] == "rejected"
    async with api.mpi.db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM no_match") == 1
        await api.post(done["undo"])
        assert await conn.fetchval("SELECT count(*) FROM no_match") == 0
    assert (await api.get(f"/review/{item.id}"))["item"]["status"] == "open"


async def test_dismiss_then_undo(api: Api) -> None:
    _, _, item = await duplicate_pair(api.mpi)
    done = await api.post(f"/review/{item.id}/decision", {"decision": "dismiss", "version": 1})
    assert done["review_item"]["status"] == "dismissed"
    await api.post(done["undo"])
    reopened = (await api.get(f"/review/{item.id}"))["item"]
    assert reopened["status"] == "open" and reopened["version"] == 3


async def test_a_stale_version_is_409_and_changes_nothing(api: Api) -> None:
    one, two, item = await duplicate_pair(api.mpi)
    await api.post(f"/review/{item.id}/decision", {"decision": "dismiss", "version": 1},
                   steward="ann")
    status, body, _ = await api.call(
        "POST", f"/review/{item.id}/decision", {"decision": "same_person", "version": 1},
        steward="bob",
    )
    assert status == 409
    assert_problem(body, 409, "stale-version")
    assert (body["expected_version"], body["current_version"]) == (1, 2)
    assert await _records_of(api, one.person.id) == [one.record.id]
    log = await api.get("/decisions")
    assert [e["actor"] for e in log["entries"]] == ["steward:ann"]


async def test_malformed_decisions_are_problems(api: Api) -> None:
    _, _, item = await duplicate_pair(api.mpi)
    path = f"/review/{item.id}/decision"
    status, body, _ = await api.call("POST", path, {"decision": "same_person"})
    assert_problem(body, 422, "invalid-body")
    assert body["errors"][0]["location"] == "version"
    status, body, _ = await api.call("POST", path, {"decision": "maybe", "version": 1})
    assert status == 422
    status, body, _ = await api.call(
        "POST", path, headers={"Content-Type": "application/json"}, body=None
    )
    assert status == 422  # an empty body: version and decision are missing
    async with api.session.post(api.base + path, data=b"{not json",
                                headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        assert_problem(await response.json(content_type=None), 400, "bad-request")
    async with api.session.post(api.base + path, data=b"decision=dismiss",
                                headers={"Content-Type": "text/plain"}) as response:
        assert response.status == 415
    status, body, _ = await api.call("POST", "/review/424242/decision",
                                     {"decision": "dismiss", "version": 1})
    assert_problem(body, 404)


async def test_merge_two_persons_then_undo(api: Api) -> None:
    one = await api.mpi.handle(Register(subject=person("HOSPA", "M1")), FEED)
    lab = await api.mpi.handle(Register(subject=person(
        "LAB", "L1", family="Else", given="Ida", sex="F", birth_date="1991-01-01")), LIS)
    survivor = (await api.get(f"/persons/{one.person.id}"))["person"]
    merged = (await api.get(f"/persons/{lab.person.id}"))["person"]
    status, body, _ = await api.call(
        "POST", f"/persons/{one.person.id}/merge",
        {"merged": lab.person.id, "version": survivor["version"] + 1,
         "merged_version": merged["version"]})
    assert_problem(body, 409, "stale-version")
    done = await api.post(
        f"/persons/{one.person.id}/merge",
        {"merged": lab.person.id, "version": survivor["version"],
         "merged_version": merged["version"], "reason": "name change"})
    assert await _records_of(api, one.person.id) == sorted([one.record.id, lab.record.id])
    assert (await api.get(f"/persons/{lab.person.id}"))["person"]["status"] == "merged"
    await api.post(done["undo"])
    assert await _records_of(api, one.person.id) == [one.record.id]
    assert await _records_of(api, lab.person.id) == [lab.record.id]
    status, body, _ = await api.call(
        "POST", f"/persons/{one.person.id}/merge",
        {"merged": one.person.id, "version": 1, "merged_version": 1})
    assert_problem(body, 422, "invalid-input")


async def test_unlink_a_record_then_undo(api: Api) -> None:
    one, two, item = await duplicate_pair(api.mpi)
    await api.post(f"/review/{item.id}/decision", {"decision": "same_person", "version": 1})
    owner = (await api.get(f"/persons/{one.person.id}"))["person"]
    status, body, _ = await api.call("POST", f"/records/{two.record.id}/unlink",
                                     {"version": owner["version"] - 1})
    assert_problem(body, 409, "stale-version")
    done = await api.post(f"/records/{two.record.id}/unlink",
                          {"version": owner["version"], "reason": "not the same"})
    new_person = next(p for p in done["persons"] if p["id"] != one.person.id)
    assert [r["id"] for r in new_person["records"]] == [two.record.id]
    assert await _records_of(api, one.person.id) == [one.record.id]
    await api.post(done["undo"])
    assert await _records_of(api, one.person.id) == sorted([one.record.id, two.record.id])


async def test_undo_of_a_feed_merge_restores_both_records_and_persons(api: Api) -> None:
    mpi = api.mpi
    first = await mpi.handle(Register(subject=person("HOSPA", "F1")), FEED)
    second = await mpi.handle(Register(subject=person(
        "HOSPA", "F2", family="Brown", given="Eve", sex="F", birth_date="1966-06-06")), FEED)
    # an A40 as the HL7 door makes it: F2 retired into F1
    merge = await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "F2", "F1"), FEED)
    assert (await mpi.get_record(second.record.id)).status == RecordStatus.MERGED
    assert (await mpi.get_person(second.person.id)).status == PersonStatus.MERGED
    undone = await api.post(f"/commands/{merge.command_id}/undo")
    assert second.person.id in {p["id"] for p in undone["persons"]}
    record = await api.get(f"/records/{second.record.id}")
    assert record["record"]["status"] == "active"
    assert record["record"]["person_id"] == second.person.id
    assert await _records_of(api, first.person.id) == [first.record.id]
    assert await _records_of(api, second.person.id) == [second.record.id]
    assert any(e["event"] == "undo:record_merged" for e in record["history"])
    entry = await api.get(f"/commands/{undone['command_id']}")
    assert entry["kind"] == "undo" and entry["undoes"] == merge.command_id
    status, body, _ = await api.call("POST", "/commands/not-a-uuid/undo")
    assert_problem(body, 400)
    status, body, _ = await api.call(
        "POST", "/commands/00000000-0000-0000-0000-000000000000/undo")
    assert_problem(body, 404)


# --- persons, search, decisions, dashboard -----------------------------------------------------


async def test_person_view_search_decisions_and_dashboard(api: Api) -> None:
    one, two, item = await duplicate_pair(api.mpi)
    await api.post(f"/review/{item.id}/decision", {"decision": "same_person", "version": 1},
                   steward="bob")
    view = await api.get(f"/persons/{one.person.id}")
    assert view["identifiers"][0]["identifier"]["value"] == one.person.enterprise_id
    assert view["golden"]["birth_date"]["value"] == "1980-03-12"
    assert {e["actor"] for e in view["history"]} >= {"steward:bob"}
    hits = await api.get("/search", identifier="HOSPA|A2")
    assert [p["id"] for p in hits["persons"]] == [one.person.id]
    hits = await api.get("/search", family="smi*")
    assert hits["total"] == 1
    status, body, _ = await api.call("GET", "/search")
    assert_problem(body, 422, "invalid-input")
    log = await api.get("/decisions", steward="bob")
    assert log["total"] == 1 and log["entries"][0]["kind"] == "same_person"
    assert log["entries"][0]["review_item_id"] == item.id
    assert (await api.get("/decisions", steward="ann"))["total"] == 0
    board = await api.get("/dashboard", days="7")
    assert board["open"] == 0 and board["links"]["manual"] == 1
    assert board["decisions_per_day"][0]["actor"] == "steward:bob"


async def test_unknown_routes_and_methods_are_problems(api: Api) -> None:
    status, body, response = await api.call("GET", "/nowhere")
    assert status == 404 and response.content_type == "application/problem+json"
    assert_problem(body, 404)
    status, body, response = await api.call("DELETE", "/review")
    assert status == 405 and "GET" in response.headers["Allow"]
    assert_problem(body, 405)


# --- the OpenAPI document ----------------------------------------------------------------------


async def test_openapi_document_is_valid_and_covers_exactly_the_routes(
    api: Api, mpi: Mpi
) -> None:
    document = await api.get("/openapi.json")
    validate(document)  # OpenAPI 3.1
    assert document["openapi"] == "3.1.0"
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    app = build_steward_app(mpi, mpi.settings)
    served = {
        (route.method, "/api" + route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == served
    for operations in document["paths"].values():
        for operation in operations.values():
            assert {"401", "403", "200"} <= set(operation["responses"])
