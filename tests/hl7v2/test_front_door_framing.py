"""The front door's MLLP edge cases over raw sockets: split frames, pipelined frames, LF
terminators, the size limit and idle timeout from settings.mllp, graceful stop."""

from __future__ import annotations

import asyncio

import pytest

from identity.errors import UnknownIdentifier
from identity.hl7v2.mllp import FrameDecoder, MLLPClient
from identity.hl7v2.service import Hl7Service
from tests.core.helpers import ref
from tests.hl7v2.conftest import Start
from tests.hl7v2.messages import adt, msa, reply
from tests.waiting import eventually

SB, EB_CR = b"\x0b", b"\x1c\r"


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    decoder = FrameDecoder()
    frames: list[bytes] = []
    async with asyncio.timeout(10):
        while len(frames) < count:
            chunk = await reader.read(65536)
            assert chunk, "connection closed before the reply"
            frames += decoder.feed(chunk)
    return frames


async def test_frame_split_into_single_bytes_is_answered_once(service: Hl7Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    frame = SB + adt("A04", "F1^^^HOSPA").encode() + EB_CR
    for index in range(len(frame)):
        writer.write(frame[index : index + 1])
        await writer.drain()
    [answer] = await read_frames(reader, 1)
    assert msa(reply(answer)) == "AA"
    writer.close()


async def test_pipelined_frames_are_answered_in_order(service: Hl7Service) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    controls = ["PIPE1", "PIPE2", "PIPE3"]
    writer.write(b"".join(
        SB + adt("A04", f"F{c}^^^HOSPA", control=c).encode() + EB_CR for c in controls))
    await writer.drain()
    frames = await read_frames(reader, 3)
    assert [reply(f).segment("MSA").value(2) for f in frames] == controls  # type: ignore[union-attr]
    writer.close()


async def test_lf_and_crlf_segment_terminators_are_accepted(client: MLLPClient) -> None:
    for terminator, pid in (("\n", "F2"), ("\r\n", "F3")):
        text = adt("A04", f"{pid}^^^HOSPA").replace("\r", terminator)
        assert msa(reply(await client.send(text.encode()))) == "AA"


async def test_frame_over_the_configured_limit_closes_the_connection(
    start_service: Start,
) -> None:
    service = await start_service(mllp={"port": 0, "max_message_bytes": 2048})
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(SB + adt("A04", "F4^^^HOSPA", name="X" * 4000 + "^Y").encode() + EB_CR)
    await writer.drain()
    async with asyncio.timeout(5):
        try:
            assert await reader.read() == b""  # closed, no reply
        except ConnectionResetError:  # closed with bytes unread
            pass
    writer.close()
    with pytest.raises(UnknownIdentifier):  # nothing applied
        await service.mpi.find_record(ref("HOSPA", "F4"))
    async with MLLPClient("127.0.0.1", service.port) as client:  # the listener lives on
        assert msa(reply(await client.send(adt("A04", "F5^^^HOSPA")))) == "AA"


async def test_idle_connection_is_closed_after_the_configured_timeout(
    start_service: Start,
) -> None:
    service = await start_service(mllp={"port": 0, "idle_timeout": 0.2})
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    writer.close()


async def test_stop_answers_the_message_in_flight(start_service: Start) -> None:
    service = await start_service()
    async with MLLPClient("127.0.0.1", service.port) as client:
        sending = asyncio.create_task(client.send(adt("A04", "F6^^^HOSPA")))
        # stop once the server is handling it (stop() closes a connection that is not busy
        # at once); polled at every turn of the loop, as handling one A04 takes only a few
        await eventually(lambda: any(c.busy for c in service.server._connections), interval=0,
                         what="the A04 in flight at the server")
        await service.stop()
        answer = await sending
    assert msa(reply(answer)) == "AA"
