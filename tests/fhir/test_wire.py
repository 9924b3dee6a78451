"""CapabilityStatement, content negotiation and errors as OperationOutcome."""

from __future__ import annotations

from collections.abc import Callable

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from identity.config import Settings
from identity.fhir.capability import INSTANTIATES
from identity.fhir.search import SEARCH_PARAMS
from identity.mpi import Mpi
from identity.store.db import Database
from tests.fhir.conftest import HOSPA, Fhir, patient, serve
from tests.fhir.test_pixm import outcome


async def test_capability_statement_declares_roles_interactions_params_and_operations(
    fhir: Fhir,
) -> None:
    status, body, response = await fhir.call("GET", "/metadata")
    assert status == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    CapabilityStatement.model_validate(body)
    assert body["fhirVersion"] == "4.0.1" and body["kind"] == "instance"
    assert set(INSTANTIATES) <= set(body["instantiates"])
    assert any("PIXm.Manager" in u for u in body["instantiates"])
    assert any("PDQm.PatientDemographicsSupplier" in u for u in body["instantiates"])
    assert any("PMIR.PatientIdentityRegistry" in u for u in body["instantiates"])
    (resource,) = body["rest"][0]["resource"]
    assert resource["type"] == "Patient"
    assert resource["conditionalUpdate"] is True
    assert resource["conditionalDelete"] == "single"
    assert resource["conditionalCreate"] is True and resource["updateCreate"] is False
    assert resource["readHistory"] is True
    assert {p["name"] for p in resource["searchParam"]} == SEARCH_PARAMS
    assert {o["name"] for o in resource["operation"]} == {"ihe-pix", "match"}


async def test_unknown_route_and_method_are_operation_outcomes(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("GET", "/Observation")
    assert status == 404
    outcome(body, "not-found")
    status, body, response = await fhir.call("PATCH", "/Patient/1", {"resourceType": "Patient"})
    assert status == 405
    outcome(body, "not-supported")


async def test_malformed_json_is_400(fhir: Fhir) -> None:
    async with fhir.session.put(
        fhir.base + "/Patient", params={"identifier": f"{HOSPA}|X"}, data=b"{not json",
        headers={"Content-Type": "application/fhir+json", "X-Client-Id": "ADT_A"},
    ) as response:
        assert response.status == 400
        outcome(await response.json(content_type=None), "structure")


async def test_json_format_aliases_are_accepted(fhir: Fhir) -> None:
    for fmt in ("json", "application/json", "application/fhir+json"):
        status, body, _ = await fhir.call("GET", "/metadata", params={"_format": fmt})
        assert status == 200, fmt
    status, body, _ = await fhir.call("GET", "/metadata", params={"_format": "text/turtle"})
    assert status == 406


async def test_database_down_is_503_and_nothing_claimed(
    run_database_url: str, schema: str, make_settings: Callable[..., Settings]
) -> None:
    db = await Database.connect(run_database_url, min_size=1, max_size=2,
                                server_settings={"search_path": schema})
    core = Mpi(db, make_settings())
    await core.start()
    await db.close()  # the database goes away under a running door
    async with serve(core) as fhir:
        status, body, response = await fhir.call(
            "PUT", "/Patient", patient(HOSPA, "D1"), client="ADT_A",
            params={"identifier": f"{HOSPA}|D1"})
        assert status == 503
        outcome(body, "transient")
        assert response.headers.get("Retry-After") == "1"
        status, body, _ = await fhir.call("GET", "/Patient", params={"family": "x"})
        assert status == 503
