"""The review queue's `uncertain` sort and its keyset paging (cursors) in the core: the order
on items of known probabilities, and paging by cursor through every sort returns each item
once, in order, also when items are decided between pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal, localcontext

import pytest

from identity.errors import InvalidInput
from identity.model import Decision, QueueCountsWanted, QueueFilter, QueuePage, QueueSort
from identity.mpi import DecideReview, Envelope, Mpi, Register, StewardDecision
from identity.mpi.steward import decode_cursor, encode_cursor

from .helpers import person

A = Envelope(source="ADT_A", actor="hl7:ADT_A")
ANN = Envelope(actor="steward:ann")

# (probability, opened minutes ago), opened in this order (ids ascending). 0.25 and 0.75 are
# equally uncertain (|logit| ln 3), 0.75 opened first; 0.375 and 0.625 too, opened at the same
# time (then by id); two items without a probability; 0 and 1 are certain.
ITEMS: tuple[tuple[float | None, int], ...] = (
    (0.5, 50), (0.61, 40), (None, 45), (0.25, 30), (0.75, 35), (0.93, 20), (0.07, 20),
    (0.375, 10), (0.625, 10), (None, 60), (0.0, 5), (1.0, 15), (0.499, 1), (0.61, 40),
)

FAMILIES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Kowalski", "Ferreira", "Nakamura",
            "Haddad", "Oyelaran", "Petrov", "Quispe", "Brennan", "Zhou", "Abernathy",
            "Vasquez", "Ilunga")


async def open_items(mpi: Mpi, items: Sequence[tuple[float | None, int]] = ITEMS) -> list[int]:
    """Review items of these probabilities and ages, between records of distinct persons
    (registered without any item of their own), in order: their ids. Item k names record
    k + 1 and record k // 3 (so some share a record: impacts from 0 to 4)."""
    records = []
    for n in range(len(items) + 1):
        done = await mpi.handle(Register(subject=person(
            "HOSPA", f"Q{n}", family=FAMILIES[n], given=FAMILIES[-1 - n],
            birth_date=f"19{30 + 3 * n}-{1 + n % 12:02d}-{10 + n:02d}",
            sex="F" if n % 2 else "M")), A)  # fmt: skip
        assert done.decision != Decision.REVIEW and not done.review_items
        records.append(done.record)
    ids = []
    async with mpi.db.connection() as conn:
        for k, (score, minutes) in enumerate(items):
            ids.append(await conn.fetchval(
                """INSERT INTO review_item (record_id, other_record_id, person_id, score, reason,
                                            created_at)
                   VALUES ($1, $2, $3, $4, 'test', date_trunc('second', now())
                                                   - make_interval(mins => $5))
                   RETURNING id""",
                records[k + 1].id, records[k // 3].id, records[k // 3].person_id, score,
                minutes))  # fmt: skip
    return ids


def uncertain_order(ids: Sequence[int], items: Sequence[tuple[float | None, int]]) -> list[int]:
    """The uncertain order by its definition: the smallest |logit(p)| first, no p last, ties
    oldest first (then by id). The logit of each stored double in 60 digits: 0.07 and 0.93 are
    not equally uncertain as doubles (0.07 is 5e-17 nearer 0.5)."""

    def key(k: int) -> tuple[int, Decimal, int, int]:
        p, minutes = items[k]
        if p is None:
            return (1, Decimal(0), -minutes, ids[k])
        if p in (0.0, 1.0):
            return (0, Decimal("Infinity"), -minutes, ids[k])
        with localcontext() as context:
            context.prec = 60
            exact = Decimal(p)
            return (0, abs((exact / (1 - exact)).ln()), -minutes, ids[k])

    return [ids[k] for k in sorted(range(len(ids)), key=key)]


async def test_uncertain_puts_the_least_certain_first_and_no_probability_last(mpi: Mpi) -> None:
    ids = await open_items(mpi)
    page = await mpi.review_queue(sort=QueueSort.UNCERTAIN, limit=200)
    got = [i.id for i in page.items]
    assert got == uncertain_order(ids, ITEMS)
    scores = [i.score for i in page.items]
    assert scores[:2] == [0.5, 0.499]
    assert scores[-2:] == [None, None] and got[-2:] == [ids[9], ids[2]]  # oldest first
    assert got.index(ids[4]) == got.index(ids[3]) - 1  # 0.75 is older than 0.25
    assert got.index(ids[7]) == got.index(ids[8]) - 1  # same time: by id
    assert got.index(ids[1]) == got.index(ids[13]) - 1  # the same p, the same time
    assert scores[-4:-2] == [1.0, 0.0]  # certain: 1 is older than 0
    assert page.next is None and page.total == len(ITEMS)


async def test_uncertain_leaves_out_decided_items(mpi: Mpi) -> None:
    ids = await open_items(mpi)
    await mpi.handle(DecideReview(item_id=ids[0], decision=StewardDecision.DISMISS), ANN)
    page = await mpi.review_queue(sort=QueueSort.UNCERTAIN, limit=2)
    assert [i.score for i in page.items] == [0.499, 0.61]


Between = Callable[[QueuePage, list[int]], Awaitable[None]]


async def page_through(
    mpi: Mpi, sort: QueueSort, limit: int, between: Between | None = None
) -> list[int]:
    """Every page of the open queue by cursor, from the first; ``between`` runs after each
    page but the last (with the ids seen so far)."""
    seen: list[int] = []
    after = None
    for _ in range(100):
        page = await mpi.review_queue(QueueFilter(), sort, limit, 0, QueueCountsWanted.NONE,
                                      after=after)
        assert len(page.items) <= limit and page.offset == (
            len(seen) if sort == QueueSort.IMPACT else 0)
        seen += [i.id for i in page.items]
        if page.next is None:
            return seen
        assert len(page.items) == limit
        if between is not None:
            await between(page, seen)
        after = page.next
    raise AssertionError("paging does not end")


@pytest.mark.parametrize("sort", list(QueueSort))
@pytest.mark.parametrize("limit", [1, 4])
async def test_paging_by_cursor_gives_every_item_once_in_order(
    mpi: Mpi, sort: QueueSort, limit: int
) -> None:
    await open_items(mpi)
    whole = [i.id for i in (await mpi.review_queue(sort=sort, limit=200)).items]
    assert len(whole) == len(ITEMS)
    assert await page_through(mpi, sort, limit) == whole


@pytest.mark.parametrize("sort", [s for s in QueueSort if s != QueueSort.IMPACT])
@pytest.mark.parametrize("limit", [1, 3])
async def test_paging_by_cursor_while_items_are_decided(
    mpi: Mpi, sort: QueueSort, limit: int
) -> None:
    """After each page the steward decides the page's first and last items (seen; the last
    is the cursor's) and another item further on (not seen yet): no item still open is
    skipped or repeated, none decided is shown after its decision. (Paging by offset skips
    an item per decision on a page seen.)"""
    await open_items(mpi)
    whole = [i.id for i in (await mpi.review_queue(sort=sort, limit=200)).items]
    decided_unseen: set[int] = set()

    async def decide(page: QueuePage, seen: list[int]) -> None:
        for item_id in {page.items[0].id, page.items[-1].id}:
            await mpi.handle(
                DecideReview(item_id=item_id, decision=StewardDecision.DISMISS), ANN
            )
        ahead = [i for i in whole if i not in seen and i not in decided_unseen]
        if len(ahead) > 1:
            decided_unseen.add(ahead[-1])
            await mpi.handle(
                DecideReview(item_id=ahead[-1], decision=StewardDecision.DISMISS), ANN
            )

    got = await page_through(mpi, sort, limit, decide)
    assert decided_unseen
    assert got == [i for i in whole if i not in decided_unseen]


async def test_impact_pages_by_position(mpi: Mpi) -> None:
    """An item's impact changes as items are decided: impact's cursor is a position, as an
    offset is (a decision on a page seen moves the later items up by one)."""
    await open_items(mpi)
    first = await mpi.review_queue(sort=QueueSort.IMPACT, limit=4)
    assert first.next is not None
    assert decode_cursor(first.next, QueueSort.IMPACT).position == 4
    second = await mpi.review_queue(sort=QueueSort.IMPACT, limit=4, after=first.next)
    assert second.offset == 4
    by_offset = await mpi.review_queue(sort=QueueSort.IMPACT, limit=4, offset=4)
    assert [i.id for i in second.items] == [i.id for i in by_offset.items]


async def test_a_cursor_of_another_sort_or_with_an_offset_is_refused(mpi: Mpi) -> None:
    await open_items(mpi)
    page = await mpi.review_queue(sort=QueueSort.UNCERTAIN, limit=2)
    assert page.next is not None
    with pytest.raises(InvalidInput, match="sort 'uncertain' used with sort 'oldest'"):
        await mpi.review_queue(sort=QueueSort.OLDEST, after=page.next)
    with pytest.raises(InvalidInput, match="offset or by cursor") as raised:
        await mpi.review_queue(sort=QueueSort.UNCERTAIN, offset=2, after=page.next)
    assert raised.value.field == "after"
    forged = page.next[:-4] + "AAAA"
    for bad, sort in (("", QueueSort.UNCERTAIN), ("!!!", QueueSort.UNCERTAIN),
                      ("bm90IGpzb24", QueueSort.UNCERTAIN), (forged, QueueSort.UNCERTAIN),
                      (encode_cursor(QueueSort.IMPACT, position=-1), QueueSort.IMPACT)):
        with pytest.raises(InvalidInput, match="not a cursor"):
            await mpi.review_queue(sort=sort, after=bad)
    # the positional parameters of before still page by offset
    by_offset = await mpi.review_queue(QueueFilter(), QueueSort.UNCERTAIN, 2, 2,
                                       QueueCountsWanted.NONE)
    after = await mpi.review_queue(sort=QueueSort.UNCERTAIN, limit=2, after=page.next)
    assert [i.id for i in by_offset.items] == [i.id for i in after.items]


def test_a_cursor_keeps_the_sort_key_exactly() -> None:
    page = QueuePage.model_validate({
        "items": [], "total": 0, "limit": 1, "offset": 0, "sort": "uncertain"})
    assert page.next is None
    from identity.model import QueueItem, RecordStatus, RecordSummary, ReviewStatus

    at = datetime.fromisoformat("2026-12-03T11:30:06.123457+00:00")
    item = QueueItem(
        id=123456789012, version=1, status=ReviewStatus.OPEN, score=0.1 + 0.2, reason="r",
        created_at=at, record=RecordSummary(id=1, domain="HOSPA", identifier="Q",
                                            status=RecordStatus.ACTIVE))  # fmt: skip
    for sort in (QueueSort.OLDEST, QueueSort.UNCERTAIN, QueueSort.PROBABILITY_DESC):
        key = decode_cursor(encode_cursor(sort, item), sort)
        assert (key.score, key.created_at, key.id) == (0.1 + 0.2, at, 123456789012)
