"""ITI-9 PIX Query (QBP^Q23 -> RSP^K23) and ITI-21 PDQ (QBP^Q22 -> RSP^K22, QCN^J01).

Queries change nothing, so their replies are not stored; a re-sent query is answered afresh.

PDQ continuation is stateless: the DSC-1 pointer is ``<mode><offset>.<digest>`` where the
digest is a hash of the query (QPD-1, QPD-3, QPD-8, RCP-2), so any process can continue any
query and a pointer used with another query is refused. The pages are recomputed from the
database on every continuation; a change between two pages can shift the results.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from identity.audit.record import Outcome
from identity.errors import (
    AmbiguousDomain,
    InvalidInput,
    MpiError,
    StoreUnavailable,
    UnknownDomain,
    UnknownIdentifier,
)
from identity.hl7v2.audit import (
    error_reason,
    identifier_cx,
    patient_cx,
    query_content,
    sender,
)
from identity.hl7v2.errors import ErrorLocation
from identity.hl7v2.pid import (
    FieldError,
    Known,
    authority_of,
    authority_problem,
    check_authority,
    hd_authority,
    hd_parts,
    hl7_date,
)
from identity.hl7v2.replies import (
    ErrorDetail,
    ReplyContext,
    ack,
    encode,
    err_segment,
    in_reply_encoding,
    msh,
    pid_segment,
    segment_in_reply_encoding,
)
from identity.hl7v2.tokenizer import Message, Raw, Repetition, Segment
from identity.model import (
    Address,
    AuthorityRef,
    Demographics,
    Domain,
    Identifier,
    IdentifierRef,
    Name,
    Person,
    RecordStatus,
    SearchCriteria,
    SourceRecord,
)
from identity.mpi import Mpi
from matching.normalize import fold

log = logging.getLogger("identity.hl7v2.queries")

PIX_NAME = "~^^^^^^S"
"""RSP^K23 PID-5: first repetition empty, the second with only the name type S (pseudonym)."""

UNKNOWN_NAME = "^^^^^^U"
"""RSP^K22 PID-5 of a record held without a name (a newborn): only the name type U."""

UNLIMITED = 500
"""Page size when RCP-2 gives no quantity limit."""

EXACT = ("EXACT", "Exact or wildcard demographic search")
APPROXIMATE = ("FS-WEIGHT", "Fellegi-Sunter match weight (log2 odds)")
"""QRI-3 algorithm descriptors."""

APPROXIMATE_LIMIT = 200
"""At most this many candidates are asked of the matching engine."""


def _segment_or_error(message: Message, name: str) -> Segment:
    segment = message.segment(name)
    if segment is None:
        raise FieldError(f"{name} segment is missing", location=ErrorLocation(name), code=100)
    return segment


@dataclass
class _Answered:
    """What a query's audit record needs of its answer: MSA-1, QAK-2 and the errors (set by
    ``_rsp``), and the patients disclosed, each as its CX identifiers."""

    code: str | None = None
    status: str | None = None
    errors: Sequence[ErrorDetail] = ()
    patients: list[list[str]] = field(default_factory=list)


def _rsp(
    ctx: ReplyContext,
    trigger: str,
    structure: str,
    code: str,
    status: str,
    qpd: Segment | None,
    errors: Sequence[ErrorDetail] = (),
    body: Sequence[Any] = (),
    qak_extra: Sequence[Any] = (),
    answered: _Answered | None = None,
) -> bytes:
    """RSP: MSH, MSA, {ERR}, QAK (QAK-1 = QPD-2, QAK-2 status, QAK-3 = QPD-1, then
    ``qak_extra``), QPD echoed as received, then ``body``; noted in ``answered``."""
    if answered is not None:
        answered.code, answered.status, answered.errors = code, status, errors
    tag = in_reply_encoding(qpd.field(2), ctx.encoding) if qpd is not None else ""
    name = Raw(in_reply_encoding(qpd.field(1), ctx.encoding)) if qpd is not None else None
    segments: list[Any] = [msh(ctx, ("RSP", trigger, structure)), ["MSA", code, ctx.control_id]]
    segments += [err_segment(e, ctx.version) for e in errors]
    segments.append(["QAK", Raw(tag), status, name, *qak_extra])
    if qpd is not None:
        segments.append(segment_in_reply_encoding(qpd, ctx.encoding))
    segments += body
    return encode(segments)[1]


def _audit_later(mpi: Mpi, name: str, message: Message, answered: _Answered) -> None:
    """Make the query's audit records once the reply is written: the MLLP server writes it as
    soon as the handler returns, before the event loop runs this callback, so the records'
    CPU (about 25-35 µs) is not on the query's latency path (issue 16: reads slowed by at most
    10% at p99). The callback runs in the handler's context (its connection's peer)."""
    asyncio.get_running_loop().call_soon(_audit, mpi, name, message, answered)


def _audit(mpi: Mpi, name: str, message: Message, answered: _Answered) -> None:
    """Queue the audit records of a query (ITI TF-2 3.9.5.1.2, 3.21.5.1.2): one per patient
    disclosed, or one without a patient; outcome 0 for AA, 4 with the errors for AE (a query
    refused), 8 when the database could not answer (QAK-2 AR) or no answer was made (a bug)."""
    if answered.code == "AA":
        outcome, description = Outcome.SUCCESS, None
    else:
        refused = answered.code == "AE" and answered.status != "AR"
        outcome = Outcome.MINOR_FAILURE if refused else Outcome.SERIOUS_FAILURE
        description = error_reason(answered.errors, name) or "no answer: internal error"
    try:
        query = query_content(message)
        qpd = message.segment("QPD")
        records = mpi.audit.auditor.query(
            name, caller=sender(message), query=query, patients=answered.patients,
            message_id=message.control_id, query_id=(qpd.value(2) if qpd else None) or None,
            outcome=outcome, description=description,
        )  # fmt: skip
    except Exception:  # noqa: BLE001 - an audit record must not take the answer's place
        log.exception("event=audit_query_record_error")
        return
    mpi.audit.later(records)


def query_caller(ctx: ReplyContext) -> str:
    """The caller of a query: the actor of the sender's own changes (identity.hl7v2.feed),
    so that its reads see them (read-your-writes with a replica)."""
    return f"hl7:{ctx.sending_application}|{ctx.sending_facility}"


# --- ITI-9 ------------------------------------------------------------------------------------


class PixQuery:
    def __init__(self, mpi: Mpi) -> None:
        self.mpi = mpi

    async def handle(self, message: Message, ctx: ReplyContext) -> bytes:
        answered = _Answered()
        try:
            with self.mpi.query_for(query_caller(ctx)):  # the replica, when it may serve
                return await self._answer(message, ctx, answered)
        finally:
            _audit_later(self.mpi, "ITI-9", message, answered)

    async def _answer(self, message: Message, ctx: ReplyContext, answered: _Answered) -> bytes:
        qpd = message.segment("QPD")

        def rsp(code: str, status: str, errors: Sequence[ErrorDetail] = (),
                body: Sequence[Any] = ()) -> bytes:  # fmt: skip
            return _rsp(ctx, "K23", "RSP_K23", code, status, qpd, errors, body,
                        answered=answered)  # fmt: skip

        try:
            qpd = _segment_or_error(message, "QPD")
            source = qpd.repetitions(3)
            if not source or not source[0].value(1):
                raise FieldError("QPD-3 person identifier is missing",
                                 location=ErrorLocation("QPD", 1, 3), code=101)
            check_authority(hd_parts(source[0]), ErrorLocation("QPD", 1, 3, 1, 4),
                            self.mpi.domains.known)
            ref = IdentifierRef(value=source[0].value(1), authority=authority_of(source[0]))
            # ITI TF-2 3.9.5.1.2: the patient is the queried identifier and those returned
            answered.patients = [patient_cx([ref], self.mpi.domains)]
            errors = await self._check_domains(ref.authority, qpd)
            if errors:
                return rsp("AE", "AE", errors)
            targets = [
                hd_authority(rep) for rep in qpd.repetitions(4) if _has_authority(rep)
            ]
            xref = await self.mpi.cross_references(ref, targets)
        except FieldError as exc:
            return rsp("AE", "AE", [ErrorDetail(exc.location, exc.code, exc.text)])
        except UnknownIdentifier as exc:
            return rsp("AE", "AE", [ErrorDetail(ErrorLocation("QPD", 1, 3, 1, 1), 204, str(exc))])
        except AmbiguousDomain as exc:
            return rsp("AE", "AE", [ErrorDetail(ErrorLocation("QPD", 1, 3, 1, 4), 102, str(exc))])
        except (UnknownDomain, InvalidInput) as exc:
            return rsp("AE", "AE", [ErrorDetail(ErrorLocation("QPD", 1, 3, 1, 4), 204, str(exc))])
        except StoreUnavailable as exc:
            return rsp("AE", "AR", [ErrorDetail(None, 207, str(exc))])
        if not xref.references:
            return rsp("AA", "NF")
        returned = [r.identifier for r in xref.references]
        answered.patients = [[*answered.patients[0], *identifier_cx(returned)]]
        pid = pid_segment(returned, name=Raw(PIX_NAME))
        return rsp("AA", "OK", body=[pid])

    async def _check_domains(self, source: AuthorityRef, qpd: Segment) -> list[ErrorDetail]:
        """Case 4 (unknown QPD-3 domain) before case 5 (every unknown QPD-4 domain)."""
        try:
            await self.mpi.domains.resolve(source)
        except AmbiguousDomain as exc:
            return [ErrorDetail(ErrorLocation("QPD", 1, 3, 1, 4), 102, str(exc))]
        except (UnknownDomain, InvalidInput) as exc:
            return [ErrorDetail(ErrorLocation("QPD", 1, 3, 1, 4), 204, str(exc))]
        return await _check_targets(self.mpi, qpd, 4)


def _has_authority(rep: Repetition) -> bool:
    authority = hd_authority(rep)
    return bool(authority.namespace or authority.oid)


def _target_parts(rep: Repetition) -> tuple[str, str, str]:
    """The HD of a What Domains Returned repetition: CX.4, or the HD given as the whole
    repetition (as :func:`hd_authority` reads it)."""
    if any(hd_parts(rep)):
        return hd_parts(rep)
    return rep.value(1), rep.value(2), rep.value(3)


async def _check_targets(mpi: Mpi, qpd: Segment, field_no: int) -> list[ErrorDetail]:
    """One ERR per What Domains Returned repetition (QPD-4 of ITI-9, QPD-8 of ITI-21) that
    is not a valid HD (102) or names no configured domain (204), at ``QPD^1^<field>^<rep>``."""
    errors = []
    for position, rep in enumerate(qpd.repetitions(field_no), start=1):
        location = ErrorLocation("QPD", 1, field_no, position)
        problem = authority_problem(*_target_parts(rep), known=mpi.domains.known)
        if problem is not None:
            errors.append(ErrorDetail(location, 102, f"invalid assigning authority: {problem}"))
            continue
        if not _has_authority(rep):
            continue
        try:
            await mpi.domains.resolve(hd_authority(rep))
        except AmbiguousDomain as exc:
            errors.append(ErrorDetail(location, 102, str(exc)))
        except (UnknownDomain, InvalidInput) as exc:
            errors.append(ErrorDetail(location, 204, str(exc)))
    return errors


async def _target_domains(mpi: Mpi, qpd: Segment, field_no: int) -> set[int]:
    return {
        (await mpi.domains.resolve(hd_authority(rep))).id
        for rep in qpd.repetitions(field_no)
        if _has_authority(rep)
    }


def person_identifiers(person: Person, domains: list[Domain], wanted: set[int]) -> list[Identifier]:
    """Every identifier of a person (enterprise ID, its active records' identifiers and their
    other identifiers), fully qualified, in ``wanted`` domains (all when empty)."""
    by_namespace = {d.namespace: d for d in domains}
    enterprise = next(d for d in domains if d.is_enterprise)
    found: list[Identifier] = []
    seen: set[tuple[str, str]] = set()

    def add(namespace: str, value: str, type_code: str | None) -> None:
        domain = by_namespace.get(namespace)
        if domain is None or (wanted and domain.id not in wanted):
            return
        if (namespace, value) in seen:
            return
        seen.add((namespace, value))
        found.append(Identifier(domain=namespace, value=value, oid=domain.oid, type=type_code))

    add(enterprise.namespace, person.enterprise_id, None)
    active = [r for r in person.records if r.status == RecordStatus.ACTIVE]
    for record in active:
        add(record.domain.namespace, record.identifier, None)
    for record in active:
        for other in record.other_identifiers:
            add(other.domain, other.value, other.type)
    return found


# --- ITI-21 -----------------------------------------------------------------------------------


@dataclass
class _PdqQuery:
    criteria: dict[str, Any] = field(default_factory=dict)
    middle: str | None = None
    suffix: str | None = None
    prefix: str | None = None
    mother: dict[str, str] = field(default_factory=dict)
    """Filters on mother's maiden name components (@PID.6.2 given, .6.3 further given names,
    .6.4 suffix, .6.5 prefix) by :data:`Name` attribute."""
    wildcard: bool = False
    identifier_only: bool = True


_SEARCH_FIELDS: dict[str, str] = {
    "PID.5": "family", "PID.5.1": "family", "PID.5.1.1": "family", "PID.5.2": "given",
    "PID.5.3": "middle", "PID.5.4": "suffix", "PID.5.5": "prefix",
    "PID.6": "mothers_maiden_name", "PID.6.1": "mothers_maiden_name",
    "PID.6.1.1": "mothers_maiden_name", "PID.6.2": "mother.given",
    "PID.6.3": "mother.further", "PID.6.4": "mother.suffix", "PID.6.5": "mother.prefix",
    "PID.7": "birth_date", "PID.7.1": "birth_date",
    "PID.8": "sex",
    "PID.11": "address_line", "PID.11.1": "address_line", "PID.11.1.1": "address_line",
    "PID.11.3": "city", "PID.11.4": "state", "PID.11.5": "postal_code", "PID.11.6": "country",
    "PID.13": "phone", "PID.13.1": "phone", "PID.13.12": "phone",
    "PID.18": "account_number", "PID.18.1": "account_number",
}  # fmt: skip

_ID_PARTS: dict[str, str] = {
    "": "id", ".1": "id", ".4": "ns", ".4.1": "ns", ".4.2": "oid", ".4.3": "oid_type",
}
_ID_FIELDS = {"PID.3": "identifier", "PID.21": "mothers_identifier"}
"""CX parameters: the value (CX.1) and its assigning authority (CX.4: HD.1, HD.2, HD.3)."""

_NOT_HELD = {
    "PID.18": "only the ID (PID-18.1) of a patient account number is held by this supplier",
}


def _id_parameter(path: str) -> tuple[str, str] | None:
    """``PID.3.4.1`` -> ("PID.3", "ns"); None for a path that is not a CX parameter."""
    for field_path in _ID_FIELDS:
        if path == field_path or path.startswith(field_path + "."):
            part = _ID_PARTS.get(path[len(field_path) :])
            return (field_path, part) if part else None
    return None


def parse_pdq(qpd: Segment, known: Known | None = None) -> _PdqQuery:
    """The query's parameters; an identifier's authority (``@PID.3.4``, ``@PID.21.4``) that
    is not a valid HD naming a configured domain (``known``) is 102 at the parameter that
    makes it invalid (its ``.4.2``, else its ``.4.3``). Raises FieldError."""
    query = _PdqQuery()
    identifiers: dict[str, dict[str, str]] = {}
    id_positions: dict[str, int] = {}
    part_positions: dict[tuple[str, str], int] = {}
    reps = qpd.repetitions(3)
    if not reps:
        raise FieldError("QPD-3 query parameters are missing",
                         location=ErrorLocation("QPD", 1, 3), code=101)
    for position, rep in enumerate(reps, start=1):
        path = rep.value(1).lstrip("@").upper()
        value = rep.value(2)
        location = ErrorLocation("QPD", 1, 3, position)
        if not value:
            continue
        id_parameter = _id_parameter(path)
        if id_parameter is not None:
            field_path, part = id_parameter
            identifiers.setdefault(field_path, {})[part] = value
            part_positions[field_path, part] = position
            if part == "id":
                id_positions[field_path] = position
            if field_path != "PID.3":
                query.identifier_only = False
            continue
        name = _SEARCH_FIELDS.get(path)
        if name is None:
            base = ".".join(path.split(".")[:2])
            text = _NOT_HELD.get(base, f"unsupported query parameter @{path}")
            raise FieldError(text, location=location, code=103)
        query.identifier_only = False
        if name == "birth_date":
            query.criteria["birth_date"] = hl7_date(value, location)
        elif name in ("middle", "suffix", "prefix"):
            setattr(query, name, value)
        elif name.startswith("mother."):
            query.mother[name.removeprefix("mother.")] = value
        else:
            if name in ("family", "given") and "*" in value:
                query.wildcard = True
            query.criteria[name] = value
    if not identifiers and not query.criteria:
        raise FieldError("QPD-3 holds no searchable parameter with a value",
                         location=ErrorLocation("QPD", 1, 3), code=101)
    for field_path, identifier in identifiers.items():
        if "id" not in identifier:
            raise FieldError(f"@{field_path}.4 needs @{field_path}.1",
                             location=ErrorLocation("QPD", 1, 3), code=101)
        hd = (identifier.get("ns", ""), identifier.get("oid", ""), identifier.get("oid_type", ""))
        blamed = part_positions.get((field_path, "oid")) or part_positions.get(
            (field_path, "oid_type"), id_positions[field_path])
        check_authority(hd, ErrorLocation("QPD", 1, 3, blamed), known)
        if not identifier.get("ns") and not identifier.get("oid"):
            raise FieldError(f"@{field_path}.1 needs @{field_path}.4",
                             location=ErrorLocation("QPD", 1, 3, id_positions[field_path]),
                             code=101)
        oid = identifier.get("oid") if identifier.get("oid_type", "ISO").upper() == "ISO" else None
        query.criteria[_ID_FIELDS[field_path]] = IdentifierRef(
            value=identifier["id"],
            authority=AuthorityRef(namespace=identifier.get("ns") or None, oid=oid),
        )
    return query


def _mother_filter(query: _PdqQuery, record: SourceRecord, *, held_only: bool = False) -> bool:
    """The record's mother's maiden name (PID-6) holds each component the query names
    (folded; a trailing ``*`` is a prefix). ``held_only``: a component the record does not
    hold passes (an approximate candidate is dropped only when it contradicts the query)."""
    if not query.mother:
        return True
    maiden = record.demographics.mothers_maiden or Name()
    held = {
        "given": maiden.given[:1], "further": maiden.given[1:],
        "suffix": (maiden.suffix,) if maiden.suffix else (),
        "prefix": (maiden.prefix,) if maiden.prefix else (),
    }
    for part, wanted in query.mother.items():
        text = fold(wanted.rstrip("*"))
        values = [fold(v) for v in held[part]]
        if held_only and not values:
            continue
        if wanted.endswith("*"):
            if not any(v.startswith(text) for v in values):
                return False
        elif text not in values:
            return False
    return True


def contradicts(criteria: dict[str, Any], demographics: Demographics) -> bool:
    """The record holds a sex or birth date other than the one the query asks for (a birth
    date compared at the precision both have: 1980 asked, 1980-03-12 held agrees). A value the
    record does not hold, or an unknown sex, contradicts nothing."""
    asked_sex = str(criteria.get("sex") or "").upper()
    held_sex = (demographics.sex or "").upper()
    definite = ("M", "F", "O")
    if asked_sex in definite and held_sex in definite and asked_sex != held_sex:
        return True
    asked_date = criteria.get("birth_date")
    if asked_date and demographics.birth_date:
        pairs = zip(asked_date.split("-"), demographics.birth_date.split("-"), strict=False)
        return any(a != b for a, b in pairs)
    return False


def _name_filter(query: _PdqQuery, record: SourceRecord) -> bool:
    if not _mother_filter(query, record):
        return False
    if not (query.middle or query.suffix or query.prefix):
        return True
    for name in record.demographics.names or ():
        if query.middle and fold(query.middle) not in {fold(g) for g in name.given[1:]}:
            continue
        if query.suffix and fold(query.suffix) != fold(name.suffix or ""):
            continue
        if query.prefix and fold(query.prefix) != fold(name.prefix or ""):
            continue
        return True
    return False


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit takes '²', which int() refuses)."""
    return text.isascii() and text.isdigit()


