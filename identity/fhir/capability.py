"""GET /fhir/metadata: the CapabilityStatement of this server."""

from __future__ import annotations

from typing import Any

from identity import __version__
from identity.config import Settings
from identity.fhir.wire import Json

IHE = "https://profiles.ihe.net/ITI"
INSTANTIATES = [
    f"{IHE}/PIXm/CapabilityStatement/IHE.PIXm.Manager",
    f"{IHE}/PDQm/CapabilityStatement/IHE.PDQm.PatientDemographicsSupplierQuery",
    f"{IHE}/PDQm/CapabilityStatement/IHE.PDQm.PatientDemographicsSupplierMatch",
    f"{IHE}/PMIR/CapabilityStatement/IHE.PMIR.PatientIdentityRegistry",
]

_STRING = ("family", "given", "address", "address-city", "address-country",
           "address-postalcode", "address-state", "mothersMaidenName")
_DOCS = {
    "_id": ("token", "Logical id (the source record id)"),
    "active": ("token", "true: active records (the default); false: merged records; with "
                        "another parameter (every patient is not a search)"),
    "identifier": ("token", "system|value; system| alone restricts the domains returned; "
                            "a value without system searches every domain"),
    "telecom": ("token", "phone number (digits compared)"),
    "birthdate": ("date", "YYYY, YYYY-MM or YYYY-MM-DD; prefixes eq ne gt lt ge le sa eb ap"),
    "gender": ("token", "male | female | other | unknown"),
    "_lastUpdated": ("date", "when the record last changed: a date, or an instant; prefixes "
                             "eq ne gt lt ge le sa eb ap"),
}
_LINK = "http://hl7.org/fhir/SearchParameter/Patient-link"
_LINK_DOC = ("only chained: link:RelatedPerson.identifier=system|value, a newborn by her "
             "mother's identifier (the contained RelatedPerson, relationship MTH, that a "
             "Patient links to); link alone is not served")
_CONTROLS = (
    "Also: _count (page size), _offset (paging links), _sort (family, given, birthdate, "
    "_lastUpdated, _id; '-' first: descending), _summary (count, true, false, data, text), "
    "_elements (top-level elements), _format. Prefer: handling=strict makes an unknown "
    "parameter 400."
)
_PROCESS_MESSAGE = "http://hl7.org/fhir/OperationDefinition/MessageHeader-process-message"
_MMN = "http://hl7.org/fhir/SearchParameter/patient-extensions-Patient-mothersMaidenName"


def capability_statement(base: str, settings: Settings) -> Json:
    params: list[Json] = []
    for name, (kind, doc) in _DOCS.items():
        params.append({"name": name, "type": kind, "documentation": doc})
    for name in _STRING:
        entry: Json = {"name": name, "type": "string",
                       "documentation": _string_doc(name)}
        if name == "mothersMaidenName":
            entry["definition"] = _MMN
        params.append(entry)
    params.append({"name": "link", "definition": _LINK, "type": "reference",
                   "documentation": _LINK_DOC})
    return {
        "resourceType": "CapabilityStatement",
        "id": "identity-mpi",
        "url": f"{base}/metadata",
        "name": "IdentityMPI",
        "title": "identity master patient index: PIXm Manager, PDQm Supplier, PMIR Registry",
        "status": "active",
        "date": "2026-11-27",
        "publisher": "identity",
        "kind": "instance",
        "instantiates": INSTANTIATES,
        "software": {"name": "identity", "version": __version__},
        "implementation": {"description": "identity MPI FHIR door", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "rest": [{
            "mode": "server",
            "documentation": (
                "PIXm ITI-83 and ITI-104 (with the Remove Patient option), PDQm ITI-78 and "
                "ITI-119, PMIR ITI-93; plain REST on Patient (create, read, vread, update, "
                "delete, history of an instance, search) and batch/transaction Bundles of "
                "Patient entries at [base]."
            ),
            "security": _security(settings),
            "resource": [{
                "type": "Patient",
                "supportedProfile": [
                    f"{IHE}/PIXm/StructureDefinition/IHE.PIXm.Patient",
                    f"{IHE}/PDQm/StructureDefinition/IHE.PDQm.Patient",
                    f"{IHE}/PMIR/StructureDefinition/IHE.PMIR.Patient",
                ],
                "documentation": _CONTROLS,
                "interaction": [{"code": code} for code in INTERACTIONS],
                "versioning": "versioned-update",
                "readHistory": True,
                "updateCreate": False,
                "conditionalCreate": True,
                "conditionalRead": "not-supported",
                "conditionalUpdate": True,
                "conditionalDelete": "single",
                "searchParam": params,
                "operation": [
                    {"name": "ihe-pix",
                     "definition": f"{IHE}/PIXm/OperationDefinition/IHE.PIXm.pix"},
                    {"name": "match",
                     "definition": f"{IHE}/PDQm/OperationDefinition/PDQmMatch"},
                ],
            }],
            "interaction": [{"code": "batch"}, {"code": "transaction"}],
            "operation": [{"name": "process-message", "definition": _PROCESS_MESSAGE}],
        }],
        "messaging": [{
            "documentation": "PMIR ITI-93: POST [base]/$process-message",
            "supportedMessage": [{
                "mode": "receiver",
                "definition": f"{IHE}/PMIR/MessageDefinition/IHE.PMIR.MessageDefinition",
            }],
        }],
    }


INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "create",
                "search-type")
"""What Patient serves; a test calls each one (tests/fhir/test_capability_routes.py)."""


def _string_doc(name: str) -> str:
    if name in ("family", "given"):
        return ("case- and accent-insensitive prefix; :exact the whole normalised value; "
                ":contains anywhere in it")
    if name == "address-city":
        return "case-insensitive whole value (:exact too); :contains anywhere in it"
    if name == "address-postalcode":
        return "prefix of the normalised postal code (every modifier)"
    if name == "address":
        return "every word given is a word of an address line (every modifier)"
    return "case-insensitive whole value (every modifier)"


def _security(settings: Settings) -> dict[str, Any]:
    """How clients authenticate: OAuth2 bearer JWTs (SMART Backend Services / IHE IUA) or, in
    a demo, a self-asserted client id header."""
    if settings.auth.mode == "jwt":
        return {
            "cors": False,
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"}], "text": "OAuth2 bearer JWT (IHE IUA)"}],
            "description": (
                f"Bearer JWTs issued by {settings.auth.issuer} for audience "
                f"{settings.auth.audience}. Scopes: system/Patient.read (ITI-78, ITI-83, "
                "ITI-119), system/Patient.write (ITI-93, ITI-104); SMART v2 forms and the "
                "transaction names are accepted. The token's client_id (else sub) is the "
                "source that domains list as allowed to assign identifiers."
            ),
        }
    return {"cors": False, "description": (
        f"No authentication: the client is named by the {settings.fhir.client_id_header} "
        "request header (a demo or a trusted network only); domains list the clients that "
        "may assign identifiers in them.")}
