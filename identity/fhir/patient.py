"""FHIR Patient <-> the core's records.

A Patient resource is one *source record*: ``Patient.id`` is ``str(SourceRecord.id)``. The person
("golden record") the record belongs to is reached through the enterprise identifier (system of
the MPI's enterprise domain) listed among ``Patient.identifier``, and, on read, through
``Patient.link`` (type ``seealso``) to the other active records of the same person. A merged
record reads as ``active: false`` with a ``replaced-by`` link to the surviving record.

Outbound Patients are built as plain dicts (fhir.resources costs ~70 us per Patient, too much on
the search path); tests validate the shapes with fhir.resources' R4B models.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from identity.fhir.wire import FhirError, Json, issue, validation_issues
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
    RecordStatus,
    SourceRecord,
)

MOTHERS_MAIDEN_NAME = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
MARITAL_STATUS = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
LANGUAGE = "urn:ietf:bcp:47"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# HL7 v2 coding systems (CWE.3) and the FHIR systems of the same codes: PID-16 marital status
# (HL7 table 0002, whose codes v3-MaritalStatus shares) and PID-15 language (ISO 639 codes,
# which BCP 47 language tags are).
_V2_TO_SYSTEM = {"HL70002": MARITAL_STATUS, "ISO639": LANGUAGE, "HL70296": LANGUAGE}
_SYSTEM_TO_V2 = {MARITAL_STATUS: "HL70002", LANGUAGE: "ISO639"}


def _coded_of(concept: Json | None) -> Coded | None:
    """A CodeableConcept as the core's Coded (its first coding, and its text)."""
    if not isinstance(concept, dict):
        return None
    coding = next((c for c in concept.get("coding") or () if isinstance(c, dict)), {})
    system = coding.get("system")
    coded = Coded(code=coding.get("code"), text=concept.get("text") or coding.get("display"),
                  system=_SYSTEM_TO_V2.get(system, system))
    return coded if coded.code or coded.text else None


def _concept(coded: Coded, default_system: str) -> Json:
    """The core's Coded as a CodeableConcept: a code of a known HL7 v2 table gets its FHIR
    system; a code without a system takes ``default_system``."""
    concept: Json = {}
    if coded.code:
        system = _V2_TO_SYSTEM.get((coded.system or "").upper(), coded.system) or default_system
        concept["coding"] = [{"system": system, "code": coded.code}]
    if coded.text:
        concept["text"] = coded.text
    return concept

GENDER_TO_SEX = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
SEX_TO_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other",
                 "N": "unknown"}
# HumanName.use <-> HL7 table 0200
NAME_USE_TO_V2 = {"official": "L", "usual": "D", "nickname": "N", "maiden": "M",
                  "anonymous": "S", "temp": "T", "old": "P"}
V2_TO_NAME_USE = {v: k for k, v in NAME_USE_TO_V2.items()} | {"B": "official", "A": "usual"}
# Address.use <-> HL7 table 0190
ADDRESS_USE_TO_V2 = {"home": "H", "work": "O", "temp": "C", "old": "OLD", "billing": "BI"}
V2_TO_ADDRESS_USE = {v: k for k, v in ADDRESS_USE_TO_V2.items()} | {"B": "work", "M": "home"}
# ContactPoint.use <-> HL7 table 0201
PHONE_USE_TO_V2 = {"home": "PRN", "work": "WPN", "mobile": "PRS", "temp": "ORN", "old": "ORN"}
V2_TO_PHONE_USE = {"PRN": "home", "WPN": "work", "PRS": "mobile", "ORN": "temp"}
# ContactPoint.system <-> HL7 table 0202 (FHIR's v2 map: url is an Internet address too; CP, a
# cellular phone, is a phone whose use is mobile)
CONTACT_SYSTEMS = ("phone", "fax", "email", "pager", "url", "sms", "other")
SYSTEM_TO_EQUIPMENT = {"phone": "PH", "fax": "FX", "email": "Internet", "pager": "BP",
                       "url": "Internet", "sms": "CP"}
EQUIPMENT_TO_SYSTEM = {"PH": "phone", "CP": "phone", "SAT": "phone", "FX": "fax",
                       "BP": "pager", "Internet": "email", "X.400": "email", "MD": "other",
                       "TDD": "other", "TTY": "other"}


