"""The core's audit trail: a change's records are written in its transaction, a refused or
rolled-back command leaves only its failure record, reads are written in the background."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest

from identity.audit.record import AuditRecord, Outcome, cx, fhir_client, hl7_peer
from identity.errors import SourceNotAuthorized
from identity.model import RegisterResult
from identity.mpi import Envelope, Mpi, Register
from tests.core.helpers import person
from tests.waiting import eventually


def _feed(mpi: Mpi, value: str) -> object:
    def audit(outcome: Outcome, reason: str | None) -> Sequence[AuditRecord]:
        return [mpi.audit.auditor.patient_feed(
            "ITI-8", action="C", caller=hl7_peer("LIS", "LAB", "127.0.0.1"),
            patient=[cx(value, namespace="HOSPA")], message_id="M-" + value,
            outcome=outcome, description=reason)]  # fmt: skip

    return audit


async def _rows(mpi: Mpi) -> list[tuple[str, int, list[str]]]:
    async with mpi.db.read() as conn:
        rows = await conn.fetch(
            "SELECT transaction, outcome, patients FROM audit_event ORDER BY id"
        )
    return [(r["transaction"], r["outcome"], list(r["patients"])) for r in rows]


def _rows_of(mpi: Mpi) -> Callable[[], Awaitable[list[tuple[str, int, list[str]]]]]:
    return lambda: _rows(mpi)


async def test_a_change_is_audited_in_its_transaction(mpi: Mpi) -> None:
    envelope = Envelope(actor="hl7:ADT_A|FAC", source="ADT_A", audit=_feed(mpi, "AU1"))
    await mpi.handle(Register(subject=person("HOSPA", "AU1")), envelope)
    # written with the change: nothing queued for later
    assert await _rows(mpi) == [("ITI-8", 0, ["AU1^^^HOSPA"])]


async def test_a_refused_change_leaves_only_its_failure_record(mpi: Mpi) -> None:
    envelope = Envelope(actor="hl7:LIS|LAB", source="LIS", audit=_feed(mpi, "AU2"))
    with pytest.raises(SourceNotAuthorized):
        await mpi.handle(Register(subject=person("HOSPA", "AU2")), envelope)
    await mpi.audit.flush()
    rows = await _rows(mpi)
    assert rows == [("ITI-8", 4, ["AU2^^^HOSPA"])]
    async with mpi.db.read() as conn:
        assert await conn.fetchval("SELECT count(*) FROM source_record") == 0
        reason = await conn.fetchval("SELECT record->>'outcome_description' FROM audit_event")
    assert "SourceNotAuthorized" in reason


async def test_a_rolled_back_atomic_block_keeps_no_success_record(mpi: Mpi) -> None:
    ok = Envelope(actor="fhir:ADT_A", source="ADT_A", audit=_feed(mpi, "AU3"))
    bad = Envelope(actor="fhir:LIS", source="LIS", audit=_feed(mpi, "AU4"))
    with pytest.raises(SourceNotAuthorized):
        async with mpi.atomic():
            await mpi.handle(Register(subject=person("HOSPA", "AU3")), ok)
            await mpi.handle(Register(subject=person("HOSPA", "AU4")), bad)
    await mpi.audit.flush()
    assert await _rows(mpi) == [("ITI-8", 4, ["AU4^^^HOSPA"])]


async def test_reads_are_written_in_the_background(mpi: Mpi) -> None:
    records = mpi.audit.auditor.query(
        "ITI-9", caller=hl7_peer("PIXC", "FAC", "127.0.0.1"), query=b"MSH|...",
        patients=[[cx("AU5", namespace="HOSPA")]], message_id="Q1")  # fmt: skip
    mpi.audit.later(records)
    await mpi.audit.stop()  # stopping writes what is queued
    assert await _rows(mpi) == [("ITI-9", 0, ["AU5^^^HOSPA"])]


async def test_a_failure_queued_first_inside_an_atomic_block_is_written(mpi: Mpi) -> None:
    # The background writer starts with the first queued record; started from inside an
    # atomic block it must not write on that block's connection, rolled back and released.
    bad = Envelope(actor="fhir:LIS", source="LIS", audit=_feed(mpi, "AU6"))
    with pytest.raises(SourceNotAuthorized):
        async with mpi.atomic():
            await mpi.handle(Register(subject=person("HOSPA", "AU6")), bad)
    assert mpi.audit._task is not None
    # written by the writer's own flush, not the test's
    await eventually(_rows_of(mpi), what="the refused command's record is written")
    assert await _rows(mpi) == [("ITI-8", 4, ["AU6^^^HOSPA"])]
    assert not mpi.audit._task.done()


async def test_success_records_can_be_made_from_the_commands_result(mpi: Mpi) -> None:
    def created_or_updated(result: RegisterResult) -> Sequence[AuditRecord]:
        return [mpi.audit.auditor.patient_feed(
            "ITI-104", action="C" if result.created else "U", caller=fhir_client("ADT_A"),
            patient=[cx(result.record.identifier, namespace="HOSPA")])]  # fmt: skip

    for _ in range(2):
        envelope = Envelope(actor="fhir:ADT_A", source="ADT_A", audit=_feed(mpi, "AU7"),
                            audit_result=created_or_updated)  # fmt: skip
        await mpi.handle(Register(subject=person("HOSPA", "AU7")), envelope)
    async with mpi.db.read() as conn:
        actions = await conn.fetch("SELECT transaction, action FROM audit_event ORDER BY id")
    assert [tuple(r) for r in actions] == [("ITI-104", "C"), ("ITI-104", "U")]


async def test_deferred_records_are_made_by_the_writer_and_a_failure_holds_none_back(
    mpi: Mpi,
) -> None:
    def records(value: str) -> Sequence[AuditRecord]:
        return mpi.audit.auditor.query(
            "ITI-9", caller=hl7_peer("PIXC", "FAC", "127.0.0.1"), query=b"MSH|...",
            patients=[[cx(value, namespace="HOSPA")]])  # fmt: skip

    def broken() -> Sequence[AuditRecord]:
        raise RuntimeError("a bug in a door")

    made: list[str] = []
    mpi.audit.defer(lambda: made.append("AU8") or records("AU8"))
    mpi.audit.defer(broken)
    mpi.audit.later(records("AU9"))
    assert made == []  # not on the caller's path
    await mpi.audit.flush()
    assert made == ["AU8"]
    assert await _rows(mpi) == [("ITI-9", 0, ["AU8^^^HOSPA"]), ("ITI-9", 0, ["AU9^^^HOSPA"])]


async def test_a_record_postgresql_refuses_is_dropped_not_retried_forever(mpi: Mpi) -> None:
    """A value jsonb cannot hold (a NUL character, from a refused message) must not hold back
    the records queued behind it."""
    auditor = mpi.audit.auditor
    caller = hl7_peer("PIXC", "FAC", "127.0.0.1")
    bad = auditor.query("ITI-9", caller=caller, query=b"QBP", message_id="Q\x00X",
                        patients=[[cx("NUL\x00ID", namespace="HOSPA")]])
    good = auditor.query("ITI-9", caller=caller, query=b"QBP", message_id="Q2",
                         patients=[[cx("AU6", namespace="HOSPA")]])
    mpi.audit.later([*bad, *good])
    await mpi.audit.flush()
    assert await _rows(mpi) == [("ITI-9", 0, ["AU6^^^HOSPA"])]
