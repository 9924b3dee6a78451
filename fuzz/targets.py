"""Fuzz targets that need no database: the parsing and mapping code of both doors, called
directly.

The property of every target: for any input the code either succeeds or raises one of the
project's own errors that the door turns into a protocol error (HL7: ``ParseError`` and the
core's ``MpiError`` -> AR/AE with ERR; FHIR: ``FhirError`` and ``MpiError`` -> a 4xx
OperationOutcome); never another exception (a 500, an AE 207 "internal error" or a dropped
MLLP connection) and never a hang. Replies built on the way must be MLLP-frameable and parse
back. A target signals a defect by raising; each is a plain function of one input, shared by
the hypothesis runs, the test suite and the atheris harness.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import strategies as st

from fuzz import seeds, strategies
from identity.config import Settings
from identity.errors import (
    InvalidInput,
    MpiError,
    SourceNotAuthorized,
    UnknownDomain,
    UnknownIdentifier,
)
from identity.fhir import search as pdq
from identity.fhir.door import match_request, pix_parameters
from identity.fhir.patient import authority_of as fhir_authority
from identity.fhir.patient import body_identifiers, demographics_of, replaced_by
from identity.fhir.pmir import _entry_request, _history, _identifier_in_url, _validate_bundle
from identity.fhir.wire import FhirError, json_body
from identity.hl7v2.errors import FrameTooLargeError, ParseError
from identity.hl7v2.feed import FeedHandler, _Command, error_details, message_digest
from identity.hl7v2.handler import Hl7Handler
from identity.hl7v2.mllp import FrameDecoder, encode_frame
from identity.hl7v2.pid import authority_of, hd_authority
from identity.hl7v2.queries import PdqQuery, _digest, _limit, _rsp, parse_pdq
from identity.hl7v2.replies import ErrorDetail, ReplyContext, ack
from identity.hl7v2.tokenizer import Encoding, Message, escape, parse_message, unescape
from identity.model import IdentifierRef, SearchCriteria

DOMAINS = [
    {"namespace": "HOSPA", "oid": "1.2.3.4.5.1", "sources": ["ADT_A"]},
    {"namespace": "HOSPB", "oid": "1.2.3.4.5.2", "sources": ["ADT_B"]},
    {"namespace": "LAB", "oid": "1.2.3.4.5.3", "sources": ["LIS", "ADT_A"]},
    {"namespace": "NATIONAL", "oid": "2.16.840.1.113883.4.1", "identifies_person": True},
]
"""The domains of tests/conftest.py (DEMO_DOMAINS), which the seeds name."""

SETTINGS = Settings(domains=DOMAINS)
WALK_LIMIT = 40
"""Fields, repetitions and components visited per level when walking a parsed message."""


class Defect(AssertionError):
    """A property does not hold (an exception that is not a defect is let through as is)."""


# --- MLLP ---------------------------------------------------------------------------------------


def check_mllp(data: tuple[list[bytes], int]) -> None:
    """Any byte stream: frames come out without block characters and within the limit; the only
    error is FrameTooLargeError."""
    chunks, limit = data
    decoder = FrameDecoder(limit)
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except FrameTooLargeError:
            return
        for frame in frames:
            if b"\x0b" in frame or b"\x1c" in frame:
                raise Defect(f"frame holds a block character: {frame!r}")
            if len(frame) > limit:
                raise Defect(f"frame of {len(frame)} bytes passed the limit of {limit}")


def check_mllp_roundtrip(data: tuple[list[bytes], list[bytes]]) -> None:
    """Well-formed frames split anywhere: the decoder gives back exactly the messages."""
    chunks, messages = data
    decoder = FrameDecoder()
    got: list[bytes] = []
    for chunk in chunks:
        got.extend(decoder.feed(chunk))
    if got != messages or decoder.pending_bytes or decoder.discarded_bytes:
        raise Defect(f"sent {messages!r}, decoded {got!r}")


def _mllp_from_bytes(data: bytes) -> tuple[list[bytes], int] | None:
    if len(data) < 2:
        return None
    limit = (1, 16, 200, 1 << 20)[data[0] % 4]
    size = data[1] % 64 + 1
    stream = data[2:]
    return [stream[i:i + size] for i in range(0, len(stream), size)], limit


# --- HL7 tokenizer ------------------------------------------------------------------------------


def walk(message: Message) -> None:
    """Ask the parsed message for every value the door could ask for."""
    for segment in message:
        for number in range(min(len(segment), WALK_LIMIT) + 2):
            segment.field(number)
            segment.is_null(number)
            if number == 0:
                continue
            segment.value(number)
            for rep_no, rep in enumerate(segment.repetitions(number)[:WALK_LIMIT], start=1):
                segment.value(number, rep_no)
                rep.is_null()
                components = rep.components()
                for comp in range(1, min(len(components), WALK_LIMIT) + 2):
                    rep.component(comp)
                    rep.is_null(comp)
                    subs = rep.subcomponents(comp)
                    for sub in range(1, min(len(subs), WALK_LIMIT) + 2):
                        rep.value(comp, sub)
    for name in ("control_id", "message_type", "trigger_event", "structure", "version",
                 "sending_application", "sending_facility", "receiving_application",
                 "receiving_facility"):
        getattr(message, name)


def check_tokenizer(raw: bytes) -> None:
    """parse_message raises only ParseError; a parsed message answers every accessor, and its
    text form parses again to the same segments."""
    try:
        message = parse_message(raw)
    except ParseError:
        return
    walk(message)
    text = message.to_text()
    again = parse_message(text)
    if [s.raw for s in again] != [s.raw for s in message]:
        raise Defect(f"to_text does not parse back to the same segments: {text!r}")


def check_escape(data: tuple[tuple[str, str], str]) -> None:
    """escape() gives a leaf with no delimiter, terminator or MLLP block character, and
    unescape() gives the text back."""
    (field, msh2), text = data
    encoding = Encoding(field, *(list(msh2) + [""] * (5 - len(msh2))))
    if not encoding.escape:
        return
    escaped = escape(text, encoding)
    specials = {field, *msh2, "\r", "\n", "\x0b", "\x1c"} - {encoding.escape}
    found = [char for char in specials if char in escaped]
    if found:
        raise Defect(f"escape({text!r}) = {escaped!r} still holds {found!r}")
    back = unescape(escaped, encoding)
    if back != text:
        raise Defect(f"unescape(escape({text!r})) = {back!r}")


def _escape_from_bytes(data: bytes) -> tuple[tuple[str, str], str] | None:
    if len(data) < 3:
        return None
    chars = "|^~\\&#!$%*+/:;<=>?@_`{}"
    picked = list(dict.fromkeys(chars[b % len(chars)] for b in data[:data[0] % 5 + 2]))
    if len(picked) < 2:
        return None
    return (picked[0], "".join(picked[1:])), data[6:].decode("utf-8", "replace")


# --- HL7 message mapping -------------------------------------------------------------------------

_HANDLER = Hl7Handler(None, SETTINGS)  # type: ignore[arg-type] - only _refusal is used
_FEED = FeedHandler(None)  # type: ignore[arg-type] - only _command is used


def check_reply(reply: bytes, control_id: str | None) -> None:
    """A reply the door sends: MLLP-frameable, parses, MSA-1 a code and MSA-2 the control id."""
    try:
        encode_frame(reply)
    except ValueError as exc:
        raise Defect(f"reply cannot be framed ({exc}): {reply!r}") from None
    try:
        answer = parse_message(reply)
    except ParseError as exc:
        raise Defect(f"reply does not parse ({exc}): {reply!r}") from None
    if answer.message_type not in ("ACK", "RSP"):
        raise Defect(f"reply type {answer.message_type!r}: {reply!r}")
    msa = answer.segment("MSA")
    if msa is None or msa.value(1) not in ("AA", "AE", "AR"):
        raise Defect(f"reply without a valid MSA-1: {reply!r}")
    if control_id is not None and msa.value(2) != control_id:
        raise Defect(f"MSA-2 {msa.value(2)!r} is not the request's MSH-10 {control_id!r}")


def _ack_bytes(text: str) -> bytes:
    from identity.hl7v2.tokenizer import to_bytes

    return to_bytes(text)


def _core_errors(command: _Command) -> list[MpiError]:
    """The refusals the core can answer a feed with, naming the message's own identifiers."""
    refs = [ref for pid in command.pids for ref in pid] + list(command.mrg)
    ref = refs[0] if refs else IdentifierRef(value="X")
    authority = str(ref.authority)
    return [
        UnknownDomain(authority),
        UnknownIdentifier(ref.authority.namespace or "", ref.value),
        SourceNotAuthorized("ADT_A", ref.authority.namespace or authority),
        InvalidInput("bad", field="birth_date"),
    ]


