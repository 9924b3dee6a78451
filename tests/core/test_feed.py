"""Feed commands of the MPI core against a real PostgreSQL."""

from __future__ import annotations

import dataclasses

import pytest

from identity.errors import (
    AlreadyProcessed,
    AmbiguousDomain,
    IdentifierConflict,
    InvalidInput,
    InvalidState,
    SourceNotAuthorized,
    UnknownDomain,
    UnknownIdentifier,
)
from identity.model import (
    Address,
    AuthorityRef,
    Decision,
    Demographics,
    IdentifierRef,
    LinkKind,
    Name,
    PersonStatus,
    RecordInput,
    RecordStatus,
    SearchCriteria,
)
from identity.mpi import (
    ChangeIdentifier,
    Envelope,
    Link,
    Merge,
    Mpi,
    Received,
    Register,
    Remove,
    Unlink,
)
from identity.mpi.uow import CHANGED_TOPIC

from .helpers import person, ref

A = Envelope(source="ADT_A", actor="hl7:ADT_A|HOSP")
B = Envelope(source="ADT_B", actor="hl7:ADT_B|HOSP")


async def test_first_registration_creates_record_and_person(mpi: Mpi) -> None:
    result = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    assert result.decision == Decision.NEW_PERSON
    assert result.created
    assert result.record.identifier == "A1"
    assert result.record.domain.namespace == "HOSPA"
    assert result.record.person_id == result.person.id
    assert result.record.link is not None and result.record.link.kind == LinkKind.AUTOMATIC
    assert result.person.status == PersonStatus.ACTIVE
    assert len(result.person.enterprise_id) == 10


async def test_exact_demographics_in_another_domain_links_to_same_person(mpi: Mpi) -> None:
    first = await mpi.handle(
        Register(subject=person("HOSPA", "A1", family="Müller", given="José")), A
    )
    second = await mpi.handle(
        Register(subject=person("HOSPB", "B7", family="MULLER", given="jose")), B
    )
    assert second.decision == Decision.LINKED
    assert second.person.id == first.person.id
    assert second.record.link is not None
    assert second.record.link.score is not None and second.record.link.score >= 0.999