def authority_of(system: str | None) -> AuthorityRef:
    """``urn:oid:<oid>`` names a domain by OID; any other URI by namespace."""
    if not system:
        return AuthorityRef()
    if system.lower().startswith("urn:oid:"):
        return AuthorityRef(oid=system[8:])
    return AuthorityRef(namespace=system)


def identifier_ref(system: str | None, value: str, type_code: str | None = None) -> IdentifierRef:
    if not value:
        raise FhirError(400, "invalid", "identifier without a value", expression="identifier")
    return IdentifierRef(value=value, authority=authority_of(system), type=type_code)


def parse_token(token: str, param: str = "identifier") -> tuple[str | None, str | None]:
    """``system|value`` -> (system, value); ``|value`` -> ("", value); ``value`` -> (None, value);
    ``system|`` -> (system, None)."""
    if "|" not in token:
        return None, token or None
    system, _, value = token.partition("|")
    if not system and not value:
        raise FhirError(400, "invalid", f"{param}: empty token", expression=param)
    return system, value or None


# --- inbound -------------------------------------------------------------------------------


def validate_patient(body: Json) -> None:
    """400 listing every problem fhir.resources (R4B) finds in an inbound Patient."""
    from fhir.resources.R4B.patient import Patient

    if body.get("resourceType") != "Patient":
        raise FhirError(400, "invalid", f"expected a Patient, got {body.get('resourceType')!r}")
    issues: list[Json] = []
    try:
        Patient.model_validate(body)
    except ValidationError as exc:
        issues.extend(validation_issues(exc, "Patient"))
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
        # fhir.resources fails this way on some malformed input (a contained resource whose
        # resourceType is not a string, for one)
        issues.append(issue("structure", f"Patient: not a valid resource ({exc!r})"))
    # Required bindings fhir.resources does not check (values of the wrong type it reported).
    gender = body.get("gender")
    if isinstance(gender, str) and gender not in GENDER_TO_SEX:
        issues.append(issue("code-invalid", f"Patient.gender: {gender!r} is not in "
                            "administrative-gender", expression="Patient.gender"))
    for kind, field, allowed in (("name", "use", NAME_USE_TO_V2),
                                 ("address", "use", ADDRESS_USE_TO_V2),
                                 ("telecom", "use", PHONE_USE_TO_V2),
                                 ("telecom", "system", CONTACT_SYSTEMS)):
        items = body.get(kind)
        for index, item in enumerate(items if isinstance(items, list) else ()):
            value = item.get(field) if isinstance(item, dict) else None
            if isinstance(value, str) and value not in allowed and not (
                kind == "address" and value == "billing"
            ):
                where = f"Patient.{kind}[{index}].{field}"
                issues.append(issue("code-invalid", f"{where}: unknown code {value!r}",
                                    expression=where))
    if issues:
        raise FhirError(400, "structure", "invalid Patient", issues=issues)


def _type_code(identifier: Json) -> str | None:
    for coding in (identifier.get("type") or {}).get("coding") or ():
        if coding.get("code"):
            return str(coding["code"])
    return None


def body_identifiers(patient: Json) -> list[IdentifierRef]:
    refs = []
    for item in patient.get("identifier") or ():
        if item.get("value"):
            refs.append(identifier_ref(item.get("system"), item["value"], _type_code(item)))
    return refs


def _first(values: Any) -> str | None:
    return values[0] if values else None


def _present(values: Any) -> tuple[str, ...]:
    """The values of a repeating string element; a null (kept in FHIR JSON for the
    extensions of an array's other items) is left out."""
    return tuple(value for value in values or () if value is not None)


def _phone_of(telecom: Json) -> Phone:
    """A ContactPoint as received (system, use, value, rank), with the XTN it maps to: an
    e-mail (or url) address is XTN.4 with use NET and equipment Internet, a mobile phone a
    cellular phone (CP); the use gives XTN.2 and whether it is PID-13 or PID-14."""
    system, use, value = telecom.get("system"), telecom.get("use"), telecom["value"]
    address = system in ("email", "url")
    equipment = SYSTEM_TO_EQUIPMENT.get(system or "")
    if system == "phone" and use == "mobile":
        equipment = "CP"
    return Phone(
        value=value,
        formatted=not address,
        use="NET" if address else PHONE_USE_TO_V2.get(use or ""),
        equipment=equipment,
        email=value if address else None,
        system=system,
        purpose=use,
        rank=telecom.get("rank"),
    )


