"""Sending audit messages over syslog: the RFC 5424 message ITI-20 describes, over TLS (RFC 5425)
and UDP (RFC 5426) to collectors started here."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from identity.audit.dicom import to_xml
from identity.audit.syslog import (
    BOM,
    MAX_UDP_PAYLOAD,
    MessageTooLarge,
    SyslogSender,
    octet_counted,
    sender_from_settings,
    syslog_message,
)
from identity.config import Settings
from identity.tls import client_context

from ..conftest import private_directory
from ..waiting import eventually
from .collector import Pki, Syslog, make_pki, tls_collector, udp_collector
from .helpers import feed, refused_feed


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    with private_directory("identity-audit-pki-") as directory:
        yield make_pki(directory)


def test_the_syslog_message_of_iti20() -> None:
    """RFC 5424 HEADER with PRI 85 (facility 10, severity 5), MSGID IHE+RFC-3881, no
    STRUCTURED-DATA; the BOM only when asked for (ITI TF-2 3.20.4.1.2 discourages it)."""
    at = datetime(2026, 12, 3, 2, 28, 40, 123456, tzinfo=UTC)
    data = syslog_message(b"<AuditMessage/>", hostname="mpi.example.org", procid="4242",
                          timestamp=at)  # fmt: skip
    assert data == (b"<85>1 2026-12-03T02:28:40.123456Z mpi.example.org identity 4242 "
                    b"IHE+RFC-3881 - <AuditMessage/>")  # fmt: skip
    with_bom = syslog_message(b"<x/>", severity=4, hostname="h", procid="1", timestamp=at,
                              bom=True)  # fmt: skip
    assert with_bom.startswith(b"<84>1 ") and with_bom.endswith(b" - " + BOM + b"<x/>")
    assert syslog_message(b"x", hostname="a b\x00c", procid="1").split(b" ")[2] == b"a_b_c"
    assert octet_counted(b"abc") == b"3 abc"


async def test_tls_delivery_to_a_collector(pki: Pki) -> None:
    async with tls_collector(pki) as collector:
        sender = SyslogSender(collector.url, ssl_context=client_context(ca=pki.ca),
                              hostname="mpi.example.org")  # fmt: skip
        try:
            await sender.send(to_xml(feed()), severity=feed().syslog_severity)
            await sender.send(to_xml(refused_feed()), severity=refused_feed().syslog_severity)
            await eventually(lambda: len(collector.messages) == 2)
        finally:
            await sender.close()
    first, second = collector.parsed()
    assert collector.connections == 1  # one connection kept for both
    assert (first.pri, second.pri) == (85, 84)
    assert first.msgid == "IHE+RFC-3881" and first.sd == "-"
    assert first.hostname == "mpi.example.org" and first.app == "identity"
    assert first.procid.isdigit()
    assert not first.msg.startswith(BOM)
    root = etree.fromstring(first.msg)
    assert root.tag == "AuditMessage"
    assert root.find("EventIdentification/EventID").get("csd-code") == "110110"
    assert etree.fromstring(second.msg).find("EventIdentification").get(
        "EventOutcomeIndicator") == "4"


async def test_tls_with_a_client_certificate_and_the_bom(pki: Pki) -> None:
    async with tls_collector(pki, require_client=True) as collector:
        settings = Settings(audit={"syslog": {
            "url": collector.url, "ca": str(pki.ca), "certificate": str(pki.client_cert),
            "key": str(pki.client_key), "bom": True}})  # fmt: skip
        assert settings.audit.syslog is not None
        sender = sender_from_settings(settings.audit.syslog)
        try:
            await sender.send(to_xml(feed()))
            await eventually(lambda: collector.messages)
        finally:
            await sender.close()
    [message] = collector.parsed()
    assert message.msg.startswith(BOM)
    assert etree.fromstring(message.msg[len(BOM):]).tag == "AuditMessage"


async def test_a_collector_whose_certificate_does_not_verify_is_refused(pki: Pki) -> None:
    async with tls_collector(pki) as collector:
        sender = SyslogSender(collector.url, ssl_context=client_context(ca=pki.other_ca))
        with pytest.raises(ssl.SSLCertVerificationError):
            await sender.send(to_xml(feed()))
        await sender.close()
    assert collector.messages == []


async def test_reconnects_after_the_collector_closed_the_connection(pki: Pki) -> None:
    async with tls_collector(pki) as collector:
        sender = SyslogSender(collector.url, ssl_context=client_context(ca=pki.ca))
        try:
            await sender.send(to_xml(feed()))
            await eventually(lambda: len(collector.messages) == 1)
            await collector.drop_connections()
            await eventually(lambda: sender._reader is not None and sender._reader.at_eof())
            await sender.send(to_xml(feed("U")))
            await eventually(lambda: len(collector.messages) == 2)
        finally:
            await sender.close()
    assert collector.connections == 2


async def test_collector_down_raises(pki: Pki) -> None:
    async with tls_collector(pki) as collector:
        url = collector.url
    sender = SyslogSender(url, ssl_context=client_context(ca=pki.ca), timeout=2.0)
    with pytest.raises(OSError):
        await sender.send(to_xml(feed()))
    await sender.close()


async def test_udp_one_message_per_datagram() -> None:
    async with udp_collector() as collector:
        sender = SyslogSender(collector.url)
        try:
            await sender.send(to_xml(feed()))
            await sender.send(to_xml(refused_feed()), severity=4)
            await eventually(lambda: len(collector.messages) == 2)
        finally:
            await sender.close()
    first, second = [Syslog.parse(m) for m in collector.messages]
    assert (first.pri, second.pri) == (85, 84)
    assert etree.fromstring(first.msg).tag == "AuditMessage"


async def test_udp_refuses_a_message_larger_than_a_datagram() -> None:
    """Never truncated: an AuditMessage cut short is not XML."""
    async with udp_collector() as collector:
        sender = SyslogSender(collector.url)
        try:
            with pytest.raises(MessageTooLarge):
                await sender.send(b"<AuditMessage>" + b"x" * MAX_UDP_PAYLOAD + b"</AuditMessage>")
            await sender.send(to_xml(feed()))  # the sender still works
            await eventually(lambda: len(collector.messages) == 1)
        finally:
            await sender.close()


def test_urls() -> None:
    assert SyslogSender("udp://collector").port == 514
    tls = SyslogSender("tls://collector", ssl_context=ssl.create_default_context())
    assert (tls.host, tls.port) == ("collector", 6514)
    assert SyslogSender("udp://[::1]:1514").host == "::1"
    with pytest.raises(ValueError):
        SyslogSender("tcp://collector:601")
    with pytest.raises(ValueError):
        SyslogSender("tls://collector")  # no context


def test_settings(tmp_path: Path, pki: Pki) -> None:
    from identity.config import load_settings
    from identity.errors import ConfigError

    config = tmp_path / "c.toml"
    config.write_text(f'[audit]\nsource_id = "mpi-1"\nenterprise_site = "HOSP"\n'
                      f'[audit.syslog]\nurl = "tls://arr.example.org"\nca = "{pki.ca}"\n')
    settings = load_settings(config)
    assert settings.audit.source_id == "mpi-1"
    assert settings.audit.syslog is not None and settings.audit.syslog.ca == pki.ca
    assert Settings().audit.syslog is None
    for bad, message in (
        ('url = "tcp://x"', "tls://host"),
        (f'url = "udp://x"\nca = "{pki.ca}"', "only with a tls:// url"),
        (f'url = "tls://x"\ncertificate = "{pki.client_cert}"', "go together"),
        ('url = "tls://x"\nca = "/nonexistent.pem"', "cannot read"),
    ):
        config.write_text(f"[audit.syslog]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_settings(config)
