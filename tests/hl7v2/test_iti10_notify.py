"""ITI-10 PIX Update Notification: ADT^A31 to a test PIX Consumer (a small MLLP server that
records what it gets and answers AA), in order, surviving a restart."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from identity.hl7v2.mllp import MLLPClient, MLLPServer
from identity.hl7v2.tokenizer import Message, build_message, parse_message
from identity.mpi.uow import notify_topic
from identity.store.outbox import OutboxStore
from tests.hl7v2.conftest import Start
from tests.hl7v2.messages import adt, msa, msh, pid3, reply, strictly_valid
from tests.waiting import eventually


class Consumer:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.messages: list[Message] = []
        self.raw: list[bytes] = []
        self.up = True
        self.refused = 0  # messages that arrived while down
        self.server = MLLPServer(
            self.handle, "127.0.0.1", 0, idle_timeout=30.0, ssl_context=ssl_context
        )

    async def handle(self, raw: bytes) -> bytes:
        if not self.up:
            self.refused += 1
            raise ConnectionError("consumer is down")
        message = parse_message(raw)
        self.messages.append(message)
        self.raw.append(raw)
        return build_message([
            ["MSH", None, None, "PIXC", "PIXF", "IDENTITY", "MPI", "20260101", None,
             [["ACK", "A31", "ACK"]], "C" + message.control_id, "P", "2.5"],
            ["MSA", "AA", message.control_id],
        ]).encode("ascii")  # fmt: skip

    async def wait_for(self, count: int, within: float = 10.0) -> None:
        await eventually(lambda: len(self.messages) >= count, within,
                         what=f"{count} messages at the consumer")

    async def wait_until(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        await eventually(condition, within)

    def sets(self) -> list[list[str]]:
        return [sorted(pid3(m.segment("PID"))) for m in self.messages]  # type: ignore[arg-type]

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {"notify": [{
            "name": "pixc", "host": "127.0.0.1", "port": self.server.port,
            "domains": ["HOSPA", "LAB"], "receiving_application": "PIXC",
            "receiving_facility": "PIXF", **extra,
        }]}  # fmt: skip


@pytest.fixture
async def consumer() -> AsyncIterator[Consumer]:
    test_consumer = Consumer()
    await test_consumer.server.start()
    yield test_consumer
    await test_consumer.server.stop(grace=1.0)


def two_pids(trigger: str, first: str, second: str) -> str:
    structure = {"A24": "ADT_A24", "A37": "ADT_A37"}[trigger]
    return "\r".join([msh(f"ADT^{trigger}^{structure}"), "EVN||2026",
                      f"PID|1||{first}||ONE^X||19500101|F",
                      f"PID|2||{second}||TWO^Y||19600101|M"]) + "\r"


async def test_new_patient_and_link_are_notified_as_A31(
    start_service: Start, consumer: Consumer
) -> None:
    service = await start_service(**consumer.settings())
    async with MLLPClient("127.0.0.1", service.port) as client:
        assert msa(reply(await client.send(adt("A04", "K1^^^HOSPA")))) == "AA"
        await consumer.wait_for(1)
        first = consumer.messages[0]
        assert first.msh.field(9) == "ADT^A31^ADT_A05"
        assert (first.msh.value(3), first.msh.value(5), first.msh.value(6)) == (
            "IDENTITY", "PIXC", "PIXF")
        pid = first.segment("PID")
        assert pid is not None and pid3(pid) == ["K1^^^HOSPA&1.2.3.4.5.1&ISO"]
        assert pid.field(5) == " "
        assert first.segment("PV1").value(2) == "N"  # type: ignore[union-attr]
        assert first.segment("EVN") is not None
        parsed = strictly_valid(consumer.raw[0])
        assert parsed.msh.msh_9.to_er7() == "ADT^A31^ADT_A05"

        k1, k2 = "K1^^^HOSPA&1.2.3.4.5.1&ISO", "K2^^^LAB&1.2.3.4.5.3&ISO"
        assert msa(reply(await client.send(two_pids("A24", "K1^^^HOSPA", "K2^^^LAB")))) == "AA"
        # K2 is created by the link, then linked: the consumer learns the linked set. (A
        # notification carries the person's identifiers when it is sent, so whether the
        # creation of K2 is seen on its own depends on timing.)
        await consumer.wait_until(lambda: consumer.sets()[-1] == [k1, k2])
        count = len(consumer.messages)

        assert msa(reply(await client.send(two_pids("A37", "K1^^^HOSPA", "K2^^^LAB")))) == "AA"
        await consumer.wait_for(count + 2)  # an unlink sends one A31 per resulting set
        assert sorted(consumer.sets()[count:]) == [[k1], [k2]]


async def test_person_without_identifier_in_consumer_domains_sends_nothing(
    start_service: Start, consumer: Consumer
) -> None:
    service = await start_service(**consumer.settings())
    async with MLLPClient("127.0.0.1", service.port) as client:
        assert msa(reply(await client.send(adt("A04", "B1^^^HOSPB", app="ADT_B", name="OTHER^ONE",
                                                 dob="19990101")))) == "AA"
        assert msa(reply(await client.send(adt("A04", "K3^^^HOSPA")))) == "AA"

    async def outbox_done() -> bool:  # both rows handled: nothing more can be sent
        async with service.db.connection() as conn:
            return await OutboxStore(conn).pending_count(notify_topic("pixc")) == 0

    await eventually(outbox_done, 10.0, what="the notifier has handled both outbox rows")
    assert [pid3(m.segment("PID")) for m in consumer.messages] == [  # type: ignore[arg-type]
        ["K3^^^HOSPA&1.2.3.4.5.1&ISO"]]


async def test_pending_notifications_survive_a_restart_and_keep_their_order(
    start_service: Start, consumer: Consumer
) -> None:
    consumer.up = False
    first = await start_service(**consumer.settings())
    async with MLLPClient("127.0.0.1", first.port) as client:
        for number in range(1, 4):
            assert msa(reply(await client.send(adt("A04", f"R{number}^^^HOSPA")))) == "AA"

    async def attempt_failed() -> bool:  # the worker tried, and recorded its failure
        async with first.db.connection() as conn:
            head = await OutboxStore(conn).head(notify_topic("pixc"))
        return head is not None and head.attempts >= 1

    await eventually(attempt_failed, 10.0, what="a failed delivery attempt in the outbox")
    assert consumer.refused >= 1
    await first.stop()
    async with first.db.connection() as conn:
        assert await OutboxStore(conn).pending_count(notify_topic("pixc")) == 3
    assert consumer.messages == []
    consumer.up = True
    await start_service(**consumer.settings())
    await consumer.wait_for(3, within=15.0)
    assert [pid3(m.segment("PID"))[0].split("^")[0] for m in consumer.messages] == [  # type: ignore[arg-type]
        "R1", "R2", "R3"]


async def test_merge_and_identifier_change_are_notified(
    start_service: Start, consumer: Consumer
) -> None:
    service = await start_service(**consumer.settings())
    m1, m3 = "M1^^^HOSPA&1.2.3.4.5.1&ISO", "M3^^^HOSPA&1.2.3.4.5.1&ISO"
    async with MLLPClient("127.0.0.1", service.port) as client:
        await client.send(adt("A04", "M1^^^HOSPA", name="ONE^A", dob="19700101"))
        await client.send(adt("A04", "M2^^^HOSPA", name="TWO^B", dob="19800101"))
        await consumer.wait_for(2)
        assert msa(reply(await client.send(adt("A40", "M1^^^HOSPA", mrg="M2^^^HOSPA")))) == "AA"
        await consumer.wait_for(3)  # the surviving person, now without M2
        assert consumer.sets()[2] == [m1]
        assert msa(reply(await client.send(adt("A47", "M3^^^HOSPA", mrg="M1^^^HOSPA")))) == "AA"
        await consumer.wait_for(4)
        assert consumer.sets()[3] == [m3]


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


async def test_notification_over_tls(start_service: Start, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    secure = Consumer(ssl_context=context)
    await secure.server.start()
    try:
        service = await start_service(**secure.settings(tls=True, ca_file=str(cert)))
        async with MLLPClient("127.0.0.1", service.port) as client:
            assert msa(reply(await client.send(adt("A04", "T1^^^HOSPA")))) == "AA"
        await secure.wait_for(1)
        assert secure.sets() == [["T1^^^HOSPA&1.2.3.4.5.1&ISO"]]
    finally:
        await secure.server.stop(grace=1.0)