def _name_of(name: Json) -> Name | None:
    """A HumanName as the core's Name; None for a name with neither family nor given (the
    core does not hold it)."""
    if not isinstance(name, dict):
        return None
    given = _present(name.get("given"))
    if not name.get("family") and not given:
        return None
    return Name(family=name.get("family"), given=given, prefix=_first(name.get("prefix")),
                suffix=_first(name.get("suffix")), use=NAME_USE_TO_V2.get(name.get("use") or ""))


def _address_of(address: Json) -> Address:
    return Address(
        lines=_present(address.get("line")),
        city=address.get("city"),
        state=address.get("state"),
        postal_code=address.get("postalCode"),
        country=address.get("country"),
        use=ADDRESS_USE_TO_V2.get(address.get("use") or ""),
    )


def _language_of(communication: Any) -> Coded | None:
    """The core's primary language: the preferred ``communication.language``, else the
    first."""
    items = [c for c in communication or () if isinstance(c, dict)]
    preferred = next((_coded_of(c.get("language")) for c in items if c.get("preferred")), None)
    if preferred is None:
        preferred = next((_coded_of(c.get("language")) for c in items), None)
    return preferred


def demographics_of(patient: Json, *, keep: bool = True) -> Demographics:
    """The Patient as the core's Demographics; ``keep``: with what the core does not hold
    kept as sent (``received``), as a feed stores it (a $match query keeps nothing)."""
    names = tuple(n for n in map(_name_of, patient.get("name") or ()) if n is not None)
    addresses = tuple(_address_of(a) for a in patient.get("address") or ())
    phones = tuple(_phone_of(t) for t in patient.get("telecom") or () if t.get("value"))
    mmn = next(
        (e.get("valueString") for e in patient.get("extension") or ()
         if e.get("url") == MOTHERS_MAIDEN_NAME),
        None,
    )
    multiple: bool | int | None = patient.get("multipleBirthInteger")
    if multiple is None:
        multiple = patient.get("multipleBirthBoolean")
    gender = patient.get("gender")
    try:
        return Demographics(
            names=names or None,
            birth_date=patient.get("birthDate"),
            sex=GENDER_TO_SEX.get(gender) if gender else None,
            addresses=addresses or None,
            phones=phones or None,
            mothers_maiden_name=mmn,
            multiple_birth=multiple,
            marital_status=_coded_of(patient.get("maritalStatus")),
            primary_language=_language_of(patient.get("communication")),
            received=received_of(patient, mmn) if keep else None,
        )
    except ValidationError as exc:
        raise FhirError(400, "invalid", "invalid Patient",
                        issues=validation_issues(exc, "Patient")) from exc


# --- the mother of a newborn (issue 18 item 6) ----------------------------------------------

ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
V2_0063 = "http://terminology.hl7.org/CodeSystem/v2-0063"
MOTHER_CODES = {ROLE_CODE: frozenset({"MTH", "NMTH", "GESTM"}), V2_0063: frozenset({"MTH"}),
                None: frozenset({"MTH", "NMTH", "GESTM"})}
"""The relationships that make a RelatedPerson the patient's mother, the woman who bore her:
v3-RoleCode mother, natural mother and gestational mother, and HL7 v2 table 0063 MTH (the code
NK1-3 carries over HL7 v2); a coding without a system is read as either. An adoptive, foster or
step mother (ADOPTM, FMTH, STPMTH) is not the mother whose identifier PID-21 holds."""
MOTHER_ID = "mother"
"""The id of the contained RelatedPerson an answer carries the mother's identifier in."""


def is_mother(related: Any) -> bool:
    """Whether a resource is a RelatedPerson whose relationship says she is the patient's
    mother (:data:`MOTHER_CODES`)."""
    if not isinstance(related, dict) or related.get("resourceType") != "RelatedPerson":
        return False
    for concept in related.get("relationship") or ():
        for coding in (concept.get("coding") or ()) if isinstance(concept, dict) else ():
            if not isinstance(coding, dict):
                continue
            codes = MOTHER_CODES.get(coding.get("system"), frozenset())
            if str(coding.get("code") or "").upper() in codes:
                return True
    return False


def related_identifier(related: Json) -> IdentifierRef | None:
    """A RelatedPerson's first identifier with a value, as received (its system unresolved)."""
    for item in related.get("identifier") or ():
        if isinstance(item, dict) and item.get("value"):
            return identifier_ref(item.get("system"), item["value"], _type_code(item))
    return None


