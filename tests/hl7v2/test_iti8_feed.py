"""ITI-8 Patient Identity Feed over real MLLP sockets against the real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import hl7
import hl7.mllp
import pytest

from identity.hl7v2.handler import Hl7Handler
from identity.hl7v2.mllp import MLLPClient, MLLPServer
from identity.hl7v2.service import Hl7Service
from identity.model import AuthorityRef, IdentifierRef
from identity.mpi import Mpi
from identity.store.db import Database
from tests.hl7v2.messages import adt, errs, msa, next_id, pix_query, qak, reply, strictly_valid

HOSPA = "^^^HOSPA&1.2.3.4.5.1&ISO"


def ref(domain: str, value: str) -> IdentifierRef:
    return IdentifierRef(value=value, authority=AuthorityRef(namespace=domain))


@pytest.mark.parametrize("trigger", ["A01", "A04", "A05"])
async def test_admit_register_preadmit_create_record_and_ack_AA(
    service: Hl7Service, client: MLLPClient, trigger: str
) -> None:
    control = next_id()
    answer = reply(await client.send(adt(trigger, f"P1{HOSPA}", control=control)))
    assert msa(answer) == "AA"
    assert answer.segment("MSA").value(2) == control  # type: ignore[union-attr]
    msh = answer.msh
    assert (msh.value(3), msh.value(4), msh.value(5), msh.value(6)) == (
        "IDENTITY", "MPI", "ADT_A", "FAC")
    assert msh.field(9) == f"ACK^{trigger}^ACK" and msh.value(12) == "2.5"
    assert answer.segment("ERR") is None
    record = await service.mpi.find_record(ref("HOSPA", "P1"))
    assert record.demographics.names[0].family == "SMITH"  # type: ignore[index]
    assert record.demographics.birth_date == "1980-03-12"


async def test_ack_parses_as_hl7apy_ACK_structure(client: MLLPClient) -> None:
    raw = await client.send(adt("A04", f"P2{HOSPA}"))
    parsed = strictly_valid(raw)
    assert parsed.msh.msh_9.to_er7() == "ACK^A04^ACK"
    assert parsed.msa.msa_1.to_er7() == "AA"


async def test_v231_feed_is_accepted_and_ack_echoes_version(
    service: Hl7Service, client: MLLPClient
) -> None:
    answer = reply(await client.send(adt("A04", "P3^^^HOSPA", version="2.3.1",
                                         structure="ADT_A01")))
    assert msa(answer) == "AA" and answer.version == "2.3.1"


async def test_A08_updates_empty_keeps_and_explicit_null_deletes(
    service: Hl7Service, client: MLLPClient
) -> None:
    await client.send(adt("A04", f"P4{HOSPA}", extra_pid="|||1 Main St^^Springfield^IL^62701"))
    answer = reply(await client.send(adt("A08", f"P4{HOSPA}", name="SMITH^JANE", dob='""',
                                         sex="")))
    assert msa(answer) == "AA"
    record = await service.mpi.find_record(ref("HOSPA", "P4"))
    assert record.demographics.names[0].given == ("JANE",)  # type: ignore[index]
    assert record.demographics.birth_date is None  # "" deleted it
    assert record.demographics.sex == "M"  # empty: unchanged
    assert record.demographics.addresses[0].city == "Springfield"  # type: ignore[index]


async def test_A08_repeating_the_stored_demographics_is_AA_and_writes_nothing(
    service: Hl7Service, client: MLLPClient
) -> None:
    await client.send(adt("A04", f"P40{HOSPA}", extra_pid="|||1 Main St^^Springfield^IL^62701"))
    before = await service.mpi.find_record(ref("HOSPA", "P40"))
    history = await service.mpi.history(record_id=before.id)
    for message in (adt("A08", f"P40{HOSPA}"), adt("A08", f"P40{HOSPA}", sex="")):
        assert msa(reply(await client.send(message))) == "AA"  # a new MSH-10 each time
    after = await service.mpi.find_record(ref("HOSPA", "P40"))
    assert (after.version, after.updated_at) == (before.version, before.updated_at)
    assert await service.mpi.history(record_id=before.id) == history
    assert msa(reply(await client.send(adt("A08", f"P40{HOSPA}", sex="F")))) == "AA"
    assert (await service.mpi.find_record(ref("HOSPA", "P40"))).version == before.version + 1


async def test_unknown_domain_is_AE_204_at_PID_3_4(client: MLLPClient) -> None:
    raw = await client.send(adt("A04", "P5^^^NOWHERE"))
    strictly_valid(raw)
    answer = reply(raw)
    assert msa(answer) == "AE"
    assert errs(answer) == [("PID^1^3^1^4", "204")]
    err = answer.segment("ERR")
    assert err is not None and err.value(4) == "E"


async def test_source_not_owning_the_domain_is_refused_naming_PID_3(
    service: Hl7Service, client: MLLPClient
) -> None:
    answer = reply(await client.send(adt("A04", "P6^^^HOSPB", app="ADT_A")))
    assert msa(answer) == "AE"
    [(location, code)] = errs(answer)
    assert location.startswith("PID^1^3") and code == "204"
    with pytest.raises(Exception, match="P6"):
        await service.mpi.find_record(ref("HOSPB", "P6"))


async def test_missing_authority_is_completed_when_the_source_owns_one_domain(
    service: Hl7Service, client: MLLPClient
) -> None:
    assert msa(reply(await client.send(adt("A04", "P7", app="ADT_B")))) == "AA"
    assert (await service.mpi.find_record(ref("HOSPB", "P7"))).identifier == "P7"
    # ADT_A owns HOSPA and LAB: ambiguous, rejected
    answer = reply(await client.send(adt("A04", "P8", app="ADT_A")))
    assert msa(answer) == "AE"
    assert errs(answer) == [("PID^1^3^1^4", "101")]


async def test_foreign_identifiers_and_PID_19_are_kept_as_other_identifiers(
    service: Hl7Service, client: MLLPClient
) -> None:
    pid3 = f"P9{HOSPA}~N-77^^^NATIONAL&2.16.840.1.113883.4.1&ISO"
    answer = reply(await client.send(adt("A04", pid3, extra_pid="|||||||||||123-45-6789")))
    assert msa(answer) == "AA"
    record = await service.mpi.find_record(ref("HOSPA", "P9"))
    assert {(o.domain, o.value) for o in record.other_identifiers} == {
        ("NATIONAL", "N-77"), ("NATIONAL", "123-45-6789")}


async def test_missing_name_is_AE_101_at_PID_5(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A04", f"P10{HOSPA}", name="")))
    assert msa(answer) == "AE" and errs(answer) == [("PID^1^5", "101")]


async def test_bad_birth_date_is_AE_102_at_PID_7(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A04", f"P11{HOSPA}", dob="19801345")))
    assert msa(answer) == "AE" and errs(answer) == [("PID^1^7", "102")]


async def test_redelivered_message_gets_the_same_ack_and_is_applied_once(
    service: Hl7Service, client: MLLPClient
) -> None:
    message = adt("A04", f"P12{HOSPA}")
    first = await client.send(message)
    second = await client.send(message)
    assert first == second and msa(reply(first)) == "AA"
    record = await service.mpi.find_record(ref("HOSPA", "P12"))
    history = await service.mpi.history(record_id=record.id)
    assert len({event.command_id for event in history}) == 1
    # another message (an A08) reusing that MSH-10 from the same sender is refused, not
    # answered with the first one's AA, and not applied (issue 16 item 5)
    control = reply(first).segment("MSA").value(2)  # type: ignore[union-attr]
    again = reply(await client.send(adt("A08", f"P12{HOSPA}", name="JONES^X", control=control)))
    assert msa(again) == "AE" and errs(again) == [("MSH^1^10", "205")]
    record = await service.mpi.find_record(ref("HOSPA", "P12"))
    assert record.demographics.names[0].family == "SMITH"  # type: ignore[index]
    # and the first message re-sent still gets its own reply
    assert await client.send(message) == first


async def test_refusal_is_remembered_and_repeated(client: MLLPClient) -> None:
    message = adt("A04", "P13^^^NOWHERE")
    assert await client.send(message) == await client.send(message)


async def test_a_message_control_id_reused_for_other_content_is_refused_205(
    service: Hl7Service, client: MLLPClient
) -> None:
    """The same sender and MSH-10 with the same content is the same message and gets its first
    reply; with other content it is another message reusing the id: AE 205 at MSH-10, nothing
    applied, and the id keeps its first reply (issue 16 item 5)."""
    refused = await client.send(adt("A04", f"P15{HOSPA}", name="", control="C15"))
    assert msa(reply(refused)) == "AE"
    assert await client.send(adt("A04", f"P15{HOSPA}", name="", control="C15")) == refused
    reused = reply(await client.send(adt("A04", f"P15{HOSPA}", control="C15")))
    assert msa(reused) == "AE" and errs(reused) == [("MSH^1^10", "205")]
    with pytest.raises(Exception, match="P15"):
        await service.mpi.find_record(ref("HOSPA", "P15"))
    accepted = await client.send(adt("A04", f"P16{HOSPA}", control="C16"))
    assert msa(reply(accepted)) == "AA"
    changed = reply(await client.send(adt("A04", f"P16{HOSPA}", name="", control="C16")))
    assert msa(changed) == "AE" and errs(changed) == [("MSH^1^10", "205")]
    assert await client.send(adt("A04", f"P16{HOSPA}", control="C16")) == accepted


async def test_database_unreachable_is_AE_207_and_the_resend_succeeds_later(
    service: Hl7Service, client: MLLPClient, run_database_url: str, schema: str
) -> None:
    broken_db = await Database.connect(run_database_url, min_size=1, max_size=2,
                                       server_settings={"search_path": schema})
    broken = Mpi(broken_db, service.settings)
    await broken.start()
    server = MLLPServer(Hl7Handler(broken, service.settings).handle, "127.0.0.1", 0)
    await server.start()
    await broken_db.close()  # the database is gone for this Mpi
    message = adt("A04", f"P14{HOSPA}")
    try:
        async with MLLPClient("127.0.0.1", server.port) as down:
            answer = reply(await down.send(message))
        assert msa(answer) == "AE" and errs(answer) == [("", "207")]
    finally:
        await server.stop(grace=1.0)
    with pytest.raises(Exception, match="P14"):
        await service.mpi.find_record(ref("HOSPA", "P14"))
    # the same message, re-sent once the database is back, is applied
    assert msa(reply(await client.send(message))) == "AA"
    assert (await service.mpi.find_record(ref("HOSPA", "P14"))).identifier == "P14"


@pytest.mark.parametrize(
    ("kind", "location", "code"),
    [("ORM^O01^ORM_O01", "MSH^1^9^1^1", "200"), ("ADT^A03^ADT_A03", "MSH^1^9^1^2", "201"),
     ("QBP^Q21^QBP_Q21", "MSH^1^9^1^2", "201")],
)
async def test_unsupported_message_is_AR_with_exact_location(
    client: MLLPClient, kind: str, location: str, code: str
) -> None:
    text = (f"MSH|^~\\&|ADT_A|FAC|IDENTITY|MPI|20260101||{kind}|{next_id()}|P|2.5\r"
            f"PID|1||X1{HOSPA}||A^B\r")
    answer = reply(await client.send(text))
    assert msa(answer) == "AR" and errs(answer) == [(location, code)]


async def test_unsupported_version_is_AR_203(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A04", f"P15{HOSPA}", version="2.2")))
    assert msa(answer) == "AR" and errs(answer) == [("MSH^1^12", "203")]


async def test_garbage_is_answered_AR(client: MLLPClient) -> None:
    answer = reply(await client.send(b"MSH|^~\\&|A|B|C|D|2026||ADT^A04|X1|P|2.5\rP@D|1\r"))
    assert msa(answer) == "AR" and answer.segment("MSA").value(2) == "X1"  # type: ignore[union-attr]
    assert errs(answer)[0][1] == "100"


async def test_A40_merge_moves_the_retired_identifier_to_the_survivor(
    service: Hl7Service, client: MLLPClient
) -> None:
    await client.send(adt("A04", f"M1{HOSPA}", name="MERGE^ANNA", dob="19700101", sex="F"))
    await client.send(adt("A04", f"M2{HOSPA}", name="DIFFERENT^BOB", dob="19900202"))
    answer = reply(await client.send(adt("A40", f"M1{HOSPA}", name="MERGE^ANNA",
                                         mrg=f"M2{HOSPA}")))
    assert msa(answer) == "AA"
    pix = reply(await client.send(pix_query(f"M2{HOSPA}")))
    assert qak(pix) == "AE"  # the retired identifier is no longer active
    # an unknown MRG-1 does nothing and is no error
    assert msa(reply(await client.send(adt("A40", f"M1{HOSPA}", mrg=f"NOPE{HOSPA}")))) == "AA"


async def test_A40_without_MRG_is_AE_100(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A40", f"M3{HOSPA}")))
    assert msa(answer) == "AE" and errs(answer) == [("MRG^1", "100")]


async def test_independent_hl7_client_gets_ack(service: Hl7Service) -> None:
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", service.port)
    try:
        writer.writemessage(hl7.parse(adt("A04", f"P16{HOSPA}")))
        await writer.drain()
        answer: Any = await asyncio.wait_for(reader.readmessage(), 10)
    finally:
        writer.close()
    assert str(answer.segment("MSA")[1]) == "AA"


async def test_reply_sender_is_the_requests_receiver_or_our_configured_name(
    client: MLLPClient,
) -> None:
    text = adt("A04", f"P17{HOSPA}").replace("|IDENTITY|MPI|", "|PIXMGR^1.2.9^ISO|SITE|", 1)
    answer = reply(await client.send(text))
    assert (answer.msh.field(3), answer.msh.field(4)) == ("PIXMGR^1.2.9^ISO", "SITE")
    text = adt("A04", f"P18{HOSPA}").replace("|IDENTITY|MPI|", "|||", 1)
    answer = reply(await client.send(text))
    assert (answer.msh.field(3), answer.msh.field(4)) == ("IDENTITY", "MPI")


async def test_same_message_on_two_connections_at_once_is_applied_once(
    service: Hl7Service,
) -> None:
    message = adt("A04", f"P19{HOSPA}")
    async with (MLLPClient("127.0.0.1", service.port) as one,
                MLLPClient("127.0.0.1", service.port) as two):
        first, second = await asyncio.gather(one.send(message), two.send(message))
    assert first == second and msa(reply(first)) == "AA"
    record = await service.mpi.find_record(ref("HOSPA", "P19"))
    history = await service.mpi.history(record_id=record.id)
    assert len({event.command_id for event in history}) == 1


async def test_namespace_and_oid_that_disagree_are_AE_102_at_PID_3_4(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A04", "P20^^^HOSPA&1.2.3.4.5.2&ISO")))
    assert msa(answer) == "AE" and errs(answer) == [("PID^1^3^1^4", "102")]


async def test_unsupported_character_set_is_AE_103_at_MSH_18(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A04", f"P21{HOSPA}", charset="EBCDIC").encode()))
    assert msa(answer) == "AE" and errs(answer) == [("MSH^1^18", "103")]


async def test_v231_refusal_fills_ERR_1_as_well(client: MLLPClient) -> None:
    answer = reply(await client.send(adt("A04", "P22^^^NOWHERE", version="2.3.1")))
    err = answer.segment("ERR")
    assert err is not None and err.field(1) == "PID^1^3^204&Unknown key identifier&HL70357"
    assert err.field(2) == "PID^1^3^1^4"
