"""`GET /api/review` and `identity review list`: the `uncertain` sort and keyset paging (`next`,
`after`), and the 400s of a cursor that is not one, of another sort, or with an offset."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from identity.model import QueueSort
from identity.mpi import Mpi
from tests.core.test_steward_queue import ITEMS, open_items, uncertain_order
from tests.steward.conftest import Api
from tests.steward.test_api import assert_problem
from tests.steward.test_cli import config, identity

__all__ = ["config"]  # the CLI's fixture


async def _page_through(api: Api, sort: str, limit: int) -> list[int]:
    seen: list[int] = []
    params = {"sort": sort, "limit": str(limit), "counts": "none"}
    for _ in range(100):
        page = await api.get("/review", **params)
        assert page["sort"] == sort and page["total"] == len(ITEMS)
        seen += [i["id"] for i in page["items"]]
        if page["next"] is None:
            return seen
        params["after"] = page["next"]
    raise AssertionError("paging does not end")


async def test_uncertain_pages_by_cursor_to_the_end(api: Api) -> None:
    ids = await open_items(api.mpi)
    whole = await api.get("/review", sort="uncertain", limit="200")
    assert [i["id"] for i in whole["items"]] == uncertain_order(ids, ITEMS)
    assert whole["next"] is None and whole["offset"] == 0
    for sort in QueueSort:
        everything = [i["id"] for i in (await api.get("/review", sort=sort.value,
                                                      limit="200"))["items"]]
        assert await _page_through(api, sort.value, 3) == everything, sort


async def _problem(api: Api, **params: str) -> dict[str, object]:
    status, body, response = await api.call("GET", "/review", params=params)
    assert status == 400 and response.content_type == "application/problem+json", body
    assert_problem(body, 400, "bad-query")
    (error,) = body["errors"]
    assert error["location"] == "after", body
    return dict(error)


async def test_a_bad_or_mismatched_cursor_or_one_with_an_offset_is_400(api: Api) -> None:
    await open_items(api.mpi)
    page = await api.get("/review", sort="probability_desc", limit="2")
    cursor = page["next"]
    assert cursor
    assert "not a cursor" in str((await _problem(api, after="garbage"))["message"])
    forged = base64.urlsafe_b64encode(json.dumps(
        {"v": 1, "sort": "probability_desc", "score": "high", "at": "now", "id": 1}
    ).encode()).decode()
    assert "not a cursor" in str((await _problem(api, sort="probability_desc",
                                                 after=forged))["message"])
    other = await _problem(api, sort="newest", after=cursor)
    assert "'probability_desc' used with sort 'newest'" in str(other["message"])
    both = await _problem(api, sort="probability_desc", offset="2", after=cursor)
    assert "offset or by cursor" in str(both["message"])
    status, body, _ = await api.call("GET", "/review", params={"after": "x" * 513})
    assert status == 400
    # the cursor itself still works, and offset 0 with it is no offset
    assert (await api.get("/review", sort="probability_desc", offset="0", after=cursor,
                          limit="2"))["items"]


async def test_openapi_documents_the_cursor_and_the_sort(api: Api) -> None:
    document = await api.get("/openapi.json")
    review = document["paths"]["/api/review"]["get"]
    names = {p["name"] for p in review["parameters"]}
    assert "after" in names
    text = json.dumps(document)
    assert '"uncertain"' in text
    assert "next" in json.dumps(document["components"]["schemas"]["QueuePage"])


async def test_review_list_sorts_uncertain_and_pages_by_cursor(mpi: Mpi, config: Path) -> None:
    ids = await open_items(mpi)
    order = uncertain_order(ids, ITEMS)
    first = await identity(config, "review", "list", "--sort", "uncertain", "--limit", "2",
                           "--json")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert [i["id"] for i in page["items"]] == order[:2] and page["next"]
    second = json.loads((await identity(
        config, "review", "list", "--sort", "uncertain", "--limit", "2", "--after",
        page["next"], "--json")).stdout)  # fmt: skip
    assert [i["id"] for i in second["items"]] == order[2:4]
    shown = await identity(config, "review", "list", "--sort", "uncertain", "--limit", "2")
    assert shown.returncode == 0 and f"next page: --after {page['next']}" in shown.stdout
    wrong = await identity(config, "review", "list", "--after", page["next"])
    assert wrong.returncode == 1 and "used with sort 'oldest'" in wrong.stderr