def contained_mother(patient: Json) -> tuple[Json, IdentifierRef] | None:
    """The mother a Patient names in itself: its first contained RelatedPerson that is the
    patient's mother (:func:`is_mother`), has an identifier, and belongs to this Patient (its
    ``patient`` is ``#``, the container, or the Patient's ``link`` references it); with her
    identifier."""
    linked = {str((link.get("other") or {}).get("reference") or "")
              for link in patient.get("link") or () if isinstance(link, dict)}
    for related in patient.get("contained") or ():
        if not is_mother(related):
            continue
        ours = (related.get("patient") or {}).get("reference") == "#"
        if not ours and f"#{related.get('id')}" not in linked:
            continue
        ref = related_identifier(related)
        if ref is not None:
            return related, ref
    return None


def mother_json(mother: IdentifierRef, system: str | None, rid: str = MOTHER_ID) -> Json:
    """The contained RelatedPerson that carries a record's mother's identifier (``system``:
    the FHIR system of its domain, None when it has no assigning authority)."""
    identifier: Json = {}
    if mother.type:
        identifier["type"] = {"coding": [{"system": V2_0203, "code": mother.type}]}
    if system:
        identifier["system"] = system
    identifier["value"] = mother.value
    return {
        "resourceType": "RelatedPerson",
        "id": rid,
        "identifier": [identifier],
        "patient": {"reference": "#"},
        "relationship": [{"coding": [{"system": ROLE_CODE, "code": "MTH", "display": "mother"}]}],
    }


def without_our_mother(received: Json | None, mother: IdentifierRef | None,
                       system: str | None) -> Json | None:
    """What a client sent as kept, less the contained RelatedPerson and its link written as
    an answer writes the record's mother (:func:`mother_json`): a Patient read and sent back
    (generic clients update that way) carries nothing of its own there."""
    if not received or mother is None or not received.get("contained"):
        return received
    ours = {c.get("id") for c in received["contained"] if isinstance(c, dict)
            and c == mother_json(mother, system, str(c.get("id") or ""))}
    if not ours:
        return received
    kept = dict(received)
    contained = [c for c in received["contained"]
                 if not (isinstance(c, dict) and c.get("id") in ours)]
    written = [{"other": {"reference": f"#{rid}"}, "type": "seealso"} for rid in ours]
    links = [link for link in received.get("link") or () if link not in written]
    for key, value in (("contained", contained), ("link", links)):
        if value:
            kept[key] = value
        else:
            kept.pop(key, None)
    return kept or None


def _same_mother(sent: IdentifierRef, held: IdentifierRef) -> bool:
    """Whether a mother's identifier a client sent is the one the record holds: the same
    value in the same authority (by OID or by namespace, as stored or resolved)."""
    if sent.value != held.value:
        return False
    a, b = sent.authority, held.authority
    if not (a.namespace or a.oid or b.namespace or b.oid):
        return True
    return bool((a.oid and a.oid == b.oid) or (a.namespace and a.namespace == b.namespace))


def _with_mother(resource: Json, mother: IdentifierRef | None, system: str | None) -> Json:
    """``resource`` with the record's mother: the client's own contained RelatedPerson while
    it still names the mother the record holds (returned as sent, once); else ours
    (:func:`mother_json`) referenced by a ``link`` of type seealso, the client's stale one and
    its links left out."""
    found = contained_mother(resource)
    if found is not None:
        related, sent = found
        if mother is not None and (_same_mother(sent, mother) or (
                system and _same_mother(sent, identifier_ref(system, mother.value)))):
            return resource
        rid = related.get("id")
        resource = dict(resource)
        resource["contained"] = [c for c in resource["contained"] if c is not related]
        links = [link for link in resource.get("link") or ()
                 if (link.get("other") or {}).get("reference") != f"#{rid}"]
        for key, value in (("contained", resource["contained"]), ("link", links)):
            if value:
                resource[key] = value
            else:
                resource.pop(key, None)
    if mother is None:
        return resource
    taken = {c.get("id") for c in resource.get("contained") or () if isinstance(c, dict)}
    rid = next(f"{MOTHER_ID}{n or ''}" for n in range(len(taken) + 1)
               if f"{MOTHER_ID}{n or ''}" not in taken)
    out = dict(resource)
    out["contained"] = [*(resource.get("contained") or ()), mother_json(mother, system, rid)]
    out["link"] = [*(resource.get("link") or ()),
                   {"other": {"reference": f"#{rid}"}, "type": "seealso"}]
    return _ordered(out)


