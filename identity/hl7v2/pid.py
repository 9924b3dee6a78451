"""Inbound mapping: CX identifiers and the PID segment to the core's RecordInput.

HL7 v2 update semantics (TF2 C.2.6): an empty field is "not sent" (Demographics field None),
the explicit null ``""`` deletes the stored value (RecordInput.cleared).

PID-18 (patient account number) is kept as its CX.1; PID-21 (mother's identifier) as the first
repetition's CX with its assigning authority as received (resolved only when searched).

PID-19 (SSN) is kept as another identifier (identifier type SS) in the domain ``[hl7]
pid19_domain`` names, by default the one whose OID is the US Social Security Administration's,
2.16.840.1.113883.4.1 (the core skips it when no such domain is configured).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from identity.hl7v2.errors import ErrorLocation, ParseError
from identity.hl7v2.tokenizer import HL7_NULL, Repetition, Segment
from identity.model import (
    Address,
    AuthorityRef,
    Coded,
    Demographics,
    Domain,
    IdentifierRef,
    Name,
    Phone,
    RecordInput,
    compose_number,
)
from matching.normalize import SSN_OID


class FieldError(ParseError):
    """A field of an inbound message is missing or malformed (AE with ERR at ``location``)."""


Known = Callable[[AuthorityRef], Domain | None]
"""The configured domain an authority names, or None (``DomainRegistry.known``)."""


def authority_problem(namespace: str, universal: str, kind: str, *, known: Known) -> str | None:
    """Why an HD (namespace HD.1, universal ID HD.2, its type HD.3) that names an assigning
    authority is not a valid name of one, or None. HL7 v2.5 2.A.33: HD.3 without HD.2 is not
    a valid HD. A universal ID is an ISO OID here (HD.3 ``ISO``, or left out): any other
    type is refused unless HD.1 names a domain configured without an OID (HD.2 is then not
    used). Namespace and OID must name the same configured domain (ITI TF-2 3.8: given
    together, they must agree with the configuration). An HD naming no configured domain at
    all is not invalid: it is unknown (204, or auto-registered), decided by the core."""
    kind = kind.upper()
    if kind and not universal:
        return f"HD-3 universal ID type {kind!r} without an HD-2 universal ID"
    if not universal:
        return None
    by_namespace = known(AuthorityRef(namespace=namespace)) if namespace else None
    if kind not in ("", "ISO"):
        if by_namespace is not None and by_namespace.oid is None:
            return None
        if namespace and by_namespace is None:
            return None  # unknown namespace: the core says so (or registers it)
        return f"HD-3 universal ID type {kind!r} is not ISO (domains are named by ISO OIDs)"
    by_oid = known(AuthorityRef(oid=universal))
    if by_namespace is not None and by_oid is not None and by_namespace.id != by_oid.id:
        return (f"namespace {namespace!r} and OID {universal!r} name two different domains "
                f"({by_namespace.namespace}, {by_oid.namespace})")
    if by_namespace is not None and by_namespace.oid and by_namespace.oid != universal:
        return f"OID {universal!r} is not the OID of domain {namespace!r}"
    if by_oid is not None and namespace and by_namespace is None:
        return f"namespace {namespace!r} is not the namespace of OID {universal!r}"
    return None


def hd_parts(rep: Repetition, component: int = 4) -> tuple[str, str, str]:
    """(HD.1, HD.2, HD.3) of the HD in ``component`` of a repetition (CX.4)."""
    return rep.value(component, 1), rep.value(component, 2), rep.value(component, 3)


def check_authority(
    parts: tuple[str, str, str], location: ErrorLocation, known: Known | None
) -> None:
    """Raise FieldError 102 at ``location`` when the HD ``parts`` are not a valid name of an
    assigning authority (:func:`authority_problem`); ``known`` None: HD rules only."""
    if not any(parts):
        return
    problem = authority_problem(*parts, known=known or (lambda _ref: None))
    if problem is not None:
        raise FieldError(f"invalid assigning authority: {problem}", location=location, code=102)


def check_identifiers(
    segment: Segment, field: int, sequence: int, known: Known | None, segment_name: str = "PID"
) -> None:
    """Every repetition of a CX field with an identifier: its CX.4 checked (102 at
    ``<segment>^<sequence>^<field>^<repetition>^4``)."""
    for number, rep in enumerate(segment.repetitions(field), start=1):
        if rep.value(1) and rep.value(1) != HL7_NULL:
            location = ErrorLocation(segment_name, sequence, field, number, 4)
            check_authority(hd_parts(rep), location, known)


def authority_of(rep: Repetition, component: int = 4) -> AuthorityRef:
    """CX.4 (HD): namespace (HD.1) and universal ID (HD.2, an OID when HD.3 is ISO or empty)."""
    namespace = rep.value(component, 1) or None
    universal = rep.value(component, 2) or None
    kind = rep.value(component, 3).upper()
    oid = universal if universal and kind in ("", "ISO") else None
    return AuthorityRef(namespace=namespace, oid=oid)


def hd_authority(rep: Repetition) -> AuthorityRef:
    """An HD given as a whole field (QPD-4 / QPD-8 carry a CX with only CX.4 valued, but some
    senders put the HD itself in the repetition: namespace^OID^ISO)."""
    if rep.value(4) or rep.value(4, 2):
        return authority_of(rep)
    namespace = rep.value(1) or None
    universal = rep.value(2) or None
    kind = rep.value(3).upper()
    return AuthorityRef(namespace=namespace, oid=universal if kind in ("", "ISO") else None)


def identifier_of(rep: Repetition) -> IdentifierRef | None:
    value = rep.value(1)
    if not value or value == HL7_NULL:
        return None
    return IdentifierRef(value=value, authority=authority_of(rep), type=rep.value(5) or None)


def identifiers(segment: Segment, field: int) -> list[IdentifierRef]:
    found = []
    for rep in segment.repetitions(field):
        ref = identifier_of(rep)
        if ref is not None:
            found.append(ref)
    return found


def hl7_date(raw: str, location: ErrorLocation) -> str:
    """DTM/TS (YYYY[MM[DD[HHMM[SS]]]][+ZZZZ]) → ISO partial date YYYY, YYYY-MM or YYYY-MM-DD."""
    digits = raw.split("^")[0][:8]
    if len(digits) not in (4, 6, 8) or not digits.isdigit():
        raise FieldError(f"not an HL7 date: {raw!r}", location=location, code=102)
    parts = [digits[:4], digits[4:6], digits[6:8]]
    iso = "-".join(p for p in parts if p)
    try:
        date(int(parts[0]), int(parts[1] or 1), int(parts[2] or 1))
    except ValueError:
        raise FieldError(f"not a valid date: {raw!r}", location=location, code=102) from None
    return iso


def _name(rep: Repetition) -> Name | None:
    """XPN: .1.1 family, .2 given, .3 further given names, .4 suffix, .5 prefix, .7 type.

    Further given names without a given name keep an empty first: the middle name is not the
    name the patient goes by (matching compares it as a middle name)."""
    family = rep.value(1, 1)
    further = tuple(g for g in rep.value(3).split(" ") if g)
    first = rep.value(2)
    given = ((first,) if first else ("",)) + further if (first or further) else ()
    if not family and not given:
        return None
    return Name(
        family=family or None,
        given=given,
        suffix=rep.value(4) or None,
        prefix=rep.value(5) or None,
        use=rep.value(7) or None,
    )


def _names(segment: Segment) -> tuple[Name, ...]:
    return tuple(name for rep in segment.repetitions(5) if (name := _name(rep)) is not None)


def _coded(segment: Segment, field: int) -> Coded | None:
    """CWE/CE (first repetition): identifier, text, name of coding system, as received."""
    reps = segment.repetitions(field)
    if not reps:
        return None
    rep = reps[0]
    coded = Coded(code=rep.value(1) or None, text=rep.value(2) or None,
                  system=rep.value(3) or None)
    return coded if coded.code or coded.text else None


def _addresses(segment: Segment) -> tuple[Address, ...]:
    addresses = []
    for rep in segment.repetitions(11):
        lines = tuple(x for x in (rep.value(1, 1), rep.value(2)) if x)
        address = Address(
            lines=lines,
            city=rep.value(3) or None,
            state=rep.value(4) or None,
            postal_code=rep.value(5) or None,
            country=rep.value(6) or None,
            use=rep.value(7) or None,
        )
        if address.model_dump(exclude_defaults=True):
            addresses.append(address)
    return tuple(addresses)


def _component(rep: Repetition, number: int) -> str | None:
    value = rep.value(number)
    return value if value and value != HL7_NULL else None


def phone_of(rep: Repetition, field: int) -> Phone | None:
    """One XTN repetition of PID-13 (``field`` 13) or PID-14 (14), kept component by component:
    XTN.1 (the number as formatted, v2.3-style), .2 use (table 0201; empty: PRN in PID-13, WPN
    in PID-14), .3 equipment (table 0202), .4 e-mail, .5 country, .6 area/city, .7 local
    number, .8 extension, .12 unformatted number. None when it holds neither a number nor an
    e-mail address."""
    formatted = _component(rep, 1)
    use = _component(rep, 2)
    parts = {
        "equipment": _component(rep, 3),
        "email": _component(rep, 4),
        "country_code": _component(rep, 5),
        "area_code": _component(rep, 6),
        "local_number": _component(rep, 7),
        "extension": _component(rep, 8),
        "unformatted": _component(rep, 12),
    }
    value = (formatted or parts["unformatted"]
             or compose_number(parts["country_code"], parts["area_code"],
                               parts["local_number"], parts["extension"])
             or parts["email"])
    if value is None:
        return None
    return Phone(
        value=value,
        formatted=formatted is not None,
        use=use or ("WPN" if field == 14 else "PRN"),
        purpose="work" if field == 14 and use not in (None, "WPN") else None,
        **parts,
    )


def _phones(segment: Segment) -> tuple[Phone, ...]:
    """PID-13 repetitions, then PID-14 ones."""
    return tuple(
        phone
        for field in (13, 14)
        for rep in segment.repetitions(field)
        if (phone := phone_of(rep, field)) is not None
    )


def record_input(
    segment: Segment,
    sequence: int = 1,
    *,
    require_name: bool = True,
    known: Known | None = None,
    pid19_domain: str | None = None,
) -> tuple[list[IdentifierRef], Demographics, frozenset[str], list[IdentifierRef]]:
    """PID → (PID-3 identifiers, demographics, cleared fields, PID-19 as identifiers).
    Every assigning authority (PID-3, PID-21) is checked against ``known`` (the configured
    domains): an invalid one is 102 at its CX.4. PID-19 goes to the domain ``pid19_domain``
    names ([hl7] pid19_domain), else to the domain of the SSA's OID; its identifier type is
    SS (checked as a US SSN by matching/) unless that domain has an OID other than the SSA's
    (a national ID of another country: no type). Raises FieldError."""
    check_identifiers(segment, 3, sequence, known)
    check_identifiers(segment, 21, sequence, known)
    refs = identifiers(segment, 3)
    if not refs:
        raise FieldError(
            "PID-3 patient identifier list is missing",
            location=ErrorLocation("PID", sequence, 3),
            code=101,
        )
    values: dict[str, object] = {}
    cleared: set[str] = set()
    if segment.is_null(5):
        cleared.add("names")
    elif segment.field(5):
        names = _names(segment)
        if names:
            values["names"] = names
    if require_name and "names" not in values and "names" not in cleared:
        raise FieldError(
            "PID-5 patient name is missing", location=ErrorLocation("PID", sequence, 5), code=101
        )
    if segment.is_null(6):
        cleared.update(("mothers_maiden_name", "mothers_maiden"))
    elif (reps := segment.repetitions(6)) and (maiden := _name(reps[0])) is not None:
        values["mothers_maiden"] = maiden  # the whole XPN: PID-6.2 and the rest
        if maiden.family:
            values["mothers_maiden_name"] = maiden.family  # what matching and search use
    if segment.is_null(7):
        cleared.add("birth_date")
    elif segment.value(7):
        values["birth_date"] = hl7_date(segment.value(7), ErrorLocation("PID", sequence, 7))
    if segment.is_null(8):
        cleared.add("sex")
    elif segment.value(8):
        values["sex"] = segment.value(8).upper()
    if segment.is_null(11):
        cleared.add("addresses")
    elif segment.field(11):
        addresses = _addresses(segment)
        if addresses:
            values["addresses"] = addresses
    phones = _phones(segment)
    if phones:
        values["phones"] = phones
    elif segment.is_null(13) or segment.is_null(14):
        cleared.add("phones")
    if segment.is_null(18):
        cleared.add("account_number")
    elif segment.value(18) and segment.value(18) != HL7_NULL:
        values["account_number"] = segment.value(18)  # CX.1 of the first repetition
    if segment.is_null(21):
        cleared.add("mothers_identifier")
    else:
        mother = next(filter(None, map(identifier_of, segment.repetitions(21))), None)
        if mother is not None:
            values["mothers_identifier"] = mother
    for field_no, key in ((15, "primary_language"), (16, "marital_status")):
        if segment.is_null(field_no):
            cleared.add(key)
        elif (coded := _coded(segment, field_no)) is not None:
            values[key] = coded
    if segment.is_null(24):
        cleared.add("multiple_birth")
    elif segment.value(24):
        flag = segment.value(24).upper() == "Y"
        order = segment.value(25)
        numbered = flag and order.isascii() and order.isdigit()
        values["multiple_birth"] = int(order) if numbered else flag
    try:
        demographics = Demographics.model_validate(values)
    except ValueError as exc:
        raise FieldError(
            f"invalid demographics: {exc}", location=ErrorLocation("PID", sequence), code=102
        ) from None
    extra = []
    ssn = segment.value(19)
    if ssn and ssn != HL7_NULL:
        authority, type_code = AuthorityRef(oid=SSN_OID), "SS"
        if pid19_domain:
            authority = AuthorityRef(namespace=pid19_domain)
            domain = known(authority) if known is not None else None
            if domain is not None and domain.oid and domain.oid != SSN_OID:
                type_code = None
        extra.append(IdentifierRef(value=ssn, authority=authority, type=type_code))
    return refs, demographics, frozenset(cleared), extra


def make_record(
    primary: IdentifierRef,
    others: list[IdentifierRef],
    demographics: Demographics,
    cleared: frozenset[str],
) -> RecordInput:
    return RecordInput(
        identifier=primary,
        demographics=demographics,
        other_identifiers=tuple(others),
        cleared=cleared,
    )
