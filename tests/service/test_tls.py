"""TLS on both doors and towards ITI-10 consumers: real handshakes with certificates made here
(a CA, a server certificate for 127.0.0.1/localhost, a client certificate the CA signed and a
self-signed one)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import os
import socket
import ssl
import sys
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from identity.app import Service
from identity.config import Settings, load_settings
from identity.errors import ConfigError
from identity.hl7v2.errors import MLLPConnectionError
from identity.hl7v2.mllp import MLLPClient, MLLPServer
from identity.hl7v2.tokenizer import build_message, parse_message
from identity.tls import CIPHERS_TLS12, client_context, server_context

from ..conftest import DEMO_DOMAINS
from ..hl7v2.messages import adt, msa, reply
from ..waiting import eventually
from .test_workers import Served, _workers

# ------------------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # self-signed: an issuer the service does not know
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )  # fmt: skip
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, stem: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca_cert = _certificate("identity test CA", ca_key, ca=True)
    ca, _ = _write(directory, "ca", ca_cert, ca_key)
    issuer = (ca_cert.subject, ca_key)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    server = _write(directory, "server",
                    _certificate("localhost", server_key, issuer, server=True), server_key)
    client = _write(directory, "client", _certificate("ADT_A", client_key, issuer), client_key)
    stranger = _write(directory, "stranger", _certificate("ADT_A", stranger_key), stranger_key)
    return Pki(ca, *server, *client, *stranger)


def _tls(pki: Pki, client_certificates: str = "none") -> dict[str, Any]:
    values: dict[str, Any] = {"certificate": str(pki.server_cert), "key": str(pki.server_key),
                              "client_certificates": client_certificates}
    if client_certificates != "none":
        values["ca"] = str(pki.ca)
    return values


def _client(pki: Pki, who: str | None = None) -> ssl.SSLContext:
    """A client context trusting the test CA, with the client certificate ``who`` names."""
    if who == "client":
        return client_context(ca=pki.ca, certificate=pki.client_cert, key=pki.client_key)
    if who == "stranger":
        return client_context(ca=pki.ca, certificate=pki.stranger_cert, key=pki.stranger_key)
    return client_context(ca=pki.ca)


def _tls11_client(pki: Pki) -> ssl.SSLContext:
    """A client that offers nothing newer than TLS 1.1 (and lowers its own security level so
    that OpenSSL lets it offer TLS 1.1 at all: the refusal must come from the server)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.ca))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLSv1 and TLSv1_1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


# ------------------------------------------------------------------------------- the service

StartService = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_service(fresh_database: str, data_dir: Path) -> AsyncIterator[StartService]:
    started: list[Service] = []

    async def start(**overrides: Any) -> Service:
        values: dict[str, Any] = {
            "data_dir": data_dir,
            "database": {"url": fresh_database},
            "domains": DEMO_DOMAINS,
            "http": {"port": 0},
            "mllp": {"port": 0, "idle_timeout": 30.0},
        }
        for section, extra in overrides.items():
            if isinstance(extra, dict) and isinstance(values.get(section), dict):
                values[section] = {**values[section], **extra}
            else:
                values[section] = extra
        service = Service(Settings(**values))
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


async def _send(port: int, context: ssl.SSLContext | None, message: str) -> str:
    async with MLLPClient("127.0.0.1", port, ssl_context=context, timeout=10.0) as client:
        return msa(reply(await client.send(message)))


async def _get(port: int, path: str, context: ssl.SSLContext | None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"https://127.0.0.1:{port}{path}", ssl=context) as response:
            return response.status, await response.json(content_type=None)


# ------------------------------------------------------------------------------- configuration