# --- what the core does not hold, kept as sent (issue 18 item 0) ----------------------------

# Elements the core holds (Demographics, the record's identifiers and status) or makes itself
# (id, meta.versionId, meta.lastUpdated, the link cross-references): the rest of a Patient is
# kept as the client sent it.
_HELD = frozenset({
    "resourceType", "id", "meta", "identifier", "active", "name", "telecom", "gender",
    "birthDate", "address", "maritalStatus", "multipleBirthBoolean", "multipleBirthInteger",
    "communication", "extension", "link",
})  # fmt: skip
# Primitive elements the core holds whose extensions (``_birthDate``: a birth time, a
# data-absent-reason) are kept, with the value they were sent with.
_PRIMITIVES = ("gender", "birthDate", "multipleBirthBoolean", "multipleBirthInteger")
_KEPT_META = ("security", "tag")
_CORE_LINKS = ("replaced-by", "replaces")


def _ours(link: Any) -> bool:
    """A link the core makes (a merge's replaced-by, a seealso to another Patient of this
    server): not kept from a client."""
    if not isinstance(link, dict):
        return True
    if link.get("type") in _CORE_LINKS:
        return True
    reference = str((link.get("other") or {}).get("reference") or "")
    rid = reference.removeprefix("Patient/")
    return link.get("type") == "seealso" and reference.startswith("Patient/") and rid.isdigit()


def received_of(patient: Json, mmn: str | None = None) -> Json | None:
    """What of a Patient the core's Demographics and record do not hold, as sent (None:
    nothing): its other elements (``contact``, ``generalPractitioner``, ``deceased[x]``,
    ``photo``, ...), the extensions but for the mother's maiden name the core holds
    (``mmn``), ``meta.security`` and ``meta.tag``, the extensions of primitive elements the
    core holds (``_birthDate``, with the value sent), the client's own links (to a
    RelatedPerson, say), and of ``identifier``, ``name``, ``address``, ``telecom``,
    ``maritalStatus`` and ``communication`` the entries that carry more than the core holds
    of them, whole. :func:`patient_json` puts each back while the core's value is still what
    it was sent as (an HL7 v2 update that changes a name leaves that name's extras out)."""
    kept: Json = {}
    for key, value in patient.items():
        if key in _HELD or (key.startswith("_") and key[1:] in _HELD):
            continue
        kept[key] = value
    for key in _PRIMITIVES:
        if f"_{key}" in patient:
            kept[f"_{key}"] = patient[f"_{key}"]
            kept[key] = patient.get(key)
    meta = patient.get("meta")
    if isinstance(meta, dict):
        labels = {k: meta[k] for k in _KEPT_META if meta.get(k)}
        if labels:
            kept["meta"] = labels
    extensions = [e for e in patient.get("extension") or () if isinstance(e, dict)]
    if extensions and extensions != _mmn_extension(mmn):
        kept["extension"] = extensions
    links = [link for link in patient.get("link") or () if not _ours(link)]
    if links:
        kept["link"] = links
    identifiers = [i for i in patient.get("identifier") or ()
                   if isinstance(i, dict) and i.get("value") and set(i) - {"system", "value"}]
    if identifiers:
        kept["identifier"] = identifiers
    for key, of, json_of in (("name", _name_of, _name_json),
                             ("address", _address_of, _address_json)):
        entries = []
        for entry in patient.get(key) or ():
            held = of(entry) if isinstance(entry, dict) else None
            if held is not None and json_of(held) != entry:  # type: ignore[arg-type]
                entries.append(entry)
        if entries:
            kept[key] = entries
    telecom = [t for t in patient.get("telecom") or ()
               if isinstance(t, dict) and t.get("value") and _telecom_json(_phone_of(t)) != t]
    if telecom:
        kept["telecom"] = telecom
    status = patient.get("maritalStatus")
    if isinstance(status, dict):
        coded = _coded_of(status)
        if coded is None or _concept(coded, MARITAL_STATUS) != status:
            kept["maritalStatus"] = status
    communication = patient.get("communication")
    if communication:
        language = _language_of(communication)
        if language is None or communication != [
            {"language": _concept(language, LANGUAGE), "preferred": True}
        ]:
            kept["communication"] = communication
    return kept or None


def received_size(received: Json | None) -> int:
    """The bytes ``received`` takes as JSON."""
    return len(orjson.dumps(received)) if received else 0


