"""A syslog collector for the tests: RFC 5425 (TLS, octet-counted frames) or RFC 5426 (UDP),
and the certificates it and its clients use (made here with ``cryptography``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from tests.service.test_tls import _certificate, _write  # one way of making test certificates

HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-) (?P<msg>.*)$",
    re.DOTALL,
)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing the collector uses


def make_pki(directory: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("audit test CA", ca_key, ca=True)
    ca_path, _ = _write(directory, "ca", ca_cert, ca_key)
    issuer = (ca_cert.subject, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert, server_key_path = _write(
        directory, "collector", _certificate("localhost", server_key, issuer, server=True),
        server_key)  # fmt: skip
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert, client_key_path = _write(
        directory, "identity", _certificate("identity", client_key, issuer), client_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca, _ = _write(directory, "other-ca", _certificate("other CA", other_key, ca=True),
                         other_key)  # fmt: skip
    return Pki(ca_path, server_cert, server_key_path, client_cert, client_key_path, other_ca)


@dataclass
class Syslog:
    """One received SYSLOG-MSG, split into its RFC 5424 parts."""

    pri: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: str
    msg: bytes

    @classmethod
    def parse(cls, data: bytes) -> Syslog:
        match = HEADER.match(data)
        assert match is not None, data[:120]
        parts = match.groupdict()
        return cls(
            pri=int(parts["pri"]),
            **{k: parts[k].decode("ascii") for k in ("timestamp", "hostname", "app", "procid",
                                                     "msgid", "sd")},
            msg=parts["msg"],
        )  # fmt: skip


@dataclass
class Collector:
    url: str
    messages: list[bytes] = field(default_factory=list)
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.base_events.Server | None = None
    transport: asyncio.DatagramTransport | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def received(self, data: bytes) -> None:
        self.messages.append(data)
        self.arrived.set()

    def parsed(self) -> list[Syslog]:
        return [Syslog.parse(m) for m in self.messages]

    async def drop_connections(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()


async def _read_frames(collector: Collector, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:  # fmt: skip
    """RFC 5425 section 4.3: MSG-LEN SP SYSLOG-MSG, repeated."""
    collector.connections += 1
    collector.writers.append(writer)
    try:
        while True:
            length = await reader.readuntil(b" ")
            assert length[:-1].isdigit() and not length.startswith(b"0"), length
            collector.received(await reader.readexactly(int(length[:-1])))
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def tls_collector(
    pki: Pki, *, require_client: bool = False, port: int = 0
) -> AsyncIterator[Collector]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    collector = Collector(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_frames(collector, reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    collector.server = server
    port = server.sockets[0].getsockname()[1]
    collector.url = f"tls://localhost:{port}"
    try:
        yield collector
    finally:
        server.close()
        await collector.drop_connections()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.collector.received(data)


@contextlib.asynccontextmanager
async def udp_collector() -> AsyncIterator[Collector]:
    collector = Collector(url="")
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Datagrams(collector), local_addr=("127.0.0.1", 0)
    )
    collector.transport = transport
    port = transport.get_extra_info("sockname")[1]
    collector.url = f"udp://127.0.0.1:{port}"
    try:
        yield collector
    finally:
        transport.close()
