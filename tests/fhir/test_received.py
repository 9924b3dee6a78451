"""What a client sends is what it gets back (issue 18 item 0): the elements of a Patient the core
does not model (contact, generalPractitioner, managingOrganization, extensions, communication,
deceased[x], an identifier's use/type/period, an address's district, a name's period ...) are
kept as sent and returned on read, vread, _history, PDQm search and in PMIR answers; a FHIR
update replaces them, an HL7 v2 update (over MLLP) keeps them. Real sockets, real PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fhir.resources.R4B.patient import Patient

from identity.config import Settings
from identity.hl7v2.mllp import MLLPClient
from identity.model import Demographics, Name
from identity.mpi import Mpi
from identity.store.db import Database
from tests.fhir.conftest import HOSPA, MPI_SYSTEM, NATIONAL, Fhir, patient, serve
from tests.fhir.test_pmir import message
from tests.fhir.test_pmir import post as pmir_post
from tests.hl7v2.messages import adt, msa, reply

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
MMN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
COLOUR = "http://example.org/fhir/StructureDefinition/favourite-colour"

# Every element compared as sent (the identifiers are compared one by one: the answer adds the
# enterprise identifier).
KEPT = ("extension", "name", "telecom", "_birthDate", "deceasedBoolean", "address",
        "maritalStatus", "contact", "communication", "generalPractitioner",
        "managingOrganization")  # fmt: skip


def rich(value: str) -> dict[str, Any]:
    """A Patient with what a registry holds beyond the matcher's fields."""
    return patient(
        HOSPA, value,
        identifier=[
            {"use": "official",
             "type": {"coding": [{"system": V2_0203, "code": "MR"}], "text": "Medical record"},
             "system": HOSPA, "value": value, "period": {"start": "2020-01-01"}},
            {"use": "secondary", "type": {"coding": [{"system": V2_0203, "code": "SS"}]},
             "system": NATIONAL, "value": f"999-{value}"},
        ],
        meta={"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                            "code": "R"}]},
        text={"status": "generated",
              "div": '<div xmlns="http://www.w3.org/1999/xhtml">John Smith</div>'},
        extension=[
            {"url": MMN, "valueString": "Jones"},
            {"url": COLOUR, "valueString": "blue"},
        ],
        name=[{"use": "official", "family": "Smith", "given": ["John", "Q"], "prefix": ["Dr"],
               "suffix": ["Jr"], "period": {"start": "1980-03-12"}}],
        telecom=[{"system": "phone", "value": "+1 555 0100", "use": "home",
                  "period": {"start": "2020-01-01"}},
                 {"system": "email", "value": "john@example.org"}],
        _birthDate={"extension": [{"url": BIRTH_TIME,
                                   "valueDateTime": "1980-03-12T04:30:00Z"}]},
        deceasedBoolean=False,
        address=[{"use": "home", "line": ["1 Main St"], "city": "Springfield",
                  "district": "Hampden", "state": "MA", "postalCode": "01101", "country": "US",
                  "period": {"start": "2010-01-01"}}],
        maritalStatus={"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M",
            "display": "Married"}]},
        contact=[{
            "relationship": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
            "name": {"family": "Smith", "given": ["Jane"]},
            "telecom": [{"system": "phone", "value": "+1 555 0101"}],
            "organization": {"reference": "Organization/org-1"},
        }],
        communication=[
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}],
                          "text": "English"}, "preferred": True},
            {"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr"}]}},
        ],
        generalPractitioner=[{"reference": "Practitioner/pr-1", "display": "Dr Who"}],
        managingOrganization={"reference": "Organization/org-1"},
        link=[{"other": {"reference": "RelatedPerson/rp-1"}, "type": "seealso"}],
    )


def as_sent(got: dict[str, Any], sent: dict[str, Any], *, old: bool = False) -> None:
    """``got`` (a Patient answered) carries every element of ``sent`` as sent, and is valid;
    ``old``: a version from the history, which holds the record's own identifier only."""
    Patient.model_validate(got)
    for key in KEPT:
        assert got.get(key) == sent.get(key), (key, got.get(key), sent.get(key))
    for ident in sent["identifier"][:1] if old else sent["identifier"]:
        same = [i for i in got["identifier"]
                if (i["system"], i["value"]) == (ident["system"], ident["value"])]
        assert same == [ident]
    if not old:
        assert any(i["system"] == MPI_SYSTEM for i in got["identifier"])  # ours, added
    assert {"other": {"reference": "RelatedPerson/rp-1"}, "type": "seealso"} in got["link"]
    assert got["meta"]["security"] == sent["meta"]["security"]
    assert got["meta"]["versionId"] and got["active"] is True


