"""The steward console over HTTP (no browser): its pages render from the core's views, its
actions are the API's (problem JSON, 409 on a stale version), cross-origin posts are refused,
and who the steward is comes from the sign-in (a name with mode none, a checked token with mode
jwt). tests/steward/test_console_browser.py drives it from the keyboard in Chromium."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from identity.config import Settings
from identity.model import ReviewStatus
from identity.mpi import DecideReview, Envelope, Mpi, StewardDecision
from tests.fhir.test_auth import AUDIENCE, EC, ISSUER, RSA, bearer, jwks, token
from tests.steward.conftest import PEOPLE, Console, console_of, duplicate_pair


async def test_the_pages_render_what_the_core_holds(console: Console) -> None:
    one, two, item = await duplicate_pair(console.mpi, family="Mohr", given="Alice")
    person_id = one.person.id

    status, html, response = await console.page("/steward")
    assert status == 308 and response.headers["Location"] == "/steward/"

    status, html, response = await console.page("/steward/")
    assert status == 200, html
    assert f'data-item="{item.id}"' in html and "Mohr" in html
    assert "<strong>1</strong> open" in html
    assert response.headers["Cache-Control"] == "no-store"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]

    status, html, _ = await console.page(f"/steward/review/{item.id}?pos=0")
    assert status == 200, html
    assert f"Review #{item.id}" in html
    assert 'class="waterfall"' in html and "family_name · exact" in html
    assert f'data-version="{item.version}"' in html
    assert "HOSPA A1" in html and "HOSPA A2" in html
    # the item's record (A2) is a person of its own until decided: the merge key is offered
    assert "data-merge=" in html

    for path, expected in (
        (f"/steward/persons/{person_id}", "Golden view"),
        (f"/steward/records/{two.record.id}", "As normalised for matching"),
        ("/steward/search?family=Mohr", "Search persons"),
        ("/steward/dashboard", "open review items"),
        ("/steward/decisions", "0 decisions"),
        ("/steward/login", "Your name"),
    ):
        status, html, _ = await console.page(path)
        assert status == 200, (path, html)
        assert expected in html, path

    status, _, response = await console.page("/steward/static/console.js")
    assert status == 200 and "javascript" in response.content_type


async def test_the_next_item_follows_the_queue_of_the_page(console: Console) -> None:
    items = [(await duplicate_pair(console.mpi, f"A{i}", f"B{i}", **PEOPLE[i]))[2]
             for i in range(3)]
    status, _, response = await console.page("/steward/next?pos=1&sort=newest")
    assert status == 303
    assert response.headers["Location"] == f"/steward/review/{items[1].id}?sort=newest&pos=1"
    status, _, response = await console.page("/steward/next?pos=7")  # past the end: the last
    assert response.headers["Location"] == f"/steward/review/{items[2].id}?pos=2"
    status, _, response = await console.page("/steward/next?pos=0&status=linked")
    assert response.headers["Location"] == "/steward/?status=linked&end=1"


async def test_bad_requests_are_pages_that_say_why(console: Console) -> None:
    for path, status_wanted, text in (
        ("/steward/review/999999", 404, "review item 999999 does not exist"),
        ("/steward/review/abc", 404, "no such id"),
        ("/steward/?age=forever", 400, "age must be one of"),
        ("/steward/?min_probability=2", 400, "min_probability"),
        ("/steward/nothing/here", 404, "There is nothing at"),
        ("/steward/decisions?kind=coinflip", 400, "kind must be one of"),
    ):
        status, html, response = await console.page(path)
        assert status == status_wanted, (path, html)
        assert text in html, path
        assert response.content_type == "text/html"


async def test_actions_decide_with_the_api_semantics(console: Console) -> None:
    _, _, item = await duplicate_pair(console.mpi)
    status, body, response = await console.act(
        f"/review/{item.id}/decision", {"decision": "different_persons", "version": 7})
    assert status == 409, body
    assert response.content_type == "application/problem+json"
    assert body["current_version"] == item.version
    assert (await console.mpi.review_item(item.id)).status == ReviewStatus.OPEN

    status, body, _ = await console.act(
        f"/review/{item.id}/decision", {"decision": "different_persons", "version": item.version})
    assert status == 200, body
    assert body["review_item"]["status"] == "rejected"
    assert body["review_item"]["resolved_by"] == "steward:anonymous"

    status, body, _ = await console.act(f"/commands/{body['command_id']}/undo")
    assert status == 200, body
    assert (await console.mpi.review_item(item.id)).status == ReviewStatus.OPEN


async def test_a_post_from_another_origin_is_refused_and_changes_nothing(
    console: Console,
) -> None:
    _, _, item = await duplicate_pair(console.mpi)
    status, body, _ = await console.act(
        f"/review/{item.id}/decision", {"decision": "same_person", "version": item.version},
        headers={"Origin": "https://evil.example"})
    assert status == 403, body
    assert body["type"].endswith("/forbidden")
    assert (await console.mpi.review_item(item.id)).status == ReviewStatus.OPEN
    # the console's own origin is accepted
    status, body, _ = await console.act(
        f"/review/{item.id}/decision", {"decision": "dismiss", "version": item.version},
        headers={"Origin": console.base})
    assert status == 200, body


async def test_with_mode_none_the_steward_is_the_name_given_at_sign_in(console: Console) -> None:
    _, _, item = await duplicate_pair(console.mpi)
    async with console.session.post(console.base + "/steward/login", allow_redirects=False,
                                    data={"name": "ann", "next": "/steward/dashboard"}) as r:
        assert r.status == 303 and r.headers["Location"] == "/steward/dashboard"
        cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/steward" in cookie
    status, html, _ = await console.page("/steward/")
    assert '<span class="name"' in html and ">ann</span>" in html
    status, body, _ = await console.act(
        f"/review/{item.id}/decision", {"decision": "dismiss", "version": item.version})
    assert status == 200 and body["review_item"]["resolved_by"] == "steward:ann"
    # an outside target after sign-in is not followed
    async with console.session.post(console.base + "/steward/login", allow_redirects=False,
                                    data={"name": "ann", "next": "//evil.example/x"}) as r:
        assert r.headers["Location"] == "/steward/"


@pytest.fixture
async def secured(db: Any, make_settings: Callable[..., Settings],
                  tmp_path: Path) -> AsyncIterator[Console]:  # fmt: skip
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(RSA, EC)))
    settings = make_settings(auth={"mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                   "jwks_file": str(keys)})
    mpi = Mpi(db, settings)
    await mpi.start()
    async with console_of(mpi) as door:
        yield door


async def test_with_jwt_pages_need_a_signed_in_steward(secured: Console) -> None:
    _, _, item = await duplicate_pair(secured.mpi)
    status, _, response = await secured.page(f"/steward/review/{item.id}?pos=0")
    assert status == 303
    location = URL(response.headers["Location"])
    assert location.path == "/steward/login"
    assert location.query["next"] == f"/steward/review/{item.id}?pos=0"
    status, body, response = await secured.act(
        f"/review/{item.id}/decision", {"decision": "dismiss", "version": item.version})
    assert status == 401 and response.content_type == "application/problem+json"
    assert (await secured.mpi.review_item(item.id)).status == ReviewStatus.OPEN

    status, html, _ = await secured.page("/steward/login")
    assert "Access token" in html

    # a token without the steward scope is refused at sign-in, and sets no cookie
    async with secured.session.post(secured.base + "/steward/login", allow_redirects=False,
                                    data={"token": token(scope="system/Patient.read")}) as r:
        assert r.status == 401
        assert "does not grant steward" in await r.text()
        assert "Set-Cookie" not in r.headers

    good = token(scope="steward", sub="carol", client="console")
    async with secured.session.post(secured.base + "/steward/login", allow_redirects=False,
                                    data={"token": good, "next": "/steward/"}) as r:
        assert r.status == 303
        cookie = r.headers["Set-Cookie"]
        assert "identity_steward_token=" in cookie and "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
    status, html, _ = await secured.page("/steward/")
    assert status == 200 and ">carol</span>" in html
    status, body, _ = await secured.act(
        f"/review/{item.id}/decision", {"decision": "dismiss", "version": item.version})
    assert status == 200 and body["review_item"]["resolved_by"] == "steward:carol"

    async with secured.session.post(secured.base + "/steward/logout",
                                    allow_redirects=False) as r:
        assert r.status == 303
    status, _, _ = await secured.page("/steward/")
    assert status == 303


async def test_with_jwt_a_signing_in_proxy_may_send_the_bearer_token(secured: Console) -> None:
    status, html, _ = await secured.page(
        "/steward/dashboard", headers=bearer(token(scope="steward", sub="dave")))
    assert status == 200 and ">dave</span>" in html
    status, html, _ = await secured.page(
        "/steward/dashboard", headers=bearer(token(scope="system/Patient.read")))
    assert status == 403 and "does not grant steward" in html


async def test_a_decided_item_offers_the_undo_of_its_decision(console: Console) -> None:
    _, _, item = await duplicate_pair(console.mpi)
    result = await console.mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON, version=item.version),
        Envelope(actor="steward:bob"))
    status, html, _ = await console.page(f"/steward/review/{item.id}")
    assert status == 200
    assert "Decided: <strong>linked</strong>" in html
    assert f'data-undo="{result.command_id}"' in html
    status, html, _ = await console.page("/steward/decisions?steward=bob")
    assert "1 decisions" in html and result.command_id in html


async def test_the_merge_comparison_names_both_persons_and_refuses_a_self_merge(
    console: Console,
) -> None:
    one, two, _ = await duplicate_pair(console.mpi, **PEOPLE[0])
    a, b = one.person, two.person
    status, html, _ = await console.page(f"/steward/persons/{a.id}/merge?other=%23{b.id}")
    assert status == 200, html
    assert f"Merge person {b.enterprise_id} into {a.enterprise_id}" in html
    assert f"/steward/act/persons/{a.id}/merge" in html
    status, html, _ = await console.page(
        f"/steward/persons/{a.id}/merge?other={a.enterprise_id}")
    assert status == 400 and "cannot be merged into itself" in html
    status, html, _ = await console.page(f"/steward/persons/{a.id}/merge?other=9999999999")
    assert status == 404


async def test_the_chart_marks_the_thresholds_in_service(console: Console) -> None:
    """A calibration puts thresholds in service that the configuration does not hold: the
    item's chart marks those the decisions are made with."""
    *_, item = await duplicate_pair(console.mpi, family="Mohr", given="Alice")
    matcher = console.mpi.matcher
    matcher.use_model(matcher.model, auto_link=0.99, review=0.9)  # as a calibration would
    status, html, _ = await console.page(f"/steward/review/{item.id}")
    assert status == 200, html
    assert "review threshold: +3.17 bits" in html and "auto-link threshold: +6.63 bits" in html
