"""The changes commands make to the index: register or update a record (deciding its person),
merge, change identifier, link, unlink, remove, and the steps they share (a new person, a link
set, review items opened or dismissed). The HL7 v2 and FHIR feeds, steward decisions and undo
all change the index through these (identity/hl7v2/feed.py is the HL7 door, not this).

Each function runs inside the caller's unit of work (one transaction). Locks: first the
``record:`` keys of the records the command touches (one call, sorted), then the blocking keys
(one call, sorted). Two transactions therefore never wait on each other in a cycle.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from identity.errors import IdentifierConflict, InvalidState, UnknownIdentifier
from identity.model import (
    Decision,
    Demographics,
    Domain,
    Link,
    LinkKind,
    Person,
    PersonStatus,
    RecordInput,
    RecordStatus,
    ReviewItem,
    ReviewStatus,
)
from identity.mpi.matcher import Matcher, Party, Prepared, Verdict
from identity.mpi.uow import CHANGED_TOPIC, UPDATED_TOPIC, UnitOfWork
from identity.store.registration import (
    CandidateSelection,
    LinkWrite,
    RecordWrite,
    ReviewWrite,
)
from identity.store.repository import Repository
from identity.store.state import (
    BeganRegistration,
    CandidateParty,
    Candidates,
    LinkState,
    ResolvedIdentifier,
    StoredRecord,
)
from matching.decision import Decision as MatchDecision

log = logging.getLogger("identity.mpi.changes")


def record_key(domain_id: int, identifier: str) -> str:
    return f"record:{domain_id}|{identifier}"


def record_snapshot(record: StoredRecord) -> dict[str, Any]:
    """A record's state in history rows (the demographics as stored, the other identifiers it
    carries: what a FHIR vread of that version shows)."""
    return {
        "domain_id": record.domain_id,
        "identifier": record.identifier,
        "status": record.status.value,
        "demographics": record.demographics_json,
        "others": others_snapshot(record.others),
    }


def others_snapshot(others: Sequence[ResolvedIdentifier]) -> list[list[Any]]:
    """Other identifiers in history rows: [domain id, value, type] each."""
    return [[domain_id, value, type_code] for domain_id, value, type_code in others]


def hard_rules_of(explanation: dict[str, Any] | None) -> tuple[str, ...]:
    """The hard rules an explanation says fired (what the review_item_fill trigger stores)."""
    rules = ((explanation or {}).get("decision") or {}).get("hard_rules")
    return tuple(rules) if isinstance(rules, list) else ()


def link_snapshot(link: LinkState | None) -> dict[str, Any] | None:
    """A link's state in history rows; undo sets a link back from it."""
    if link is None:
        return None
    return {
        "person_id": link.person_id,
        "kind": link.kind.value,
        "score": link.score,
        "explanation": link.explanation,
        "actor": link.actor,
    }


@dataclass(frozen=True, kw_only=True, slots=True)
class Registered:
    """What a registration did. ``record``, ``person`` and ``reviews`` are the record, its
    person and the review items opened as they now are, when the registration knows them
    without reading them back; None: read them."""

    decision: Decision
    record_id: int
    person_id: int
    created: bool
    review_ids: list[int]
    record: StoredRecord | None = None
    person: Person | None = None
    reviews: tuple[ReviewItem, ...] | None = None
    changed: bool = True  # False: the record was already as sent (nothing written)


def _unchanged(
    record: StoredRecord,
    demographics: Demographics,
    stored_others: Sequence[ResolvedIdentifier],
    others: Sequence[ResolvedIdentifier],
) -> bool:
    """Whether an update of the active, linked ``record`` would change nothing: the same
    demographics and the same other identifiers (in any order)."""
    if record.status != RecordStatus.ACTIVE or record.person_id is None:
        return False  # a removed record registered again is matched again
    if {(d, v, t or "") for d, v, t in others} != {(d, v, t or "") for d, v, t in stored_others}:
        return False
    return demographics.model_dump(mode="json") == record.demographics.model_dump(mode="json")


