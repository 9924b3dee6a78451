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


def demographics_of(patient: Json) -> Demographics:
    names = tuple(
        Name(
            family=n.get("family"),
            given=_present(n.get("given")),
            prefix=_first(n.get("prefix")),
            suffix=_first(n.get("suffix")),
            use=NAME_USE_TO_V2.get(n.get("use") or ""),
        )
        for n in patient.get("name") or ()
        if n.get("family") or _present(n.get("given"))
    )
    addresses = tuple(
        Address(
            lines=_present(a.get("line")),
            city=a.get("city"),
            state=a.get("state"),
            postal_code=a.get("postalCode"),
            country=a.get("country"),
            use=ADDRESS_USE_TO_V2.get(a.get("use") or ""),
        )
        for a in patient.get("address") or ()
    )
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
    language = next((_coded_of(c.get("language")) for c in patient.get("communication") or ()
                     if isinstance(c, dict) and c.get("preferred")), None)
    if language is None:
        language = next((_coded_of(c.get("language")) for c in patient.get("communication") or ()
                         if isinstance(c, dict)), None)
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
            primary_language=language,
        )
    except ValidationError as exc:
        raise FhirError(400, "invalid", "invalid Patient",
                        issues=validation_issues(exc, "Patient")) from exc


def record_input(
    patient: Json, primary: IdentifierRef, *, enterprise_system: str | None = None
) -> RecordInput:
    """The Patient as a record whose own identifier is ``primary``; the Patient's other
    identifiers (not the enterprise one, which only the MPI assigns) are kept as others."""
    others = tuple(
        ref for ref in body_identifiers(patient)
        if not _same(ref, primary) and not _is_system(ref, enterprise_system)
    )
    return RecordInput(identifier=primary, demographics=demographics_of(patient),
                       other_identifiers=others)


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
) -> Json:
    """The FHIR Patient of one source record. ``systems``: only identifiers in these systems
    (PDQm domains-to-return); ``see_also``: ids of the other records of the same person."""
    identifiers: list[Json] = []

    def add(system: str, value: str, type_code: str | None = None, use: str | None = None) -> None:
        if systems is not None and system not in systems:
            return
        item: Json = {}
        if use:
            item["use"] = use
        if type_code:
            item["type"] = {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": type_code}]}
        item["system"] = system
        item["value"] = value
        identifiers.append(item)

    add(record.domain.system, record.identifier, None, "usual")
    for other in record.other_identifiers:
        add(system_of(other.domain, other.oid), other.value, other.type)
    if record.enterprise_id and record.status == RecordStatus.ACTIVE:
        add(enterprise.system, record.enterprise_id, None, "official")

    resource: Json = {
        "resourceType": "Patient",
        "id": str(record.id),
        "meta": {"versionId": str(record.version), "lastUpdated": fhir_instant(record.updated_at)},
    }
    demo = record.demographics
    if demo.mothers_maiden_name:
        resource["extension"] = [
            {"url": MOTHERS_MAIDEN_NAME, "valueString": demo.mothers_maiden_name}
        ]
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
    return resource


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
    if name.given:
        item["given"] = list(name.given)
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
