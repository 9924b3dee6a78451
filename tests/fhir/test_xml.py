"""FHIR XML on the door: `_format` and Accept negotiation, XML responses (errors included) and XML
request bodies, on a real socket over a real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.patient import Patient
from multidict import CIMultiDictProxy

from identity.fhir.pmir import RESPONSE_EVENT
from identity.fhir.wire import xml_to_json
from tests.fhir.conftest import HOSPA, HOSPB, JSON, MPI_SYSTEM, Fhir, patient
from tests.fhir.test_match import parameters, query
from tests.fhir.test_match import seed as seed_match
from tests.fhir.test_pdqm import MMN
from tests.fhir.test_pdqm import seed as seed_pdqm
from tests.fhir.test_pixm import linked_pair, outcome, targets
from tests.fhir.test_pmir import create, message

XML = "application/fhir+xml"

PATIENT_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <!-- an ITI-104 feed in XML -->
  <extension url="http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName">
    <valueString value="Jones"/>
  </extension>
  <identifier>
    <system value="urn:oid:1.2.3.4.5.1"/>
    <value value="X1"/>
  </identifier>
  <name>
    <family value="Müller"/>
    <given value="Jörg"/>
    <given value="Peter"/>
  </name>
  <telecom>
    <system value="phone"/>
    <value value="+1 555 0100"/>
  </telecom>
  <gender value="male"/>
  <birthDate value="1962-02-02"/>
  <address>
    <line value="12 Main Street"/>
    <city value="Springfield"/>
    <postalCode value="62704"/>
    <country value="US"/>
  </address>
</Patient>
"""


async def call(
    fhir: Fhir,
    method: str,
    path: str,
    data: str | bytes | None = None,
    *,
    params: Any = None,
    headers: dict[str, str] | None = None,
    client: str | None = "ADT_A",
) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    """A raw request: the body as bytes, whatever its format."""
    all_headers = {}
    if client:
        all_headers["X-Client-Id"] = client
    if data is not None:
        all_headers["Content-Type"] = XML
    all_headers.update(headers or {})
    async with fhir.session.request(method, fhir.base + path, data=data, params=params,
                                    headers=all_headers) as response:
        return response.status, await response.read(), response.headers


def is_xml(headers: CIMultiDictProxy[str]) -> bool:
    return headers["Content-Type"] == "application/fhir+xml; charset=utf-8"


def from_xml(model: Any, body: bytes) -> dict[str, Any]:
    """An XML response parsed with fhir.resources R4B, as a JSON-shaped dict."""
    assert body.startswith(b"<?xml"), body[:200]
    parsed: dict[str, Any] = model.model_validate_xml(body).model_dump(mode="json",
                                                                        exclude_none=True)
    return parsed


def xml_outcome(body: bytes, code: str) -> dict[str, Any]:
    parsed = from_xml(OperationOutcome, body)
    outcome(parsed, code)
    return parsed


def to_xml(resource: dict[str, Any], model: Any) -> bytes:
    xml: bytes = model.model_validate(resource).model_dump_xml()
    return xml


# --- responses ----------------------------------------------------------------------------


async def test_read_patient_as_xml_by_format_and_by_accept(fhir: Fhir) -> None:
    a_id, b_id, eid = await linked_pair(fhir)
    status, as_json, response = await fhir.call("GET", f"/Patient/{a_id}")
    assert status == 200
    for how in ({"params": {"_format": "xml"}},
                {"params": {"_format": "application/fhir+xml"}},
                {"params": {"_format": "application/xml"}},
                {"params": {"_format": "text/xml"}},
                {"headers": {"Accept": XML}},
                {"headers": {"Accept": "application/xml"}},
                {"headers": {"Accept": "application/fhir+xml;fhirVersion=4.0, */*;q=0.1"}}):
        status, body, headers = await call(fhir, "GET", f"/Patient/{a_id}", **how)
        assert status == 200, how
        assert is_xml(headers), how
        assert headers["ETag"] == response.headers["ETag"]
        read = from_xml(Patient, body)
        assert read["id"] == a_id
        assert read["meta"]["versionId"] == as_json["meta"]["versionId"]
        assert read["identifier"] == as_json["identifier"]
        assert {(i["system"], i["value"]) for i in read["identifier"]} >= {
            (HOSPA, "A1"), (MPI_SYSTEM, eid)}
        assert read["name"] == as_json["name"]
        assert read["birthDate"] == as_json["birthDate"] == "1980-03-12"
        assert read["gender"] == "male"
        assert read["link"] == [{"type": "seealso", "other": {"reference": f"Patient/{b_id}"}}]


