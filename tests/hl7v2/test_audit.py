"""ATNA audit of the HL7 v2 door (ITI-20; docs/audit.md): every feed, query and ITI-10
notification leaves its record with the IHE event id, type, action, outcome, participants and
the patients as CX identifiers, over a real MLLP server and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os

from identity.audit.record import DESTINATION, SOURCE, Action, AuditRecord, Outcome
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.hl7v2.tokenizer import parse_message
from identity.store.audit import AuditStore
from tests.hl7v2.conftest import Start
from tests.hl7v2.messages import adt, msa, pdq_query, pix_query, qak, reply
from tests.hl7v2.test_iti10_notify import Consumer, consumer, two_pids  # noqa: F401
from tests.waiting import eventually

HOSPA, HOSPB, LAB = "1.2.3.4.5.1", "1.2.3.4.5.2", "1.2.3.4.5.3"


def cx(value: str, oid: str) -> str:
    return f"{value}^^^&{oid}&ISO"


async def records(service: Hl7Service, *, flush: bool = True) -> list[AuditRecord]:
    """Every audit record, oldest first (``flush``: the queued ones written first; a query's
    are made by a callback the event loop runs after the reply is written)."""
    await asyncio.sleep(0)
    if flush:
        await service.mpi.audit.flush()
    async with service.db.connection() as conn:
        stored = await AuditStore(conn).search(limit=1000)
    return [s.record for s in reversed(stored)]


def assert_door_participants(record: AuditRecord, sender: str) -> None:
    """The sender (MSH-3|MSH-4, its IP address, Source) and us (IDENTITY|MPI of [hl7], our
    process id, Destination)."""
    caller, us = record.participants
    assert caller.user_id == sender and caller.has_role(SOURCE)
    assert (caller.network_id, int(caller.network_type or 0)) == ("127.0.0.1", 2)
    assert us.user_id == "IDENTITY|MPI" and us.has_role(DESTINATION)
    assert us.alternative_user_id == str(os.getpid())


def assert_no_demographics(record: AuditRecord, *values: str) -> None:
    text = json.dumps(record.to_json())
    if record.query is not None:
        text += record.query.decode("utf-8")
    for value in values:
        assert value not in text, f"{value!r} in an audit record"


def event(record: AuditRecord) -> tuple[str, str, str, Action, Outcome]:
    return (record.transaction, record.event_id.code, record.event_types[0].code, record.action,
            record.outcome)  # fmt: skip


# ------------------------------------------------------------------------------------ feeds


async def test_a04_and_a08_are_recorded_in_the_change_transaction(
    service: Hl7Service, client: MLLPClient
) -> None:
    message = adt("A04", "AU1^^^HOSPA", control="AUD-A04")
    assert msa(reply(await client.send(message))) == "AA"
    # written with the change: there before anything queued is flushed
    [created] = await records(service, flush=False)
    assert event(created) == ("ITI-8", "110110", "ITI-8", Action.CREATE, Outcome.SUCCESS)
    assert created.patients == (cx("AU1", HOSPA),)
    assert (created.message_id, created.message_id_kind) == ("AUD-A04", "MSH-10")
    assert_door_participants(created, "ADT_A|FAC")
    assert_no_demographics(created, "SMITH", "JOHN", "19800312")

    # an A08 with a second identifier (an OID-only authority): U, both identifiers
    a08 = adt("A08", "AU1^^^HOSPA~N77^^^&2.16.840.1.113883.4.1&ISO", control="AUD-A08")
    assert msa(reply(await client.send(a08))) == "AA"
    updated = (await records(service, flush=False))[-1]
    assert event(updated) == ("ITI-8", "110110", "ITI-8", Action.UPDATE, Outcome.SUCCESS)
    assert updated.patients == (cx("AU1", HOSPA), cx("N77", "2.16.840.1.113883.4.1"))

    # a re-sent copy is answered with the stored ACK and not audited again
    assert msa(reply(await client.send(a08))) == "AA"
    assert len(await records(service)) == 2


async def test_a40_is_two_records_d_for_the_retired_and_u_for_the_survivor(
    service: Hl7Service, client: MLLPClient
) -> None:
    for pid in ("M1^^^HOSPA", "M2^^^HOSPA", "M3^^^HOSPA"):
        assert msa(reply(await client.send(adt("A04", pid)))) == "AA"
    before = len(await records(service))
    assert msa(reply(await client.send(adt("A40", "M1^^^HOSPA", mrg="M2^^^HOSPA",
                                           control="AUD-A40")))) == "AA"  # fmt: skip
    retired, survivor = (await records(service))[before:]
    assert event(retired) == ("ITI-30", "110110", "ITI-30", Action.DELETE, Outcome.SUCCESS)
    assert retired.patients == (cx("M2", HOSPA),)
    assert event(survivor) == ("ITI-30", "110110", "ITI-30", Action.UPDATE, Outcome.SUCCESS)
    assert survivor.patients == (cx("M1", HOSPA),)
    assert retired.message_id == survivor.message_id == "AUD-A40"
    assert_door_participants(retired, "ADT_A|FAC")

    # the same merge in v2.3.1 is ITI-8's (the version ITI-8 is defined in)
    assert msa(reply(await client.send(adt("A40", "M1^^^HOSPA", mrg="M3^^^HOSPA",
                                           version="2.3.1")))) == "AA"  # fmt: skip
    assert [(r.transaction, r.action) for r in (await records(service))[before + 2:]] == [
        ("ITI-8", Action.DELETE), ("ITI-8", Action.UPDATE)]


async def test_a24_and_a37_record_each_patient(service: Hl7Service, client: MLLPClient) -> None:
    assert msa(reply(await client.send(two_pids("A24", "L1^^^HOSPA", "L2^^^LAB")))) == "AA"
    first, second = await records(service)
    assert event(first) == ("ITI-30", "110110", "ITI-30", Action.UPDATE, Outcome.SUCCESS)
    assert (first.patients, second.patients) == ((cx("L1", HOSPA),), (cx("L2", LAB),))
    assert_door_participants(second, "ADT_A|FAC")

    assert msa(reply(await client.send(two_pids("A37", "L1^^^HOSPA", "L2^^^LAB")))) == "AA"
    unlinked = (await records(service))[2:]
    assert [(r.transaction, r.action, r.patients) for r in unlinked] == [
        ("ITI-30", Action.UPDATE, (cx("L1", HOSPA),)),
        ("ITI-30", Action.UPDATE, (cx("L2", LAB),)),
    ]


async def test_a_refused_a04_leaves_its_failure_record_and_nothing_else(
    service: Hl7Service, client: MLLPClient
) -> None:
    # ADT_A may not assign identifiers in HOSPB (its sources are ADT_B)
    answer = reply(await client.send(adt("A04", "R1^^^HOSPB", control="AUD-R1")))
    assert msa(answer) == "AE"
    [refused] = await records(service)
    assert event(refused) == ("ITI-8", "110110", "ITI-8", Action.CREATE, Outcome.MINOR_FAILURE)
    assert refused.patients == (cx("R1", HOSPB),)
    assert refused.outcome_description and "SourceNotAuthorized" in refused.outcome_description
    assert_door_participants(refused, "ADT_A|FAC")
    async with service.db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM source_record") == 0
        assert await conn.fetchval("SELECT count(*) FROM person") == 0


async def test_a_malformed_feed_is_recorded_without_the_value_it_quoted(
    service: Hl7Service, client: MLLPClient
) -> None:
    answer = reply(await client.send(adt("A04", "BD1^^^HOSPA", dob="1980x312")))
    assert msa(answer) == "AE"
    [refused] = await records(service)
    assert event(refused) == ("ITI-8", "110110", "ITI-8", Action.CREATE, Outcome.MINOR_FAILURE)
    assert refused.patients == (cx("BD1", HOSPA),)
    assert refused.outcome_description == "FieldError, HL7 0357 102 at PID^1^7"
    assert_no_demographics(refused, "1980x312", "SMITH")


# ---------------------------------------------------------------------------------- queries


async def test_pix_query_names_the_queried_and_the_returned_identifiers(
    service: Hl7Service, client: MLLPClient
) -> None:
    assert msa(reply(await client.send(two_pids("A24", "P1^^^HOSPA", "P2^^^LAB")))) == "AA"
    before = len(await records(service))
    query = pix_query("P1^^^HOSPA", tag="PIXTAG")
    answer = reply(await client.send(query))
    assert (msa(answer), qak(answer)) == ("AA", "OK")
    enterprise = next(rep.raw for rep in answer.segment("PID").repetitions(3)  # type: ignore[union-attr]
                      if "MPI" in rep.raw).split("^")[0]  # fmt: skip
    [record] = (await records(service))[before:]
    assert event(record) == ("ITI-9", "110112", "ITI-9", Action.EXECUTE, Outcome.SUCCESS)
    assert set(record.patients) == {
        cx("P1", HOSPA), cx("P2", LAB), cx(enterprise, "1.3.6.1.4.1.21367.2026.1.1")}
    assert record.patients[0] == cx("P1", HOSPA)  # the queried identifier first
    assert record.query == query.encode("ascii")  # the whole QBP, as IHE asks (identifiers)
    assert (record.query_id, record.message_id) == ("PIXTAG", parse_message(query).control_id)
    assert_door_participants(record, "PIXC|FAC")

    # a query refused (unknown identifier): outcome 4 with the reason, the queried patient
    answer = reply(await client.send(pix_query("NOBODY^^^HOSPA")))
    assert msa(answer) == "AE"
    refused = (await records(service))[-1]
    assert event(refused) == ("ITI-9", "110112", "ITI-9", Action.EXECUTE, Outcome.MINOR_FAILURE)
    assert refused.patients == (cx("NOBODY", HOSPA),)
    assert refused.outcome_description and refused.outcome_description.startswith(
        "HL7 0357 204 at QPD^1^3^1^1")


async def test_pdq_query_is_recorded_per_patient_with_its_demographics_redacted(
    service: Hl7Service, client: MLLPClient
) -> None:
    for pid, name in (("D1^^^HOSPA", "SMITH^JOHN"), ("D2^^^HOSPA", "SMITH^JANE"),
                      ("D3^^^HOSPA", "JONES^JOHN")):  # fmt: skip
        assert msa(reply(await client.send(adt("A04", pid, name=name)))) == "AA"
    before = len(await records(service))
    answer = reply(await client.send(pdq_query("@PID.5.1.1^SMITH~@PID.7^19800312",
                                               tag="PDQTAG")))  # fmt: skip
    assert (msa(answer), qak(answer)) == ("AA", "OK")
    found = (await records(service))[before:]
    assert len(found) == 2  # one record per patient returned
    assert {event(r) for r in found} == {
        ("ITI-21", "110112", "ITI-21", Action.EXECUTE, Outcome.SUCCESS)}
    # each its identifiers as returned: the enterprise ID and the HOSPA record's
    assert sorted(len(r.patients) for r in found) == [2, 2]
    assert {p for r in found for p in r.patients if HOSPA in p} == {cx("D1", HOSPA),
                                                                    cx("D2", HOSPA)}
    for record in found:
        assert_door_participants(record, "PDQC|FAC")
        assert record.query_id == "PDQTAG"
        assert record.query is not None
        stored = parse_message(record.query)
        qpd = stored.segment("QPD")
        assert qpd is not None and qpd.field(3) == "@PID.5.1.1^*~@PID.7^*"
        assert [s.name for s in stored] == ["MSH", "QPD", "RCP"]
        assert_no_demographics(record, "SMITH", "JOHN", "JANE", "19800312")

    # nobody found: one record without a patient
    answer = reply(await client.send(pdq_query("@PID.3.1^NOBODY~@PID.3.4.1^HOSPA")))
    assert qak(answer) == "NF"
    [none] = (await records(service))[before + 2:]
    assert (none.patients, none.outcome) == ((), Outcome.SUCCESS)


# ---------------------------------------------------------------------------------- ITI-10


async def test_iti10_notification_is_recorded_with_the_consumer_and_the_ids_sent(
    start_service: Start, consumer: Consumer  # noqa: F811
) -> None:
    service = await start_service(**consumer.settings())
    async with MLLPClient("127.0.0.1", service.port) as client:
        assert msa(reply(await client.send(adt("A04", "N1^^^HOSPA")))) == "AA"
    await consumer.wait_for(1)

    async def notified() -> list[AuditRecord]:
        return [r for r in await records(service) if r.transaction == "ITI-10"]

    await eventually(notified, 10.0, what="the ITI-10 audit record")
    [record] = await notified()
    assert event(record) == ("ITI-10", "110110", "ITI-10", Action.UPDATE, Outcome.SUCCESS)
    assert record.patients == (cx("N1", HOSPA),)
    assert record.message_id == consumer.messages[0].control_id
    us, destination = record.participants
    assert (us.user_id, us.requestor, us.has_role(SOURCE)) == ("IDENTITY|MPI", True, True)
    assert us.alternative_user_id == str(os.getpid())
    assert (destination.user_id, destination.network_id) == ("PIXC|PIXF", "127.0.0.1")
    assert destination.has_role(DESTINATION) and not destination.requestor