async def test_one_day_off_birth_date_is_reviewed_not_linked(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    second = await mpi.handle(Register(subject=person("HOSPB", "B1", birth_date="1980-03-13")), B)
    assert second.decision == Decision.REVIEW
    assert second.person.id != first.person.id
    assert second.review_items[0].person_id == first.person.id


async def test_different_person_creates_new_person(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    second = await mpi.handle(
        Register(subject=person(
            "HOSPB", "B1", family="Okafor", given="Chidi", birth_date="1991-07-30",
        )),
        B,
    )
    assert second.decision == Decision.NEW_PERSON
    assert second.person.id != first.person.id
    assert second.review_items == ()


async def test_partial_birth_date_never_links_on_demographics(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1", birth_date="1980")), A)
    second = await mpi.handle(Register(subject=person("HOSPB", "B1", birth_date="1980")), B)
    assert second.decision == Decision.NEW_PERSON


async def test_shared_national_identifier_links_despite_spelling_differences(mpi: Mpi) -> None:
    ssn = ref("NATIONAL", "123456789")
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", others=(ssn,))), A)
    second = await mpi.handle(
        Register(subject=person("HOSPB", "B1", family="Smyth", given="Jon", others=(ssn,))), B
    )
    assert second.decision == Decision.LINKED
    assert second.person.id == first.person.id
    assert second.record.other_identifiers[0].domain == "NATIONAL"


async def test_shared_national_identifier_with_other_demographics_is_reviewed(mpi: Mpi) -> None:
    ssn = ref("NATIONAL", "123456789")
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", others=(ssn,))), A)
    second = await mpi.handle(Register(subject=person(
        "HOSPB", "B1", family="Okafor", given="Chidi", birth_date="1971-01-01", others=(ssn,),
    )), B)
    assert second.decision == Decision.REVIEW
    assert second.review_items[0].person_id == first.person.id
    assert second.review_items[0].reason.startswith("shares a person-identifying identifier")


async def test_different_national_identifiers_are_never_linked(mpi: Mpi) -> None:
    first = await mpi.handle(
        Register(subject=person("HOSPA", "A1", others=(ref("NATIONAL", "111111111"),))), A
    )
    second = await mpi.handle(
        Register(subject=person("HOSPB", "B1", others=(ref("NATIONAL", "222222222"),))), B
    )
    assert second.decision == Decision.REVIEW
    assert second.person.id != first.person.id
    (item,) = second.review_items
    assert item.person_id == first.person.id
    assert "person-identifying" in item.reason


async def test_same_source_domain_duplicate_goes_to_review_not_link(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    second = await mpi.handle(Register(subject=person("HOSPA", "A2")), A)
    assert second.decision == Decision.REVIEW
    assert second.person.id != first.person.id
    assert "same source HOSPA" in second.review_items[0].reason


async def test_update_merges_fields_and_explicit_null_clears(mpi: Mpi) -> None:
    await mpi.handle(
        Register(subject=person(
            "HOSPA", "A1", addresses=(Address(lines=("1 Main St",), city="Springfield"),),
        )),
        A,
    )
    update = RecordInput(
        identifier=ref("HOSPA", "A1"),
        demographics=Demographics(sex="F"),
        cleared=frozenset({"addresses"}),
    )
    result = await mpi.handle(Register(subject=update), A)
    assert result.decision == Decision.UNCHANGED_LINK
    assert not result.created
    demo = result.record.demographics
    assert demo.sex == "F"
    assert demo.names is not None and demo.names[0].family == "Smith"  # not sent: kept
    assert demo.addresses is None  # "" sent: deleted
    assert result.record.version == 2


async def test_replace_update_drops_fields_not_sent(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1", mothers_maiden_name="Doe")), A)
    result = await mpi.handle(Register(subject=person("HOSPA", "A1"), replace=True), A)
    assert result.record.demographics.mothers_maiden_name is None


async def test_update_writes_history_with_before_and_after(mpi: Mpi) -> None:
    created = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(
        Register(subject=person("HOSPA", "A1", family="Jones")),
        dataclasses.replace(A, message_id="MSG2"),
    )
    events = await mpi.history(record_id=created.record.id)
    kinds = [e.event for e in events]
    assert kinds[:3] == ["record_created", "person_created", "link_set"]
    update = next(e for e in events if e.event == "record_updated")
    assert update.before is not None and update.after is not None
    assert update.before["demographics"]["names"][0]["family"] == "Smith"
    assert update.after["demographics"]["names"][0]["family"] == "Jones"
    assert update.actor == A.actor and update.message_id == "MSG2"


async def test_update_that_changes_nothing_writes_nothing(mpi: Mpi, db) -> None:  # type: ignore[no-untyped-def]
    ssn = IdentifierRef(value="123-45-6789", authority=AuthorityRef(namespace="NATIONAL"))
    created = await mpi.handle(Register(subject=person("HOSPA", "A1", others=(ssn,))), A)
    async with db.connection() as conn:
        counts = "SELECT (SELECT count(*) FROM history), (SELECT count(*) FROM outbox)"
        before = tuple(await conn.fetchrow(counts))
    # a repeated A08 (partial: nothing or the same values), a repeated PUT (replace)
    for update, replace in (
        (RecordInput(identifier=ref("HOSPA", "A1"), demographics=Demographics()), False),
        (person("HOSPA", "A1", family="Smith"), False),
        (person("HOSPA", "A1", others=(ssn,)), True),
    ):
        result = await mpi.handle(Register(subject=update, replace=replace), A)
        assert result.decision == Decision.UNCHANGED_LINK
        assert result.record.version == 1
        assert result.record.updated_at == created.record.updated_at
        assert result.record.person_id == created.person.id
        assert result.person.enterprise_id == created.person.enterprise_id
        assert [o.value for o in result.record.other_identifiers] == ["123-45-6789"]
        async with db.connection() as conn:
            assert tuple(await conn.fetchrow(counts)) == before
    # a change of any kind is written: a field, or the other identifiers (replace drops them)
    changed = await mpi.handle(Register(subject=person("HOSPA", "A1", sex="F", others=(ssn,))), A)
    assert changed.record.version == 2
    dropped = await mpi.handle(Register(subject=person("HOSPA", "A1", sex="F"), replace=True), A)
    assert dropped.record.version == 3 and dropped.record.other_identifiers == ()


async def test_source_may_only_assign_in_its_own_domain(mpi: Mpi) -> None:
    with pytest.raises(SourceNotAuthorized) as caught:
        await mpi.handle(Register(subject=person("HOSPB", "B1")), A)
    assert caught.value.domain == "HOSPB"
    assert (await mpi.search(SearchCriteria(family="Smith"))).total == 0
    assert await mpi.history() == []


async def test_unknown_domain_is_rejected_without_auto_registration(mpi: Mpi) -> None:
    with pytest.raises(UnknownDomain):
        await mpi.handle(
            Register(subject=person("NOWHERE", "X1")), Envelope(actor="t", source="ADT_A")
        )


async def test_auto_registration_creates_unknown_domain(db, make_settings) -> None:  # type: ignore[no-untyped-def]
    core = Mpi(db, make_settings(mpi={"auto_register_domains": True}))
    await core.start()
    result = await core.handle(
        Register(subject=person("CLINIC9", "C1")),
        Envelope(actor="t", source="ANY"),
    )
    assert result.record.domain.namespace == "CLINIC9"
    assert "CLINIC9" in {d.namespace for d in core.domains.all()}


async def test_authority_by_oid_alone_resolves_the_domain(mpi: Mpi) -> None:
    inp = RecordInput(
        identifier=IdentifierRef(value="A1", authority=AuthorityRef(oid="1.2.3.4.5.1")),
        demographics=Demographics(names=(Name(family="Doe"),)),
    )
    result = await mpi.handle(Register(subject=inp), A)
    assert result.record.domain.namespace == "HOSPA"


async def test_namespace_and_oid_that_disagree_are_rejected(mpi: Mpi) -> None:
    inp = RecordInput(
        identifier=IdentifierRef(
            value="A1", authority=AuthorityRef(namespace="HOSPA", oid="1.2.3.4.5.2")
        )
    )
    with pytest.raises(AmbiguousDomain):
        await mpi.handle(Register(subject=inp), A)


async def test_missing_authority_completed_when_source_owns_one_domain(mpi: Mpi) -> None:
    inp = RecordInput(identifier=IdentifierRef(value="B5"), demographics=Demographics())
    result = await mpi.handle(Register(subject=inp), B)
    assert result.record.domain.namespace == "HOSPB"


async def test_missing_authority_rejected_when_source_owns_several(mpi: Mpi) -> None:
    inp = RecordInput(identifier=IdentifierRef(value="A5"))
    with pytest.raises(InvalidInput):
        await mpi.handle(Register(subject=inp), A)  # ADT_A owns HOSPA and LAB


async def test_enterprise_domain_cannot_be_fed(mpi: Mpi) -> None:
    with pytest.raises(SourceNotAuthorized):
        await mpi.handle(Register(subject=person("MPI", "0000000001")), A)


async def test_own_identifier_prefers_the_senders_own_domain(mpi: Mpi) -> None:
    refs = (ref("HOSPB", "B1"), ref("NATIONAL", "999"), ref("HOSPA", "A1"))
    received = Received(identifiers=refs, demographics=person("HOSPA", "A1").demographics)
    result = await mpi.handle(Register(subject=received), A)
    # HOSPA names ADT_A among its sources: its MRN is the record's own, even after a national
    # ID that any source may send; the others are kept as other identifiers.
    assert (result.record.domain.namespace, result.record.identifier) == ("HOSPA", "A1")
    assert sorted(o.value for o in result.record.other_identifiers) == ["999", "B1"]
    # a national ID is the record's own identifier only when nothing else fits
    assert await mpi.own_identifier([ref("NATIONAL", "999")], "LIS") == ref("NATIONAL", "999")
    with pytest.raises(SourceNotAuthorized):
        await mpi.own_identifier([ref("HOSPB", "B1")], "LIS")
    with pytest.raises(SourceNotAuthorized):
        await mpi.handle(Register(subject=Received(identifiers=(ref("HOSPB", "B2"),))),
                         Envelope(actor="lis", source="LIS"))


async def test_merge_retires_identifier_and_joins_persons(mpi: Mpi) -> None:
    old = await mpi.handle(Register(subject=person("HOSPA", "A1", given="Jon")), A)
    lab = await mpi.handle(
        Register(subject=person("LAB", "L1", given="Jon")), Envelope(actor="lis", source="LIS")
    )
    assert lab.person.id == old.person.id  # exact match links the lab record to A1's person
    new = await mpi.handle(Register(subject=person("HOSPA", "A2", family="Smith", given="John")), A)
    result = await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "A1", "A2"), A)
    assert result.applied
    retired = await mpi.get_record(old.record.id)
    assert retired.status == RecordStatus.MERGED
    assert retired.merged_into == new.record.id
    # the lab record followed the merge to the survivor's person
    assert (await mpi.get_record(lab.record.id)).person_id == new.person.id
    gone = await mpi.get_person(old.person.id)
    assert gone.status == PersonStatus.MERGED and gone.merged_into == new.person.id
    with pytest.raises(UnknownIdentifier):
        await mpi.cross_references(ref("HOSPA", "A1"))
    xref = await mpi.cross_references(ref("HOSPA", "A2"))
    assert {r.identifier.value for r in xref.references} >= {"L1"}


async def test_merge_with_unknown_retired_identifier_does_nothing(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A2")), A)
    result = await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "NOPE", "A2"), A)
    assert not result.applied


async def test_merge_with_unknown_survivor_changes_the_identifier(mpi: Mpi) -> None:
    old = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    result = await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "A1", "A9"), A)
    assert result.applied and result.note and "identifier changed" in result.note
    assert (await mpi.get_record(old.record.id)).identifier == "A9"