def check_mapping(raw: bytes) -> None:
    """What the HL7 door does with a message before the database: parse, refuse, map to a
    command or query, and build the reply of every refusal on the way."""
    hl7 = SETTINGS.hl7
    try:
        message = parse_message(raw)
    except ParseError as exc:
        ctx = ReplyContext.fallback(raw, hl7)
        check_reply(ack(ctx, "AR", [ErrorDetail(exc.location, exc.code, exc.text)])[1],
                    ctx.control_id)
        return
    ctx = ReplyContext.of(message, hl7)
    refusal = _HANDLER._refusal(message)
    if refusal is not None:
        check_reply(ack(ctx, "AR", [refusal])[1], ctx.control_id)
        return
    kind = message.message_type
    if kind == "ADT":
        received = _Command()
        message_digest(message)
        try:
            _FEED._command(message, ctx.trigger, received)
        except ParseError as exc:
            check_reply(_ack_bytes(ack(ctx, "AE", error_details(exc, received))[0]),
                        ctx.control_id)
            return
        check_reply(_ack_bytes(ack(ctx, "AA")[0]), ctx.control_id)
        for error in _core_errors(received):
            check_reply(_ack_bytes(ack(ctx, "AE", error_details(error, received))[0]),
                        ctx.control_id)
    elif kind == "QCN":
        check_reply(ack(ctx, "AA", trigger="J01")[1], ctx.control_id)
    else:
        _check_query(message, ctx)


