"""The neutral audit record: what each helper fills in, the JSON round trip, identifiers only."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import pytest

from identity.audit.record import (
    DESTINATION,
    PATIENT_RECORD,
    QUERY,
    SOURCE,
    Action,
    AuditRecord,
    NetworkType,
    Outcome,
    cx,
    cx_of_system,
    network_point,
    outbox_payload,
    records_of_payload,
    system_of_cx,
)

from .helpers import (
    AT,
    HOSPA,
    auditor,
    every_kind,
    feed,
    pdq_query,
    pdqm_query,
    pix_query,
    refused_feed,
    steward_link,
)


@pytest.mark.parametrize("record", every_kind(), ids=lambda r: f"{r.transaction}-{r.action}")
def test_json_round_trip_gives_the_same_record(record: AuditRecord) -> None:
    text = json.dumps(record.to_json())  # plain JSON: what a jsonb column or the outbox holds
    again = AuditRecord.from_json(json.loads(text))
    assert again == record
    assert again.to_json() == record.to_json()


def test_records_are_immutable() -> None:
    record = feed()
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.action = Action.DELETE  # type: ignore[misc]


def test_a_record_needs_an_aware_time_and_a_participant() -> None:
    record = feed()
    with pytest.raises(ValueError, match="timezone"):
        dataclasses.replace(record, recorded=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="participant"):
        dataclasses.replace(record, participants=())


def test_feed_record_follows_iti8() -> None:
    """ITI TF-2 3.8.5.1.2: Patient Record, C for A04, EventTypeCode ITI-8; the source is the
    sender's APP|FACILITY with its address, the destination ourselves with our process id."""
    record = feed("C")
    assert record.event_id == PATIENT_RECORD
    assert [c.code for c in record.event_types] == ["ITI-8"]
    assert record.event_types[0].system == "IHE Transactions"
    assert record.event_types[0].display == "Patient Identity Feed"
    assert record.action == Action.CREATE and record.outcome == Outcome.SUCCESS
    source, destination = record.participants
    assert source.user_id == "ADT_A|HOSPA" and source.has_role(SOURCE)
    assert (source.network_id, source.network_type) == ("10.1.2.3", NetworkType.IP_ADDRESS)
    assert destination.user_id == "IDENTITY|MPI" and destination.has_role(DESTINATION)
    assert destination.alternative_user_id and destination.alternative_user_id.isdigit()
    assert destination.network_type == NetworkType.MACHINE_NAME
    assert record.message_id == "HOSPA-000001" and record.message_id_kind == "MSH-10"
    assert record.patients == (
        f"HA1001^^^&{HOSPA}&ISO",
        "0000000001^^^&1.3.6.1.4.1.21367.2026.1.1&ISO",
    )
    assert record.source.id == "identity-test" and record.source.site == "HOSP"
    assert (record.agent, record.requestor) == ("ADT_A|HOSPA", None)
    assert record.syslog_severity == 5


def test_a_query_is_one_record_per_patient() -> None:
    """ITI TF-2 3.20.7.1: one audit message per patient; BALP PatientQuery likewise."""
    records = pdq_query()
    assert [r.patients for r in records] == [
        (f"HA1001^^^&{HOSPA}&ISO",),
        ("B-77001^^^HOSPB",),
    ]
    for record in records:
        assert record.event_id == QUERY and record.action == Action.EXECUTE
        assert record.query is not None and record.query.startswith(b"MSH|")
        assert record.query_id == "Q0002"
    [nobody] = pdqm_query()
    assert nobody.patients == () and nobody.interaction == "search"
    assert pix_query().patients[0] == f"HA1001^^^&{HOSPA}&ISO"


def test_refused_access_is_the_transactions_event_with_a_failure_outcome() -> None:
    record = refused_feed()
    assert record.event_id == PATIENT_RECORD and record.event_types[0].code == "ITI-8"
    assert record.outcome == Outcome.MINOR_FAILURE
    assert record.outcome_description == "ADT_B may not assign identifiers in HOSPA"
    assert record.syslog_severity == 4


def test_steward_decision_names_the_steward_as_requestor() -> None:
    record = steward_link()
    assert record.event_id == PATIENT_RECORD and record.action == Action.UPDATE
    assert record.event_types[0].code == "steward-link"
    steward = record.participants[0]
    assert steward.human and steward.requestor and steward.user_id == "steward.sue"
    assert (record.agent, record.requestor) == ("STEWARD_CONSOLE", "steward.sue")
    with pytest.raises(ValueError, match="steward decision"):
        auditor().steward_decision("shred", steward=steward, patient=[])


def test_patient_identifiers_are_cx_only() -> None:
    assert cx("A^1", oid="1.2.3") == "A\\S\\1^^^&1.2.3&ISO"
    assert system_of_cx("A\\S\\1^^^&1.2.3&ISO") == ("urn:oid:1.2.3", "A^1")
    assert cx_of_system("urn:oid:1.2.3", "A^1") == "A\\S\\1^^^&1.2.3&ISO"
    assert cx_of_system("HOSPB", "B-1") == "B-1^^^HOSPB"
    assert system_of_cx("B-1^^^HOSPB") == ("HOSPB", "B-1")
    with pytest.raises(ValueError):
        cx("A")


def test_network_points() -> None:
    assert network_point("10.0.0.1") == ("10.0.0.1", NetworkType.IP_ADDRESS)
    assert network_point("::1") == ("::1", NetworkType.IP_ADDRESS)
    assert network_point("pixc.example.org") == ("pixc.example.org", NetworkType.MACHINE_NAME)
    assert network_point("https://x/fhir") == ("https://x/fhir", NetworkType.URI)
    assert network_point(None) == (None, None)


def test_outbox_payload_round_trip() -> None:
    records = every_kind()
    payload = json.loads(json.dumps(outbox_payload(records)))
    assert records_of_payload(payload) == records
    assert records_of_payload(payload["records"]) == records
    assert records_of_payload(payload["records"][0]) == records[:1]


def test_times_are_utc() -> None:
    assert feed(at=AT).to_json()["recorded"] == "2026-12-03T02:28:40.123456Z"