async def test_read_search_vread_history_return_what_was_sent(fhir: Fhir) -> None:
    sent = rich("R1")
    status, created, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201, created
    as_sent(created, sent)
    rid = created["id"]
    status, read, _ = await fhir.call("GET", f"/Patient/{rid}")
    assert status == 200
    as_sent(read, sent)
    assert read["text"] == sent["text"]
    async with fhir.session.get(f"{fhir.base}/Patient/{rid}", params={"_format": "xml"}) as got:
        assert got.status == 200
        as_xml = Patient.model_validate_xml(await got.read()).model_dump(mode="json",
                                                                         exclude_none=True)
    assert as_xml["contact"] == sent["contact"] and as_xml["_birthDate"] == sent["_birthDate"]

    status, found, _ = await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|R1"})
    assert status == 200 and found["total"] == 1
    as_sent(found["entry"][0]["resource"], sent)
    status, found, _ = await fhir.call("GET", "/Patient", params={"family": "Smith",
                                                                   "birthdate": "1980-03-12"})
    assert status == 200 and found["total"] == 1
    as_sent(found["entry"][0]["resource"], sent)

    second = copy.deepcopy(sent) | {"id": rid}
    second["contact"][0]["name"]["given"] = ["Janet"]
    status, updated, _ = await fhir.call("PUT", f"/Patient/{rid}", second, client="ADT_A")
    assert status == 200 and updated["meta"]["versionId"] == "2"
    as_sent(updated, second)
    status, old, _ = await fhir.call("GET", f"/Patient/{rid}/_history/1")
    assert status == 200
    as_sent(old, sent, old=True)
    status, history, _ = await fhir.call("GET", f"/Patient/{rid}/_history")
    assert status == 200
    versions = {e["resource"]["meta"]["versionId"]: e["resource"] for e in history["entry"]}
    as_sent(versions["1"], sent, old=True)
    as_sent(versions["2"], second)


async def test_pmir_answers_and_keeps_what_was_sent(fhir: Fhir) -> None:
    sent = rich("R2")
    entry = {"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000002", "resource": sent,
             "request": {"method": "POST", "url": "Patient"}}
    answer = await pmir_post(fhir, message([entry]))
    result = answer["entry"][1]["resource"]["entry"][0]
    assert result["response"]["status"] == "201"
    as_sent(result["resource"], sent)
    rid = result["resource"]["id"]
    status, read, _ = await fhir.call("GET", f"/Patient/{rid}")
    assert status == 200
    as_sent(read, sent)

    again = copy.deepcopy(sent) | {"id": rid}
    again["deceasedBoolean"] = True
    update = {"fullUrl": f"{fhir.base}/Patient/{rid}", "resource": again,
              "request": {"method": "PUT", "url": f"Patient?identifier={HOSPA}|R2"}}
    answer = await pmir_post(fhir, message([update]))
    result = answer["entry"][1]["resource"]["entry"][0]
    assert result["response"]["status"] == "200"
    as_sent(result["resource"], again)


async def test_an_update_that_drops_an_element_removes_it(fhir: Fhir) -> None:
    sent = rich("R3")
    status, created, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201
    rid = created["id"]
    second = {k: v for k, v in sent.items()
              if k not in ("contact", "generalPractitioner", "extension")} | {"id": rid}
    second["identifier"] = [{"system": HOSPA, "value": "R3"},
                            {"system": NATIONAL, "value": "999-R3"}]
    second["address"] = [{k: v for k, v in sent["address"][0].items() if k != "district"}]
    status, updated, _ = await fhir.call("PUT", f"/Patient/{rid}", second, client="ADT_A")
    assert status == 200, updated
    status, read, _ = await fhir.call("GET", f"/Patient/{rid}")
    Patient.model_validate(read)
    for gone in ("contact", "generalPractitioner", "extension"):
        assert gone not in read, gone
    assert read["address"] == second["address"]
    own = next(i for i in read["identifier"] if i["system"] == HOSPA)
    assert own == {"use": "usual", "system": HOSPA, "value": "R3"}
    assert "type" not in next(i for i in read["identifier"] if i["system"] == NATIONAL)
    assert read["managingOrganization"] == sent["managingOrganization"]