def _limit(message: Message) -> int:
    rcp = message.segment("RCP")
    quantity = rcp.value(2) if rcp is not None else ""
    return int(quantity) if _digits(quantity) and int(quantity) > 0 else UNLIMITED


def _digest(qpd: Segment, limit: int) -> str:
    text = "\r".join((qpd.field(1), qpd.field(3), qpd.field(8), str(limit)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass
class _Hit:
    person: Person | None
    record: SourceRecord
    identifiers: list[Identifier]
    weight: float | None = None


class PdqQuery:
    def __init__(self, mpi: Mpi) -> None:
        self.mpi = mpi

    async def handle(self, message: Message, ctx: ReplyContext) -> bytes:
        answered = _Answered()
        try:
            with self.mpi.query_for(query_caller(ctx)):  # the replica, when it may serve
                return await self._answer(message, ctx, answered)
        finally:
            _audit_later(self.mpi, "ITI-21", message, answered)

    async def _answer(self, message: Message, ctx: ReplyContext, answered: _Answered) -> bytes:
        qpd = message.segment("QPD")

        def rsp(code: str, status: str, errors: Sequence[ErrorDetail] = (),
                body: Sequence[Any] = (), qak_extra: Sequence[Any] = ()) -> bytes:  # fmt: skip
            return _rsp(ctx, "K22", "RSP_K21", code, status, qpd, errors, body, qak_extra,
                        answered=answered)  # fmt: skip

        try:
            qpd = _segment_or_error(message, "QPD")
            query = parse_pdq(qpd, self.mpi.domains.known)
            errors = await _check_targets(self.mpi, qpd, 8)
            if errors:
                return rsp("AE", "AE", errors)
            wanted = await _target_domains(self.mpi, qpd, 8)
            limit = _limit(message)
            digest = _digest(qpd, limit)
            mode, offset = self._continuation(message, digest)
            hits, more, mode, total = await self._page(query, wanted, mode, offset, limit)
        except FieldError as exc:
            return rsp("AE", "AE", [ErrorDetail(exc.location, exc.code, exc.text)])
        except AmbiguousDomain as exc:
            return rsp("AE", "AE", [ErrorDetail(ErrorLocation("QPD", 1, 3), 102, str(exc))])
        except UnknownDomain as exc:
            return rsp("AE", "AE", [ErrorDetail(ErrorLocation("QPD", 1, 3), 204, str(exc))])
        except InvalidInput as exc:
            return rsp("AE", "AE", [ErrorDetail(ErrorLocation("QPD", 1, 3), 102, str(exc))])
        except StoreUnavailable as exc:
            return rsp("AE", "AR", [ErrorDetail(None, 207, str(exc))])
        except MpiError as exc:
            return rsp("AE", "AE", [ErrorDetail(None, 207, str(exc))])
        if not hits:
            return rsp("AA", "NF", qak_extra=[0, 0, 0])
        # ITI TF-2 3.21.5.1.2: one audit record per patient returned, with its identifiers
        answered.patients = [identifier_cx(hit.identifiers) for hit in hits]
        body: list[Any] = []
        for number, hit in enumerate(hits, start=1):
            # PID-5 is required in v2.5: a newborn held without a name is answered with an
            # empty name of type U (unknown, HL7 table 0200)
            unnamed = None if hit.record.demographics.names else Raw(UNKNOWN_NAME)
            pid = pid_segment(hit.identifiers, hit.record.demographics, name=unnamed,
                              set_id=number)
            body.append(await self._account_and_mother(pid, hit.record.demographics))
            # QRI is required in the v2.5 RSP_K21 QUERY_RESPONSE group: QRI-1 = match weight
            # of an approximate hit, QRI-3 = how the hit was found.
            if hit.weight is not None:
                body.append(["QRI", round(hit.weight, 3), None, [APPROXIMATE]])
            else:
                body.append(["QRI", None, None, [EXACT]])
        if more:
            body.append(["DSC", f"{mode}{offset + len(hits)}.{digest}", "I"])
        # QAK-4 hit count total, QAK-5 this payload, QAK-6 hits remaining (persons); the
        # total is left empty when it is not known without reading every hit.
        remaining = total - offset - len(hits) if total is not None else None
        return rsp("AA", "OK", body=body, qak_extra=[total, len(hits), remaining])

    async def _account_and_mother(self, pid: list[Any], demographics: Demographics) -> list[Any]:
        """PID-18 (CX.1 only) and PID-21 (CX, fully qualified when its authority names a
        configured domain, else as received) when held."""
        fields: dict[int, Any] = {}
        if demographics.account_number:
            fields[18] = demographics.account_number
        mother = demographics.mothers_identifier
        if mother is not None:
            authority = mother.authority
            try:
                domain = await self.mpi.domains.resolve(authority)
                authority = AuthorityRef(namespace=domain.namespace, oid=domain.oid)
            except (UnknownDomain, AmbiguousDomain, InvalidInput):
                pass
            hd = [authority.namespace, authority.oid, "ISO" if authority.oid else None]
            fields[21] = [[mother.value, None, None, hd, mother.type]]  # one repetition
        if not fields:
            return pid
        pid = pid + [None] * (max(fields) + 1 - len(pid))
        for number, value in fields.items():
            pid[number] = value
        return pid

    def _continuation(self, message: Message, digest: str) -> tuple[str, int]:
        dsc = message.segment("DSC")
        pointer = dsc.value(1) if dsc is not None else ""
        if not pointer:
            return "e", 0
        head, _, tail = pointer.partition(".")
        if tail != digest or head[:1] not in ("e", "a") or not _digits(head[1:]):
            raise FieldError("DSC-1 continuation pointer does not belong to this query",
                             location=ErrorLocation("DSC", 1, 1), code=204)
        return head[:1], int(head[1:])

    async def _page(
        self, query: _PdqQuery, wanted: set[int], mode: str, offset: int, limit: int
    ) -> tuple[list[_Hit], bool, str, int | None]:
        """The page (hits, more after it?, mode, total number of hits when known)."""
        if mode == "e":
            hits, more, total = await self._exact(query, wanted, offset, limit)
            if hits or offset or not self._approximate_allowed(query):
                return hits, more, "e", total
        needed = offset + limit + 1
        found = await self._approximate(query, wanted, needed)
        more = len(found) > offset + limit
        total = None if more else len(found)
        return found[offset : offset + limit], more, "a", total

    async def _hit(self, record: SourceRecord, wanted: set[int]) -> _Hit | None:
        domains = self.mpi.domains.all()
        if record.person_id is None:
            return None
        person = await self.mpi.get_person(record.person_id)
        identifiers = person_identifiers(person, domains, wanted)
        if not identifiers:
            return None  # QPD-8 filtered PID-3 to nothing: the PID is dropped
        return _Hit(person, record, identifiers)

    def _person_hit(
        self, query: _PdqQuery, person: Person, wanted: set[int], domains: list[Domain]
    ) -> _Hit | None:
        """A person found by ``Mpi.search_persons``: its first record is the one that matched;
        the PID shows that record's demographics, which must pass the name filters."""
        if not person.records or not _name_filter(query, person.records[0]):
            return None
        identifiers = person_identifiers(person, domains, wanted)
        if not identifiers:
            return None  # QPD-8 filtered PID-3 to nothing: the PID is dropped
        return _Hit(person, person.records[0], identifiers)

    async def _exact(
        self, query: _PdqQuery, wanted: set[int], offset: int, limit: int
    ) -> tuple[list[_Hit], bool, int | None]:
        """One page of persons (``Mpi.search_persons``). Without QPD-8 or name filters the
        page is read directly at ``offset`` and the total is the database's count; with
        them, persons are read from the start in chunks and filtered until the page is full
        (the total is then known only when every person was read)."""
        domains = self.mpi.domains.all()
        filtered = bool(wanted) or bool(
            query.middle or query.suffix or query.prefix or query.mother
        )
        if not filtered:
            size = min(limit, 10_000)
            criteria = SearchCriteria(**query.criteria, limit=size, offset=offset)
            total, persons = await self.mpi.search_persons(criteria)
            hits = [h for p in persons if (h := self._person_hit(query, p, wanted, domains))]
            return hits, offset + len(persons) < total, total
        needed = offset + limit + 1
        chunk = min(max(needed * 2, 100), 10_000)
        hits: list[_Hit] = []
        read = 0
        exhausted = False
        while len(hits) < needed:
            criteria = SearchCriteria(**query.criteria, limit=chunk, offset=read)
            total, persons = await self.mpi.search_persons(criteria)
            for person in persons:
                hit = self._person_hit(query, person, wanted, domains)
                if hit is not None:
                    hits.append(hit)
            read += len(persons)
            if not persons or read >= total:
                exhausted = True
                break
        page = hits[offset : offset + limit]
        more = len(hits) > offset + limit
        return page, more, len(hits) if exhausted else None

    def _approximate_allowed(self, query: _PdqQuery) -> bool:
        has_demographics = any(
            key in query.criteria for key in ("family", "given", "birth_date")
        )
        exact_only = any(
            key in query.criteria for key in ("account_number", "mothers_identifier")
        )  # identifiers the matching engine does not weigh: no approximate fallback
        return (
            hasattr(self.mpi, "match") and has_demographics and not query.wildcard
            and not query.identifier_only and not exact_only
        )

    async def _approximate(self, query: _PdqQuery, wanted: set[int], needed: int) -> list[_Hit]:
        if not self._approximate_allowed(query):
            return []
        c = query.criteria
        given = tuple(g for g in (c.get("given"), query.middle) if g)
        names = (Name(family=c.get("family"), given=given),) if c.get("family") or given else None
        address = Address(
            lines=(c["address_line"],) if c.get("address_line") else (),
            city=c.get("city"), state=c.get("state"), postal_code=c.get("postal_code"),
            country=c.get("country"),
        )
        demographics = Demographics(
            names=names,
            birth_date=c.get("birth_date"),
            sex=c.get("sex"),
            mothers_maiden_name=c.get("mothers_maiden_name"),
            addresses=(address,) if address.model_dump(exclude_defaults=True) else None,
        )
        # an explicit sex or birth date is never contradicted: candidates that do are dropped,
        # so more are asked for
        checked = bool(c.get("sex") or c.get("birth_date") or query.mother)
        candidates = await self.mpi.match(
            demographics, limit=APPROXIMATE_LIMIT if checked else min(needed, APPROXIMATE_LIMIT),
            explain=False,
        )  # QRI-1 carries the weight; RSP^K22 has no place for the explanation
        hits: list[_Hit] = []
        seen: set[int] = set()
        for candidate in candidates:
            if str(candidate.grade) == "certainly-not" or candidate.person_id in seen:
                continue
            if checked and (contradicts(c, candidate.record.demographics)
                            or not _mother_filter(query, candidate.record, held_only=True)):
                continue
            if candidate.person_id is None:
                continue
            seen.add(candidate.person_id)
            hit = await self._hit(candidate.record, wanted)
            if hit is not None:
                hit.weight = candidate.weight
                hits.append(hit)
                if len(hits) >= needed:
                    break
        return hits


async def cancel(message: Message, ctx: ReplyContext) -> bytes:
    """QCN^J01: continuation is stateless, so there is nothing to release; answered AA."""
    return ack(ctx, "AA", trigger="J01")[1]
