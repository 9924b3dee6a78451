"""Seed inputs: valid messages and resources the mutations start from.

Random text never gets past ``MSH|`` or ``{"resourceType"``; starting from what a real sender
sends and mutating it reaches the mapping code behind the first checks. The HL7 seeds are
built with the test suite's own builders (tests/hl7v2/messages.py) and read from
docs/examples; the FHIR seeds follow docs/examples/patient.json and the PMIR test messages.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from tests.hl7v2.messages import adt, msh, pdq_query, pix_query

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"

HOSPA = "urn:oid:1.2.3.4.5.1"
HOSPB = "urn:oid:1.2.3.4.5.2"
LAB = "urn:oid:1.2.3.4.5.3"
NATIONAL = "urn:oid:2.16.840.1.113883.4.1"
ENTERPRISE = "urn:oid:1.3.6.1.4.1.21367.2026.1.1"
SYSTEMS = [HOSPA, HOSPB, LAB, NATIONAL, ENTERPRISE, "HOSPA", "http://example.org/mrn"]
"""Identifier systems of the domains the live targets configure (tests/conftest.py's), plus one
namespace given as a system and one unknown system."""

_FEED_EVENT = "urn:ihe:iti:pmir:2019:patient-feed"


def _framed_examples() -> list[str]:
    """The messages of docs/examples/*.hl7 (MLLP-framed files), as text."""
    out = []
    for path in sorted(EXAMPLES.glob("*.hl7")):
        raw = path.read_bytes()
        for frame in raw.split(b"\x1c"):
            text = frame.strip(b"\x0b\r\n")
            if text.startswith(b"MSH"):
                out.append(text.decode("latin-1") + "\r")
    return out


def _two_pids(trigger: str, first: str, second: str) -> str:
    structure = {"A24": "ADT_A24", "A37": "ADT_A37"}[trigger]
    return "\r".join([
        msh(f"ADT^{trigger}^{structure}", control=f"L{trigger}1"),
        f"EVN|{trigger}|20260101120000",
        f"PID|1||{first}||SMITH^JOHN||19800312|M",
        f"PID|2||{second}||SMITH^JOHN||19800312|M",
    ]) + "\r"


def hl7_seeds() -> list[str]:
    """Valid inbound messages of every kind the HL7 door takes (text, CR-terminated)."""
    pid = "HA1001^^^HOSPA&1.2.3.4.5.1&ISO^MR~123-45-6789^^^NATIONAL^SS"
    extra = "|||12 MAIN ST^APT 2^SPRINGFIELD^IL^62701^USA^H||217-555-0100^PRN|555-0199^WPN"
    seeds = [
        *_framed_examples(),
        adt("A04", pid, control="S1"),
        adt("A01", "HA1002^^^HOSPA", name="DOE^JANE^Q^JR^DR^^L~DOE^J^^^^^A", control="S2",
            extra_pid=extra + "||||||123-45-6789|||||Y|2", mother="SMITH^MARY"),
        adt("A08", "HA1003^^^HOSPA", name='""', dob='""', sex='""', control="S3"),
        adt("A28", "B-1^^^HOSPB", app="ADT_B", control="S4", version="2.3.1"),
        adt("A31", "L-9^^^LAB&1.2.3.4.5.3&ISO", app="LIS", control="S5", dob="198003"),
        adt("A05", "HA1004^^^HOSPA", control="S6", charset="UNICODE UTF-8",
            name="MÜLLER^JOSÉ"),
        adt("A04", "HA1005^^^HOSPA", control="S7", charset="8859/1", name="GARCÍA^ANA"),
        adt("A40", "HA1001^^^HOSPA", mrg="HA1009^^^HOSPA", control="S8"),
        adt("A47", "HA2001^^^HOSPA", mrg="HA1001^^^HOSPA", control="S9"),
        _two_pids("A24", "HA1001^^^HOSPA", "L-9^^^LAB"),
        _two_pids("A37", "HA1001^^^HOSPA", "L-9^^^LAB"),
        pix_query("HA1001^^^HOSPA"),
        pix_query("HA1001^^^&1.2.3.4.5.1&ISO", domains="^^^HOSPB~^^^&1.2.3.4.5.3&ISO"),
        pdq_query("@PID.5.1.1^EVERYWOMAN~@PID.7^19800312"),
        pdq_query("@PID.5.1^SMI*~@PID.5.2^J*~@PID.8^M", domains="^^^HOSPA", limit=2),
        pdq_query("@PID.3.1^HA1001~@PID.3.4.1^HOSPA~@PID.11.5^62701~@PID.13^2175550100"),
        pdq_query("@PID.18^ACC1~@PID.21.1^M1~@PID.21.4.2^1.2.3.4.5.1~@PID.21.4.3^ISO"),
        pdq_query("@PID.5.1^SMITH", limit=1, pointer="e1.0123456789ab"),
        "\r".join([msh("QCN^J01^QCN_J01", app="PDQC"), "QID|PG|IHE PDQ Query"]) + "\r",
    ]
    return seeds


def patient() -> dict[str, Any]:
    """A full inbound Patient (every element the door maps)."""
    base = json.loads((EXAMPLES / "patient.json").read_text())
    base["identifier"].append({
        "system": NATIONAL, "value": "123-45-6789",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "SS"}]},
    })
    base["name"].append({"use": "maiden", "family": "SMITH", "given": ["ADA", "B"],
                         "prefix": ["DR"], "suffix": ["JR"]})
    base["telecom"] = [{"system": "phone", "value": "217-555-0100", "use": "home"},
                       {"system": "email", "value": "a@example.org"}]
    base["address"] = [{"use": "home", "line": ["12 MAIN ST"], "city": "SPRINGFIELD",
                        "state": "IL", "postalCode": "62701", "country": "USA"}]
    base["extension"] = [{
        "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
        "valueString": "JONES"}]
    base["multipleBirthInteger"] = 2
    return base


def match_seeds() -> list[dict[str, Any]]:
    """ITI-119 $match bodies: a Parameters resource and a bare Patient."""
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": patient()},
            {"name": "onlyCertainMatches", "valueBoolean": False},
            {"name": "count", "valueInteger": 5},
        ],
    }
    return [parameters, patient()]


def pix_seeds() -> list[dict[str, Any]]:
    """ITI-83 POST bodies: sourceIdentifier as an Identifier and as a token, targetSystems."""
    return [
        {"resourceType": "Parameters", "parameter": [
            {"name": "sourceIdentifier", "valueIdentifier": {"system": HOSPA, "value": "HA1001"}},
            {"name": "targetSystem", "valueUri": HOSPB},
            {"name": "targetSystem", "valueUri": NATIONAL}]},
        {"resourceType": "Parameters", "parameter": [
            {"name": "sourceIdentifier", "valueString": f"{HOSPA}|HA1001"},
            {"name": "targetSystem", "valueString": LAB}]},
    ]


def bundle_seeds() -> list[dict[str, Any]]:
    """ITI-93 messages: create, update (by identifier and by id), merge, delete."""
    history = "urn:uuid:22222222-2222-2222-2222-222222222222"

    def message(entries: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "resourceType": "Bundle", "id": "msg-1", "type": "message",
            "entry": [
                {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                 "resource": {"resourceType": "MessageHeader", "id": "hdr-1",
                              "eventUri": _FEED_EVENT,
                              "source": {"endpoint": "http://example.org/source"},
                              "focus": [{"reference": history}]}},
                {"fullUrl": history,
                 "resource": {"resourceType": "Bundle", "type": "history", "entry": entries}},
            ],
        }

    create = {"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000001",
              "resource": patient(), "request": {"method": "POST", "url": "Patient"},
              "response": {"status": "201"}}
    update = copy.deepcopy(create)
    update["request"] = {"method": "PUT",
                         "url": f"Patient?identifier={HOSPA}|HA1002"}
    by_id = copy.deepcopy(create)
    by_id["request"] = {"method": "PUT", "url": "Patient/1"}
    merged = copy.deepcopy(create)
    merged["resource"]["active"] = False
    merged["resource"]["link"] = [{"type": "replaced-by",
                                   "other": {"identifier": {"system": HOSPA, "value": "HA1001"}}}]
    merged["request"] = {"method": "PUT", "url": f"Patient?identifier={HOSPA}|HA1002"}
    delete = {"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000009",
              "request": {"method": "DELETE", "url": f"Patient?identifier={HOSPA}|HA1002"},
              "response": {"status": "204"}}
    return [message([create]), message([create, update, by_id]), message([merged]),
            message([delete])]


SEARCH_SEEDS: list[list[tuple[str, str]]] = [
    [("family", "everywoman"), ("birthdate", "1980-03-12")],
    [("given:exact", "EVE,ADAM"), ("gender", "female"), ("_count", "2"), ("_offset", "1")],
    [("identifier", f"{HOSPA}|HA1001"), ("identifier", f"{HOSPB}|")],
    [("identifier", "HA1001"), ("active", "true"), ("_id", "1,2")],
    [("address-postalcode", "62701"), ("telecom", "phone|217-555-0100"),
     ("birthdate", "ge1980"), ("birthdate", "lt1981-01")],
    [("mothersMaidenName", "JONES"), ("address-city", "SPRINGFIELD"), ("_total", "accurate")],
    [("family:contains", "EVER"), ("identifier", f"{ENTERPRISE}|0000000001")],
]
"""PDQm (ITI-78) queries as (key, value) pairs."""