async def test_json_stays_the_default_and_wins_ties(fhir: Fhir) -> None:
    a_id, _, _ = await linked_pair(fhir)
    for accept in (None, "*/*", "application/*", JSON, "application/json",
                   f"{JSON}, {XML}", f"{XML};q=0.5, {JSON}", "text/html, */*;q=0.1"):
        headers = {"Accept": accept} if accept else {}
        status, body, got = await call(fhir, "GET", f"/Patient/{a_id}", headers=headers)
        assert status == 200, accept
        assert got["Content-Type"].startswith(JSON), accept
        assert body.startswith(b"{"), accept
    # _format wins over Accept, both ways
    status, body, got = await call(fhir, "GET", f"/Patient/{a_id}", params={"_format": "json"},
                                   headers={"Accept": XML})
    assert status == 200 and got["Content-Type"].startswith(JSON)
    status, body, got = await call(fhir, "GET", f"/Patient/{a_id}", params={"_format": "xml"},
                                   headers={"Accept": JSON})
    assert status == 200 and is_xml(got)
    assert from_xml(Patient, body)["id"] == a_id


async def test_search_bundle_as_xml_keeps_the_format_in_its_links(fhir: Fhir) -> None:
    ids = await seed_pdqm(fhir)
    status, body, headers = await call(fhir, "GET", "/Patient",
                                       params={"family": "smith", "_count": "1", "_format": "xml"})
    assert status == 200 and is_xml(headers)
    bundle = from_xml(Bundle, body)
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 3
    (entry,) = bundle["entry"]
    assert entry["search"]["mode"] == "match"
    assert entry["resource"]["resourceType"] == "Patient"
    # ordered by family, given, id: Smith Jane (P3), Smith John (P1), Smithers Waylon (P2)
    assert entry["resource"]["id"] == ids["P3"]
    assert entry["fullUrl"].endswith(f"/Patient/{entry['resource']['id']}")
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert "_format=xml" in links["next"]
    next_url = links["next"].replace(fhir.base, "")
    status, body, headers = await call(fhir, "GET", next_url)
    assert status == 200 and is_xml(headers)
    assert from_xml(Bundle, body)["entry"][0]["resource"]["id"] == ids["P1"]


async def test_patient_extension_survives_the_xml_response(fhir: Fhir) -> None:
    ids = await seed_pdqm(fhir)
    status, body, headers = await call(fhir, "GET", f"/Patient/{ids['P1']}",
                                       headers={"Accept": XML})
    assert status == 200 and is_xml(headers)
    read = from_xml(Patient, body)
    assert {"url": MMN, "valueString": "Jones"} in read["extension"]
    assert read["address"][0]["city"] == "Springfield"
    assert read["telecom"][0]["value"] == "+1 555 0100"


async def test_errors_are_xml_operation_outcomes_when_xml_was_asked(fhir: Fhir) -> None:
    status, body, headers = await call(fhir, "GET", "/Patient/999999", params={"_format": "xml"})
    assert status == 404 and is_xml(headers)
    xml_outcome(body, "not-found")
    # an unknown route (aiohttp's 404, mapped by the middleware)
    status, body, headers = await call(fhir, "GET", "/Observation", headers={"Accept": XML})
    assert status == 404 and is_xml(headers)
    xml_outcome(body, "not-found")
    # a query error raised by a handler
    status, body, headers = await call(fhir, "GET", "/Patient", params={"_format": "xml"})
    assert status == 400 and is_xml(headers)
    xml_outcome(body, "too-costly")
    # a core error ($ihe-pix on an unknown identifier)
    status, body, headers = await call(fhir, "GET", "/Patient/$ihe-pix", headers={"Accept": XML},
                                       params={"sourceIdentifier": f"{HOSPA}|NOPE"})
    assert status == 404 and is_xml(headers)
    assert xml_outcome(body, "not-found")["issue"][0]["diagnostics"] == (
        "sourceIdentifier Patient Identifier not found")


async def test_formats_neither_json_nor_xml_are_406_in_json(fhir: Fhir) -> None:
    for how in ({"params": {"_format": "text/turtle"}},
                {"params": {"_format": "ttl"}},
                {"params": {"_format": "text/turtle"}, "headers": {"Accept": XML}},
                {"headers": {"Accept": "text/html"}},
                {"headers": {"Accept": f"text/html, {JSON};q=0, {XML};q=0"}}):
        status, body, headers = await call(fhir, "GET", "/metadata", **how)
        assert status == 406, how
        assert headers["Content-Type"].startswith(JSON), how
        outcome(json.loads(body), "not-supported")


