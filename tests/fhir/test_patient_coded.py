"""Marital status and language (issue 18 item 0: PMIR's master identity includes them) go in
and out of the FHIR door, and what an HL7 v2 feed sent in PID-15/PID-16 reads as FHIR codes."""

from __future__ import annotations

from fhir.resources.R4B.patient import Patient

from identity.model import Coded, Demographics, Name, RecordInput
from identity.mpi import Envelope, Register
from tests.core.helpers import ref
from tests.fhir.conftest import HOSPA, Fhir, patient

MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
BCP47 = "urn:ietf:bcp:47"


async def test_marital_status_and_language_are_kept_and_returned(fhir: Fhir) -> None:
    sent = patient(HOSPA, "K1", "Kowalska", "Zofia")
    sent["maritalStatus"] = {"coding": [{"system": MARITAL, "code": "W"}], "text": "Widowed"}
    sent["communication"] = [
        {"language": {"coding": [{"system": BCP47, "code": "en"}]}},
        {"language": {"coding": [{"system": BCP47, "code": "pl"}], "text": "Polish"},
         "preferred": True},
    ]
    status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201, body
    status, read, _ = await fhir.call("GET", f"/Patient/{body['id']}")
    assert status == 200
    Patient.model_validate(read)
    assert read["maritalStatus"] == {"coding": [{"system": MARITAL, "code": "W"}],
                                     "text": "Widowed"}
    # every language comes back as sent; the preferred one is the core's (PID-15)
    assert read["communication"] == sent["communication"]
    record = await fhir.mpi.get_record(int(body["id"]))
    assert record.demographics.primary_language is not None
    assert record.demographics.primary_language.code == "pl"


async def _read_as_fhir(fhir: Fhir, value: str, demographics: Demographics) -> dict:
    """Register a record as an HL7 v2 feed would (through the core) and read it over FHIR,
    checked against the R4B Patient model."""
    result = await fhir.mpi.handle(
        Register(subject=RecordInput(identifier=ref("HOSPA", value), demographics=demographics)),
        Envelope(source="ADT_A", actor="hl7:ADT_A"),
    )
    status, read, _ = await fhir.call("GET", f"/Patient/{result.record.id}")
    assert status == 200
    Patient.model_validate(read)
    return read


async def test_what_a_v2_feed_sent_reads_as_fhir_codes(fhir: Fhir) -> None:
    demographics = Demographics(
        names=(Name(family="Nowak", given=("Jan",)),), birth_date="1970-01-02", sex="M",
        marital_status=Coded(code="M", text="Married", system="HL70002"),
        primary_language=Coded(code="de", text="German", system="ISO639"),
    )
    read = await _read_as_fhir(fhir, "K2", demographics)
    assert read["maritalStatus"] == {"coding": [{"system": MARITAL, "code": "M"}],
                                     "text": "Married"}
    assert read["communication"][0]["language"]["coding"] == [{"system": BCP47, "code": "de"}]


async def test_a_v2_name_without_a_given_name_reads_as_valid_fhir(fhir: Fhir) -> None:
    """PID-5 LING^^LOUISE (no given name, a middle name) is held with an empty first given
    name; FHIR's HumanName.given has no place for it, so only the middle name is listed."""
    demographics = Demographics(names=(Name(family="Ling", given=("", "Louise")),),
                                birth_date="1961-02-28", sex="F")
    read = await _read_as_fhir(fhir, "K3", demographics)
    assert read["name"][0]["given"] == ["Louise"]