def record_input(
    patient: Json, primary: IdentifierRef, *, enterprise_system: str | None = None
) -> RecordInput:
    """The Patient as a record whose own identifier is ``primary``; the Patient's other
    identifiers (not the enterprise one, which only the MPI assigns) are kept as others."""
    others = tuple(
        ref for ref in body_identifiers(patient)
        if not _same(ref, primary) and not _is_system(ref, enterprise_system)
    )
    demographics = demographics_of(patient)
    kept = demographics.received
    if kept and "identifier" in kept:
        # an identifier written as an answer writes it (a Patient read and sent back, as
        # generic clients update) carries nothing of its own
        sent = [i for i in kept["identifier"]
                if not _as_answered(i, primary, enterprise_system)]
        kept = {k: v for k, v in kept.items() if k != "identifier"} | (
            {"identifier": sent} if sent else {})
        demographics = demographics.model_copy(update={"received": kept or None})
    return RecordInput(identifier=primary, demographics=demographics, other_identifiers=others)


def _as_answered(entry: Json, primary: IdentifierRef, enterprise_system: str | None) -> bool:
    """Whether an identifier is written as :func:`patient_json` writes it: ``use`` usual for
    the record's own, official for the enterprise identifier, none for the others; ``type``
    only its code in v2-0203."""
    ref = identifier_ref(entry.get("system"), entry["value"], _type_code(entry))
    own = ref.value == primary.value and (
        bool(ref.authority.oid and ref.authority.oid == primary.authority.oid)
        or bool(ref.authority.namespace and ref.authority.namespace == primary.authority.namespace)
    )
    answered: Json = {}
    if own:
        answered["use"] = "usual"
    elif _is_system(ref, enterprise_system):
        answered["use"] = "official"
    if ref.type and not own:
        answered["type"] = {"coding": [{"system": V2_0203, "code": ref.type}]}
    answered["system"] = entry.get("system")
    answered["value"] = entry["value"]
    return entry == answered


def _same(a: IdentifierRef, b: IdentifierRef) -> bool:
    return a.value == b.value and a.authority == b.authority


def _is_system(ref: IdentifierRef, system: str | None) -> bool:
    return system is not None and authority_of(system) == ref.authority


def replaced_by(patient: Json) -> Json | None:
    """The ``link`` of type replaced-by of a Patient, if any (a merge request)."""
    for link in patient.get("link") or ():
        if link.get("type") == "replaced-by":
            return link.get("other") or {}
    return None


# --- outbound ------------------------------------------------------------------------------


def system_of(domain_namespace: str, oid: str | None) -> str:
    return f"urn:oid:{oid}" if oid else domain_namespace


def fhir_instant(value: Any) -> str:
    text: str = value.isoformat()
    return text.replace("+00:00", "Z")


def etag(record: SourceRecord) -> str:
    return f'W/"{record.version}"'


def same_version(tag: str, record: SourceRecord) -> bool:
    """Whether an ``If-Match`` value names the record's current version: ``W/"3"``, ``"3"``
    or ``3`` (clients write the weak and the strong form)."""
    text = tag.strip()
    if text.startswith(("W/", "w/")):
        text = text[2:]
    return text.strip('"') == str(record.version)