async def test_capability_statement_as_xml_lists_both_formats(fhir: Fhir) -> None:
    status, body, headers = await call(fhir, "GET", "/metadata", params={"_format": "xml"})
    assert status == 200 and is_xml(headers)
    statement = from_xml(CapabilityStatement, body)
    assert {"application/fhir+json", "application/fhir+xml"} <= set(statement["format"])
    assert statement["fhirVersion"] == "4.0.1"


# --- request bodies -------------------------------------------------------------------------


async def test_put_of_an_xml_patient_creates_a_record_readable_as_json(fhir: Fhir) -> None:
    status, body, headers = await call(fhir, "PUT", "/Patient", PATIENT_XML.encode(),
                                       params={"identifier": f"{HOSPA}|X1"},
                                       headers={"Accept": JSON})
    assert status == 201, body
    assert headers["Content-Type"].startswith(JSON)
    assert headers["Location"]
    status, read, _ = await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|X1"})
    assert status == 200 and read["total"] == 1
    resource = read["entry"][0]["resource"]
    assert resource["name"][0]["family"] == "Müller"
    assert resource["name"][0]["given"] == ["Jörg", "Peter"]
    assert resource["birthDate"] == "1962-02-02"
    assert resource["gender"] == "male"
    assert resource["telecom"][0]["value"] == "+1 555 0100"
    assert resource["address"][0]["city"] == "Springfield"
    assert {"url": MMN, "valueString": "Jones"} in resource["extension"]
    # an XML update answered in XML
    updated = PATIENT_XML.replace('"Müller"', '"Mueller"')
    status, body, headers = await call(fhir, "PUT", "/Patient", updated.encode(),
                                       params={"identifier": f"{HOSPA}|X1", "_format": "xml"})
    assert status == 200 and is_xml(headers)
    answer = from_xml(Patient, body)
    assert answer["id"] == resource["id"]
    assert answer["name"][0]["family"] == "Mueller"


async def test_xml_body_gives_the_dict_the_json_body_gives() -> None:
    resource = patient(HOSPA, "X2", "Smith", "Ann", "1980", "female",
                       telecom=[{"system": "phone", "value": "555", "use": "home"}],
                       extension=[{"url": MMN, "valueString": "Jones"}], active=True)
    assert xml_to_json(to_xml(resource, Patient)) == resource
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": resource},
        {"name": "onlyCertainMatches", "valueBoolean": False},
        {"name": "count", "valueInteger": 5},
    ]}
    assert xml_to_json(to_xml(params, Parameters)) == params


async def test_xml_content_types_are_accepted_and_others_are_415(fhir: Fhir) -> None:
    for n, ctype in enumerate(("application/fhir+xml", "application/xml", "text/xml",
                               "application/fhir+xml; charset=utf-8")):
        value = f"T{n}"
        body = PATIENT_XML.replace('"X1"', f'"{value}"').encode()
        status, reply, _ = await call(fhir, "PUT", "/Patient", body,
                                      params={"identifier": f"{HOSPA}|{value}"},
                                      headers={"Content-Type": ctype, "Accept": JSON})
        assert status == 201, (ctype, reply)
    status, reply, headers = await call(fhir, "PUT", "/Patient", PATIENT_XML.encode(),
                                        params={"identifier": f"{HOSPA}|X1", "_format": "xml"},
                                        headers={"Content-Type": "text/plain"})
    assert status == 415 and is_xml(headers)
    xml_outcome(reply, "not-supported")