async def test_merge_applies_survivor_demographics_in_same_transaction(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Register(subject=person("HOSPA", "A2", family="Smith")), A)
    survivor = person("HOSPA", "A2", family="Smith-Jones")
    result = await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "A1", survivor), A)
    record = next(r for r in result.records if r.identifier == "A2")
    names = (await mpi.get_record(record.id)).demographics.names
    assert names is not None and names[0].family == "Smith-Jones"


async def test_merge_requires_source_authority(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    with pytest.raises(SourceNotAuthorized):
        await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "A1", "A2"), B)


async def test_change_identifier(mpi: Mpi) -> None:
    old = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(ChangeIdentifier.within(AuthorityRef(namespace="HOSPA"), "A1", "A100"), A)
    record = await mpi.get_record(old.record.id)
    assert record.identifier == "A100"
    xref = await mpi.cross_references(ref("HOSPA", "A100"))
    assert xref.person_id == old.person.id


async def test_change_identifier_to_one_in_use_is_an_error(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Register(subject=person("HOSPA", "A2", given="Mary", sex="F")), A)
    with pytest.raises(IdentifierConflict):
        await mpi.handle(ChangeIdentifier.within(AuthorityRef(namespace="HOSPA"), "A1", "A2"), A)
    with pytest.raises(UnknownIdentifier):
        await mpi.handle(ChangeIdentifier.within(AuthorityRef(namespace="HOSPA"), "ZZ", "A3"), A)


