"""End to end through an independent FHIR client (fhirpy) over a real socket."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhirpy import AsyncFHIRClient

from tests.fhir.conftest import HOSPA, HOSPB, MPI_SYSTEM, Fhir, patient


def res(client: AsyncFHIRClient, body: dict[str, Any]) -> Any:
    return client.resource("Patient", **{k: v for k, v in body.items() if k != "resourceType"})


async def test_fhirpy_feed_search_read_pix_and_delete(fhir: Fhir) -> None:
    a = AsyncFHIRClient(fhir.base, extra_headers={"X-Client-Id": "ADT_A"})
    b = AsyncFHIRClient(fhir.base, extra_headers={"X-Client-Id": "ADT_B"})

    e1 = a.resources("Patient").search(identifier=f"{HOSPA}|E1")
    created, was_created = await e1.update(
        res(a, patient(HOSPA, "E1", "Eriksen", "Erik", "1971-04-04")))
    assert was_created is True
    updated, was_created = await e1.update(
        res(a, patient(HOSPA, "E1", "Eriksen", "Erik", "1971-04-05")))
    assert was_created is False and updated["id"] == created["id"]
    other, _ = await b.resources("Patient").search(identifier=f"{HOSPB}|F1").update(
        res(b, patient(HOSPB, "F1", "Eriksen", "Erik", "1971-04-05")))

    found = await a.resources("Patient").search(family="eriks", birthdate="1971-04-05").fetch_all()
    assert {p["id"] for p in found} == {created["id"], other["id"]}
    read = await a.resources("Patient").search(_id=created["id"]).first()
    assert read is not None and read["birthDate"] == "1971-04-05"

    pix = await a.execute("Patient/$ihe-pix", method="get",
                          params={"sourceIdentifier": f"{HOSPA}|E1", "targetSystem": MPI_SYSTEM})
    assert pix["resourceType"] == "Parameters"
    assert [p["valueIdentifier"]["system"] for p in pix["parameter"]] == [MPI_SYSTEM]

    metadata = await a.execute("metadata", method="get")
    CapabilityStatement.model_validate(metadata)

    await a.resources("Patient").search(identifier=f"{HOSPA}|E1").delete()
    gone = await a.resources("Patient").search(identifier=f"{HOSPA}|E1").fetch_all()
    assert gone == []