def test_tls_configuration_is_checked_at_load(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"mllp\.tls\.key: Field required"):
        load_settings(mllp={"tls": {"certificate": str(pki.server_cert)}})
    with pytest.raises(ConfigError, match=r"http\.tls: .*ca is required"):
        load_settings(http={"tls": {**_tls(pki), "client_certificates": "required"}})
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=r"mllp\.tls\.certificate: .*cannot read .*missing"):
        load_settings(mllp={"tls": {**_tls(pki), "certificate": str(missing)}})
    with pytest.raises(ConfigError, match=r"notify\.0: .*certificate and key go together"):
        load_settings(notify=[{"name": "c", "host": "h", "port": 1, "tls": True,
                               "certificate": str(pki.client_cert)}])  # fmt: skip
    with pytest.raises(ConfigError, match=r"only with tls = true"):
        load_settings(notify=[{"name": "c", "host": "h", "port": 1, "ca": str(pki.ca)}])
    # the names [[notify]] had before keep working
    old = load_settings(notify=[{"name": "c", "host": "h", "port": 1, "tls": True,
                                 "ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                                 "key_file": str(pki.client_key)}])  # fmt: skip
    assert (old.notify[0].ca, old.notify[0].certificate, old.notify[0].key) == (
        pki.ca, pki.client_cert, pki.client_key)
    assert load_settings().mllp.tls is None and load_settings().http.tls is None


def test_tls_from_the_environment(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_MLLP__TLS__CERTIFICATE", str(pki.server_cert))
    monkeypatch.setenv("IDENTITY_MLLP__TLS__KEY", str(pki.server_key))
    monkeypatch.setenv("IDENTITY_MLLP__TLS__CA", str(pki.ca))
    monkeypatch.setenv("IDENTITY_MLLP__TLS__CLIENT_CERTIFICATES", "required")
    settings = load_settings()
    assert settings.mllp.tls is not None
    assert settings.mllp.tls.client_certificates == "required"
    assert settings.mllp.tls.ca == pki.ca
    assert settings.http.tls is None


def test_server_context_policy(pki: Pki, tmp_path: Path) -> None:
    settings = load_settings(mllp={"tls": _tls(pki, "optional")})
    assert settings.mllp.tls is not None
    context = server_context(settings.mllp.tls, "mllp")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert context.options & ssl.OP_NO_COMPRESSION
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n)
                         for n in tls12)  # fmt: skip
    assert CIPHERS_TLS12 == "ECDHE+AESGCM:ECDHE+CHACHA20"
    # a certificate file that is not a certificate: ConfigError naming the section
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^mllp\.tls\.certificate / mllp\.tls\.key: "):
        server_context(settings.mllp.tls.model_copy(update={"certificate": bogus}), "mllp")


# --------------------------------------------------------------------------------- handshakes


def _handshake(port: int, context: ssl.SSLContext) -> tuple[str, bytes]:
    """Connect with a blocking socket (the exact OpenSSL outcome, whatever the event loop),
    send one MLLP frame and read the reply: (TLS version, first reply bytes; b"" when the server
    closed the connection instead). A failed handshake raises its ssl.SSLError."""
    with socket.create_connection(("127.0.0.1", port), timeout=10.0) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            version = tls.version() or ""
            tls.sendall(b"\x0b" + adt("A04", "PROBE^^^HOSPB", app="ADT_B").encode() + b"\x1c\r")
            return version, tls.recv(1)


async def _probe(port: int, context: ssl.SSLContext) -> tuple[str, bytes]:
    return await asyncio.to_thread(_handshake, port, context)


async def _records(service: Service) -> int:
    assert service.db is not None
    async with service.db.connection() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM source_record"))


async def test_tls_on_both_doors(
    start_service: StartService, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    service = await start_service(mllp={"tls": _tls(pki)}, http={"tls": _tls(pki)})
    assert service.hl7 is not None and service.http_port is not None
    mllp_port, http_port = service.hl7.port, service.http_port
    started = [r.getMessage() for r in caplog.records if "event=hl7_started" in r.getMessage()]
    assert started and "tls=true client_certificates=none" in started[0]
    assert "http_tls=true http_client_certificates=none" in caplog.text
    assert str(pki.server_key) not in caplog.text and "PRIVATE KEY" not in caplog.text

    # MLLP: an ADT^A04 over TLS (1.3, negotiated) is applied and answered AA
    assert await _send(mllp_port, _client(pki), adt("A04", "TLS1^^^HOSPA")) == "AA"
    assert await _probe(mllp_port, _client(pki)) == ("TLSv1.3", b"\x0b")
    tls12 = _client(pki)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert await _probe(mllp_port, tls12) == ("TLSv1.2", b"\x0b")

    # HTTP: /healthz and the CapabilityStatement over TLS
    status, body = await _get(http_port, "/healthz", _client(pki))
    assert (status, body["status"]) == (200, "ok")
    status, body = await _get(http_port, "/fhir/metadata", _client(pki))
    assert (status, body["resourceType"]) == (200, "CapabilityStatement")

    # a client offering TLS 1.1 at most: the server ends the handshake (and logs why)
    for door, port in (("mllp", mllp_port), ("http", http_port)):
        with pytest.raises(ssl.SSLEOFError):
            await _probe(port, _tls11_client(pki))
        assert f"event=tls_refused door={door} reason=UNSUPPORTED_PROTOCOL" in caplog.text

    # plain MLLP to the TLS port gets no reply; the failed connections disturbed nothing
    with pytest.raises(MLLPConnectionError):
        await _send(mllp_port, None, adt("A04", "PLAIN^^^HOSPA"))
    assert await _send(mllp_port, _client(pki), adt("A04", "TLS2^^^HOSPA")) == "AA"
    assert "Traceback" not in caplog.text


async def test_required_client_certificates(
    start_service: StartService, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tls = _tls(pki, "required")
    service = await start_service(mllp={"tls": tls}, http={"tls": tls})
    assert service.hl7 is not None and service.http_port is not None
    mllp_port, http_port = service.hl7.port, service.http_port
    assert "tls=true client_certificates=required" in caplog.text

    # signed by the configured CA: accepted on both doors
    assert await _send(mllp_port, _client(pki, "client"), adt("A04", "M1^^^HOSPA")) == "AA"
    status, _ = await _get(http_port, "/healthz", _client(pki, "client"))
    assert status == 200
    before = await _records(service)

    # no certificate, or one from an issuer the service does not know: refused on both doors.
    # With TLS 1.3 the client's side of the handshake is done before the server has checked
    # its certificate: the server then closes the connection, so no reply ever comes.
    for who, reason in ((None, "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
                        ("stranger", "CERTIFICATE_VERIFY_FAILED")):  # fmt: skip
        caplog.clear()
        for port in (mllp_port, http_port):
            assert await _probe(port, _client(pki, who)) == ("TLSv1.3", b"")
        assert caplog.text.count(f"event=tls_refused door=mllp reason={reason}") == 1
        assert caplog.text.count(f"event=tls_refused door=http reason={reason}") == 1
        with pytest.raises(MLLPConnectionError):
            await _send(mllp_port, _client(pki, who), adt("A04", "M2^^^HOSPA"))
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await _get(http_port, "/healthz", _client(pki, who))
        # with TLS 1.2 the refusal ends the handshake itself
        tls12 = _client(pki, who)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLEOFError):
            await _probe(mllp_port, tls12)
    assert await _records(service) == before  # nothing of a refused sender was applied

    # the CA's client is still served after the refusals
    assert await _send(mllp_port, _client(pki, "client"), adt("A04", "M3^^^HOSPA")) == "AA"
    assert await _records(service) == before + 1
    assert "Traceback" not in caplog.text


async def test_optional_client_certificates(start_service: StartService, pki: Pki) -> None:
    service = await start_service(mllp={"tls": _tls(pki, "optional")})
    assert service.hl7 is not None
    port = service.hl7.port
    assert await _send(port, _client(pki), adt("A04", "O1^^^HOSPA")) == "AA"
    assert await _send(port, _client(pki, "client"), adt("A04", "O2^^^HOSPA")) == "AA"
    # a certificate that is sent must verify
    assert await _probe(port, _client(pki, "stranger")) == ("TLSv1.3", b"")


# ------------------------------------------------------------------------ ITI-10 over mutual TLS


async def test_iti10_notification_over_mutual_tls(start_service: StartService, pki: Pki) -> None:
    received: list[str] = []  # PID-3 of each A31

    async def consumer(raw: bytes) -> bytes:
        message = parse_message(raw)
        pid = message.segment("PID")
        received.append(pid.field(3) if pid is not None else "")
        return build_message([
            ["MSH", None, None, "PIXC", "PIXF", "IDENTITY", "MPI", "20260101", None,
             [["ACK", "A31", "ACK"]], "C" + message.control_id, "P", "2.5"],
            ["MSA", "AA", message.control_id],
        ]).encode("ascii")  # fmt: skip

    # the consumer requires a client certificate from the test CA
    consumer_settings = load_settings(mllp={"tls": _tls(pki, "required")})
    assert consumer_settings.mllp.tls is not None
    pix_consumer = MLLPServer(
        consumer, "127.0.0.1", 0, idle_timeout=30.0,
        ssl_context=server_context(consumer_settings.mllp.tls, "consumer"),
    )  # fmt: skip
    await pix_consumer.start()
    try:
        service = await start_service(notify=[{
            "name": "pixc", "host": "127.0.0.1", "port": pix_consumer.port,
            "domains": ["HOSPA"], "receiving_application": "PIXC", "receiving_facility": "PIXF",
            "tls": True, "ca": str(pki.ca), "certificate": str(pki.client_cert),
            "key": str(pki.client_key),
        }])  # fmt: skip
        assert service.hl7 is not None
        assert await _send(service.hl7.port, None, adt("A04", "N1^^^HOSPA")) == "AA"
        await eventually(lambda: len(received) >= 1, 15.0, what="the A31 at the consumer")
        assert received[0] == "N1^^^HOSPA&1.2.3.4.5.1&ISO"
        # the consumer has the A31 before our worker has read its ACK and counted it
        notifier = service.hl7.notifiers[0]
        await eventually(lambda: notifier.delivered >= 1, 15.0, what="the ACK counted")
    finally:
        await pix_consumer.stop(grace=1.0)


# ------------------------------------------------------------------ several worker processes


async def test_tls_and_client_mapping_in_every_worker(fresh_database: str, pki: Pki) -> None:
    """`workers = 2`: each worker builds its own TLS contexts from the same files and enforces
    [[mllp.clients]]; both answer over TLS on the shared ports."""
    tls = _tls(pki, "required")
    env = {
        **os.environ,
        "IDENTITY_WORKERS": "2",
        "IDENTITY_DATABASE__URL": fresh_database,
        "IDENTITY_HTTP__PORT": "0",
        "IDENTITY_MLLP__PORT": "0",
        "IDENTITY_DOMAINS": json.dumps(DEMO_DOMAINS),
        "IDENTITY_HTTP__TLS": json.dumps(_tls(pki)),
        "IDENTITY_MLLP__TLS": json.dumps(tls),
        "IDENTITY_MLLP__CLIENTS": json.dumps(
            [{"subject": "CN=ADT_A", "applications": ["ADT_A"]}]
        ),
    }
    env.pop("IDENTITY_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "identity", "serve",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    served = Served(proc)
    try:
        match = await served.until(
            r"event=service_started workers=2 http=127\.0\.0\.1:(\d+) mllp=127\.0\.0\.1:(\d+)"
        )
        http, mllp = int(match[1]), int(match[2])
        workers = _workers(proc.pid)
        seen: set[int] = set()
        for _ in range(200):  # new connections until both workers have answered over TLS
            connector = aiohttp.TCPConnector(force_close=True, ssl=_client(pki))
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(f"https://127.0.0.1:{http}/healthz") as response:
                    assert response.status == 200
                    seen.add((await response.json())["process"])
            if len(seen) == 2:
                break
        assert seen == workers
        for n in range(8):  # new connections, spread over the workers by the kernel
            assert await _send(mllp, _client(pki, "client"), adt("A04", f"W{n}^^^HOSPA")) == "AA"
            assert await _send(mllp, _client(pki, "client"),
                               adt("A04", f"X{n}^^^HOSPB", app="ADT_B")) == "AR"  # fmt: skip
    finally:
        await served.stop()