def _record_write(
    demographics: dict[str, Any],
    prepared: Prepared,
    source: str | None,
    others: Sequence[ResolvedIdentifier],
) -> RecordWrite:
    """What a registration writes of a record (insert and update alike)."""
    return RecordWrite(
        demographics=demographics,
        normalized=prepared.normalized,
        search=prepared.search,
        source=source,
        others=others,
        keys=prepared.keys,
    )


class OversizedKeys:
    """The blocking keys this process has seen holding more than ``max_block`` records
    (migration 0010). A new record leaves them out of the keys it locks and reads, so that its
    blocks are read once, without the pass that sizes them; two registrations that share only
    such a key do not wait for each other. A block shrinks below ``max_block`` only when records
    are merged or removed; what is known is forgotten every ``ttl`` seconds (and when ``limit``
    keys are known), so that such a key gives candidates again after a while (until then at
    worst a candidate is missed, never a false one made)."""

    def __init__(self, ttl: float = 3600.0, limit: int = 100_000) -> None:
        self.ttl = ttl
        self.limit = limit
        self._keys: set[str] = set()
        self._since = time.monotonic()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def split(self, keys: Sequence[str]) -> tuple[list[str], bool]:
        """The keys a new record locks and reads, and whether they were presized (the known
        oversized ones left out). When every key is known to be oversized, all are given and
        sized in the database, which then reads the smallest block."""
        if time.monotonic() - self._since > self.ttl:
            self.forget()
        kept = [k for k in keys if k not in self._keys]
        if kept:
            return kept, True
        return list(keys), False

    def learn(self, keys: Iterable[str]) -> None:
        self._keys.update(keys)
        if len(self._keys) > self.limit:
            self.forget()

    def forget(self) -> None:
        self._keys.clear()
        self._since = time.monotonic()


