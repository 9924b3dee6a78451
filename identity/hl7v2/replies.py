"""Builders for the messages this service sends: ACK, the MSH of a response, ERR segments,
fully qualified CX values and the PID of responses and notifications.

Every reply swaps the request's sender and receiver: its MSH-5/MSH-6 are the request's
MSH-3/MSH-4, and its MSH-3/MSH-4 the request's MSH-5/MSH-6 (TF2 ITI-21: the supplier returns the
MSH-5 it received in MSH-3), or settings.hl7.application/facility when the request left them
empty. It echoes MSH-11 and MSH-12, and declares its character set in MSH-18: the request's
one when it declared one, ``UNICODE UTF-8`` when the reply holds non-ASCII text and the request
declared none.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from identity.config import Hl7Settings
from identity.hl7v2.errors import CharsetEncodeError, ErrorLocation
from identity.hl7v2.tokenizer import (
    DEFAULT_ENCODING,
    Encoding,
    Message,
    Raw,
    Segment,
    build_segment,
    escape,
    to_bytes,
    unescape,
)
from identity.model import Demographics, Identifier, Name, Phone

ERROR_TEXT = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}
"""HL7 table 0357 (message error condition codes)."""

UTF8 = "UNICODE UTF-8"


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR segment: where (ERL), HL7 table 0357 code, severity and a diagnostic text."""

    location: ErrorLocation | None
    code: int
    diagnostic: str = ""
    severity: str = "E"


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")


def control_id() -> str:
    """A fresh MSH-10 (20 characters: the v2.5 length of MSH-10)."""
    return secrets.token_hex(10)


@dataclass(frozen=True, slots=True)
class ReplyContext:
    """What a reply needs from its request (MSH fields, raw) and from configuration."""

    sending_application: str  # request MSH-3 raw
    sending_facility: str  # request MSH-4 raw
    control_id: str  # request MSH-10
    processing_id: str  # request MSH-11 raw
    version: str  # request MSH-12.1
    declared_charset: str  # request MSH-18
    trigger: str  # request MSH-9.2
    application: str  # our MSH-3, raw (wire form)
    facility: str  # our MSH-4, raw (wire form)
    encoding: Encoding = DEFAULT_ENCODING  # the request's delimiters

    @classmethod
    def of(cls, message: Message, hl7: Hl7Settings) -> ReplyContext:
        msh = message.msh
        encoding = message.encoding

        def field(number: int) -> str:
            return in_reply_encoding(msh.field(number), encoding)

        return cls(
            sending_application=field(3),
            sending_facility=field(4),
            control_id=message.control_id,
            processing_id=field(11) or "P",
            version=message.version or "2.5",
            declared_charset=message.declared_charset,
            trigger=message.trigger_event,
            application=field(5) or escape(hl7.application),
            facility=field(6) or escape(hl7.facility),
            encoding=encoding,
        )

    @classmethod
    def fallback(cls, raw: bytes, hl7: Hl7Settings) -> ReplyContext:
        """For a request the tokenizer refused: take what a plain split of MSH gives."""
        first = raw.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
        fs = first[3:4] if first.startswith("MSH") and len(first) > 3 else "|"
        fields = ["MSH", fs, *first.split(fs)[1:]] if fs and fs.strip() else ["MSH"]

        def at(index: int) -> str:
            value = fields[index] if index < len(fields) else ""
            usable = value.isascii() and value.isprintable() and "|" not in value
            return value if usable else ""

        component = at(2)[:1] or "^"
        return cls(
            sending_application=at(3),
            sending_facility=at(4),
            control_id=at(10).split(component)[0],
            processing_id=at(11) or "P",
            version=at(12).split(component)[0] or "2.5",
            declared_charset="",
            trigger=at(9).split(component)[1] if component in at(9) else "",
            application=at(5) or escape(hl7.application),
            facility=at(6) or escape(hl7.facility),
        )