async def test_link_creates_unknown_record_and_joins_persons(mpi: Mpi) -> None:
    a = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    result = await mpi.handle(
        Link(a=person("HOSPA", "A1"), b=person("LAB", "L9", family="Other", given="Name")), A
    )
    lab = await mpi.find_record(ref("LAB", "L9"))
    assert lab.person_id == a.person.id
    assert lab.link is not None and lab.link.kind == LinkKind.MANUAL
    assert result.applied


STEWARD = Envelope(actor="steward:ann")  # no source: authorised by its own door


async def test_unlink_from_a_sender_not_allowed_in_both_domains_changes_nothing(
    mpi: Mpi,
) -> None:
    """An A37 changes the records of both domains it names: ADT_A may write in HOSPA, not in
    HOSPB (issue 16 item 3)."""
    a = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    b = await mpi.handle(Register(subject=person("HOSPB", "B1")), B)
    with pytest.raises(SourceNotAuthorized) as refused:
        await mpi.handle(Unlink(a=person("HOSPA", "A1"), b=person("HOSPB", "B1")), A)
    assert refused.value.domain == "HOSPB"
    assert (await mpi.get_record(b.record.id)).person_id == a.person.id
    with pytest.raises(SourceNotAuthorized):
        await mpi.handle(Link(a=person("HOSPA", "A1"), b=person("HOSPB", "B1")), A)


