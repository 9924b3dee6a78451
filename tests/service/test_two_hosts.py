"""Issue 19 item 4: two `identity serve` (two hosts, each on its own ports) against one
PostgreSQL stay one service: concurrent feeds of one person through both make one person, and
each ITI-10 notification and each audit record leaves once, whichever host sends it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import pytest

from identity.audit.record import AUDIT_TOPIC
from identity.hl7v2.mllp import MLLPClient
from identity.mpi.uow import notify_topic
from tests.audit.collector import udp_collector
from tests.hl7v2.test_iti10_notify import Consumer
from tests.service.test_workers import Served
from tests.waiting import eventually

from ..conftest import DEMO_DOMAINS

A04 = (
    "MSH|^~\\&|{app}|HOSP|IDENTITY|MPI|20260101120000||ADT^A04^ADT_A01|{id}|P|2.5\r"
    "EVN|A04|20260101120000\r"
    "PID|||{pid}^^^{domain}||{family}^{given}||{birth}|F|||{street}^^SPRINGFIELD^IL^62701"
    "||217-555-{phone}\r"
    "PV1||O\r"
)


async def _serve(env: dict[str, str]) -> Served:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "identity", "serve",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    service = Served(proc)
    match = await service.until(
        r"event=service_started version=\S+ http=127\.0\.0\.1:(\d+) mllp=127\.0\.0\.1:(\d+)")
    service.http, service.mllp = int(match[1]), int(match[2])
    return service


@pytest.fixture
async def consumer() -> AsyncIterator[Consumer]:
    test_consumer = Consumer()
    await test_consumer.server.start()
    yield test_consumer
    await test_consumer.server.stop(grace=1.0)


async def test_two_hosts_on_one_database_make_one_person_and_send_each_message_once(
    fresh_database: str, consumer: Consumer
) -> None:
    async with AsyncExitStack() as stack:
        collector = await stack.enter_async_context(udp_collector())
        env = {
            **os.environ,
            "IDENTITY_WORKERS": "1",
            "IDENTITY_DATABASE__URL": fresh_database,
            "IDENTITY_HTTP__PORT": "0",
            "IDENTITY_MLLP__PORT": "0",
            "IDENTITY_DOMAINS": json.dumps(DEMO_DOMAINS),
            "IDENTITY_NOTIFY": json.dumps(consumer.settings()["notify"]),
            "IDENTITY_AUDIT__SYSLOG__URL": collector.url,
        }
        env.pop("IDENTITY_CONFIG", None)
        hosts = []
        try:
            for _ in range(2):
                hosts.append(await _serve(env))
            one, two = hosts
            # one person, fed at the same moment through both hosts from two hospitals, ten
            # times over (ten persons): each pair must end as one person, never two
            people = [dict(family=f"TWOHOST{i}", given="ANNA", birth=f"1980010{i % 9 + 1}",
                           street=f"{i} ELM ST", phone=f"01{i:02d}") for i in range(10)]
            async with MLLPClient("127.0.0.1", one.mllp) as a, \
                    MLLPClient("127.0.0.1", two.mllp) as b:
                for i, person in enumerate(people):
                    replies = await asyncio.gather(
                        a.send(A04.format(app="ADT_A", id=f"A{i}", pid=f"HA{i}",
                                          domain="HOSPA", **person)),
                        b.send(A04.format(app="ADT_B", id=f"B{i}", pid=f"HB{i}",
                                          domain="HOSPB", **person)))
                    assert all(b"MSA|AA" in r for r in replies), replies
            conn = await asyncpg.connect(fresh_database)
            try:
                persons = await conn.fetchval(
                    "SELECT count(DISTINCT person_id) FROM link")
                records = await conn.fetchval("SELECT count(*) FROM source_record")

                async def delivered() -> bool:  # the topics that have a consumer here
                    pending = await conn.fetchval(
                        "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
                        " AND topic = ANY($1::text[])", [notify_topic("pixc"), AUDIT_TOPIC])
                    return pending == 0
                await eventually(delivered, 30, 0.2, what="every outbox row delivered")
                # an outbox row is one change; its note names each A31 it sent (MSA-1=AA)
                notes = await conn.fetch(
                    "SELECT last_error FROM outbox WHERE topic = $1", notify_topic("pixc"))
                notifications = sum((r["last_error"] or "").count("MSA-1=") for r in notes)
            finally:
                await conn.close()
            assert (records, persons) == (20, 10)
            # ITI-10: HOSPA is subscribed, so each person is notified when its HOSPA record
            # is registered or the HOSPB record joins it; each notification once, whichever
            # host sent it
            assert notifications >= 10
            await consumer.wait_for(notifications)
            await asyncio.sleep(1.0)  # a duplicate would arrive now
            control_ids = [m.control_id for m in consumer.messages]
            assert len(control_ids) == len(set(control_ids)) == notifications
            assert {s[0].split("^")[0] for s in consumer.sets()} == {f"HA{i}" for i in range(10)}
            # audit: every record in the database (the notifications' own too) reached
            # syslog exactly once
            conn = await asyncpg.connect(fresh_database)
            try:
                audited = await conn.fetchval("SELECT count(*) FROM audit_event")
            finally:
                await conn.close()
            await eventually(lambda: len(collector.messages) >= audited, 30,
                             what=f"{audited} audit records at the collector")
            await asyncio.sleep(1.0)
            assert len(collector.messages) == audited
            assert len(set(collector.messages)) == audited
        finally:
            for host in hosts:
                code, text = await host.stop()
                assert code == 0, text
