"""The console in a real browser (headless Chromium from Debian's package, driven by Playwright
for Python): a steward works through the queue from the keyboard alone (open, same person, not
a duplicate, merge, skip, undo) and the database is checked after each key; a decision made
on a stale page is refused and says so. Under CI the browser must be there (.ci/run installs
it); elsewhere these tests are skipped without it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from identity.model import ReviewStatus
from identity.mpi import DecideReview, Envelope, Mpi, Register, StewardDecision
from tests.core.helpers import person
from tests.steward import browser
from tests.steward.conftest import PEOPLE, duplicate_pair, serve

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium_ready() -> None:
    reason = browser.missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the console's browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture
async def page(chromium_ready: None, mpi: Mpi) -> AsyncIterator[Any]:
    async with serve(mpi) as api, browser.chromium() as chrome:
        context = await chrome.new_context(  # type: ignore[attr-defined]
            base_url=api.base.removesuffix("/api"), viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        tab = await context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda error: errors.append(str(error)))
        yield tab
        await context.close()
        assert not errors, errors


async def _item_at(page: Any, item_id: int) -> None:
    await page.wait_for_url(f"**/steward/review/{item_id}?**")
    await page.wait_for_load_state("load")


async def _person_of(mpi: Mpi, record_id: int) -> int | None:
    return (await mpi.record_view(record_id)).record.person_id


async def test_a_steward_works_through_the_queue_from_the_keyboard(page: Any, mpi: Mpi) -> None:
    pairs = [await duplicate_pair(mpi, f"A{i}", f"B{i}", **PEOPLE[i]) for i in range(4)]
    items = [item for _, _, item in pairs]
    first_record = [one.record.id for one, _, _ in pairs]  # each item's other record
    second_record = [two.record.id for _, two, _ in pairs]  # each item's own record

    await page.goto("/steward/")
    rows = page.locator("table.queue tbody tr")
    assert await rows.count() == 4
    assert await page.locator("tr.selected").get_attribute("data-item") == str(items[0].id)

    # j moves the selection, k back, Enter opens the selected item
    await page.keyboard.press("j")
    assert await page.locator("tr.selected").get_attribute("data-item") == str(items[1].id)
    await page.keyboard.press("k")
    await page.keyboard.press("Enter")
    await _item_at(page, items[0].id)
    assert await page.locator("svg.waterfall rect.bar").count() >= 3

    # l: same person -> the item's record joins the other record's person; the next item opens
    await page.keyboard.press("l")
    await _item_at(page, items[1].id)
    assert (await mpi.review_item(items[0].id)).status == ReviewStatus.LINKED
    assert await _person_of(mpi, second_record[0]) == await _person_of(mpi, first_record[0])
    toast = page.locator("#toast")
    assert "same person: linked" in (await toast.text_content() or "")

    # u: undo the last decision -> back on that item, open again, the link is gone
    await page.keyboard.press("u")
    await _item_at(page, items[0].id)
    assert (await mpi.review_item(items[0].id)).status == ReviewStatus.OPEN
    assert await _person_of(mpi, second_record[0]) != await _person_of(mpi, first_record[0])
    assert "Undone" in (await toast.text_content() or "")

    # n: not a duplicate -> rejected and remembered; the next item opens
    await page.keyboard.press("n")
    await _item_at(page, items[1].id)
    assert (await mpi.review_item(items[0].id)).status == ReviewStatus.REJECTED
    decisions = await mpi.decisions(review_item_id=items[0].id)
    assert [e.kind.value for e in decisions.entries][:1] == ["different_persons"]

    # s: skip -> the item after it, nothing decided
    await page.keyboard.press("s")
    await _item_at(page, items[2].id)
    assert (await mpi.review_item(items[1].id)).status == ReviewStatus.OPEN

    # m: merge the two persons -> one person holds both records
    await page.keyboard.press("m")
    await _item_at(page, items[3].id)  # the one after it; the skipped item waits behind
    assert await _person_of(mpi, second_record[2]) == await _person_of(mpi, first_record[2])
    assert (await mpi.review_item(items[2].id)).status != ReviewStatus.OPEN

    # a reason typed after r goes with the decision; keys typed in the field are not commands
    await page.keyboard.press("r")
    await page.keyboard.type("checked the ID card; not the same")
    await page.keyboard.press("Escape")
    await page.keyboard.press("n")
    await _item_at(page, items[1].id)  # past the end of the queue: its last item, the skipped
    decided = await mpi.decisions(review_item_id=items[3].id)
    assert decided.entries[0].reason == "checked the ID card; not the same"


async def test_a_decision_on_a_stale_page_is_refused_and_says_so(page: Any, mpi: Mpi) -> None:
    _, _, item = await duplicate_pair(mpi, **PEOPLE[0])
    await page.goto(f"/steward/review/{item.id}?pos=0")
    # another steward decides first
    await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.DISMISS, version=item.version),
        Envelope(actor="steward:bob"),
    )
    await page.keyboard.press("l")
    toast = page.locator("#toast.error")
    await toast.wait_for()
    assert "Someone changed this first" in (await toast.text_content() or "")
    assert (await mpi.review_item(item.id)).status == ReviewStatus.DISMISSED
    assert page.url.endswith(f"/steward/review/{item.id}?pos=0")


async def test_unlink_from_the_person_view_and_undo_from_the_decisions_log(
    page: Any, mpi: Mpi
) -> None:
    one, two, item = await duplicate_pair(mpi, **PEOPLE[1])
    await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON, version=item.version),
        Envelope(actor="steward:ann"),
    )
    person = await _person_of(mpi, one.record.id)
    assert await _person_of(mpi, two.record.id) == person
    await page.goto(f"/steward/persons/{person}")
    page.once("dialog", lambda dialog: dialog.accept())
    await page.locator(f'button[data-unlink="{two.record.id}"]').click()
    await page.wait_for_load_state("load")
    await page.locator("#toast").wait_for()
    assert await _person_of(mpi, two.record.id) != person

    # the decisions log undoes the unlink
    await page.goto("/steward/decisions")
    await page.locator("table.decisions button[data-undo]").first.click()
    await page.wait_for_load_state("load")
    await page.locator("#toast").wait_for()
    assert await _person_of(mpi, two.record.id) == person

    # / opens search; an identifier finds the person directly
    await page.keyboard.press("/")
    await page.wait_for_url("**/steward/search")
    await page.keyboard.press("/")
    await page.keyboard.type(f"HOSPA|{one.record.identifier}")
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**/steward/persons/{person}")


async def test_merge_two_persons_found_from_the_person_view(page: Any, mpi: Mpi) -> None:
    one, _, _ = await duplicate_pair(mpi, "M1", "M2", **PEOPLE[3])
    other = await mpi.handle(
        Register(subject=person("HOSPB", "M9", family="Tanaka", given="Hiroshi",
                                birth_date="1949-03-08")),
        Envelope(source="ADT_B", actor="hl7:ADT_B"),
    )
    survivor, merged = one.person.id, other.person.id
    assert survivor != merged
    await page.goto(f"/steward/persons/{survivor}")
    await page.fill("input[name=other]", other.person.enterprise_id)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**/steward/persons/{survivor}/merge?other=*")
    await page.keyboard.press("m")
    await page.wait_for_url(f"**/steward/persons/{survivor}")
    assert await _person_of(mpi, other.record.id) == survivor
    await page.keyboard.press("u")  # undo: back on the comparison, two persons again
    await page.wait_for_url(f"**/steward/persons/{survivor}/merge?other=*")
    assert await _person_of(mpi, other.record.id) == merged
