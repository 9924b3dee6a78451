"""The HL7 v2 door's limits over real sockets: connections in total and per client, and the
tokenizer's caps on segments and repetitions (the frame size and idle timeout are in
test_front_door_framing.py). Each shows the protocol's answer, that nothing was applied and that
the service goes on serving."""

from __future__ import annotations

import asyncio
import logging

import pytest

from identity.errors import UnknownIdentifier
from identity.hl7v2.mllp import FrameDecoder, MLLPClient
from identity.hl7v2.service import Hl7Service
from tests.core.helpers import ref
from tests.hl7v2.conftest import Start
from tests.hl7v2.messages import adt, errs, msa, reply
from tests.waiting import eventually

SB, EB_CR = b"\x0b", b"\x1c\r"


def framed(text: str) -> bytes:
    return SB + text.encode() + EB_CR


async def registered(service: Hl7Service, value: str) -> bool:
    try:
        await service.mpi.find_record(ref("HOSPA", value))
    except UnknownIdentifier:
        return False
    return True


async def refused(service: Hl7Service, pid: str, local: str = "127.0.0.1") -> None:
    """A connection that sends an A04 at once is closed without a reply (a reset, when the
    server closes it with the A04 unread)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", service.port, local_addr=(local, 0)
    )
    writer.write(framed(adt("A04", f"{pid}^^^HOSPA")))
    async with asyncio.timeout(5):
        try:
            assert await reader.read() == b""  # closed, no reply
        except ConnectionResetError:
            pass
    writer.close()


async def answered(service: Hl7Service, pid: str, local: str = "127.0.0.1") -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port, local_addr=(local, 0))
    writer.write(framed(adt("A04", f"{pid}^^^HOSPA")))
    decoder, frames = FrameDecoder(), []
    async with asyncio.timeout(10):
        while not frames:
            chunk = await reader.read(65536)
            assert chunk, "closed before the reply"
            frames = decoder.feed(chunk)
    assert msa(reply(frames[0])) == "AA"
    writer.close()


async def test_a_connection_over_max_connections_is_closed_and_the_others_are_served(
    start_service: Start, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start_service(mllp={"port": 0, "max_connections": 3})
    clients = [MLLPClient("127.0.0.1", service.port, timeout=10.0) for _ in range(3)]
    for index, client in enumerate(clients):  # each connection is open at the server
        assert msa(reply(await client.send(adt("A04", f"MC{index}^^^HOSPA")))) == "AA"
    with caplog.at_level(logging.WARNING, logger="identity.hl7v2.mllp"):
        await refused(service, "MCX")
    assert "mllp.connection_refused" in caplog.text and "reason=max_connections " in caplog.text
    assert "MCX" not in caplog.text  # the peer's address, no message content
    assert not await registered(service, "MCX")
    for index, client in enumerate(clients):  # the connections already open are unaffected
        assert msa(reply(await client.send(adt("A08", f"MC{index}^^^HOSPA")))) == "AA"
    await clients[0].close()
    await eventually(
        lambda: service.server.connection_count == 2, what="the closed connection forgotten"
    )
    await answered(service, "MC9")  # a place is free again
    for client in clients[1:]:
        await client.close()


async def test_a_connection_over_max_connections_per_client_is_closed_and_others_connect(
    start_service: Start, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start_service(mllp={"port": 0, "max_connections_per_client": 2})
    clients = [MLLPClient("127.0.0.1", service.port, timeout=10.0) for _ in range(2)]
    for index, client in enumerate(clients):
        assert msa(reply(await client.send(adt("A04", f"PC{index}^^^HOSPA")))) == "AA"
    with caplog.at_level(logging.WARNING, logger="identity.hl7v2.mllp"):
        await refused(service, "PCX")
    assert "reason=max_connections_per_client" in caplog.text and "limit=2" in caplog.text
    assert not await registered(service, "PCX")
    await answered(service, "PC8", local="127.0.0.2")  # another address has its own count
    for client in clients:
        assert msa(reply(await client.send(adt("A08", "PC0^^^HOSPA")))) == "AA"
        await client.close()
    await eventually(lambda: service.server.connection_count == 0, what="connections forgotten")
    await answered(service, "PC9")


async def test_more_segments_than_max_segments_is_AR_207_and_nothing_applied(
    start_service: Start, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start_service(hl7={"max_segments": 6})
    base = adt("A04", "SG1^^^HOSPA", control="SEG1")  # MSH EVN PID PV1
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
        with caplog.at_level(logging.WARNING, logger="identity.hl7v2"):
            answer = reply(await client.send(base + "NTE|1||a\rNTE|2||b\rNTE|3||c\r"))
        assert msa(answer) == "AR"
        assert answer.segment("MSA").value(2) == "SEG1"  # type: ignore[union-attr]
        assert errs(answer) == [("NTE^3", "207")]
        assert "event=hl7_limit_exceeded limit=6 location=NTE^3" in caplog.text
        assert not await registered(service, "SG1")
        # the same connection goes on: a message within the cap is applied
        assert msa(reply(await client.send(base.replace("SEG1", "SEG2") + "NTE|1||a\r"))) == "AA"
    assert await registered(service, "SG1")


async def test_more_repetitions_than_max_repetitions_is_AR_207_and_nothing_applied(
    start_service: Start,
) -> None:
    service = await start_service(hl7={"max_repetitions": 3})
    four = "~".join(f"RP{n}^^^HOSPA" for n in range(1, 5))
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
        answer = reply(await client.send(adt("A04", four)))
        assert msa(answer) == "AR"
        assert errs(answer) == [("PID^1^3^4", "207")]
        assert not await registered(service, "RP1")
        three = "~".join(f"RP{n}^^^HOSPA" for n in range(1, 4))
        assert msa(reply(await client.send(adt("A04", three)))) == "AA"
    assert await registered(service, "RP1")