def in_reply_encoding(raw: str, encoding: Encoding) -> str:
    """Raw field text of a request whose delimiters are ``encoding``, written with the
    delimiters of our replies (``|^~\\&``), so that it can be echoed as :class:`Raw`."""
    if encoding == DEFAULT_ENCODING or not raw:
        return raw

    def split(text: str, separator: str) -> list[str]:
        return text.split(separator) if separator else [text]

    return "~".join(
        "^".join(
            "&".join(escape(unescape(part, encoding), DEFAULT_ENCODING)
                     for part in split(component, encoding.subcomponent))
            for component in split(repetition, encoding.component)
        )
        for repetition in split(raw, encoding.repetition)
    )


def segment_in_reply_encoding(segment: Segment, encoding: Encoding) -> str:
    """A request's segment (not MSH) in the delimiters of our replies, to be echoed."""
    if encoding == DEFAULT_ENCODING:
        return segment.raw
    fields = [in_reply_encoding(segment.field(n), encoding) for n in range(1, len(segment) + 1)]
    return "|".join([segment.name, *fields])


def msh(ctx: ReplyContext, message_type: Sequence[str]) -> list[Any]:
    """The MSH of a reply as a build_segment list; MSH-18 is settled by :func:`encode`."""
    return [
        "MSH", None, None, Raw(ctx.application), Raw(ctx.facility),
        Raw(ctx.sending_application), Raw(ctx.sending_facility), timestamp(), None,
        [list(message_type)], control_id(), Raw(ctx.processing_id), ctx.version,
        None, None, None, None, None, ctx.declared_charset or None,
    ]  # fmt: skip


def encode(segments: Sequence[Sequence[Any] | str]) -> tuple[str, bytes]:
    """Message text and wire bytes. The first segment is an MSH list from :func:`msh`; when
    its MSH-18 cannot carry the text (or is empty and the text is not ASCII), UTF-8 is used
    and declared. A str segment is inserted as is (an echoed request segment)."""
    header = list(segments[0])
    body = "".join(
        (segment if isinstance(segment, str) else build_segment(segment)) + "\r"
        for segment in segments[1:]
    )
    declared = header[18] if len(header) > 18 else None
    if not declared and not body.isascii():
        header[18] = UTF8
    text = build_segment(header) + "\r" + body
    try:
        return text, to_bytes(text)
    except CharsetEncodeError:
        header[18] = UTF8
        text = build_segment(header) + "\r" + body
        return text, to_bytes(text)


def err_segment(detail: ErrorDetail, version: str) -> list[Any]:
    """ERR: ERR-2 location, ERR-3 code (HL70357), ERR-4 severity, ERR-8 user message.
    For v2.3.x, ERR-1 (ELD) is filled as well, since that version has no ERR-2..8."""
    text = ERROR_TEXT.get(detail.code, "Application error")
    location = detail.location
    code = [str(detail.code), text, "HL70357"]
    erl: Any = None
    eld: Any = None
    if location is not None:
        erl = [
            location.segment, location.sequence, location.field, location.repetition,
            location.component, location.subcomponent,
        ]  # fmt: skip
    if version.startswith("2.3") or version.startswith("2.2"):
        eld = [[
            location.segment if location else None,
            location.sequence if location else None,
            location.field if location else None,
            code,
        ]]
    return ["ERR", eld, [erl] if erl else None, [code], detail.severity,
            None, None, None, detail.diagnostic[:250] or None]  # fmt: skip


def ack(
    ctx: ReplyContext, code: str, errors: Iterable[ErrorDetail] = (), trigger: str | None = None
) -> tuple[str, bytes]:
    """General acknowledgement ``ACK^<trigger>^ACK``: MSH, MSA (MSA-1 code, MSA-2 = MSH-10),
    one ERR per error."""
    segments: list[Sequence[Any]] = [
        msh(ctx, ("ACK", trigger if trigger is not None else ctx.trigger, "ACK")),
        ["MSA", code, ctx.control_id],
    ]
    segments += [err_segment(error, ctx.version) for error in errors]
    return encode(segments)


