"""TLS contexts for both doors and for what the service sends (ITI-10 notifications).

Every context here has TLS 1.2 as its floor; OpenSSL negotiates 1.3 whenever the peer offers
it. For TLS 1.2 only forward-secret AEAD suites are allowed (ECDHE with AES-GCM or
ChaCha20-Poly1305); TLS 1.3's suites are all of that kind and are left to OpenSSL. Compression
is off (CRIME). Certificates and keys are PEM files named in the configuration
(``[http.tls]``, ``[mllp.tls]``, ``[[notify]]``); a file that cannot be loaded is a
ConfigError naming the key. Nothing here logs key material.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from identity.config import NotifySettings, TlsSettings
from identity.errors import ConfigError

log = logging.getLogger("identity.tls")

CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"
"""OpenSSL cipher string for TLS 1.2: ECDHE key exchange (RSA or ECDSA certificates) with
AES-GCM or ChaCha20-Poly1305 only."""

_VERIFY = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(CIPHERS_TLS12)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def _load_chain(context: ssl.SSLContext, certificate: Path, key: Path | None, where: str) -> None:
    try:
        context.load_cert_chain(str(certificate), str(key) if key is not None else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{where}.certificate / {where}.key: cannot load {certificate} with its key: "
            f"{_reason(exc)}"
        ) from None


def _load_ca(context: ssl.SSLContext, ca: Path, where: str) -> None:
    try:
        context.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{where}.ca: cannot load {ca}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class _LoggedHandshake(ssl.SSLObject):
    """The SSLObject of a listener's connections: a handshake that fails is logged on one
    line at INFO with OpenSSL's reason (the event loop then closes that connection alone and
    logs nothing, not even a traceback, for an SSLError)."""

    door = "?"

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            log.info("event=tls_refused door=%s reason=%s", self.door, _reason(exc))
            raise


def server_context(tls: TlsSettings, where: str) -> ssl.SSLContext:
    """The listener's context for ``[<where>.tls]`` (``where``: "http" or "mllp", for errors).

    ``client_certificates``: "none" asks for no certificate; "optional" asks, and a certificate
    that is sent must verify against ``ca``; "required" refuses a client without one.
    """
    section = f"{where}.tls"
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_chain(context, tls.certificate, tls.key, section)
    if tls.client_certificates != "none":
        assert tls.ca is not None  # TlsSettings validates it
        _load_ca(context, tls.ca, section)
    context.verify_mode = _VERIFY[tls.client_certificates]
    context.sslobject_class = type(
        f"_LoggedHandshake_{where}", (_LoggedHandshake,), {"door": where}
    )
    return context


def client_context(
    *,
    ca: Path | None = None,
    certificate: Path | None = None,
    key: Path | None = None,
    where: str = "client",
) -> ssl.SSLContext:
    """A context for connecting to a server: its certificate must verify (against ``ca``, else
    the system's CAs) and name the host connected to; ``certificate`` and ``key`` are ours, for
    servers that require mutual TLS."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # CERT_REQUIRED, check_hostname
    if ca is not None:
        _load_ca(context, ca, where)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if certificate is not None:
        _load_chain(context, certificate, key, where)
    return context


def notify_context(consumer: NotifySettings) -> ssl.SSLContext | None:
    """The context of an ITI-10 consumer's connection; None when it is plain TCP."""
    if not consumer.tls:
        return None
    return client_context(
        ca=consumer.ca,
        certificate=consumer.certificate,
        key=consumer.key,
        where=f"notify[{consumer.name}]",
    )


def describe(tls: TlsSettings | None, prefix: str = "") -> str:
    """``tls=true client_certificates=required`` (each key after ``prefix``) for a start-up
    log line: no paths, no key material."""
    if tls is None:
        return f"{prefix}tls=false"
    return f"{prefix}tls=true {prefix}client_certificates={tls.client_certificates}"