async def test_malformed_or_invalid_xml_is_400_operation_outcome(fhir: Fhir) -> None:
    bad_bodies = {
        "not well-formed": b"<Patient xmlns='http://hl7.org/fhir'><name>",
        "not XML": b"{\"resourceType\": \"Patient\"}",
        "wrong namespace": b"<Patient xmlns='urn:example'><gender value='male'/></Patient>",
        "no namespace": b"<Patient><gender value='male'/></Patient>",
        "unknown resource": b"<Dragon xmlns='http://hl7.org/fhir'/>",
        "a datatype": b"<HumanName xmlns='http://hl7.org/fhir'/>",
        "unknown element": b"<Patient xmlns='http://hl7.org/fhir'><shoeSize value='9'/></Patient>",
        "bad date": b"<Patient xmlns='http://hl7.org/fhir'><birthDate value='soon'/></Patient>",
        "text content": (b"<Patient xmlns='http://hl7.org/fhir'><name><family>Smith</family>"
                         b"</name></Patient>"),
        "foreign element": (b"<Patient xmlns='http://hl7.org/fhir'><x:name xmlns:x='urn:x'>"
                            b"<family value='Smith'/></x:name></Patient>"),
        "prefixed FHIR": (b"<f:Patient xmlns:f='http://hl7.org/fhir'><f:gender value='male'/>"
                          b"</f:Patient>"),
        "DOCTYPE": (b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY x SYSTEM '
                    b'"file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir"><name>'
                    b'<family value="&x;"/></name></Patient>'),
    }
    for why, data in bad_bodies.items():
        status, body, headers = await call(fhir, "PUT", "/Patient", data,
                                           params={"identifier": f"{HOSPA}|X9"},
                                           headers={"Accept": JSON})
        assert status == 400, (why, body)
        assert headers["Content-Type"].startswith(JSON)
        parsed = json.loads(body)
        OperationOutcome.model_validate(parsed)
        assert {i["code"] for i in parsed["issue"]} == {"structure"}, (why, parsed)
    # the door's own binding checks still apply to an XML Patient
    status, body, headers = await call(
        fhir, "PUT", "/Patient", PATIENT_XML.replace('"male"', '"bloke"').encode(),
        params={"identifier": f"{HOSPA}|X1", "_format": "xml"})
    assert status == 400 and is_xml(headers)
    parsed = from_xml(OperationOutcome, body)
    assert [i["code"] for i in parsed["issue"]] == ["code-invalid"]
    # none of them stored anything
    status, found, _ = await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|X9"})
    assert status == 200 and found["total"] == 0


async def test_pix_query_by_post_of_xml_parameters(fhir: Fhir) -> None:
    _, b_id, _ = await linked_pair(fhir)
    request = f"""<Parameters xmlns="http://hl7.org/fhir">
      <parameter>
        <name value="sourceIdentifier"/>
        <valueIdentifier><system value="{HOSPA}"/><value value="A1"/></valueIdentifier>
      </parameter>
      <parameter><name value="targetSystem"/><valueUri value="{HOSPB}"/></parameter>
    </Parameters>"""
    status, body, headers = await call(fhir, "POST", "/Patient/$ihe-pix", request.encode(),
                                       headers={"Accept": XML})
    assert status == 200 and is_xml(headers)
    assert targets(from_xml(Parameters, body)) == ({(HOSPB, "B1")}, {f"Patient/{b_id}"})
    # answered in JSON when JSON is asked
    status, body, headers = await call(fhir, "POST", "/Patient/$ihe-pix", request.encode(),
                                       headers={"Accept": JSON})
    assert status == 200 and headers["Content-Type"].startswith(JSON)


async def test_match_with_xml_parameters_answers_an_xml_bundle(fhir: Fhir) -> None:
    await seed_match(fhir)
    body = to_xml(parameters(query(), count=2), Parameters)
    status, reply, headers = await call(fhir, "POST", "/Patient/$match", body,
                                        params={"_format": "xml"})
    assert status == 200 and is_xml(headers), reply
    bundle = from_xml(Bundle, reply)
    assert bundle["type"] == "searchset"
    assert bundle["total"] == len(bundle["entry"]) == 2  # A1 and A2, as in test_match
    best = bundle["entry"][0]
    assert [i["value"] for i in best["resource"]["identifier"] if i["system"] == HOSPA] == ["A1"]
    assert 0 <= best["search"]["score"] <= 1
    # a bare XML Patient works too
    status, reply, _ = await call(fhir, "POST", "/Patient/$match", to_xml(query(), Patient),
                                  headers={"Accept": XML})
    assert status == 200
    assert from_xml(Bundle, reply)["entry"][0]["resource"]["resourceType"] == "Patient"


async def test_process_message_with_an_xml_bundle(fhir: Fhir) -> None:
    body = to_xml(message([create("M1"), create("M2", family="Smyth")]), Bundle)
    status, reply, headers = await call(fhir, "POST", "/$process-message", body,
                                        headers={"Accept": XML})
    assert status == 200 and is_xml(headers), reply
    answer = from_xml(Bundle, reply)
    assert answer["type"] == "message"
    header = answer["entry"][0]["resource"]
    assert header["eventUri"] == RESPONSE_EVENT
    assert header["response"]["identifier"] == "hdr-1"
    assert header["response"]["code"] == "ok"
    history = answer["entry"][1]["resource"]["entry"]
    assert [e["response"]["status"] for e in history] == ["201", "201"]
    status, read, _ = await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|M2"})
    assert status == 200 and read["entry"][0]["resource"]["name"][0]["family"] == "Smyth"
