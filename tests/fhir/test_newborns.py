"""Issue 18 item 6 over FHIR: newborns. A Patient without a name (or with a placeholder one,
"Baby Girl") that names its mother is accepted: over ITI-104 and plain REST as a contained
RelatedPerson (relationship MTH, an identifier) that belongs to the Patient, over PMIR ITI-93
as a RelatedPerson entry of the history Bundle whose ``patient`` is the newborn's entry. Her
first identifier is the record's mother's identifier (PID-21 over HL7 v2), returned as a
contained RelatedPerson linked from the Patient, found by PDQm
``link:RelatedPerson.identifier=system|value``; newborns are never linked on demographics
(PIXm shows no cross-reference) unless they share a person-identifying identifier. Real
sockets, real PostgreSQL."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.patient import Patient

from identity.hl7v2.mllp import MLLPClient
from identity.model import AuthorityRef, IdentifierRef
from tests.fhir.conftest import HOSPA, HOSPB, LAB, NATIONAL, Fhir, patient
from tests.fhir.test_pmir import message, statuses
from tests.fhir.test_pmir import post as pmir_post
from tests.hl7v2.messages import adt, msa, reply

ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
MOTHER = {"coding": [{"system": ROLE, "code": "MTH"}]}
HOME = [{"line": ["7 Cradle Ln"], "city": "Springfield", "state": "IL", "postalCode": "62701"}]
PID21 = "|" * 13  # after PID-8: the fourteenth field on is PID-21


def related(value: str | None, system: str = HOSPB, rid: str = "mom",
            relationship: dict[str, Any] = MOTHER, patient_ref: str = "#") -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "RelatedPerson", "id": rid,
                                "patient": {"reference": patient_ref},
                                "relationship": [relationship]}
    if value is not None:
        resource["identifier"] = [{"system": system, "value": value}]
    return resource


def newborn(system: str, value: str, mother: str | None = None, *, named: bool = False,
            **extra: Any) -> dict[str, Any]:
    """A newborn Patient (no name unless ``named``: "Baby Girl") with her mother contained
    and linked (``mother`` her identifier in HOSPB)."""
    body = patient(system, value, family="Smith", given="Baby Girl", birth_date="2026-12-01",
                   gender="female", **extra)
    if not named:
        del body["name"]
    if mother is not None:
        body["contained"] = [related(mother)]
        body["link"] = [{"other": {"reference": "#mom"}, "type": "seealso"}]
    return body


def mothers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in resource.get("contained") or () if c["resourceType"] == "RelatedPerson"]


def ref(namespace: str, value: str) -> IdentifierRef:
    return IdentifierRef(value=value, authority=AuthorityRef(namespace=namespace))


async def found(fhir: Fhir, params: dict[str, str]) -> set[str]:
    status, bundle, _ = await fhir.call("GET", "/Patient", params=params)
    assert status == 200, bundle
    return {e["resource"]["id"] for e in bundle.get("entry") or ()
            if e["search"]["mode"] == "match"}


async def pix(fhir: Fhir, source: str) -> set[str]:
    status, body, _ = await fhir.call("GET", "/Patient/$ihe-pix",
                                      params={"sourceIdentifier": source})
    assert status == 200, body
    return {f"{p['valueIdentifier']['system']}|{p['valueIdentifier']['value']}"
            for p in body.get("parameter") or () if p["name"] == "targetIdentifier"}


# --- 1. accepted when it names its mother ----------------------------------------------------


async def test_a_nameless_newborn_with_a_contained_mother_is_created(fhir: Fhir) -> None:
    sent = newborn(HOSPA, "NB1", "M100")
    status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201, body
    Patient.model_validate(body)
    assert "name" not in body
    record = await fhir.mpi.get_record(int(body["id"]))
    mother = record.demographics.mothers_identifier
    assert mother is not None and mother.value == "M100"
    # the system resolved to its domain: named by namespace and OID, as PDQ searches it
    assert mother.authority == AuthorityRef(namespace="HOSPB", oid="1.2.3.4.5.2")
    assert not record.demographics.names
    # a summary leaves out the contained mother, and so the link to her
    status, summary, _ = await fhir.call("GET", f"/Patient/{body['id']}",
                                         params={"_summary": "true"})
    assert status == 200 and "contained" not in summary
    assert not any(link["other"]["reference"].startswith("#")
                   for link in summary.get("link") or ())
    Patient.model_validate(summary)


async def test_iti104_and_put_take_a_mother_by_the_patients_link_or_a_placeholder_name(
    fhir: Fhir,
) -> None:
    # the RelatedPerson belongs to the Patient through its link (patient names the newborn
    # by her identifier, not as the container)
    sent = newborn(HOSPA, "NB2", None)
    sent["contained"] = [related("M200", system=LAB, rid="m",
                                 relationship={"coding": [{"system": ROLE, "code": "NMTH"}]},
                                 patient_ref="Patient/elsewhere")]
    sent["link"] = [{"other": {"reference": "#m"}, "type": "seealso"}]
    status, body, _ = await fhir.put_patient(HOSPA, "NB2", sent)
    assert status == 201, body
    record = await fhir.mpi.get_record(int(body["id"]))
    assert record.demographics.mothers_identifier is not None
    assert record.demographics.mothers_identifier.value == "M200"
    # a placeholder name is a name: accepted, and the mother still kept
    named = newborn(HOSPA, "NB2", "M201", named=True, id=body["id"])
    status, body, _ = await fhir.call("PUT", f"/Patient/{body['id']}", named, client="ADT_A")
    assert status == 200, body
    assert body["name"] == [{"family": "Smith", "given": ["Baby Girl"]}]
    record = await fhir.mpi.get_record(int(body["id"]))
    assert record.demographics.mothers_identifier is not None
    assert record.demographics.mothers_identifier.value == "M201"
    # an update replaces the record's demographics: without a mother, none is kept
    status, body, _ = await fhir.call("PUT", f"/Patient/{body['id']}",
                                      newborn(HOSPA, "NB2", named=True, id=body["id"]),
                                      client="ADT_A")
    assert status == 200 and "contained" not in body and "link" not in body, body
    record = await fhir.mpi.get_record(int(body["id"]))
    assert record.demographics.mothers_identifier is None


async def test_an_unknown_mothers_system_is_kept_as_received(fhir: Fhir) -> None:
    sent = newborn(HOSPA, "NB3", None)
    sent["contained"] = [related("M300", system="http://births.example.org/mothers")]
    sent["link"] = [{"other": {"reference": "#mom"}, "type": "seealso"}]
    status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201, body
    record = await fhir.mpi.get_record(int(body["id"]))
    assert record.demographics.mothers_identifier == IdentifierRef(
        value="M300", authority=AuthorityRef(namespace="http://births.example.org/mothers"))
    (mom,) = mothers(body)
    assert mom["identifier"] == [{"system": "http://births.example.org/mothers",
                                  "value": "M300"}]


async def test_no_name_and_no_mother_is_still_refused_in_fhir_words(fhir: Fhir) -> None:
    father = newborn(HOSPA, "NB4", "F400")
    father["contained"][0]["relationship"] = [{"coding": [{"system": ROLE, "code": "FTH"}]}]
    without_id = newborn(HOSPA, "NB4", None)
    without_id["contained"] = [related(None)]
    someone_elses = newborn(HOSPA, "NB4", None)  # contained, but neither hers nor linked
    someone_elses["contained"] = [related("M400", patient_ref="Patient/1")]
    for body in (newborn(HOSPA, "NB4"), father, without_id, someone_elses):
        status, answer, _ = await fhir.call("POST", "/Patient", body, client="ADT_A")
        assert status == 400, answer
        assert answer["resourceType"] == "OperationOutcome"
        (problem,) = answer["issue"]
        assert problem["code"] == "required"
        assert problem["expression"] == ["Patient.name"]
        assert "mother" in problem["diagnostics"] and "RelatedPerson" in problem["diagnostics"]
    assert await found(fhir, {"identifier": f"{HOSPA}|NB4"}) == set()


# --- PMIR ITI-93 -----------------------------------------------------------------------------

BABY = "urn:uuid:00000000-0000-0000-0000-0000000000b1"
MOM = "urn:uuid:00000000-0000-0000-0000-0000000000a1"
ROLE_URL = "urn:uuid:00000000-0000-0000-0000-0000000000c1"


def entry(full_url: str, resource: dict[str, Any], url: str = "Patient") -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": url}, "response": {"status": "201"}}


async def test_pmir_takes_the_mother_as_a_related_person_entry(fhir: Fhir) -> None:
    baby = newborn(HOSPA, "NB5")
    mom = related("M500", patient_ref=BABY)
    del mom["id"]
    reply_ = await pmir_post(fhir, message([entry(BABY, baby),
                                            entry(ROLE_URL, mom, "RelatedPerson")]))
    assert statuses(reply_) == ["201", "200"]
    created = reply_["entry"][1]["resource"]["entry"][0]["resource"]
    assert "name" not in created
    record = await fhir.mpi.get_record(int(created["id"]))
    assert record.demographics.mothers_identifier == IdentifierRef(
        value="M500", authority=AuthorityRef(namespace="HOSPB", oid="1.2.3.4.5.2"))
    # answered as the contained RelatedPerson the record now carries
    (answered,) = mothers(created)
    assert answered["identifier"] == [{"system": HOSPB, "value": "M500"}]


async def test_pmir_takes_the_mother_from_her_own_patient_entry_as_pmir_shows_it(
    fhir: Fhir,
) -> None:
    """PMIR's example (ex-patient-create2, ex-related-mom): the mother's Patient links to a
    RelatedPerson without identifier whose patient is the newborn (FHIR R4 Patient, *Mother
    and newborn relationships*); her identifier is the newborn's mother's identifier."""
    lucille = patient(HOSPA, "M600", family="Wooten", given="Lucille", gender="female",
                      birth_date="1971-12-14",
                      link=[{"other": {"reference": ROLE_URL}, "type": "seealso"}])
    mom = {"resourceType": "RelatedPerson", "patient": {"reference": BABY},
           "relationship": [MOTHER]}
    baby = newborn(HOSPA, "NB6")
    reply_ = await pmir_post(fhir, message([
        entry(MOM, lucille), entry(ROLE_URL, mom, "RelatedPerson"), entry(BABY, baby)]))
    assert statuses(reply_) == ["201", "200", "201"]
    record = await fhir.mpi.find_record(ref("HOSPA", "NB6"))
    assert record.demographics.mothers_identifier is not None
    assert record.demographics.mothers_identifier.value == "M600"
    mother = await fhir.mpi.find_record(ref("HOSPA", "M600"))
    assert mother.demographics.mothers_identifier is None  # her link is not her mother


async def test_pmir_a_related_person_that_is_no_ones_mother_fails_the_message(
    fhir: Fhir,
) -> None:
    brother = related("B700", patient_ref=BABY,
                      relationship={"coding": [{"system": ROLE, "code": "BRO"}]})
    reply_ = await pmir_post(fhir, message([entry(BABY, newborn(HOSPA, "NB7", "M700")),
                                            entry(ROLE_URL, brother, "RelatedPerson")]))
    assert statuses(reply_) == ["409", "422"]
    assert reply_["entry"][0]["resource"]["response"]["code"] == "fatal-error"
    assert await found(fhir, {"identifier": f"{HOSPA}|NB7"}) == set()


# --- 2. on the way out -----------------------------------------------------------------------


async def test_a_v2_newborn_reads_with_her_mother_and_no_name(
    doors: tuple[Fhir, MLLPClient],
) -> None:
    fhir, client = doors
    a04 = adt("A04", "NB8^^^HOSPA", name="", dob="20261208", sex="F",
              extra_pid=f"{PID21}M800^^^HOSPB")
    assert msa(reply(await client.send(a04))) == "AA"
    (rid,) = await found(fhir, {"identifier": f"{HOSPA}|NB8"})
    status, read, _ = await fhir.call("GET", f"/Patient/{rid}")
    assert status == 200
    Patient.model_validate(read)
    assert "name" not in read
    (mom,) = mothers(read)
    assert mom["identifier"] == [{"system": HOSPB, "value": "M800"}]  # HOSPB's system
    assert mom["patient"] == {"reference": "#"}
    assert mom["relationship"][0]["coding"][0]["code"] == "MTH"
    assert {"other": {"reference": f"#{mom['id']}"}, "type": "seealso"} in read["link"]
    # a read Patient sent back keeps the same mother, once: no change, no new version
    status, put, _ = await fhir.call("PUT", f"/Patient/{rid}", read, client="ADT_A")
    assert status == 200, put
    assert put["meta"]["versionId"] == read["meta"]["versionId"]
    assert mothers(put) == [mom] and put["link"] == read["link"]


async def test_a_clients_own_mother_comes_back_once_and_as_sent(
    doors: tuple[Fhir, MLLPClient],
) -> None:
    fhir, client = doors
    sent = newborn(HOSPA, "NB9", "M900")
    sent["contained"][0]["name"] = [{"family": "Smith", "given": ["Jane"]}]
    status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201, body
    rid = body["id"]
    for answer in (body, (await fhir.call("GET", f"/Patient/{rid}"))[1],
                   (await fhir.call("GET", "/Patient", params={
                       "identifier": f"{HOSPA}|NB9"}))[1]["entry"][0]["resource"]):
        Patient.model_validate(answer)
        assert answer["contained"] == sent["contained"]
        assert answer["link"] == sent["link"]
    # sent back unchanged: no change, no new version
    status, again, _ = await fhir.call("PUT", f"/Patient/{rid}", body, client="ADT_A")
    assert status == 200 and again["meta"]["versionId"] == body["meta"]["versionId"]
    # an HL7 v2 update names another mother: the client's stale one gives way to the core's
    a08 = adt("A08", "NB9^^^HOSPA", name="", dob="20261201", sex="F",
              extra_pid=f"{PID21}M901^^^HOSPB")
    assert msa(reply(await client.send(a08))) == "AA"
    status, read, _ = await fhir.call("GET", f"/Patient/{rid}")
    Patient.model_validate(read)
    (mom,) = mothers(read)
    assert mom["identifier"] == [{"system": HOSPB, "value": "M901"}]
    assert read["link"] == [{"other": {"reference": f"#{mom['id']}"}, "type": "seealso"}]


# --- 3. PDQm finds a newborn by her mother's identifier --------------------------------------


async def test_pdqm_finds_newborns_by_the_mothers_identifier(
    doors: tuple[Fhir, MLLPClient],
) -> None:
    fhir, client = doors
    status, by_fhir, _ = await fhir.call("POST", "/Patient", newborn(HOSPA, "NB10", "M1000"),
                                         client="ADT_A")
    assert status == 201
    a04 = adt("A04", "NB11^^^HOSPA", name="SMITH^BABY BOY", dob="20261201",
              extra_pid=f"{PID21}M1000^^^HOSPB")
    assert msa(reply(await client.send(a04))) == "AA"
    (by_v2,) = await found(fhir, {"identifier": f"{HOSPA}|NB11"})
    chain = "link:RelatedPerson.identifier"
    for system in (HOSPB, "HOSPB"):  # the domain's system, or its namespace
        assert await found(fhir, {chain: f"{system}|M1000"}) == {by_fhir["id"], by_v2}
    assert await found(fhir, {chain: f"{HOSPB}|M1000", "gender": "female"}) == {by_fhir["id"]}
    assert await found(fhir, {chain: f"{LAB}|M1000"}) == set()  # another domain
    assert await found(fhir, {chain: "urn:oid:9.9.9|M1000"}) == set()  # no such domain
    status, answer, _ = await fhir.call("GET", "/Patient", params={chain: "M1000"})
    assert status == 400 and answer["issue"][0]["expression"] == [chain]
    status, answer, _ = await fhir.call("GET", "/Patient", params={"link": "Patient/1"})
    assert status == 400 and "link:RelatedPerson.identifier" in answer["issue"][0]["diagnostics"]


# --- 4. never linked on demographics ---------------------------------------------------------


async def test_nameless_twins_are_not_linked_but_a_national_id_links(fhir: Fhir) -> None:
    """Twins: the same mother, birth date and home from two sources; PIXm shows no
    cross-reference. One identifier, one person: a shared national identifier links."""
    for system, value, client in ((HOSPA, "NT1", "ADT_A"), (HOSPB, "NT2", "ADT_B")):
        body = newborn(system, value, "M1100", address=HOME)
        status, answer, _ = await fhir.call("POST", "/Patient", body, client=client)
        assert status == 201, answer
    assert f"{HOSPB}|NT2" not in await pix(fhir, f"{HOSPA}|NT1")
    for system, value, client in ((HOSPA, "NT3", "ADT_A"), (HOSPB, "NT4", "ADT_B")):
        body = newborn(system, value, "M1200", address=HOME)
        body["identifier"].append({"system": NATIONAL, "value": "111990002"})
        status, answer, _ = await fhir.call("POST", "/Patient", body, client=client)
        assert status == 201, answer
    assert f"{HOSPB}|NT4" in await pix(fhir, f"{HOSPA}|NT3")