async def test_an_hl7v2_update_keeps_what_a_fhir_client_sent(
    doors: tuple[Fhir, MLLPClient],
) -> None:
    fhir, client = doors
    sent = rich("R4")
    status, created, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201
    rid = created["id"]
    answer = reply(await client.send(adt("A08", "R4^^^HOSPA&1.2.3.4.5.1&ISO",
                                         name="SMYTH^JOHN")))
    assert msa(answer) == "AA"
    status, read, _ = await fhir.call("GET", f"/Patient/{rid}")
    assert status == 200 and read["meta"]["versionId"] == "2"
    Patient.model_validate(read)
    assert [n.get("family") for n in read["name"]] == ["SMYTH"]
    assert "period" not in read["name"][0]  # that name is gone: its extras with it
    for key in ("contact", "generalPractitioner", "managingOrganization", "extension",
                "communication", "deceasedBoolean", "address", "maritalStatus", "telecom"):
        assert read.get(key) == sent[key], key
    assert "text" not in read  # the narrative described the Patient as sent


async def test_what_is_kept_is_bounded(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    mpi = Mpi(db, make_settings(mllp={"max_message_bytes": 4096}))
    await mpi.start()
    async with serve(mpi) as fhir:
        sent = patient(HOSPA, "R5", photo=[{"contentType": "image/png", "data": "QUFB" * 2000}])
        status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
        assert status == 413, body
        assert body["issue"][0]["code"] == "too-long"
        assert "QUFB" not in str(body)
        sent["photo"] = [{"contentType": "image/png", "url": "http://example.org/r5.png"}]
        status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
        assert status == 201 and body["photo"] == sent["photo"]


def test_matching_never_sees_what_was_kept() -> None:
    demographics = Demographics(names=(Name(family="Smith"),),
                                received={"contact": [{"name": {"family": "Jones"}}]})
    assert "received" not in demographics.as_matching_input()
    assert demographics.as_matching_input() == Demographics(
        names=(Name(family="Smith"),)).as_matching_input()


async def test_summary_and_elements_subset_what_was_kept(fhir: Fhir) -> None:
    sent = rich("R6") | {"modifierExtension": [{"url": COLOUR, "valueString": "red"}]}
    status, created, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201
    rid = created["id"]
    assert created["modifierExtension"] == sent["modifierExtension"]
    status, found, _ = await fhir.call("GET", "/Patient", params={
        "identifier": f"{HOSPA}|R6", "_summary": "true"})
    assert status == 200
    summary = found["entry"][0]["resource"]
    Patient.model_validate(summary)
    assert summary["managingOrganization"] == sent["managingOrganization"]
    assert summary["deceasedBoolean"] is False and summary["_birthDate"] == sent["_birthDate"]
    assert summary["modifierExtension"] == sent["modifierExtension"]  # a modifier: always kept
    assert "contact" not in summary and "text" not in summary
    status, data, _ = await fhir.call("GET", f"/Patient/{rid}", params={"_summary": "data"})
    assert status == 200 and "text" not in data and data["contact"] == sent["contact"]
    status, text, _ = await fhir.call("GET", f"/Patient/{rid}", params={"_summary": "text"})
    assert status == 200 and text["text"] == sent["text"] and "contact" not in text
    status, some, _ = await fhir.call("GET", f"/Patient/{rid}",
                                      params={"_elements": "contact,birthDate"})
    assert status == 200 and some["contact"] == sent["contact"]
    assert some["_birthDate"] == sent["_birthDate"] and "name" not in some


async def test_a_patient_read_and_sent_back_changes_nothing(fhir: Fhir) -> None:
    """Generic clients update by sending back what they read: that is no new version, for a
    Patient with nothing kept as for one with much."""
    for sent in (patient(HOSPA, "R7"), rich("R8")):
        status, created, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
        assert status == 201
        rid = created["id"]
        status, read, _ = await fhir.call("GET", f"/Patient/{rid}")
        status, again, _ = await fhir.call("PUT", f"/Patient/{rid}", read, client="ADT_A")
        assert status == 200 and again["meta"]["versionId"] == "1", again
        assert again == read