# --- identifiers and demographics out ---------------------------------------------------------


def cx(identifier: Identifier) -> list[Any]:
    """A fully qualified CX: ID^^^namespace&OID&ISO^type."""
    authority = [identifier.domain, identifier.oid, "ISO" if identifier.oid else None]
    return [identifier.value, None, None, authority, identifier.type]


def _dtm(iso: str | None) -> str | None:
    return iso.replace("-", "") if iso else None


def _xpn(name: Name, family: str | None = None) -> list[Any]:
    """XPN: family, given, further given names, suffix, prefix, (degree), name type."""
    return [[name.family or family], (name.given[0] or None) if name.given else None,
            " ".join(name.given[1:]) or None, name.suffix, name.prefix, None, name.use]


def _work(phone: Phone) -> bool:
    """PID-14 (business) rather than PID-13 (home)."""
    return phone.purpose == "work" if phone.purpose else phone.use == "WPN"


def _xtn(phone: Phone) -> list[Any]:
    """XTN as received: .1 only when the number was sent formatted (or the record holds its
    value only), .2 use (PRN when none), .3 equipment, .4 e-mail, .5-.8 country, area, local
    number, extension, .12 unformatted number."""
    return [phone.value if phone.formatted else None, phone.use or "PRN", phone.equipment,
            phone.email, phone.country_code, phone.area_code, phone.local_number,
            phone.extension, None, None, None, phone.unformatted]


def demographics_fields(demographics: Demographics) -> dict[int, Any]:
    """PID fields (field number -> build_segment value) for the demographics held."""
    fields: dict[int, Any] = {}
    if demographics.names:
        fields[5] = [_xpn(name) for name in demographics.names]
    maiden = demographics.mothers_maiden
    if maiden is not None and maiden.family not in (None, demographics.mothers_maiden_name):
        maiden = None  # changed since (e.g. by a FHIR update that sets the family name only)
    if maiden is not None:
        fields[6] = [_xpn(maiden, demographics.mothers_maiden_name)]
    elif demographics.mothers_maiden_name:
        fields[6] = [[[demographics.mothers_maiden_name]]]
    if demographics.birth_date:
        fields[7] = _dtm(demographics.birth_date)
    if demographics.sex:
        fields[8] = demographics.sex
    if demographics.addresses:
        fields[11] = [
            [[address.lines[0] if address.lines else None],
             " ".join(address.lines[1:]) or None, address.city, address.state,
             address.postal_code, address.country, address.use]
            for address in demographics.addresses
        ]  # fmt: skip
    home = [_xtn(p) for p in demographics.phones or () if p.system != "other" and not _work(p)]
    work = [_xtn(p) for p in demographics.phones or () if p.system != "other" and _work(p)]
    if home:
        fields[13] = home
    if work:
        fields[14] = work
    for number, coded in ((15, demographics.primary_language),
                          (16, demographics.marital_status)):
        if coded is not None:
            fields[number] = [[coded.code, coded.text, coded.system]]
    if demographics.multiple_birth is not None:
        multiple = demographics.multiple_birth
        fields[24] = "Y" if multiple else "N"
        if isinstance(multiple, int) and not isinstance(multiple, bool) and multiple > 0:
            fields[25] = multiple
    return fields


def pid_segment(
    identifiers: Sequence[Identifier],
    demographics: Demographics | None = None,
    *,
    name: Any = None,
    set_id: int | None = None,
) -> list[Any]:
    """PID with PID-3 (fully qualified) and, when given, the demographics; ``name`` overrides
    PID-5 (e.g. ``Raw("~^^^^^^S")`` in RSP^K23 or ``Raw(" ")`` in an ITI-10 A31)."""
    values: dict[int, Any] = demographics_fields(demographics) if demographics else {}
    values[3] = [cx(i) for i in identifiers]
    if name is not None:
        values[5] = name
    if set_id is not None:
        values[1] = set_id
    last = max(values)
    return ["PID", *[values.get(i) for i in range(1, last + 1)]]