class Changes:
    """The changes commands make to the index (register, merge, change identifier, link,
    unlink, remove) and the steps they share, with the matcher and the oversized keys known."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.oversized = OversizedKeys()

    # --- register / update ------------------------------------------------------------------

    async def register_record(
        self,
        uow: UnitOfWork,
        domain: Domain,
        inp: RecordInput,
        others: Sequence[ResolvedIdentifier],
        source: str | None,
        *,
        replace: bool,
    ) -> Registered:
        """Create or update a source record and decide its person.

        Round trips: one to lock the record key and read the record (a new record's blocking
        keys are locked and its candidates read in the same call), one to write (an update
        locks its blocking keys in that call first), besides the unit of work's own.
        """
        repo = uow.repo
        value = inp.identifier.value
        identifiers: list[ResolvedIdentifier] = [
            (domain.id, value, inp.identifier.type),
            *others,
        ]
        # A new record is what the message says: prepared before the first call, so that its
        # blocking keys can be locked in that call.
        prepared = self.matcher.prepare(inp.demographics.as_matching_input(), identifiers)
        keys, presized = self.oversized.split(prepared.keys)
        began = await repo.register_begin(
            record_key=record_key(domain.id, value),
            domain_id=domain.id,
            identifier=value,
            keys=keys,
            selection=self.selection,
            presized=presized,
        )
        record = began.record
        if record is None:
            assert began.candidates is not None
            self.oversized.learn(began.candidates.oversized)
            return await self._register_new(
                uow, domain, inp, others, source, prepared, began.candidates
            )
        if record.status == RecordStatus.MERGED:
            raise InvalidState(f"identifier {value!r} was merged into another record")
        if replace:
            demographics = inp.demographics
        else:
            demographics = record.demographics.merged_with(inp.demographics, inp.cleared)
        stored_others = list(record.others)
        if not others and not replace:
            others = stored_others  # an update that names no other identifiers keeps them
        if _unchanged(record, demographics, stored_others, others):
            # A repeated A08 or PUT: nothing to write, no new version, no history, the link
            # as it was (the record was matched when it last changed).
            assert record.person_id is not None
            return Registered(
                decision=Decision.UNCHANGED_LINK,
                record_id=record.id,
                person_id=record.person_id,
                created=False,
                review_ids=[],
                record=record,
                reviews=(),
                changed=False,
            )
        if demographics != inp.demographics or identifiers[1:] != list(others):
            identifiers = [(domain.id, value, inp.identifier.type), *others]
            prepared = self.matcher.prepare(demographics.as_matching_input(), identifiers)
        return await self._register_update(
            uow, domain, demographics, others, source, prepared, began
        )

    async def _register_new(
        self,
        uow: UnitOfWork,
        domain: Domain,
        inp: RecordInput,
        others: Sequence[ResolvedIdentifier],
        source: str | None,
        prepared: Prepared,
        candidates: Candidates,
    ) -> Registered:
        """A record not known before: decide its person, then write it all in one call."""
        repo = uow.repo
        subject = Party(0, domain.namespace, None, prepared.normalized)  # no id yet
        persons = self._candidate_persons(candidates, None)
        outcome = self.matcher.decide(subject, persons, set())  # no assertions on a new record
        if outcome.person_id is not None:
            decision = Decision.LINKED
        else:
            decision = Decision.REVIEW if outcome.reviews else Decision.NEW_PERSON
        demographics = inp.demographics.model_dump(mode="json")
        written = await repo.register_insert(
            domain_id=domain.id,
            identifier=inp.identifier.value,
            record=_record_write(demographics, prepared, source, others),
            person_id=outcome.person_id,
            link=LinkWrite(
                kind=LinkKind.AUTOMATIC,
                score=outcome.score,
                explanation=outcome.explanation,
                actor=uow.actor,
            ),
            reviews=[
                ReviewWrite(
                    other_record_id=v.best_record_id,
                    person_id=v.person_id,
                    score=v.probability,
                    reason=v.reason,
                    explanation=v.explanation,
                )
                for v in outcome.reviews
            ],
        )
        record_id, person, now = written.record_id, written.person, written.at
        person_id = person.id
        uow.record(
            "record_created",
            "source_record",
            record_id,
            after={
                "domain_id": domain.id,
                "identifier": inp.identifier.value,
                "status": "active",
                "demographics": demographics,
                "others": others_snapshot(others),
            },
            record_id=record_id,
        )
        if outcome.person_id is None:
            uow.record(
                "person_created",
                "person",
                person_id,
                after={"status": "active", "enterprise_id": person.enterprise_id},
                person_id=person_id,
                record_id=record_id,
            )
        uow.record(
            "link_set",
            "link",
            record_id,
            after={
                "person_id": person_id,
                "kind": LinkKind.AUTOMATIC.value,
                "score": outcome.score,
                "explanation": outcome.explanation,
                "actor": uow.actor,
            },
            record_id=record_id,
            person_id=person_id,
        )
        reviews = []
        for verdict, item_id, explanation in zip(
            outcome.reviews, written.review_ids, written.review_explanations, strict=True
        ):
            if item_id is None:
                continue
            uow.record(
                "review_opened",
                "review_item",
                item_id,
                after={"status": "open", "reason": verdict.reason},
                record_id=record_id,
                person_id=verdict.person_id,
            )
            reviews.append(
                ReviewItem(
                    id=item_id,
                    record_id=record_id,
                    other_record_id=verdict.best_record_id,
                    person_id=verdict.person_id,
                    score=verdict.probability,
                    reason=verdict.reason,
                    explanation=explanation,
                    status=ReviewStatus.OPEN,
                    created_at=now,
                    hard_rules=hard_rules_of(explanation),
                )
            )
        uow.emit(
            CHANGED_TOPIC,
            {"event": "record_added", "record_id": record_id, "person_ids": [person_id]},
        )
        record = StoredRecord(
            id=record_id,
            domain_id=domain.id,
            identifier=inp.identifier.value,
            status=RecordStatus.ACTIVE,
            merged_into=None,
            demographics=inp.demographics,
            demographics_json=demographics,
            normalized=prepared.normalized,
            version=1,
            created_at=now,
            updated_at=now,
            link=Link(
                person_id=person_id,
                kind=LinkKind.AUTOMATIC,
                score=outcome.score,
                actor=uow.actor,
                created_at=now,
            ),
            enterprise_id=person.enterprise_id,
            others=written.others,
        )
        return Registered(
            decision=decision,
            record_id=record_id,
            person_id=person_id,
            created=True,
            review_ids=[r.id for r in reviews],
            record=record,
            person=person,
            reviews=tuple(reviews),
        )

    async def _register_update(
        self,
        uow: UnitOfWork,
        domain: Domain,
        demographics: Demographics,
        others: Sequence[ResolvedIdentifier],
        source: str | None,
        prepared: Prepared,
        began: BeganRegistration,
    ) -> Registered:
        """A known record: lock its old and new blocking keys and write it (with the history
        and outbox rows so far) in one call, then re-score it. A record alone in its automatic
        person is matched again like a new one; a record sharing its person is checked against
        the person's other records, and a link that no longer holds becomes a review item
        (never a silent unlink). Manual and verified links are never changed automatically."""
        repo = uow.repo
        record = began.record
        assert record is not None
        record_id = record.id
        current = record.link if record.status == RecordStatus.ACTIVE else None
        linked = current is not None
        automatic = current is not None and current.kind == LinkKind.AUTOMATIC
        dumped = demographics.model_dump(mode="json")
        uow.record(
            "record_updated",
            "source_record",
            record_id,
            before=record_snapshot(record),
            after={**record_snapshot(record), "status": "active", "demographics": dumped,
                   "others": others_snapshot(others)},
            record_id=record_id,
            person_id=record.person_id,
        )
        if linked:
            payload = {"event": "record_updated", "record_id": record_id}
            uow.emit(UPDATED_TOPIC, {**payload, "person_ids": [record.person_id]})
        history, outbox = uow.take_events()  # written by the same call
        written = await repo.register_update(
            record_id=record_id,
            lock_keys=[*prepared.keys, *began.old_keys],
            record=_record_write(dumped, prepared, source, others),
            touch_person=record.person_id if linked else None,
            own_person=record.person_id if automatic else None,
            selection=self.selection,
            history=history,
            outbox=outbox,
        )
        subject = Party(record_id, domain.namespace, None, prepared.normalized)
        if not linked:  # a removed record registered again: matched like a new one
            decision, person_id, reviews = await self._decide_and_link(
                uow, subject, prepared.keys
            )
            uow.emit(
                CHANGED_TOPIC,
                {"event": "record_added", "record_id": record_id, "person_ids": [person_id]},
            )
            return Registered(
                decision=decision,
                record_id=record_id,
                person_id=person_id,
                created=False,
                review_ids=reviews,
            )

        person_id = record.person_id
        assert person_id is not None
        updated = dataclasses.replace(
            record,
            status=RecordStatus.ACTIVE,
            merged_into=None,
            demographics=demographics,
            demographics_json=dumped,
            normalized=prepared.normalized,
            version=written.version,
            updated_at=written.updated_at,
            others=written.others,
        )

        def kept(decision: Decision, items: Sequence[ReviewItem] = ()) -> Registered:
            """The record stays with its person (review items opened or not)."""
            return Registered(
                decision=decision,
                record_id=record_id,
                person_id=person_id,
                created=False,
                review_ids=[i.id for i in items],
                record=updated,
                person=written.person,
                reviews=tuple(items),
            )

        if not automatic:
            return kept(Decision.UNCHANGED_LINK)
        no_match = began.no_match
        own = self._parties_by_person(written.own_parties, None)
        if own:
            (verdict,) = self.matcher.verdicts(subject, own, no_match)
            if verdict.decision == MatchDecision.LINK:
                return kept(Decision.UNCHANGED_LINK)
            verdict.reason = "after an update the link no longer holds: " + verdict.reason
            return kept(Decision.REVIEW, await self._open_review_items(uow, record_id, [verdict]))
        persons = self._candidate_persons(written.candidates, record_id)
        persons.pop(person_id, None)
        outcome = self.matcher.decide(subject, persons, no_match)
        items = await self._open_review_items(uow, record_id, outcome.reviews)
        if outcome.person_id is None:
            return kept(Decision.REVIEW if items else Decision.UNCHANGED_LINK, items)
        link = await repo.link(record_id)
        await self.set_link(
            uow,
            record_id,
            outcome.person_id,
            kind=LinkKind.AUTOMATIC,
            score=outcome.score,
            explanation=outcome.explanation,
            before=link,
        )
        await self.retire_if_empty(uow, person_id, merged_into=outcome.person_id)
        await repo.touch_person(outcome.person_id)
        uow.emit(
            CHANGED_TOPIC,
            {
                "event": "relinked",
                "record_id": record_id,
                "person_ids": [outcome.person_id, person_id],
            },
        )
        return Registered(
            decision=Decision.LINKED,
            record_id=record_id,
            person_id=outcome.person_id,
            created=False,
            review_ids=[i.id for i in items],
        )

    @property
    def selection(self) -> CandidateSelection:
        settings = self.matcher.settings
        return CandidateSelection(
            settings.max_block,
            settings.max_candidates,
            settings.candidate_margin,
            settings.candidate_min_keys,
            settings.candidate_rare_block,
        )

    def _candidate_persons(
        self, found: Candidates | None, exclude: int | None
    ) -> dict[int, list[Party]]:
        """The candidates the database selected (matching.blocking.select_candidates, made in
        the SQL function register_candidates), as persons with all their active records; a
        DEBUG line when the floor, the margin or the cap left some out (at 1M records they do
        on nearly every registration: by design, not news)."""
        if found is None:
            return {}
        selected = found.selected
        if found.found > len(selected):
            log.debug(
                "event=candidates_selected found=%d scored=%d cap=%d",
                found.found,
                len(selected),
                self.matcher.settings.max_candidates,
            )
        if not selected:
            return {}
        return self._parties_by_person(found.parties, exclude)

    def _parties_by_person(
        self, parties: Sequence[CandidateParty] | None, exclude: int | None
    ) -> dict[int, list[Party]]:
        """The candidates' records (by record id) as parties, by person."""
        persons: dict[int, list[Party]] = {}
        namespaces = self.matcher.namespaces
        for record_id, domain_id, person_id, normalized, version in parties or ():
            if record_id != exclude:
                persons.setdefault(person_id, []).append(
                    Party(record_id, namespaces.get(domain_id, str(domain_id)), person_id,
                          normalized, version)
                )
        return persons

    async def candidates(
        self, repo: Repository, keys: Sequence[str], exclude: int | None
    ) -> dict[int, list[Party]]:
        """Candidate persons with all their active records, found through blocking keys, in
        one round trip (the SQL function register_candidates, without locks: for reads and
        for callers that hold the keys' locks)."""
        return self._candidate_persons(await repo.candidates(keys, exclude, self.selection),
                                       exclude)

    def party(self, record: StoredRecord) -> Party:
        assert record.normalized is not None
        return Party(
            record_id=record.id,
            domain=self.matcher.namespaces.get(record.domain_id, str(record.domain_id)),
            person_id=record.person_id,
            normalized=record.normalized,
            version=record.version,
        )

    async def _decide_and_link(
        self, uow: UnitOfWork, subject: Party, keys: Sequence[str]
    ) -> tuple[Decision, int, list[int]]:
        repo = uow.repo
        persons = await self.candidates(repo, keys, subject.record_id)
        no_match = await repo.no_match_partners(subject.record_id)
        outcome = self.matcher.decide(subject, persons, no_match)
        if outcome.person_id is not None:
            person_id = outcome.person_id
            await repo.touch_person(person_id)
            decision = Decision.LINKED
        else:
            person_id = await self.new_person(uow, subject.record_id)
            decision = Decision.REVIEW if outcome.reviews else Decision.NEW_PERSON
        await self.set_link(
            uow,
            subject.record_id,
            person_id,
            kind=LinkKind.AUTOMATIC,
            score=outcome.score,
            explanation=outcome.explanation,
            before=None,
        )
        review_ids = await self.open_reviews(uow, subject.record_id, outcome.reviews)
        return decision, person_id, review_ids

    async def open_reviews(
        self, uow: UnitOfWork, record_id: int, verdicts: Sequence[Verdict]
    ) -> list[int]:
        return [item.id for item in await self._open_review_items(uow, record_id, verdicts)]

    async def _open_review_items(
        self, uow: UnitOfWork, record_id: int, verdicts: Sequence[Verdict]
    ) -> list[ReviewItem]:
        """Open a review item per verdict (one already open is left as it is); the new ones."""
        items = []
        for verdict in verdicts:
            item = await uow.repo.insert_review_item(
                record_id,
                ReviewWrite(
                    other_record_id=verdict.best_record_id,
                    person_id=verdict.person_id,
                    score=verdict.probability,
                    reason=verdict.reason,
                    explanation=verdict.explanation,
                ),
            )
            if item is not None:
                items.append(item)
                uow.record(
                    "review_opened",
                    "review_item",
                    item.id,
                    after={"status": "open", "reason": verdict.reason},
                    record_id=record_id,
                    person_id=verdict.person_id,
                )
        return items

    # --- shared building blocks -------------------------------------------------------------

    async def new_person(self, uow: UnitOfWork, record_id: int | None) -> int:
        person = await uow.repo.insert_person()
        uow.record(
            "person_created",
            "person",
            person.id,
            after={"status": "active", "enterprise_id": person.enterprise_id},
            person_id=person.id,
            record_id=record_id,
        )
        return person.id

    async def set_link(
        self,
        uow: UnitOfWork,
        record_id: int,
        person_id: int,
        *,
        kind: LinkKind,
        score: float | None,
        explanation: dict[str, Any] | None,
        before: LinkState | None,
    ) -> None:
        """Link the record to the person, by the command's actor; ``before``: its link until
        now (history)."""
        await uow.repo.set_link(
            record_id,
            person_id,
            LinkWrite(kind=kind, score=score, explanation=explanation, actor=uow.actor),
        )
        after = {
            "person_id": person_id,
            "kind": kind.value,
            "score": score,
            "explanation": explanation,
            "actor": uow.actor,
        }
        uow.record(
            "link_set",
            "link",
            record_id,
            before=link_snapshot(before),
            after=after,
            record_id=record_id,
            person_id=person_id,
        )

    async def retire_if_empty(
        self, uow: UnitOfWork, person_id: int, merged_into: int | None = None
    ) -> None:
        repo = uow.repo
        if await repo.count_active_records(person_id) > 0:
            return
        person = await repo.person(person_id, for_update=True)
        if person is None or person.status != PersonStatus.ACTIVE:
            return
        status = PersonStatus.MERGED if merged_into else PersonStatus.RETIRED
        await repo.set_person_status(person_id, status, merged_into)
        uow.record(
            "person_" + status.value,
            "person",
            person_id,
            before={"status": person.status.value, "merged_into": person.merged_into},
            after={"status": status.value, "merged_into": merged_into},
            person_id=person_id,
        )

    async def move_person(
        self, uow: UnitOfWork, from_person: int, to_person: int, kind: LinkKind | None
    ) -> list[int]:
        """Relink every active record of ``from_person`` to ``to_person``; retire the first."""
        repo = uow.repo
        moved = []
        for record in await repo.person_records([from_person]):
            link = await repo.link(record.id)
            assert link is not None
            await self.set_link(
                uow,
                record.id,
                to_person,
                kind=kind or link.kind,
                score=link.score,
                explanation=link.explanation,
                before=link,
            )
            moved.append(record.id)
        await self.retire_if_empty(uow, from_person, merged_into=to_person)
        return moved

    async def dismiss_reviews(self, uow: UnitOfWork, record_id: int) -> None:
        repo = uow.repo
        for item_id in await repo.open_review_ids_for_record(record_id):
            await repo.set_review_status(item_id, ReviewStatus.DISMISSED, uow.actor)
            uow.record(
                "review_dismissed",
                "review_item",
                item_id,
                before={"status": "open"},
                after={"status": "dismissed"},
                record_id=record_id,
            )

    # --- merge / change identifier ----------------------------------------------------------

    async def merge(
        self,
        uow: UnitOfWork,
        domain: Domain,
        retired: str,
        survivor: str,
    ) -> tuple[bool, str, list[int], list[int]]:
        """Retire ``retired`` into ``survivor`` (same domain).

        Returns (applied, note, record ids touched, person ids touched). An unknown retired
        identifier is nothing to do; an unknown survivor makes this a change of identifier
        (TF2 ITI-30: A40 with an unknown surviving ID acts as A47).
        """
        repo = uow.repo
        if retired == survivor:
            raise InvalidState("the retired and surviving identifiers are the same")
        await repo.lock([record_key(domain.id, retired), record_key(domain.id, survivor)])
        old = await repo.record_by_identifier(domain.id, retired, for_update=True)
        new = await repo.record_by_identifier(domain.id, survivor, for_update=True)
        if old is None or old.status != RecordStatus.ACTIVE:
            return False, "retired identifier unknown: nothing to merge", [], []
        if new is None:
            record_id, person_id = await self._rename(uow, domain, old, survivor)
            return (
                True,
                "surviving identifier unknown: identifier changed",
                [record_id],
                [person_id],
            )
        if new.status != RecordStatus.ACTIVE:
            raise InvalidState(f"surviving identifier {survivor!r} is not active")
        await repo.set_record_status(old.id, RecordStatus.MERGED, new.id)
        await repo.set_blocking_keys(old.id, [])
        uow.record(
            "record_merged",
            "source_record",
            old.id,
            before=record_snapshot(old),
            after={**record_snapshot(old), "status": "merged", "merged_into": new.id},
            record_id=old.id,
            person_id=old.person_id,
        )
        await self.dismiss_reviews(uow, old.id)
        persons = [new.person_id]
        if old.person_id != new.person_id:
            persons.append(old.person_id)
            await self.move_person(uow, old.person_id, new.person_id, None)
        await repo.touch_person(new.person_id)
        uow.emit(
            CHANGED_TOPIC,
            {
                "event": "merge",
                "record_id": new.id,
                "retired_record_id": old.id,
                "person_ids": persons,
            },
        )
        return True, "merged", [new.id, old.id], persons

    async def change_identifier(
        self, uow: UnitOfWork, domain: Domain, old_value: str, new_value: str
    ) -> tuple[int, int]:
        repo = uow.repo
        await repo.lock([record_key(domain.id, old_value), record_key(domain.id, new_value)])
        old = await repo.record_by_identifier(domain.id, old_value, for_update=True)
        if old is None or old.status != RecordStatus.ACTIVE:
            raise UnknownIdentifier(domain.namespace, old_value)
        return await self._rename(uow, domain, old, new_value)

    async def _rename(
        self, uow: UnitOfWork, domain: Domain, old: StoredRecord, new_value: str
    ) -> tuple[int, int]:
        repo = uow.repo
        clash = await repo.record_by_identifier(domain.id, new_value)
        if clash is not None:
            raise IdentifierConflict(
                f"identifier {new_value!r} already belongs to another record in {domain.namespace}"
            )
        await repo.set_record_identifier(old.id, new_value)
        prepared = self.matcher.prepare(
            old.demographics.as_matching_input(), [(domain.id, new_value, None), *old.others]
        )
        await repo.set_blocking_keys(old.id, prepared.keys)
        uow.record(
            "identifier_changed",
            "source_record",
            old.id,
            before=record_snapshot(old),
            after={**record_snapshot(old), "identifier": new_value},
            record_id=old.id,
            person_id=old.person_id,
        )
        await repo.touch_person(old.person_id)
        uow.emit(
            CHANGED_TOPIC,
            {
                "event": "identifier_changed",
                "record_id": old.id,
                "old_identifier": old.identifier,
                "person_ids": [old.person_id],
            },
        )
        return old.id, old.person_id

    # --- link / unlink / remove -------------------------------------------------------------

    async def link(
        self, uow: UnitOfWork, a: StoredRecord, b: StoredRecord, kind: LinkKind
    ) -> list[int]:
        """Make the persons of records ``a`` and ``b`` one (b's person merges into a's)."""
        repo = uow.repo
        await repo.delete_no_match(a.id, b.id)
        person_a, person_b = a.person_id, b.person_id
        if person_a == person_b:
            link = await repo.link(b.id)
            if link is not None and link.kind != kind:
                await self.set_link(
                    uow,
                    b.id,
                    person_a,
                    kind=kind,
                    score=link.score,
                    explanation=link.explanation,
                    before=link,
                )
            return [person_a]
        await self.move_person(uow, person_b, person_a, kind)
        uow.emit(
            CHANGED_TOPIC,
            {"event": "link", "record_ids": [a.id, b.id], "person_ids": [person_a, person_b]},
        )
        return [person_a, person_b]

    async def unlink(
        self, uow: UnitOfWork, a: StoredRecord, b: StoredRecord, reason: str | None
    ) -> list[int]:
        """Separate record ``b`` from ``a``'s person and assert they are different people."""
        repo = uow.repo
        if await repo.add_no_match(a.id, b.id, actor=uow.actor, reason=reason):
            uow.record(
                "no_match_added",
                "no_match",
                b.id,
                after={"record_a": a.id, "record_b": b.id},
                record_id=b.id,
                person_id=b.person_id,
            )
        if a.person_id != b.person_id:
            return []
        person_id = await self.new_person(uow, b.id)
        link = await repo.link(b.id)
        await self.set_link(
            uow, b.id, person_id, kind=LinkKind.MANUAL, score=None, explanation=None, before=link
        )
        uow.emit(
            CHANGED_TOPIC,
            {
                "event": "unlink",
                "record_ids": [a.id, b.id],
                "person_ids": [a.person_id, person_id],
            },
        )
        return [a.person_id, person_id]

    async def remove(self, uow: UnitOfWork, domain: Domain, value: str) -> tuple[int, int | None]:
        repo = uow.repo
        await repo.lock([record_key(domain.id, value)])
        record = await repo.record_by_identifier(domain.id, value, for_update=True)
        if record is None or record.status != RecordStatus.ACTIVE:
            raise UnknownIdentifier(domain.namespace, value)
        await repo.set_record_status(record.id, RecordStatus.REMOVED)
        await repo.set_blocking_keys(record.id, [])
        uow.record(
            "record_removed",
            "source_record",
            record.id,
            before=record_snapshot(record),
            after={**record_snapshot(record), "status": "removed"},
            record_id=record.id,
            person_id=record.person_id,
        )
        await self.dismiss_reviews(uow, record.id)
        if record.person_id is not None:
            await self.retire_if_empty(uow, record.person_id)
        uow.emit(
            CHANGED_TOPIC,
            {"event": "remove", "record_id": record.id, "person_ids": [record.person_id]},
        )
        return record.id, record.person_id
