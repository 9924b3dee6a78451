"""The CapabilityStatement says only what is served (issue 18 item 2): every interaction,
search parameter and operation it lists is derived from it and called over a real socket,
and each answers 2xx (never 404 or 405)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from tests.fhir.conftest import HOSPA, Fhir, patient
from tests.fhir.test_pmir import create as pmir_create
from tests.fhir.test_pmir import message

SAMPLES = {"_id": "1", "active": "true", "identifier": f"{HOSPA}|CAP1", "telecom": "555",
           "gender": "male", "birthdate": "1980", "_lastUpdated": "ge2000-01-01"}
"""A value per token and date parameter; a string parameter is searched with "a"."""
CHAINED = {"link": ("link:RelatedPerson.identifier", f"{HOSPA}|CAPM")}
"""A reference parameter served only chained (its documentation says so): the chain called."""


async def test_everything_the_capability_statement_lists_is_served(fhir: Fhir) -> None:
    status, statement, _ = await fhir.call("GET", "/metadata")
    assert status == 200
    CapabilityStatement.model_validate(statement)
    (rest,) = statement["rest"]
    (resource,) = rest["resource"]
    assert resource["type"] == "Patient"
    _, made, _ = await fhir.call("POST", "/Patient", patient(HOSPA, "CAP1"), client="ADT_A")
    _, doomed, _ = await fhir.call("POST", "/Patient", patient(HOSPA, "CAP2"), client="ADT_A")
    rid = made["id"]
    calls: list[tuple[str, str, str, dict[str, Any]]] = []  # (what, method, path, options)

    interactions = {
        "read": ("GET", f"/Patient/{rid}", {}),
        "vread": ("GET", f"/Patient/{rid}/_history/1", {}),
        "update": ("PUT", f"/Patient/{rid}", {"body": {**made, "birthDate": "1980-03-13"}}),
        "history-instance": ("GET", f"/Patient/{rid}/_history", {}),
        "create": ("POST", "/Patient", {"body": patient(HOSPA, "CAP3")}),
        "search-type": ("GET", "/Patient", {"params": {"family": "smith"}}),
        "delete": ("DELETE", f"/Patient/{doomed['id']}", {}),
    }
    for item in resource["interaction"]:
        assert item["code"] in interactions, f"advertised, not tested: {item['code']}"
        calls.append((item["code"], *interactions[item["code"]]))
    if resource.get("conditionalCreate"):
        calls.append(("conditionalCreate", "POST", "/Patient", {
            "body": patient(HOSPA, "CAP4"),
            "headers": {"If-None-Exist": f"identifier={HOSPA}|CAP1"}}))
    if resource.get("conditionalUpdate"):
        calls.append(("conditionalUpdate", "PUT", "/Patient", {
            "body": patient(HOSPA, "CAP5"), "params": {"identifier": f"{HOSPA}|CAP5"}}))
    if resource.get("conditionalDelete") in ("single", "multiple"):
        calls.append(("conditionalDelete", "DELETE", "/Patient",
                      {"params": {"identifier": f"{HOSPA}|CAP5"}}))
    for param in resource["searchParam"]:
        key = param["name"]
        value = SAMPLES.get(key, "a" if param["type"] == "string" else None)
        if param["type"] == "reference":
            assert key in CHAINED and CHAINED[key][0] in param["documentation"], key
            key, value = CHAINED[key]
        assert value is not None, f"advertised, no sample: {param['name']}"
        # with a name as well: a search of every patient (active=true alone) is too costly
        calls.append((f"search {param['name']}", "GET", "/Patient",
                      {"params": {"family": "smith", key: value}}))
    operations = {
        "ihe-pix": ("GET", "/Patient/$ihe-pix",
                    {"params": {"sourceIdentifier": f"{HOSPA}|CAP1"}}),
        "match": ("POST", "/Patient/$match", {"body": {"resourceType": "Parameters",
                                                        "parameter": [{"name": "resource",
                                                                       "resource": made}]}}),
        "process-message": ("POST", "/$process-message", {"body": message([pmir_create("C6")])}),
    }
    for op in [*resource.get("operation", []), *rest.get("operation", [])]:
        assert op["name"] in operations, f"advertised, not tested: {op['name']}"
        calls.append((f"${op['name']}", *operations[op["name"]]))
    bundles = {kind: ("POST", "", {"body": {"resourceType": "Bundle", "type": kind, "entry": [
        {"request": {"method": "GET", "url": f"Patient/{rid}"}}]}}) for kind in
        ("batch", "transaction")}  # fmt: skip
    for item in rest.get("interaction", []):
        assert item["code"] in bundles, f"advertised, not tested: {item['code']}"
        calls.append((item["code"], *bundles[item["code"]]))
    for messaging in statement.get("messaging", []):
        assert messaging["supportedMessage"]
        calls.append(("messaging", *operations["process-message"]))

    assert len(calls) > 20
    for what, method, path, options in calls:
        status, body, _ = await fhir.call(method, path, options.get("body"), client="ADT_A",
                                          params=options.get("params"),
                                          headers=options.get("headers"))
        assert 200 <= status < 300, (what, method, path, status, body)