def patient_json(
    record: SourceRecord,
    enterprise: Domain,
    *,
    systems: frozenset[str] | None = None,
    see_also: tuple[int, ...] = (),
    mother_system: str | None = None,
) -> Json:
    """The FHIR Patient of one source record. ``systems``: only identifiers in these systems
    (PDQm domains-to-return); ``see_also``: ids of the other records of the same person;
    ``mother_system``: the FHIR system of the mother's identifier (:func:`_with_mother`).
    A record held without a name (a newborn) has no ``name``: FHIR R4 Patient.name is 0..*
    and no profile served (PDQm, PMIR) requires one."""
    identifiers: list[Json] = []
    demo = record.demographics
    sent = [i for i in (demo.received or {}).get("identifier") or () if isinstance(i, dict)]

    def add(namespace: str, oid: str | None, value: str, type_code: str | None = None,
            use: str | None = None) -> None:  # fmt: skip
        system = system_of(namespace, oid)
        if systems is not None and system not in systems:
            return
        item: Json = {}
        if use:
            item["use"] = use
        if type_code:
            item["type"] = {"coding": [{
                "system": V2_0203, "code": type_code}]}
        item["system"] = system
        item["value"] = value
        if sent:
            _identifier_as_sent(item, sent, namespace, oid, type_code)
        identifiers.append(item)

    add(record.domain.namespace, record.domain.oid, record.identifier, None, "usual")
    for other in record.other_identifiers:
        add(other.domain, other.oid, other.value, other.type)
    if record.enterprise_id and record.status == RecordStatus.ACTIVE:
        add(enterprise.namespace, enterprise.oid, record.enterprise_id, None, "official")

    resource: Json = {
        "resourceType": "Patient",
        "id": str(record.id),
        "meta": {"versionId": str(record.version), "lastUpdated": fhir_instant(record.updated_at)},
    }
    if demo.mothers_maiden_name:
        resource["extension"] = _mmn_extension(demo.mothers_maiden_name)
    if identifiers:
        resource["identifier"] = identifiers
    resource["active"] = record.status == RecordStatus.ACTIVE
    if demo.names:
        resource["name"] = [_name_json(n) for n in demo.names]
    if demo.phones:
        resource["telecom"] = [_telecom_json(p) for p in demo.phones]
    if demo.sex and demo.sex in SEX_TO_GENDER:
        resource["gender"] = SEX_TO_GENDER[demo.sex]
    if demo.birth_date:
        resource["birthDate"] = demo.birth_date
    if demo.addresses:
        resource["address"] = [_address_json(a) for a in demo.addresses]
    if demo.marital_status is not None:
        resource["maritalStatus"] = _concept(demo.marital_status, MARITAL_STATUS)
    if isinstance(demo.multiple_birth, bool):
        resource["multipleBirthBoolean"] = demo.multiple_birth
    elif isinstance(demo.multiple_birth, int):
        resource["multipleBirthInteger"] = demo.multiple_birth
    if demo.primary_language is not None:
        resource["communication"] = [
            {"language": _concept(demo.primary_language, LANGUAGE), "preferred": True}
        ]
    links = []
    if record.status == RecordStatus.MERGED and record.merged_into is not None:
        links.append({"other": {"reference": f"Patient/{record.merged_into}"},
                      "type": "replaced-by"})
    links.extend({"other": {"reference": f"Patient/{rid}"}, "type": "seealso"} for rid in see_also)
    if links:
        resource["link"] = links
    if demo.received:
        resource = _as_sent(resource, demo.received, demo)
    if demo.mothers_identifier is not None or "contained" in resource:
        resource = _with_mother(resource, demo.mothers_identifier, mother_system)
    return resource


def _identifier_as_sent(item: Json, sent: list[Json], namespace: str, oid: str | None,
                        type_code: str | None) -> None:  # fmt: skip
    """``item`` with what the client sent with the same identifier (same value, a system of
    the same domain): its ``use``, ``period``, ``assigner``, extensions, and its ``type``
    while the core's type code (``type_code``; None: the core holds none, as for the record's
    own identifier) is still the one it gave."""
    for entry in sent:
        if entry.get("value") != item["value"]:
            continue
        authority = authority_of(entry.get("system"))
        if not ((authority.oid and authority.oid == oid)
                or (authority.namespace and authority.namespace == namespace)):
            continue
        for key, value in entry.items():
            if key in ("system", "value"):
                continue
            if key == "type" and type_code is not None and (
                    not isinstance(value, dict) or _type_code({"type": value}) != type_code):
                continue  # the core's type code changed since (an HL7 v2 update)
            item[key] = value
        return


def _entries_as_sent(held: list[Json], sent: Any, of: Any, render: Any) -> list[Json]:
    """Each entry the core made (``held``) with the keys of the sent entry the core holds as
    the same value (``of`` gives what the core holds of a sent entry, ``render`` writes it as
    ``held`` does); an entry the core changed since (an HL7 v2 update) stays as the core has
    it."""
    pending = [(of(e), e) for e in sent or () if isinstance(e, dict)]
    out = []
    for item in held:
        for index, (value, entry) in enumerate(pending):
            if value is not None and render(value) == item:
                item = {**item, **entry}
                del pending[index]
                break
        out.append(item)
    return out


# FHIR R4 Patient's element order, in which an answer lists them.
_ORDER = (
    "resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
    "modifierExtension", "identifier", "active", "name", "telecom", "gender", "birthDate",
    "deceasedBoolean", "deceasedDateTime", "address", "maritalStatus", "multipleBirthBoolean",
    "multipleBirthInteger", "photo", "contact", "communication", "generalPractitioner",
    "managingOrganization", "link",
)  # fmt: skip
_RANK = {key: index for index, key in enumerate(_ORDER)}


