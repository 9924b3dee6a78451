"""Who is sending on an MLLP connection: the TLS client certificate, mapped by
``[[mllp.clients]]`` to the MSH-3 / MSH-4 values it may send as.

With no ``[[mllp.clients]]`` configured MSH-3 is trusted as sent (a trusted network segment).
With some, every message must come over a connection whose verified client certificate
matches an entry (its subject, attributes in any order, or one of its subjectAltNames) and
carry an MSH-3 that entry allows (and an MSH-4, when the entry lists facilities); otherwise it
is answered AR with ERR 204 at MSH^1^3 (or MSH^1^4) and nothing is applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from identity.hl7v2.errors import ErrorLocation
from identity.hl7v2.mllp import Peer, current_peer
from identity.hl7v2.replies import ErrorDetail
from identity.hl7v2.tokenizer import Message

if TYPE_CHECKING:
    from identity.config import MllpClientSettings

__all__ = ["Peer", "Senders", "certificate_text", "current_peer", "parse_dn"]

# the short names of RFC 4514 (and a few common others) for Python's getpeercert() names
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
    "emailAddress": "EMAILADDRESS",
    "serialNumber": "SERIALNUMBER",
}

Rdn = tuple[str, str]


def parse_dn(text: str) -> frozenset[Rdn]:
    """An RFC 4514 distinguished name as a set of (type, value) pairs: ``,`` or ``+``
    separate attributes, a backslash escapes the next character, types compare in capitals."""
    pairs: list[Rdn] = []
    current: list[str] = []
    escaped = False
    for char in text + ",":
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",+":
            attribute = "".join(current).strip()
            current = []
            if not attribute:
                continue
            name, sep, value = attribute.partition("=")
            if not sep:
                raise ValueError(f"not a distinguished name: {text!r}")
            pairs.append((name.strip().upper(), value.strip()))
        else:
            current.append(char)
    return frozenset(pairs)


def certificate_subject(certificate: dict[str, Any]) -> frozenset[Rdn]:
    pairs: list[Rdn] = []
    for rdn in certificate.get("subject", ()):
        for name, value in rdn:
            pairs.append((_SHORT.get(name, name).upper(), value))
    return frozenset(pairs)


def certificate_text(certificate: dict[str, Any] | None) -> str | None:
    """A certificate's subject as ``CN=...,O=...`` (in the certificate's order), for a log
    line or an audit record's reason; None without a certificate."""
    if not certificate:
        return None
    parts = [
        f"{_SHORT.get(name, name)}={value}"
        for rdn in certificate.get("subject", ())
        for name, value in rdn
    ]
    return ",".join(parts) or None


def certificate_names(certificate: dict[str, Any]) -> set[str]:
    """The subjectAltName values (DNS names, URIs, IP addresses, e-mail addresses)."""
    return {str(value) for _kind, value in certificate.get("subjectAltName", ())}


class Senders:
    """``[[mllp.clients]]``: which certificate may send as which MSH-3 / MSH-4."""

    def __init__(self, clients: Sequence[MllpClientSettings]) -> None:
        self._clients = [
            (parse_dn(c.subject) if c.subject is not None else None, c) for c in clients
        ]

    @property
    def enforced(self) -> bool:
        return bool(self._clients)

    def entries(self, certificate: dict[str, Any] | None) -> list[MllpClientSettings]:
        if not certificate:
            return []
        subject = certificate_subject(certificate)
        names = certificate_names(certificate)
        return [
            client
            for dn, client in self._clients
            if (dn is not None and dn == subject)
            or (client.san is not None and client.san in names)
        ]

    def refusal(self, message: Message, peer: Peer | None) -> ErrorDetail | None:
        """None when the connection's certificate may send this message's MSH-3/MSH-4."""
        if not self._clients:
            return None
        entries = self.entries(peer.certificate if peer is not None else None)
        if not entries:
            return ErrorDetail(ErrorLocation("MSH", 1, 3), 204,
                               "the connection has no client certificate known to this service")
        application, facility = message.msh.value(3), message.msh.value(4)  # HD.1 each
        allowed = [e for e in entries if application in e.applications]
        if not allowed:
            return ErrorDetail(ErrorLocation("MSH", 1, 3), 204,
                               f"the client certificate may not send as MSH-3 {application!r}")
        if not any(not e.facilities or facility in e.facilities for e in allowed):
            return ErrorDetail(ErrorLocation("MSH", 1, 4), 204,
                               f"the client certificate may not send as MSH-4 {facility!r}")
        return None
