"""ITI-30 Patient Identity Management (Merge and Link/Unlink options)."""

from __future__ import annotations

from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.model import AuthorityRef, IdentifierRef
from tests.hl7v2.messages import adt, errs, msa, msh, pid3, pix_query, qak, reply


def ref(domain: str, value: str) -> IdentifierRef:
    return IdentifierRef(value=value, authority=AuthorityRef(namespace=domain))


def two_pids(trigger: str, first: str, second: str, app: str = "ADT_A") -> str:
    structure = {"A24": "ADT_A24", "A37": "ADT_A37"}[trigger]
    return "\r".join([
        msh(f"ADT^{trigger}^{structure}", app=app),
        "EVN||20260101120000",
        f"PID|1||{first}||ONE^PATIENT||19500101|F",
        f"PID|2||{second}||TWO^PATIENT||19600101|M",
    ]) + "\r"


async def test_A28_creates_and_A31_updates(service: Hl7Service, client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A28", "C1^^^HOSPA", name="PAM^CARL")))
    assert msa(answer) == "AA" and answer.msh.field(9) == "ACK^A28^ACK"
    assert msa(reply(await client.send(adt("A31", "C1^^^HOSPA", name="PAM^CARLOS")))) == "AA"
    record = await service.mpi.find_record(ref("HOSPA", "C1"))
    assert record.demographics.names[0].given == ("CARLOS",)  # type: ignore[index]


async def test_A40_with_unknown_survivor_changes_the_identifier(
    service: Hl7Service, client: MLLPClient
) -> None:
    await client.send(adt("A28", "C2^^^HOSPA"))
    answer = reply(await client.send(adt("A40", "C3^^^HOSPA", mrg="C2^^^HOSPA")))
    assert msa(answer) == "AA"
    assert (await service.mpi.find_record(ref("HOSPA", "C3"))).identifier == "C3"


async def test_A47_changes_the_identifier(service: Hl7Service, client: MLLPClient) -> None:
    await client.send(adt("A28", "C4^^^HOSPA"))
    answer = reply(await client.send(adt("A47", "C5^^^HOSPA", mrg="C4^^^HOSPA",
                                         structure="ADT_A30")))
    assert msa(answer) == "AA"
    assert qak(reply(await client.send(pix_query("C5^^^HOSPA")))) == "OK"
    assert qak(reply(await client.send(pix_query("C4^^^HOSPA")))) == "AE"


async def test_A47_to_an_identifier_of_another_patient_is_AE_205(client: MLLPClient) -> None:
    await client.send(adt("A28", "C6^^^HOSPA"))
    await client.send(adt("A28", "C7^^^HOSPA", name="OTHER^ONE", dob="19990909"))
    answer = reply(await client.send(adt("A47", "C7^^^HOSPA", mrg="C6^^^HOSPA")))
    assert msa(answer) == "AE" and errs(answer) == [("PID^1^3^1^1", "205")]


async def test_A47_of_an_unknown_identifier_is_AE_204_at_MRG_1(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A47", "C9^^^HOSPA", mrg="C8^^^HOSPA")))
    assert msa(answer) == "AE" and errs(answer) == [("MRG^1^1^1^1", "204")]


async def test_A24_links_even_unknown_records_and_A37_unlinks(client: MLLPClient) -> None:
    answer = reply(await client.send(two_pids("A24", "L1^^^HOSPA", "L2^^^LAB")))
    assert msa(answer) == "AA" and answer.msh.field(9) == "ACK^A24^ACK"
    linked = reply(await client.send(pix_query("L1^^^HOSPA", domains="^^^LAB")))
    assert pid3(linked.segment("PID")) == ["L2^^^LAB&1.2.3.4.5.3&ISO"]  # type: ignore[arg-type]
    assert msa(reply(await client.send(two_pids("A37", "L1^^^HOSPA", "L2^^^LAB")))) == "AA"
    unlinked = reply(await client.send(pix_query("L1^^^HOSPA", domains="^^^LAB")))
    assert (msa(unlinked), qak(unlinked)) == ("AA", "NF")


async def test_A37_of_unknown_record_is_AE_204_at_the_second_PID(client: MLLPClient) -> None:
    await client.send(adt("A28", "L3^^^HOSPA"))
    answer = reply(await client.send(two_pids("A37", "L3^^^HOSPA", "L4^^^HOSPA")))
    assert msa(answer) == "AE" and errs(answer) == [("PID^2^3^1^1", "204")]


async def test_A37_from_a_sender_not_allowed_in_a_records_domain_changes_nothing(
    client: MLLPClient,
) -> None:
    """ADT_A may write in HOSPA and LAB, not in HOSPB: an A37 naming a HOSPB record is
    refused at that record's PID-3.4 (HL7 0357: 204) and the records stay linked."""
    await client.send(adt("A28", "U1^^^HOSPA", name="UNLINK^UNA", dob="19551111"))
    await client.send(adt("A28", "U2^^^HOSPB", name="UNLINK^UNA", dob="19551111",
                          app="ADT_B"))
    linked = reply(await client.send(pix_query("U1^^^HOSPA", domains="^^^HOSPB")))
    assert pid3(linked.segment("PID")) == ["U2^^^HOSPB&1.2.3.4.5.2&ISO"]  # type: ignore[arg-type]
    answer = reply(await client.send(two_pids("A37", "U1^^^HOSPA", "U2^^^HOSPB")))
    assert msa(answer) == "AE" and errs(answer) == [("PID^2^3^1^4", "204")]
    still = reply(await client.send(pix_query("U1^^^HOSPA", domains="^^^HOSPB")))
    assert pid3(still.segment("PID")) == ["U2^^^HOSPB&1.2.3.4.5.2&ISO"]  # type: ignore[arg-type]


async def test_A24_with_one_PID_is_AE_100(client: MLLPClient) -> None:
    text = "\r".join([msh("ADT^A24^ADT_A24"), "EVN||2026", "PID|1||L5^^^HOSPA||A^B"]) + "\r"
    answer = reply(await client.send(text))
    assert msa(answer) == "AE" and errs(answer) == [("PID^2", "100")]