async def test_unlink_separates_and_prevents_automatic_relink(mpi: Mpi) -> None:
    a = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    b = await mpi.handle(Register(subject=person("HOSPB", "B1")), B)
    assert a.person.id == b.person.id
    result = await mpi.handle(
        Unlink(a=person("HOSPA", "A1"), b=person("HOSPB", "B1")), STEWARD
    )
    assert result.applied
    b_now = await mpi.get_record(b.record.id)
    assert b_now.person_id != a.person.id
    # an update of B1 keeps it where the steward put it
    again = await mpi.handle(Register(subject=person("HOSPB", "B1")), B)
    assert again.person.id == b_now.person_id
    # an identical record from a third domain now matches two persons: review, never a link
    lab = await mpi.handle(
        Register(subject=person("LAB", "L1")), Envelope(actor="lis", source="LIS")
    )
    assert lab.decision == Decision.REVIEW
    assert {i.person_id for i in lab.review_items} == {a.person.id, b_now.person_id}


async def test_unlink_of_unlinked_records_is_not_applied(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Register(subject=person("HOSPB", "B1", given="Other")), B)
    result = await mpi.handle(
        Unlink(a=person("HOSPA", "A1"), b=person("HOSPB", "B1")), STEWARD
    )
    assert not result.applied


async def test_remove_hides_record_and_retires_empty_person(mpi: Mpi) -> None:
    a = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Remove(identifier=ref("HOSPA", "A1")), A)
    assert (await mpi.get_record(a.record.id)).status == RecordStatus.REMOVED
    assert (await mpi.get_person(a.person.id)).status == PersonStatus.RETIRED
    with pytest.raises(UnknownIdentifier):
        await mpi.cross_references(ref("HOSPA", "A1"))


async def test_merged_identifier_cannot_be_registered_again(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Register(subject=person("HOSPA", "A2", given="Johnny")), A)
    await mpi.handle(Merge.within(AuthorityRef(namespace="HOSPA"), "A1", "A2"), A)
    with pytest.raises(InvalidState):
        await mpi.handle(Register(subject=person("HOSPA", "A1")), A)


async def test_failed_command_changes_nothing(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Register(subject=person("HOSPA", "A2", given="Mary", sex="F")), A)
    before = await mpi.history()
    with pytest.raises(IdentifierConflict):
        await mpi.handle(ChangeIdentifier.within(AuthorityRef(namespace="HOSPA"), "A1", "A2"), A)
    assert await mpi.history() == before
    assert (await mpi.find_record(ref("HOSPA", "A1"))).identifier == "A1"


async def test_idempotent_reply_is_stored_with_the_change(mpi: Mpi) -> None:
    await mpi.handle(
        Register(subject=person("HOSPA", "A1")),
        dataclasses.replace(A, sender="ADT_A|HOSP", message_id="MSG1",
                reply=lambda r: f"ACK {r.decision.value}"),
    )
    with pytest.raises(AlreadyProcessed) as again:
        await mpi.handle(
            Register(subject=person("HOSPA", "A2")),
            dataclasses.replace(A, sender="ADT_A|HOSP", message_id="MSG1",
                                reply=lambda r: "not sent"),
        )
    assert again.value.reply == "ACK new_person"
    with pytest.raises(UnknownIdentifier):
        await mpi.find_record(ref("HOSPA", "A2"))  # nothing applied
    # a refusal is stored unless the message has a reply already

    def refusing(control_id: str, text: str) -> Envelope:
        return dataclasses.replace(A, sender="ADT_A|HOSP", message_id=control_id,
                                   refusal=lambda exc: text)

    refused = InvalidInput("bad")
    assert await mpi.refuse(refusing("MSG1", "AE"), refused) == "ACK new_person"
    assert await mpi.refuse(refusing("MSG2", "AE"), refused) == "AE"
    assert await mpi.refuse(refusing("MSG2", "AE again"), refused) == "AE"


async def test_outbox_rows_are_written_with_the_change(db, make_settings) -> None:  # type: ignore[no-untyped-def]
    # identity.changed is written as itself only for a reader outside the service
    mpi = Mpi(db, make_settings(maintenance={"write_unconsumed_topics": True}))
    await mpi.start()
    result = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    async with db.connection() as conn:
        rows = await conn.fetch("SELECT topic, payload, command_id FROM outbox")
    assert len(rows) == 1
    assert rows[0]["topic"] == CHANGED_TOPIC
    assert rows[0]["payload"]["person_ids"] == [result.person.id]
    assert str(rows[0]["command_id"]) == result.command_id