def _check_query(message: Message, ctx: ReplyContext) -> None:
    from identity.hl7v2.pid import FieldError

    qpd = message.segment("QPD")
    pix = message.trigger_event == "Q23"
    trigger, structure = ("K23", "RSP_K23") if pix else ("K22", "RSP_K21")
    try:
        if qpd is None:
            raise FieldError("QPD segment is missing",
                             location=parse_error_location("QPD"), code=100)
        if pix:
            source = qpd.repetitions(3)
            if source and source[0].value(1):
                IdentifierRef(value=source[0].value(1), authority=authority_of(source[0]))
            for rep in qpd.repetitions(4):
                hd_authority(rep)
        else:
            query = parse_pdq(qpd)
            for rep in qpd.repetitions(8):
                hd_authority(rep)
            limit = _limit(message)
            digest = _digest(qpd, limit)
            PdqQuery(None)._continuation(message, digest)  # type: ignore[arg-type]
            SearchCriteria(**query.criteria, limit=min(limit, 10_000), offset=0)
    except FieldError as exc:
        reply = _rsp(ctx, trigger, structure, "AE", "AE", qpd,
                     [ErrorDetail(exc.location, exc.code, exc.text)])
    except InvalidInput as exc:
        reply = _rsp(ctx, trigger, structure, "AE", "AE", qpd,
                     [ErrorDetail(parse_error_location("QPD", 3), 102, str(exc))])
    else:
        reply = _rsp(ctx, trigger, structure, "AA", "NF", qpd)
    check_reply(reply, ctx.control_id)


def parse_error_location(segment: str, field: int | None = None) -> Any:
    from identity.hl7v2.errors import ErrorLocation

    return ErrorLocation(segment, 1, field)


# --- FHIR -----------------------------------------------------------------------------------------

_KNOWN_SYSTEMS = [seeds.HOSPA, seeds.HOSPB, seeds.LAB, seeds.NATIONAL, seeds.ENTERPRISE]


def check_search(params: list[tuple[str, str]]) -> None:
    """PDQm parameters -> the core's SearchCriteria, as the door builds them: FhirError only."""
    for strict in (False, True):
        try:
            parsed = pdq.parse_search(params, default_count=20, max_count=200, strict=strict)
            combos = parsed.combinations()
            if any(pdq.identifier_any_domain(c) for c in combos):
                combos = pdq.expand_identifier_domains(combos, _KNOWN_SYSTEMS)
            for combo in combos:
                for criteria in (pdq.criteria_of(combo, max(parsed.count, 1), parsed.offset)[0]
                                 + pdq.criteria_of(combo, pdq.EXPANDED_CAP, 0)[0]):
                    pdq.has_filters(criteria)
            for total in (0, 1, 1000):
                pdq.page_links("http://x/fhir", parsed.echo, parsed.offset, parsed.count, total)
        except FhirError:
            continue


def _search_from_bytes(data: bytes) -> list[tuple[str, str]]:
    return parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True)


def _as_body(value: Any) -> dict[str, Any] | None:
    """What read_json lets through: a dict with a string resourceType."""
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return value
    return None


