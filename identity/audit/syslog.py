"""Sending audit messages to an Audit Record Repository: RFC 5424 syslog over TLS (RFC 5425) or
UDP (RFC 5426), as IHE ITI TF-2 3.20.4.1.2 Record Audit Event [ITI-20] asks.

The syslog message (RFC 5424 section 6)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG

- PRI = facility 10 (security/authorization) * 8 + severity: 5 (notice, ``<85>``) for a
  success, 4 (warning, ``<84>``) for a failure (ITI TF-2 3.20.4.1.2 item 2);
- TIMESTAMP: when the message is sent, UTC, microseconds; HOSTNAME: this machine's name;
  APP-NAME ``identity``; PROCID: the process id;
- MSGID ``IHE+RFC-3881`` (item 3; the DICOM profile's own value ``DICOM+RFC3881`` is only a
  "may", PS3.15 A.6/A.7); no STRUCTURED-DATA (``-``, item 4);
- MSG: the AuditMessage XML in UTF-8; RFC 5424's BOM before it only when ``bom`` is set,
  because ITI-20 (item 5) discourages it.

Transports:

- ``tls://host:port`` (default port 6514, RFC 5425): a TLS connection (identity.tls: 1.2
  floor, the collector's certificate verified against ``ca`` and its name against ``host``; our
  certificate sent when configured), each message framed ``MSG-LEN SP SYSLOG-MSG`` (octet
  counting, RFC 5425 section 4.3). The connection is kept and opened again after a failure or
  when the collector has closed it. RFC 5425 has no acknowledgement: a message written to a
  connection the collector drops at that moment can be lost without an error here.
- ``udp://host:port`` (default port 514, RFC 5426): one message per datagram. A datagram
  carries at most 65,507 octets of IPv4 payload; an audit message larger than that is never
  truncated (a truncated AuditMessage is not XML): :class:`MessageTooLarge` is raised and the
  caller (identity.audit.deliver) logs it and skips that message. Datagrams larger than the
  path MTU are fragmented by IP and collectors may accept less (RFC 5426 section 3.2 only
  requires 480 octets over IPv4, 2048 recommended): prefer TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from datetime import UTC, datetime
from urllib.parse import urlsplit

from identity.audit.dicom import SYSLOG_MSGID
from identity.config import AuditSyslogSettings
from identity.tls import client_context

FACILITY = 10
"""security/authorization messages (RFC 5424 table 1; ITI TF-2 3.20.4.1.2 item 2)."""
BOM = b"\xef\xbb\xbf"
TLS_PORT = 6514
UDP_PORT = 514
MAX_UDP_PAYLOAD = 65507
"""The largest UDP payload over IPv4 (65,535 - 8 UDP header - 20 IPv4 header)."""
APP_NAME = "identity"


class MessageTooLarge(ValueError):
    """The syslog message does not fit the transport (a UDP datagram)."""


def _header_field(value: str | None, limit: int) -> str:
    """A HEADER field: PRINTUSASCII (33..126) only, at most ``limit`` octets; ``-`` when
    empty."""
    if not value:
        return "-"
    text = "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value)
    return text[:limit]


def syslog_message(
    msg: bytes,
    *,
    severity: int = 5,
    hostname: str | None = None,
    app_name: str = APP_NAME,
    procid: str | None = None,
    msgid: str = SYSLOG_MSGID,
    timestamp: datetime | None = None,
    bom: bool = False,
) -> bytes:
    """One RFC 5424 SYSLOG-MSG with ``msg`` (UTF-8) as MSG and no STRUCTURED-DATA."""
    if not 0 <= severity <= 7:
        raise ValueError(f"syslog severity {severity} is not 0..7")
    moment = (timestamp or datetime.now(UTC)).astimezone(UTC)
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = (
        f"<{FACILITY * 8 + severity}>1 {stamp} "
        f"{_header_field(hostname or socket.gethostname(), 255)} "
        f"{_header_field(app_name, 48)} "
        f"{_header_field(procid if procid is not None else str(os.getpid()), 128)} "
        f"{_header_field(msgid, 32)} -"
    )
    return header.encode("ascii") + b" " + (BOM if bom else b"") + msg


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 section 4.3 framing: ``MSG-LEN SP SYSLOG-MSG``."""
    return str(len(message)).encode("ascii") + b" " + message


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.closed = asyncio.Event()

    def error_received(self, exc: Exception) -> None:  # e.g. ICMP port unreachable
        self.error = exc

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class SyslogSender:
    """One collector, ``tls://host[:port]`` or ``udp://host[:port]``; ``send`` one message at a
    time (the caller awaits each). Not safe for concurrent ``send`` calls."""

    def __init__(
        self,
        url: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        hostname: str | None = None,
        app_name: str = APP_NAME,
        bom: bool = False,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("tls", "udp") or not parts.hostname:
            raise ValueError(f"syslog url must be tls://host[:port] or udp://host[:port]: {url}")
        self.transport = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (TLS_PORT if self.transport == "tls" else UDP_PORT)
        if self.transport == "tls" and ssl_context is None:
            raise ValueError("a tls:// collector needs an SSL context (identity.tls)")
        self.ssl_context = ssl_context
        self.hostname = hostname or socket.gethostname()
        self.app_name = app_name
        self.bom = bom
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._datagram: asyncio.DatagramTransport | None = None
        self._protocol: _Datagrams | None = None
        self.sent = 0

    def message(self, xml: bytes, severity: int = 5) -> bytes:
        return syslog_message(xml, severity=severity, hostname=self.hostname,
                              app_name=self.app_name, bom=self.bom)  # fmt: skip

    async def send(self, xml: bytes, *, severity: int = 5) -> None:
        """Send one AuditMessage; raise on failure (the connection is then closed and opened
        again by the next call)."""
        message = self.message(xml, severity)
        if self.transport == "udp":
            await self._send_datagram(message)
        else:
            await self._send_stream(octet_counted(message))
        self.sent += 1

    async def _send_stream(self, frame: bytes) -> None:
        writer = await self._stream()
        try:
            writer.write(frame)
            await asyncio.wait_for(writer.drain(), self.timeout)
        except BaseException:
            await self.close()
            raise

    async def _stream(self) -> asyncio.StreamWriter:
        reader, writer = self._reader, self._writer
        if writer is not None and reader is not None:
            # A collector never writes (RFC 5425): data or EOF means it is gone or closing.
            if reader.at_eof() or writer.is_closing():
                await self.close()
            else:
                return writer
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=self.ssl_context,
                                    server_hostname=self.host),
            self.timeout,
        )  # fmt: skip
        return self._writer

    async def _send_datagram(self, message: bytes) -> None:
        if len(message) > MAX_UDP_PAYLOAD:
            raise MessageTooLarge(
                f"{len(message)} octets do not fit one UDP datagram ({MAX_UDP_PAYLOAD} at most)"
            )
        transport = self._datagram
        if transport is None or transport.is_closing():
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_datagram_endpoint(
                _Datagrams, remote_addr=(self.host, self.port)
            )
            self._datagram, self._protocol = transport, protocol
        protocol = self._protocol
        if protocol is not None and protocol.error is not None:
            error, protocol.error = protocol.error, None
            await self.close()
            raise error
        transport.sendto(message)

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2.0)
        datagram, self._datagram, self._protocol = self._datagram, None, None
        if datagram is not None:
            datagram.close()


def sender_from_settings(
    settings: AuditSyslogSettings, *, hostname: str | None = None
) -> SyslogSender:
    """The sender of ``[audit.syslog]`` (an AuditSyslogSettings): for tls:// a client context
    from identity.tls (1.2 floor, the collector verified against ``ca``, else the system's
    CAs; ``certificate``/``key`` ours)."""
    context = None
    if settings.url.startswith("tls:"):
        context = client_context(ca=settings.ca, certificate=settings.certificate,
                                 key=settings.key, where="audit.syslog")  # fmt: skip
    return SyslogSender(settings.url, ssl_context=context, hostname=hostname, bom=settings.bom)


__all__ = [
    "BOM",
    "FACILITY",
    "MAX_UDP_PAYLOAD",
    "MessageTooLarge",
    "SyslogSender",
    "octet_counted",
    "sender_from_settings",
    "syslog_message",
]
