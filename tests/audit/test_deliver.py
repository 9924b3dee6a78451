"""The audit outbox worker end to end: rows written with AuditStore reach a syslog collector
started here, in order, and are marked delivered; a collector that is down gets them later."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator

import pytest
from lxml import etree

from identity.audit.deliver import AuditDelivery, audit_delivery
from identity.audit.record import AUDIT_TOPIC
from identity.audit.syslog import MAX_UDP_PAYLOAD
from identity.config import Settings
from identity.store.audit import AuditStore
from identity.store.db import Database
from identity.store.outbox import OutboxStore

from ..conftest import private_directory
from ..waiting import eventually
from .collector import Pki, make_pki, tls_collector, udp_collector
from .helpers import feed, pix_query, refused_feed, steward_link


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with private_directory("identity-audit-pki-") as directory:
        yield make_pki(directory)


def tls_settings(make_settings: Callable[..., Settings], url: str, pki: Pki) -> Settings:
    return make_settings(audit={"source_id": "identity-test",
                                "syslog": {"url": url, "ca": str(pki.ca)}})  # fmt: skip


async def pending(db: Database) -> int:
    async with db.read() as conn:
        return await OutboxStore(conn).pending_count(AUDIT_TOPIC)


async def rows(db: Database) -> list[dict]:
    async with db.read() as conn:
        found = await conn.fetch(
            "SELECT id, attempts, last_error, delivered_at IS NOT NULL AS delivered"
            " FROM outbox WHERE topic = $1 ORDER BY id", AUDIT_TOPIC)  # fmt: skip
    return [dict(r) for r in found]


def test_not_configured_means_no_worker(make_settings: Callable[..., Settings]) -> None:
    assert audit_delivery(None, make_settings()) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AuditDelivery(None, make_settings())  # type: ignore[arg-type]


async def test_rows_reach_the_collector_in_order_and_are_marked_delivered(
    db: Database, make_settings: Callable[..., Settings], pki: Pki
) -> None:
    batches = [[feed("C")], [pix_query(), refused_feed()], [steward_link()]]
    async with db.transaction() as conn:
        for batch in batches:
            await AuditStore(conn).insert(batch, topic=AUDIT_TOPIC)
    async with tls_collector(pki) as collector:
        worker = audit_delivery(db, tls_settings(make_settings, collector.url, pki))
        assert worker is not None
        worker.start()
        try:
            await eventually(lambda: len(collector.messages) == 4)
            await eventually(lambda: worker.delivered == 3)
        finally:
            await worker.stop()
    assert await pending(db) == 0
    assert [r["last_error"] for r in await rows(db)] == ["1 sent", "2 sent", "1 sent"]
    messages = collector.parsed()
    assert [m.pri for m in messages] == [85, 85, 84, 85]
    assert {m.msgid for m in messages} == {"IHE+RFC-3881"}
    kinds = [etree.fromstring(m.msg).find("EventIdentification/EventTypeCode").get("csd-code")
             for m in messages]  # fmt: skip
    assert kinds == ["ITI-8", "ITI-9", "ITI-8", "steward-link"]


async def test_collector_down_then_up_gets_the_rows_later(
    db: Database, make_settings: Callable[..., Settings], pki: Pki,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    with socket.socket() as probe:  # a port with nothing listening (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"tls://localhost:{port}"
    async with db.transaction() as conn:
        await AuditStore(conn).insert([feed("C")], topic=AUDIT_TOPIC)
        await AuditStore(conn).insert([feed("U")], topic=AUDIT_TOPIC)
    worker = audit_delivery(db, tls_settings(make_settings, url, pki))
    assert worker is not None
    caplog.set_level(logging.WARNING, logger="identity.audit.deliver")
    worker.start()
    try:
        await eventually(lambda: _attempted(db), within=10)
        first = (await rows(db))[0]
        assert not first["delivered"] and "Error" in first["last_error"]
        assert (await rows(db))[1]["attempts"] == 0  # the row behind waits: order is kept
        assert "event=audit_send_failed" in caplog.text
        async with tls_collector(pki, port=port) as collector:
            await eventually(lambda: len(collector.messages) == 2, within=15)
            await eventually(lambda: _all_delivered(db), within=5)
    finally:
        await worker.stop()
    actions = [etree.fromstring(m.msg).find("EventIdentification").get("EventActionCode")
               for m in collector.parsed()]  # fmt: skip
    assert actions == ["C", "U"]


async def _attempted(db: Database) -> bool:
    found = await rows(db)
    return bool(found) and found[0]["attempts"] >= 1


async def _all_delivered(db: Database) -> bool:
    return await pending(db) == 0


async def test_udp_skips_a_record_too_large_and_an_unreadable_row(
    db: Database, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    from dataclasses import replace

    huge = replace(pix_query(), query=b"x" * MAX_UDP_PAYLOAD)
    async with db.transaction() as conn:
        await AuditStore(conn).insert([feed("C"), huge, feed("U")], topic=AUDIT_TOPIC)
        await conn.execute("INSERT INTO outbox (topic, payload) VALUES ($1, $2)", AUDIT_TOPIC,
                           {"records": [{"not": "a record"}]})  # fmt: skip
        await AuditStore(conn).insert([steward_link()], topic=AUDIT_TOPIC)
    caplog.set_level(logging.ERROR, logger="identity.audit.deliver")
    async with udp_collector() as collector:
        worker = AuditDelivery(
            db, make_settings(audit={"syslog": {"url": collector.url}}), idle_poll=0.05
        )
        worker.start()
        try:
            await eventually(lambda: len(collector.messages) == 3)
            await eventually(lambda: _all_delivered(db))
        finally:
            await worker.stop()
    notes = [r["last_error"] for r in await rows(db)]
    assert notes[0] == "2 sent, 1 skipped: larger than a UDP datagram"
    assert notes[1].startswith("not sent, unreadable payload")
    assert notes[2] == "1 sent"
    assert "event=audit_too_large" in caplog.text and "event=audit_unreadable" in caplog.text


async def test_one_worker_across_processes(
    db: Database, make_settings: Callable[..., Settings], pki: Pki
) -> None:
    """Two workers (as in two processes): the topic's lock lets one deliver; each record is
    sent once."""
    async with db.transaction() as conn:
        for _ in range(5):
            await AuditStore(conn).insert([feed()], topic=AUDIT_TOPIC)
    async with tls_collector(pki) as collector:
        settings = tls_settings(make_settings, collector.url, pki)
        workers = [AuditDelivery(db, settings, idle_poll=0.05) for _ in range(2)]
        for worker in workers:
            worker.start()
        try:
            await eventually(lambda: _all_delivered(db))
            await asyncio.sleep(0.3)
        finally:
            for worker in workers:
                await worker.stop()
    assert len(collector.messages) == 5
    assert sorted(w.delivered for w in workers) == [0, 5]
