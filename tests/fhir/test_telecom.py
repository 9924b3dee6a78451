"""Issue 18 item 5, the FHIR side: a ContactPoint keeps its system, use, value and rank, and an
HL7 v2 reply writes it as the XTN it maps to (an e-mail as XTN.3 Internet and XTN.4, a mobile
phone as a cellular phone, PID-13 or PID-14 by its use). Phone search and matching still
compare phone (and sms) numbers only. Real sockets (FHIR and MLLP), real PostgreSQL."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.patient import Patient

from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.tokenizer import Segment
from tests.fhir.conftest import HOSPA, Fhir, patient
from tests.hl7v2.messages import msa, pdq_query, reply, strictly_valid

EMAIL = {"system": "email", "value": "ann@example.org", "use": "home"}
MOBILE = {"system": "phone", "value": "+1 617 555 0102", "use": "mobile", "rank": 1}
WORK = {"system": "phone", "value": "+1 617 555 0177", "use": "work", "rank": 2}


async def created(fhir: Fhir, value: str, telecom: list[dict[str, Any]]) -> dict[str, Any]:
    sent = patient(HOSPA, value, "Doe", "Ann", gender="female", telecom=telecom)
    status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 201, body
    status, read, _ = await fhir.call("GET", f"/Patient/{body['id']}")
    assert status == 200
    Patient.model_validate(read)
    return dict(read)


async def pdq_pid(mllp: MLLPClient) -> Segment:
    raw = await mllp.send(pdq_query("@PID.5.1.1^DOE~@PID.5.2^ANN"))
    answer = reply(raw)
    assert msa(answer) == "AA"
    strictly_valid(raw)
    pids = answer.segments("PID")
    assert len(pids) == 1
    return pids[0]


async def test_email_and_mobile_read_back_over_fhir_and_iti21(
    doors: tuple[Fhir, MLLPClient],
) -> None:
    fhir, mllp = doors
    read = await created(fhir, "C1", [EMAIL, MOBILE, WORK])
    assert read["telecom"] == [EMAIL, MOBILE, WORK]

    pid = await pdq_pid(mllp)
    assert [rep.raw for rep in pid.repetitions(13)] == [
        "^NET^Internet^ann@example.org", "+1 617 555 0102^PRS^CP"]
    assert [rep.raw for rep in pid.repetitions(14)] == ["+1 617 555 0177^WPN^PH"]


async def test_every_system_is_kept(doors: tuple[Fhir, MLLPClient]) -> None:
    fhir, mllp = doors
    telecom = [
        {"system": "fax", "value": "+1 617 555 0199", "use": "work"},
        {"system": "pager", "value": "555 0144"},
        {"system": "sms", "value": "+1 617 555 0155", "use": "mobile"},
        {"system": "url", "value": "https://example.org/ann", "use": "home"},
        {"system": "other", "value": "ward 7 internal mail", "use": "temp"},
        {"system": "phone", "value": "+1 617 555 0166", "use": "old"},
    ]
    read = await created(fhir, "C2", telecom)
    assert read["telecom"] == telecom

    pid = await pdq_pid(mllp)
    # "other" has no XTN form; "old" has no table 0201 code (it is another residence's)
    assert [rep.raw for rep in pid.repetitions(13)] == [
        "555 0144^PRN^BP", "+1 617 555 0155^PRS^CP", "^NET^Internet^https://example.org/ann",
        "+1 617 555 0166^ORN^PH"]
    assert [rep.raw for rep in pid.repetitions(14)] == ["+1 617 555 0199^WPN^FX"]


async def test_only_phone_numbers_are_searched(doors: tuple[Fhir, MLLPClient]) -> None:
    """As before contact points other than phones were kept: a fax, a pager or digits in an
    e-mail address are no phone number to search or match on."""
    fhir, _ = doors
    await created(fhir, "C3", [
        {"system": "email", "value": "ann6175550111@example.org"},
        {"system": "fax", "value": "+1 617 555 0122"},
        MOBILE,
    ])

    async def found(number: str) -> int:
        status, bundle, _ = await fhir.call("GET", "/Patient", params={"telecom": number})
        assert status == 200, bundle
        return int(bundle["total"])

    assert await found("617-555-0102") == 1
    assert await found("617-555-0122") == 0
    assert await found("617-555-0111") == 0


async def test_an_unknown_system_is_refused(fhir: Fhir) -> None:
    sent = patient(HOSPA, "C4", telecom=[{"system": "telex", "value": "12345"}])
    status, body, _ = await fhir.call("POST", "/Patient", sent, client="ADT_A")
    assert status == 400, body
    assert any(i.get("expression") == ["Patient.telecom[0].system"] for i in body["issue"]), body
