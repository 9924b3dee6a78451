"""A generic FHIR client (fhirpy, async) on plain REST (issue 18 item 3): create with
``save()``, read, update with ``save()``, search with paging and sorting, delete, over a real
socket; every answer it gets is a valid R4 resource."""

from __future__ import annotations

from fhir.resources.R4B.patient import Patient
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.fhir.conftest import HOSPA, MPI_SYSTEM, Fhir


def client(fhir: Fhir, name: str = "ADT_A") -> AsyncFHIRClient:
    return AsyncFHIRClient(fhir.base, extra_headers={"X-Client-Id": name})


async def test_fhirpy_create_read_update_delete(fhir: Fhir) -> None:
    fhirpy = client(fhir)
    created = fhirpy.resource("Patient", identifier=[{"system": HOSPA, "value": "FP1"}],
                              name=[{"family": "Fosse", "given": ["Jon"]}],
                              birthDate="1959-09-29", gender="male")
    await created.save()  # POST /Patient: no id yet
    assert created.id and created["meta"]["versionId"] == "1"
    assert any(i["system"] == MPI_SYSTEM for i in created["identifier"])
    Patient.model_validate(created.serialize())

    read = await fhirpy.reference("Patient", created.id).to_resource()
    assert read["name"][0]["family"] == "Fosse"
    read["birthDate"] = "1959-09-30"
    await read.save()  # PUT /Patient/<id>: the resource as read, identifiers and links included
    assert read["meta"]["versionId"] == "2"
    again = await fhirpy.reference("Patient", created.id).to_resource()
    assert again["birthDate"] == "1959-09-30"

    await again.delete()  # DELETE /Patient/<id>
    try:
        await fhirpy.get("Patient", created.id)
    except (ResourceNotFound, OperationOutcome):
        pass
    else:
        raise AssertionError("a deleted Patient was read")
    found = await fhirpy.resources("Patient").search(identifier=f"{HOSPA}|FP1").fetch_all()
    assert found == []


async def test_fhirpy_search_pages_through_sorted_results(fhir: Fhir) -> None:
    fhirpy = client(fhir)
    made = []
    for index in range(5):
        patient = fhirpy.resource(
            "Patient", identifier=[{"system": HOSPA, "value": f"PG{index}"}],
            name=[{"family": "Paging", "given": [f"P{index}"]}],
            birthDate=f"19{70 + index}-01-01", gender="female")
        await patient.save()
        made.append(patient.id)
    search = fhirpy.resources("Patient").search(family="paging").sort("-birthdate").limit(2)
    first = await search.fetch()
    assert [p.id for p in first] == made[::-1][:2]
    everyone = await search.fetch_all()  # follows the next links, two at a time
    assert [p.id for p in everyone] == made[::-1]
    assert await fhirpy.resources("Patient").search(family="paging").count() == 5
    subset = await fhirpy.resources("Patient").search(family="paging").elements(
        "birthDate").fetch()
    assert all("name" not in p for p in subset) and all(p["birthDate"] for p in subset)
