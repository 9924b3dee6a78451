"""Issue 18 item 5: phone numbers kept structured. PID-13/PID-14 are kept component by
component (XTN.2 use, .3 equipment, .4 e-mail, .5-.8 country, area, local number, extension,
.12 unformatted number) and returned as received by ITI-21 and as FHIR ``telecom``; the matcher
and phone search keep reading the number's digits. Real sockets, real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fhir.resources.R4B.patient import Patient

from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.hl7v2.tokenizer import Message, Segment
from identity.store.db import Database
from tests.fhir.conftest import HOSPA, Fhir, serve
from tests.hl7v2.messages import adt, msa, pdq_query, reply, strictly_valid

HOME = "^PRN^PH^^1^617^5550101^22"
EMAIL = "^NET^Internet^ann@example.org"
FAX = "^WPN^FX^^^^^^^^^+16175550199"
# after PID-8: PID-9, 10, 11, 12 empty, then PID-13 and PID-14
PHONES = f"|||||{HOME}~{EMAIL}|{FAX}"


@pytest.fixture
async def door(service: Hl7Service) -> AsyncIterator[Fhir]:
    """The FHIR door on the same core as the HL7 v2 service."""
    async with serve(service.mpi) as fhir:
        yield fhir


async def fed(client: MLLPClient, pid3: str, extra_pid: str, name: str = "DOE^ANN") -> None:
    answer = reply(await client.send(adt("A04", pid3, name=name, sex="F", extra_pid=extra_pid)))
    assert msa(answer) == "AA"


async def pdq(client: MLLPClient, params: str) -> tuple[Message, bytes]:
    raw = await client.send(pdq_query(params))
    answer = reply(raw)
    assert msa(answer) == "AA"
    return answer, raw


def only_pid(answer: Message) -> Segment:
    pids = answer.segments("PID")
    assert len(pids) == 1
    return pids[0]


async def read_patient(fhir: Fhir, value: str) -> dict[str, object]:
    query = {"identifier": f"{HOSPA}|{value}"}
    status, bundle, _ = await fhir.call("GET", "/Patient", params=query)
    assert status == 200 and bundle["total"] == 1, bundle
    record_id = bundle["entry"][0]["resource"]["id"]
    status, patient, _ = await fhir.call("GET", f"/Patient/{record_id}")
    assert status == 200
    Patient.model_validate(patient)
    return dict(patient)


async def test_pdq_returns_phones_component_by_component(
    client: MLLPClient, door: Fhir
) -> None:
    await fed(client, "T1^^^HOSPA", PHONES)
    answer, raw = await pdq(client, "@PID.5.1.1^DOE~@PID.5.2^ANN")
    pid = only_pid(answer)
    assert [rep.raw for rep in pid.repetitions(13)] == [HOME, EMAIL]
    assert [rep.raw for rep in pid.repetitions(14)] == [FAX]
    strictly_valid(raw)  # XTN as HL7 v2.5 defines it

    patient = await read_patient(door, "T1")
    assert patient["telecom"] == [
        {"system": "phone", "value": "+1 617 5550101 ext. 22", "use": "home"},
        {"system": "email", "value": "ann@example.org", "use": "home"},
        {"system": "fax", "value": "+16175550199", "use": "work"},
    ]


async def test_phone_search_reads_the_structured_number(client: MLLPClient) -> None:
    """The matcher's digits come from XTN.1, else XTN.12, else XTN.5 + .6 + .7 (never from
    the extension or an e-mail address): PDQ by phone finds the number and the fax."""
    await fed(client, "T2^^^HOSPA", PHONES)
    await fed(client, "T3^^^HOSPA", "|||||^NET^Internet^ann6175550101@example.org",
              name="DOE^BEA")
    for number in ("617-555-0101", "+1 617 555 0101", "(617) 555-0199"):
        answer, _ = await pdq(client, f"@PID.13^{number}")
        assert [rep.raw for rep in only_pid(answer).repetitions(3)
                if "HOSPA" in rep.raw] == ["T2^^^HOSPA&1.2.3.4.5.1&ISO"], number


async def test_a_number_sent_formatted_is_returned_as_sent(
    client: MLLPClient, door: Fhir
) -> None:
    # XTN.1 only (v2.3.1 style, as the README's example feed), then XTN.1 with its parts
    await fed(client, "T4^^^HOSPA", "|||||555-1234~(617)555-0101^ORN^CP^^^617^5550101|555-9876")
    answer, _ = await pdq(client, "@PID.5.1.1^DOE~@PID.5.2^ANN")
    pid = only_pid(answer)
    assert [rep.raw for rep in pid.repetitions(13)] == [
        "555-1234^PRN", "(617)555-0101^ORN^CP^^^617^5550101"]
    assert [rep.raw for rep in pid.repetitions(14)] == ["555-9876^WPN"]
    patient = await read_patient(door, "T4")
    assert patient["telecom"] == [
        {"system": "phone", "value": "555-1234", "use": "home"},
        {"system": "phone", "value": "(617)555-0101", "use": "temp"},
        {"system": "phone", "value": "555-9876", "use": "work"},
    ]


async def test_a_pid14_address_stays_in_pid14(client: MLLPClient, door: Fhir) -> None:
    """A business e-mail (PID-14, XTN.2 NET) is returned in PID-14 and reads as work."""
    await fed(client, "T5^^^HOSPA", "||||||^NET^Internet^ann@work.example")
    answer, _ = await pdq(client, "@PID.5.1.1^DOE~@PID.5.2^ANN")
    pid = only_pid(answer)
    assert pid.field(13) == ""
    assert pid.field(14) == "^NET^Internet^ann@work.example"
    patient = await read_patient(door, "T5")
    assert patient["telecom"] == [
        {"system": "email", "value": "ann@work.example", "use": "work"}]


async def test_phones_stored_before_the_structure_still_read(
    client: MLLPClient, door: Fhir, db: Database
) -> None:
    """A record whose stored demographics hold phones as ``value`` and ``use`` only (as every
    record did before) reads as before: the value in XTN.1, the use in XTN.2."""
    await fed(client, "T6^^^HOSPA", "|||||555-1111")
    old = [{"value": "5552222", "use": "PRN"}, {"value": "5553333", "use": "WPN"}]
    async with db.transaction() as conn:
        await conn.execute(
            "UPDATE source_record SET demographics = jsonb_set(demographics, '{phones}', $1)"
            " WHERE identifier = 'T6'", old)
    answer, _ = await pdq(client, "@PID.5.1.1^DOE~@PID.5.2^ANN")
    pid = only_pid(answer)
    assert pid.field(13) == "5552222^PRN" and pid.field(14) == "5553333^WPN"
    patient = await read_patient(door, "T6")
    assert patient["telecom"] == [
        {"system": "phone", "value": "5552222", "use": "home"},
        {"system": "phone", "value": "5553333", "use": "work"},
    ]