def _as_sent(resource: Json, received: Json, demo: Demographics) -> Json:
    """The Patient the core made (``resource``) with what the client sent that the core does
    not hold (``received``, see :func:`received_of`)."""
    out = dict(resource)
    for key, value in received.items():
        if key not in _HELD and not (key.startswith("_") and key[1:] in _HELD):
            out[key] = value
    for key in _PRIMITIVES:
        if f"_{key}" in received and resource.get(key) == received.get(key):
            out[f"_{key}"] = received[f"_{key}"]
    if received.get("meta"):
        out["meta"] = {**received["meta"], **resource["meta"]}
    if "extension" in received:
        mmn = demo.mothers_maiden_name
        extensions = [e for e in received["extension"] if e.get("url") != MOTHERS_MAIDEN_NAME
                      or (mmn is not None and e.get("valueString") == mmn)]
        if mmn and not any(e.get("url") == MOTHERS_MAIDEN_NAME for e in extensions):
            extensions = _mmn_extension(mmn) + extensions
        if extensions:
            out["extension"] = extensions
        else:
            out.pop("extension", None)
    for key, of, render in (("name", _name_of, _name_json),
                            ("address", _address_of, _address_json),
                            ("telecom", _sent_phone, _telecom_json)):
        if key in received and key in resource:
            out[key] = _entries_as_sent(resource[key], received[key], of, render)
    status = received.get("maritalStatus")
    if status is not None and _coded_of(status) == demo.marital_status:
        out["maritalStatus"] = status
    communication = received.get("communication")
    if communication is not None and _language_of(communication) == demo.primary_language:
        out["communication"] = communication
    if received.get("link"):
        out["link"] = [*(resource.get("link") or ()), *received["link"]]
    return _ordered(out)


def _ordered(resource: Json) -> Json:
    """A Patient's elements in FHIR R4's order (a primitive's ``_`` element after it)."""
    return dict(sorted(resource.items(), key=lambda kv: (
        _RANK.get(kv[0].lstrip("_"), len(_RANK)), kv[0].startswith("_"))))


def _sent_phone(telecom: Json) -> Phone | None:
    return _phone_of(telecom) if telecom.get("value") else None


def _mmn_extension(mmn: str | None) -> list[Json]:
    return [{"url": MOTHERS_MAIDEN_NAME, "valueString": mmn}] if mmn else []


def _telecom_json(phone: Phone) -> Json:
    """A ContactPoint: what a FHIR client sent as it sent it; from an HL7 v2 feed, the system
    from XTN.3 (an e-mail address without one: email), the use from PID-14 (work) or XTN.2,
    else home (PID-13 is the home number) but mobile for a cellular phone (XTN.3 CP), the value
    as the sender formatted the number (or as built from its components)."""
    system = phone.system
    use = phone.purpose
    if system is None:  # from HL7 v2 (or stored before the system was kept)
        system = EQUIPMENT_TO_SYSTEM.get(phone.equipment or "")
        if system is None:
            system = "email" if phone.email or phone.use == "NET" else "phone"
        if use is None:
            use = V2_TO_PHONE_USE.get(phone.use or "", "home")
            if use == "home" and phone.equipment == "CP":
                use = "mobile"
    item: Json = {"system": system, "value": phone.value}
    if use:
        item["use"] = use
    if phone.rank is not None:
        item["rank"] = phone.rank
    return item


def _name_json(name: Name) -> Json:
    item: Json = {}
    use = V2_TO_NAME_USE.get(name.use or "")
    if use:
        item["use"] = use
    if name.family:
        item["family"] = name.family
    given = [g for g in name.given if g]  # a missing first given name (HL7 v2) has no place
    if given:
        item["given"] = given
    if name.prefix:
        item["prefix"] = [name.prefix]
    if name.suffix:
        item["suffix"] = [name.suffix]
    return item


def _address_json(address: Address) -> Json:
    item: Json = {}
    use = V2_TO_ADDRESS_USE.get(address.use or "")
    if use:
        item["use"] = use
    if address.lines:
        item["line"] = list(address.lines)
    for key, value in (("city", address.city), ("state", address.state),
                       ("postalCode", address.postal_code), ("country", address.country)):
        if value:
            item[key] = value
    return item
