"""identity.hl7v2.mllp: frame decoding, the asyncio server and client, over real local sockets."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import hl7
import hl7.mllp
import pytest

from identity.hl7v2.errors import FrameTooLargeError, MLLPConnectionError
from identity.hl7v2.mllp import FrameDecoder, Handler, MLLPClient, MLLPServer, encode_frame
from identity.hl7v2.tokenizer import build_message, parse_message

SB, EB_CR = b"\x0b", b"\x1c\r"


def adt(control_id: str, family: str = "Doe") -> bytes:
    text = build_message(
        [
            ["MSH", None, None, "REG", "HOSP", "MPI", "IHE", "20260101", None,
             [["ADT", "A04", "ADT_A01"]], control_id, "P", "2.5"],
            ["PID", "1", None, [["42", None, None, ["HOSP"]]], None, [[family, "Ann"]]],
        ]
    )  # fmt: skip
    return text.encode("ascii")


async def ack_handler(raw: bytes) -> bytes:
    """Answers AA with MSA-2 = MSH-10, like the real front door will."""
    request = parse_message(raw)
    return build_message(
        [
            ["MSH", None, None, "MPI", "IHE", "REG", "HOSP", "20260101", None,
             [["ACK", request.trigger_event, "ACK"]], "R-" + request.control_id, "P", "2.5"],
            ["MSA", "AA", request.control_id],
        ]
    ).encode("ascii")  # fmt: skip


def acked_control_id(reply: bytes) -> str:
    msa = parse_message(reply).segment("MSA")
    assert msa is not None and msa.value(1) == "AA"
    return msa.value(2)


@pytest.fixture
async def server() -> AsyncIterator[MLLPServer]:
    mllp_server = MLLPServer(ack_handler, "127.0.0.1", 0, idle_timeout=30.0)
    await mllp_server.start()
    yield mllp_server
    await mllp_server.stop(grace=1.0)


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    decoder = FrameDecoder()
    frames: list[bytes] = []
    while len(frames) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 5.0)
        assert chunk, f"connection closed after {len(frames)} of {count} replies"
        frames += decoder.feed(chunk)
    return frames


async def read_until_closed(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    received = b""
    while chunk := await asyncio.wait_for(reader.read(65536), within):
        received += chunk
    return received


# --------------------------------------------------------------------------- FrameDecoder


def test_decoder_returns_one_frame_from_one_chunk() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(SB + b"MSH|1\r" + EB_CR) == [b"MSH|1\r"]
    assert not decoder.in_frame and decoder.pending_bytes == 0


def test_decoder_assembles_a_frame_fed_byte_by_byte() -> None:
    decoder = FrameDecoder()
    frame = encode_frame(adt("1"))
    out: list[bytes] = []
    for index in range(len(frame)):
        produced = decoder.feed(frame[index : index + 1])
        if index < len(frame) - 1:
            assert produced == []
        out += produced
    assert out == [adt("1")]


def test_decoder_returns_several_frames_from_one_chunk_and_keeps_the_partial_one() -> None:
    decoder = FrameDecoder()
    chunk = encode_frame(b"A") + encode_frame(b"B") + encode_frame(b"C")[:-3]
    assert decoder.feed(chunk) == [b"A", b"B"]
    assert decoder.in_frame
    assert decoder.feed(encode_frame(b"C")[-3:] + encode_frame(b"D")) == [b"C", b"D"]


def test_decoder_waits_for_the_cr_after_the_end_block() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(SB + b"X\x1c") == []
    assert decoder.feed(b"\r") == [b"X"]
    assert decoder.feed(SB + b"Y\x1cjunk") == [b"Y"]  # end block without CR still ends
    assert decoder.discarded_bytes == 4


def test_decoder_discards_bytes_outside_frames_and_logs_counts_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    decoder = FrameDecoder(peer="test")
    with caplog.at_level(logging.WARNING, logger="identity.hl7v2.mllp"):
        frames = decoder.feed(b"SECRET-GARBAGE" + encode_frame(b"A") + b"\r\n" + encode_frame(b"B"))
        frames += decoder.feed(b"trailing")
    assert frames == [b"A", b"B"]
    assert decoder.discarded_bytes == len(b"SECRET-GARBAGE") + 2 + len(b"trailing")
    assert "mllp.discarded" in caplog.text and "bytes=14" in caplog.text
    assert "SECRET" not in caplog.text


def test_decoder_abandons_a_frame_when_a_new_start_block_arrives() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(SB + b"half a mess") == []
    assert decoder.feed(SB + b"whole" + EB_CR) == [b"whole"]
    assert decoder.discarded_bytes == len(b"half a mess")


def test_decoder_refuses_a_frame_over_the_limit_before_it_ends() -> None:
    decoder = FrameDecoder(max_message_bytes=10)
    assert decoder.feed(SB + b"0123456789") == []  # exactly the limit is fine so far
    with pytest.raises(FrameTooLargeError) as caught:
        decoder.feed(b"A")
    assert caught.value.limit == 10
    with pytest.raises(FrameTooLargeError):
        decoder.feed(encode_frame(b"ok"))  # unusable afterwards
    assert FrameDecoder(max_message_bytes=10).feed(encode_frame(b"0123456789")) == [b"0123456789"]
    with pytest.raises(FrameTooLargeError):
        FrameDecoder(max_message_bytes=10).feed(encode_frame(b"0123456789A"))


def test_encode_frame_refuses_block_characters_in_the_message() -> None:
    assert encode_frame(b"M") == b"\x0bM\x1c\r"
    for bad in (b"a\x0bb", b"a\x1cb"):
        with pytest.raises(ValueError):
            encode_frame(bad)


# --------------------------------------------------------------------------- server framing


async def test_server_answers_a_frame_sent_byte_by_byte(server: MLLPServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    frame = encode_frame(adt("BYTE"))
    for index in range(len(frame)):
        writer.write(frame[index : index + 1])
        await writer.drain()
    [reply] = await read_frames(reader, 1)
    assert acked_control_id(reply) == "BYTE"
    writer.close()


async def test_server_answers_several_frames_of_one_write_in_order_with_garbage_between(
    server: MLLPServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"noise"
        + encode_frame(adt("1"))
        + b"\r\n"
        + encode_frame(adt("2"))
        + encode_frame(adt("3"))
    )
    replies = await read_frames(reader, 3)
    assert [acked_control_id(reply) for reply in replies] == ["1", "2", "3"]
    writer.close()


async def test_one_connection_is_handled_strictly_in_order() -> None:
    active = 0
    seen: list[str] = []

    async def slow_then_fast(raw: bytes) -> bytes:
        nonlocal active
        active += 1
        assert active == 1, "two messages of one connection handled at once"
        control_id = parse_message(raw).control_id
        await asyncio.sleep(0.05 if control_id == "1" else 0.0)
        seen.append(control_id)
        active -= 1
        return await ack_handler(raw)

    async with MLLPServer(slow_then_fast, "127.0.0.1", 0) as mllp_server:
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_server.port)
        writer.write(b"".join(encode_frame(adt(str(number))) for number in range(1, 6)))
        replies = await read_frames(reader, 5)
        writer.close()
    assert seen == ["1", "2", "3", "4", "5"]
    assert [acked_control_id(reply) for reply in replies] == seen


async def test_oversize_frame_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with MLLPServer(ack_handler, "127.0.0.1", 0, max_message_bytes=1000) as mllp_server:
        good = MLLPClient("127.0.0.1", mllp_server.port, timeout=5.0)
        assert acked_control_id(await good.send(adt("before"))) == "before"
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_server.port)
        with caplog.at_level(logging.WARNING, logger="identity.hl7v2.mllp"):
            writer.write(SB + b"x" * 5000)
            assert await read_until_closed(reader) == b""
        assert "mllp.frame_too_large" in caplog.text
        assert acked_control_id(await good.send(adt("after"))) == "after"
        await good.close()
        writer.close()


async def test_idle_connection_is_closed_after_idle_timeout() -> None:
    async with MLLPServer(ack_handler, "127.0.0.1", 0, idle_timeout=0.2) as mllp_server:
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_server.port)
        writer.write(encode_frame(adt("1")))
        await read_frames(reader, 1)
        started = time.monotonic()
        assert await read_until_closed(reader, within=5.0) == b""
        assert 0.1 < time.monotonic() - started < 3.0
        assert mllp_server.connection_count == 0
        writer.close()


async def test_handler_returning_none_sends_nothing_and_the_next_message_is_answered() -> None:
    async def drop_first(raw: bytes) -> bytes | None:
        return None if parse_message(raw).control_id == "quiet" else await ack_handler(raw)

    async with MLLPServer(drop_first, "127.0.0.1", 0) as mllp_server:
        reader, writer = await asyncio.open_connection("127.0.0.1", mllp_server.port)
        writer.write(encode_frame(adt("quiet")) + encode_frame(adt("loud")))
        [reply] = await read_frames(reader, 1)
        assert acked_control_id(reply) == "loud"
        writer.close()


async def test_handler_failure_closes_the_connection_and_the_server_keeps_serving() -> None:
    async def fail_on_boom(raw: bytes) -> bytes:
        if parse_message(raw).control_id == "boom":
            raise RuntimeError("handler bug")
        return await ack_handler(raw)

    async with MLLPServer(fail_on_boom, "127.0.0.1", 0) as mllp_server:
        client = MLLPClient("127.0.0.1", mllp_server.port, timeout=5.0)
        with pytest.raises(MLLPConnectionError):
            await client.send(adt("boom"))
        assert acked_control_id(await client.send(adt("fine"))) == "fine"  # reconnects
        await client.close()


async def test_two_hundred_concurrent_connections() -> None:
    active = 0
    peak = 0

    async def slow_ack(raw: bytes) -> bytes:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return await ack_handler(raw)

    # one client address: the per-client limit (default 32) raised to let them all in
    async with MLLPServer(slow_ack, "127.0.0.1", 0, max_connections_per_client=200) as mllp_server:

        async def one_sender(number: int) -> list[str]:
            async with MLLPClient("127.0.0.1", mllp_server.port, timeout=20.0) as client:
                return [
                    acked_control_id(await client.send(adt(f"{number}-{sequence}")))
                    for sequence in range(2)
                ]

        started = time.monotonic()
        results = await asyncio.gather(*(one_sender(number) for number in range(200)))
        elapsed = time.monotonic() - started
    assert results == [[f"{number}-0", f"{number}-1"] for number in range(200)]
    assert peak >= 50, f"handlers did not overlap across connections (peak {peak})"
    assert elapsed < 10.0  # 400 sequential handlings would take 20 s


# --------------------------------------------------------------------------- graceful stop


async def test_stop_lets_an_in_flight_message_finish_and_closes_idle_connections() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow(raw: bytes) -> bytes:
        started.set()
        await release.wait()
        return await ack_handler(raw)

    mllp_server = MLLPServer(slow, "127.0.0.1", 0)
    await mllp_server.start()
    port = mllp_server.port
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    client = MLLPClient("127.0.0.1", port, timeout=10.0)
    in_flight = asyncio.create_task(client.send(adt("inflight")))
    await asyncio.wait_for(started.wait(), 5.0)

    stopping = asyncio.create_task(mllp_server.stop(grace=10.0))
    assert await read_until_closed(idle_reader) == b""  # idle connection closed at once
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)  # no longer accepting
    assert not stopping.done()
    release.set()
    assert acked_control_id(await asyncio.wait_for(in_flight, 5.0)) == "inflight"
    await asyncio.wait_for(stopping, 5.0)
    assert mllp_server.connection_count == 0
    await client.close()
    idle_writer.close()


async def test_stop_cancels_handlers_still_running_after_grace() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck(raw: bytes) -> bytes:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return raw

    mllp_server = MLLPServer(stuck, "127.0.0.1", 0)
    await mllp_server.start()
    client = MLLPClient("127.0.0.1", mllp_server.port, timeout=10.0)
    in_flight = asyncio.create_task(client.send(adt("stuck")))
    await asyncio.wait_for(started.wait(), 5.0)
    began = time.monotonic()
    await mllp_server.stop(grace=0.2)
    assert time.monotonic() - began < 3.0
    assert cancelled.is_set()
    with pytest.raises(MLLPConnectionError):
        await in_flight
    await client.close()


# --------------------------------------------------------------------------- client


async def test_client_timeout_drops_the_connection_so_a_late_reply_is_never_misread() -> None:
    async def slow_first(raw: bytes) -> bytes:
        if parse_message(raw).control_id == "slow":
            await asyncio.sleep(0.5)
        return await ack_handler(raw)

    async with MLLPServer(slow_first, "127.0.0.1", 0) as mllp_server:
        client = MLLPClient("127.0.0.1", mllp_server.port, timeout=0.1)
        with pytest.raises(TimeoutError):
            await client.send(adt("slow"))
        assert not client.connected
        client.timeout = 5.0
        assert acked_control_id(await client.send(adt("next"))) == "next"
        await client.close()


async def test_client_encodes_text_with_the_charset_of_msh18() -> None:
    received: list[bytes] = []

    async def record(raw: bytes) -> bytes:
        received.append(raw)
        return await ack_handler(raw)

    text = "MSH|^~\\&|A|B|C|D|20260101||ADT^A04|L1|P|2.5||||||8859/1\rPID|1||1||Zoé\r"
    async with (
        MLLPServer(record, "127.0.0.1", 0) as mllp_server,
        MLLPClient("127.0.0.1", mllp_server.port, timeout=5.0) as client,
    ):
        assert acked_control_id(await client.send(text)) == "L1"
    assert received == [text.encode("latin-1")]


async def test_client_send_to_a_closed_port_raises_oserror() -> None:
    mllp_server = MLLPServer(ack_handler, "127.0.0.1", 0)
    await mllp_server.start()
    port = mllp_server.port
    await mllp_server.stop()
    with pytest.raises(OSError):
        await MLLPClient("127.0.0.1", port, timeout=2.0).send(adt("x"))


@pytest.fixture
def tls_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
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


async def test_server_and_client_over_tls(tls_certificate: tuple[Path, Path]) -> None:
    cert, key = tls_certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    async with (
        MLLPServer(ack_handler, "127.0.0.1", 0, ssl_context=server_context) as mllp_server,
        MLLPClient("127.0.0.1", mllp_server.port, ssl_context=client_context, timeout=5) as client,
    ):
        assert acked_control_id(await client.send(adt("TLS1"))) == "TLS1"
        untrusting = MLLPClient(
            "127.0.0.1", mllp_server.port, ssl_context=ssl.create_default_context(), timeout=5
        )
        with pytest.raises(ssl.SSLError):
            await untrusting.send(adt("TLS2"))


# --------------------------------------------------------------------------- interoperability


async def test_hl7_package_client_talks_to_our_server(server: MLLPServer) -> None:
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", server.port)
    for control_id in ("P1", "P2"):
        writer.writemessage(hl7.parse(adt(control_id).decode("ascii")))
        await writer.drain()
        reply = await asyncio.wait_for(reader.readmessage(), 5.0)
        assert str(reply.segment("MSA")[1]) == "AA"
        assert str(reply.segment("MSA")[2]) == control_id
    writer.close()
    await writer.wait_closed()


async def test_our_client_talks_to_an_hl7_package_server() -> None:
    async def answer(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not reader.at_eof():
                request = await reader.readmessage()
                control_id = str(request.segment("MSH")[10])
                writer.writemessage(hl7.parse(f"MSH|^~\\&|X|Y|||||ACK|A{control_id}|P|2.5\r"
                                              f"MSA|AA|{control_id}"))  # fmt: skip
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    handler_server = await hl7.mllp.start_hl7_server(answer, "127.0.0.1", 0)
    port = handler_server.sockets[0].getsockname()[1]
    try:
        async with MLLPClient("127.0.0.1", port, timeout=5.0) as client:
            for control_id in ("Q1", "Q2"):
                assert acked_control_id(await client.send(adt(control_id))) == control_id
    finally:
        handler_server.close()
        await handler_server.wait_closed()


def test_handler_type_alias_accepts_our_ack_handler() -> None:
    handler: Handler = ack_handler
    assert asyncio.iscoroutinefunction(handler)