def check_match(body: Any) -> None:
    """ITI-119 $match input -> the Patient the engine gets: FhirError or MpiError only."""
    body = _as_body(body)
    if body is None:
        return
    try:
        patient, _, _ = match_request(body)
        demographics_of(patient)
        [ref for ref in body_identifiers(patient) if ref.authority.namespace or ref.authority.oid]
    except (FhirError, MpiError):
        return


def check_pix(body: Any) -> None:
    """ITI-83 POST Parameters -> the source identifier and target domains: FhirError or
    MpiError only."""
    body = _as_body(body)
    if body is None:
        return
    try:
        source, targets = pix_parameters(body)
        if source is not None and source[0] and source[1]:
            IdentifierRef(value=source[1], authority=fhir_authority(source[0]))
        [fhir_authority(target) for target in targets]
    except (FhirError, MpiError):
        return


def check_bundle(body: Any) -> None:
    """ITI-93 message Bundle -> each entry's request, Patient and target, as the door reads
    them before the database: FhirError or MpiError only."""
    body = _as_body(body)
    if body is None:
        return
    try:
        _validate_bundle(body)
        header, history = _history(body)
        header.get("id")
        for entry in list(history.get("entry") or ()):
            entry.get("request")
            method, url, resource = _entry_request(entry)
            if resource is not None and method in ("POST", "PUT"):
                body_identifiers(resource)
                link = replaced_by(resource)
                if link is not None:
                    ident = link.get("identifier")
                    if ident and ident.get("value"):
                        IdentifierRef(value=ident["value"])
            if method in ("PUT", "DELETE"):
                _identifier_in_url(url)
    except (FhirError, MpiError):
        return


def _json_from_bytes(data: bytes) -> Any:
    try:
        return json_body(data)
    except FhirError:
        return None


# --- registry -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    check: Callable[[Any], None]
    from_bytes: Callable[[bytes], Any] | None = None
    """atheris: its input bytes -> this target's input (None: not an input, skip)."""
    seed_bytes: Callable[[], list[bytes]] | None = None
    """atheris: the seed corpus."""


def _frame_payload(data: bytes) -> bytes:
    """What an MLLP frame can carry: no block characters (the framer splits on them)."""
    return data.replace(b"\x0b", b"").replace(b"\x1c", b"")


def _hl7_seed_bytes() -> list[bytes]:
    return [text.encode("utf-8") for text in strategies.HL7_SEEDS]


def _json_seeds(make: Callable[[], list[Any]]) -> Callable[[], list[bytes]]:
    return lambda: [json.dumps(seed).encode() for seed in make()]


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("mllp", "MLLP frame decoder on any byte stream, any chunking, any limit",
           strategies.mllp_streams, check_mllp, _mllp_from_bytes,
           lambda: [b"\x03\x10" + b"\x0b" + s + b"\x1c\r" for s in _hl7_seed_bytes()]),
    Target("mllp-roundtrip", "MLLP frames split anywhere decode to the messages sent",
           strategies.mllp_clean_streams, check_mllp_roundtrip),
    Target("hl7-tokenizer", "parse_message on mutated messages; every accessor; to_text",
           strategies.hl7_messages, check_tokenizer, lambda data: data, _hl7_seed_bytes),
    Target("hl7-escape", "escape/unescape round trip under any valid MSH-1/MSH-2",
           lambda: st.tuples(strategies.encodings(), st.text()), check_escape,
           _escape_from_bytes, lambda: [b"\x02|^~\\&#abc|^~\\&\r\n\x0b\x1c"]),
    Target("hl7-mapping", "message -> refusal, command or query, and the reply built",
           strategies.hl7_messages, check_mapping, _frame_payload, _hl7_seed_bytes),
    Target("fhir-search", "PDQm search parameters -> SearchCriteria",
           strategies.search_params, check_search, _search_from_bytes,
           lambda: [__import__("urllib.parse").parse.urlencode(q).encode()
                    for q in seeds.SEARCH_SEEDS]),
    Target("fhir-match", "$match Parameters/Patient -> validated Patient -> demographics",
           strategies.match_bodies, check_match, _json_from_bytes, _json_seeds(seeds.match_seeds)),
    Target("fhir-pix", "PIXm $ihe-pix POST Parameters -> source identifier and targets",
           strategies.pix_bodies, check_pix, _json_from_bytes, _json_seeds(seeds.pix_seeds)),
    Target("fhir-bundle", "PMIR message Bundle -> history entries -> requests and Patients",
           strategies.bundle_bodies, check_bundle, _json_from_bytes,
           _json_seeds(seeds.bundle_seeds)),
]}
