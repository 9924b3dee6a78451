"""The PIXm IG's worked example (ITI-83 2:3.83.4.2.2.1): Alice Mohr known in the red, green and
blue domains (IHE Connectathon OIDs); a query from red returns green and blue, never red."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from identity.config import Settings
from identity.mpi import Mpi
from identity.store.db import Database
from tests.fhir.conftest import MPI_SYSTEM, Fhir, serve
from tests.fhir.test_pixm import outcome, targets

RED = "urn:oid:1.3.6.1.4.1.21367.13.20.1000"
GREEN = "urn:oid:1.3.6.1.4.1.21367.13.20.2000"
BLUE = "urn:oid:1.3.6.1.4.1.21367.13.20.3000"
SSN = "urn:oid:2.16.840.1.113883.4.1"


@pytest.fixture
async def ihe(db: Database, make_settings: Callable[..., Settings]) -> AsyncIterator[Fhir]:
    settings = make_settings(domains=[
        {"namespace": "IHERED", "oid": RED[8:], "sources": ["red"]},
        {"namespace": "IHEGREEN", "oid": GREEN[8:], "sources": ["green"]},
        {"namespace": "IHEBLUE", "oid": BLUE[8:], "sources": ["blue"]},
        {"namespace": "SSN", "oid": SSN[8:], "identifies_person": True},
    ])
    core = Mpi(db, settings)
    await core.start()
    async with serve(core) as door:
        yield door


def alice(system: str, value: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"use": "official", "system": system, "value": value},
                       {"system": SSN, "value": "999-01-2345"}],
        "active": True,
        "name": [{"family": "Mohr", "given": ["Alice"]}],
        "gender": "female",
        "birthDate": "1958-01-30",
        "address": [{"line": ["Doppelgasse 3"], "city": "Baden", "postalCode": "5400",
                     "country": "CH"}],
    }


async def test_pixm_example_red_to_all_and_red_to_blue(ihe: Fhir) -> None:
    ids, eids = {}, set()
    for client, system, value in (("red", RED, "IHERED-994"), ("green", GREEN, "IHEGREEN-994"),
                                  ("blue", BLUE, "IHEBLUE-994")):
        status, body, _ = await ihe.put_patient(system, value, alice(system, value), client=client)
        assert status == 201, body
        ids[value] = f"Patient/{body['id']}"
        eids |= {i["value"] for i in body["identifier"] if i["system"] == MPI_SYSTEM}
    (eid,) = eids  # one person: the SSN identifies her
    status, body, _ = await ihe.call("GET", "/Patient/$ihe-pix",
                                     params={"sourceIdentifier": f"{RED}|IHERED-994"})
    assert status == 200
    idents, refs = targets(body)
    assert idents == {(GREEN, "IHEGREEN-994"), (BLUE, "IHEBLUE-994"), (SSN, "999-01-2345"),
                      (MPI_SYSTEM, eid)}
    assert refs == {ids["IHEGREEN-994"], ids["IHEBLUE-994"]}
    status, body, _ = await ihe.call(
        "GET", "/Patient/$ihe-pix",
        params=[("sourceIdentifier", f"{RED}|IHERED-994"), ("targetSystem", BLUE)])
    assert targets(body) == ({(BLUE, "IHEBLUE-994")}, {ids["IHEBLUE-994"]})
    # the IG's error example: an identifier the red domain does not know
    status, body, _ = await ihe.call("GET", "/Patient/$ihe-pix",
                                     params={"sourceIdentifier": f"{RED}|IHERED-000"})
    assert status == 404
    outcome(body, "not-found", "sourceIdentifier Patient Identifier not found")


async def test_pdqm_family_gender_and_family_birthdate_combinations(ihe: Fhir) -> None:
    await ihe.put_patient(RED, "IHERED-994", alice(RED, "IHERED-994"), client="red")
    for params in ({"family": "Mohr", "gender": "female"},
                   {"family:exact": "Mohr", "birthdate": "1958-01-30"}):
        status, body, _ = await ihe.call("GET", "/Patient", params=params)
        assert status == 200 and body["total"] == 1, params
