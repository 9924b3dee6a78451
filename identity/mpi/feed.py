"""Identity feed commands: register or update, merge, change identifier, link, unlink, remove.

Each function runs inside the caller's unit of work (one transaction). Locks: first the
``record:`` keys of the records the command touches (one call, sorted), then the blocking keys
(one call, sorted). Two transactions therefore never wait on each other in a cycle.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from identity.errors import IdentifierConflict, InvalidState, UnknownIdentifier
from identity.model import (
    Decision,
    Demographics,
    Domain,
    LinkKind,
    PersonStatus,
    RecordInput,
    RecordStatus,
    ReviewStatus,
)
from identity.mpi.matcher import Matcher, Party, Prepared, Verdict
from identity.mpi.uow import CHANGED_TOPIC, UPDATED_TOPIC, UnitOfWork
from identity.store.registration import (
    CandidateSelection,
    LinkWrite,
    RecordWrite,
    ResolvedIdentifier,
    ReviewWrite,
)
from identity.store.repository import Repository
from matching.decision import Decision as MatchDecision

log = logging.getLogger("identity.mpi.feed")

Row = Mapping[str, Any]
"""A row the repository read (the store's row mapping turns it into domain types)."""


def record_key(domain_id: int, identifier: str) -> str:
    return f"record:{domain_id}|{identifier}"


def record_snapshot(row: Row) -> dict[str, Any]:
    return {
        "domain_id": row["domain_id"],
        "identifier": row["identifier"],
        "status": row["status"],
        "demographics": row["demographics"],
    }


def link_snapshot(row: Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "person_id": row["person_id"],
        "kind": row["kind"],
        "score": row["score"],
        "explanation": row["explanation"],
        "actor": row["actor"],
    }


@dataclass
class Registered:
    """What a registration did. The ``*_row`` fields hold the record, person and review items
    as they now are (mappings shaped like the repository's rows) when the registration knows
    them without reading them back; None: read them."""

    decision: Decision
    record_id: int
    person_id: int
    created: bool
    review_ids: list[int]
    record_row: dict[str, Any] | None = None
    person_row: dict[str, Any] | None = None
    review_rows: Sequence[Mapping[str, Any]] | None = None


def _unchanged(
    row: Row,
    current: Demographics,
    demographics: Demographics,
    stored_others: Sequence[ResolvedIdentifier],
    others: Sequence[ResolvedIdentifier],
) -> bool:
    """Whether an update of the active, linked record ``row`` would change nothing: the same
    demographics and the same other identifiers (in any order)."""
    if row["status"] != RecordStatus.ACTIVE or row["person_id"] is None:
        return False  # a removed record registered again is matched again
    if {(d, v, t or "") for d, v, t in others} != {(d, v, t or "") for d, v, t in stored_others}:
        return False
    return demographics.model_dump(mode="json") == current.model_dump(mode="json")


def _person_row(written: Row) -> dict[str, Any]:
    return {
        "id": written["person_id"],
        "enterprise_id": written["enterprise_id"],
        "status": written["person_status"],
        "merged_into": written["person_merged_into"],
        "version": written["person_version"],
        "created_at": written["person_created_at"],
        "updated_at": written["person_updated_at"],
    }


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


class Feed:
    """The feed commands, sharing the matcher and the resolved identifiers of one command."""

    def __init__(self, matcher: Matcher) -> None:
        self.matcher = matcher
        self.oversized = OversizedKeys()

    # --- register / update ------------------------------------------------------------------

    async def register(
        self,
        uow: UnitOfWork,
        domain: Domain,
        inp: RecordInput,
        others: Sequence[ResolvedIdentifier],
        source: str | None,
        *,
        replace: bool,
    ) -> tuple[Decision, int, int, bool, list[int]]:
        """Returns (decision, record id, person id, created, review item ids)."""
        done = await self.register_record(uow, domain, inp, others, source, replace=replace)
        return done.decision, done.record_id, done.person_id, done.created, done.review_ids

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
        row = await repo.register_begin(
            record_key=record_key(domain.id, value),
            domain_id=domain.id,
            identifier=value,
            keys=keys,
            selection=self.selection,
            presized=presized,
        )
        if row["id"] is None:
            self.oversized.learn(row["oversized"])
            return await self._register_new(uow, domain, inp, others, source, prepared, row)
        if row["status"] == RecordStatus.MERGED:
            raise InvalidState(f"identifier {value!r} was merged into another record")
        current = Demographics.model_validate(row["demographics"])
        if replace:
            demographics = inp.demographics
        else:
            demographics = current.merged_with(inp.demographics, inp.cleared)
        stored_others = [(int(d), v, t or None) for d, v, t in row["others"]]
        if not others and not replace:
            others = stored_others  # an update that names no other identifiers keeps them
        if _unchanged(row, current, demographics, stored_others, others):
            # A repeated A08 or PUT: nothing to write, no new version, no history, the link
            # as it was (the record was matched when it last changed).
            return Registered(
                Decision.UNCHANGED_LINK, row["id"], row["person_id"], False, [],
                {**dict(row), "demographics": current}, None, [],
            )
        if demographics != inp.demographics or identifiers[1:] != list(others):
            identifiers = [(domain.id, value, inp.identifier.type), *others]
            prepared = self.matcher.prepare(demographics.as_matching_input(), identifiers)
        return await self._register_update(
            uow, domain, demographics, others, source, prepared, row
        )

    async def _register_new(
        self,
        uow: UnitOfWork,
        domain: Domain,
        inp: RecordInput,
        others: Sequence[ResolvedIdentifier],
        source: str | None,
        prepared: Prepared,
        begun: Row,
    ) -> Registered:
        """A record not known before: decide its person, then write it all in one call."""
        repo = uow.repo
        subject = Party(0, domain.namespace, None, prepared.normalized)  # no id yet
        persons = self._candidate_persons(begun, None)
        outcome = self.matcher.decide(subject, persons, set())  # no assertions on a new record
        if outcome.person_id is not None:
            decision = Decision.LINKED
        else:
            decision = Decision.REVIEW if outcome.reviews else Decision.NEW_PERSON
        demographics = inp.demographics.model_dump(mode="json")
        written = await repo.register_insert(
            domain_id=domain.id,
            identifier=inp.identifier.value,
            record=RecordWrite(
                demographics=demographics,
                normalized=prepared.normalized,
                search=prepared.search,
                source=source,
                others=others,
                keys=prepared.keys,
            ),
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
        record_id, person_id, now = written["record_id"], written["person_id"], written["tx_now"]
        uow.record(
            "record_created",
            "source_record",
            record_id,
            after={
                "domain_id": domain.id,
                "identifier": inp.identifier.value,
                "status": "active",
                "demographics": demographics,
            },
            record_id=record_id,
        )
        if outcome.person_id is None:
            uow.record(
                "person_created",
                "person",
                person_id,
                after={"status": "active", "enterprise_id": written["enterprise_id"]},
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
            outcome.reviews, written["review_ids"], written["review_explanations"], strict=True
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
                {
                    "id": item_id,
                    "record_id": record_id,
                    "other_record_id": verdict.best_record_id,
                    "person_id": verdict.person_id,
                    "score": verdict.probability,
                    "reason": verdict.reason,
                    "explanation": explanation,
                    "status": ReviewStatus.OPEN.value,
                    "created_at": now,
                    "resolved_at": None,
                    "resolved_by": None,
                }
            )
        uow.emit(
            CHANGED_TOPIC,
            {"event": "record_added", "record_id": record_id, "person_ids": [person_id]},
        )
        record_row = {
            "id": record_id,
            "domain_id": domain.id,
            "identifier": inp.identifier.value,
            "status": RecordStatus.ACTIVE.value,
            "merged_into": None,
            "demographics": inp.demographics,
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "person_id": person_id,
            "link_kind": LinkKind.AUTOMATIC.value,
            "link_score": outcome.score,
            "link_actor": uow.actor,
            "link_created_at": now,
            "enterprise_id": written["enterprise_id"],
            "others": written["others"],
        }
        return Registered(
            decision,
            record_id,
            person_id,
            True,
            [r["id"] for r in reviews],
            record_row,
            _person_row(written),
            reviews,
        )

    async def _register_update(
        self,
        uow: UnitOfWork,
        domain: Domain,
        demographics: Demographics,
        others: Sequence[ResolvedIdentifier],
        source: str | None,
        prepared: Prepared,
        row: Row,
    ) -> Registered:
        """A known record: lock its old and new blocking keys and write it (with the history
        and outbox rows so far) in one call, then re-score it. A record alone in its automatic
        person is matched again like a new one; a record sharing its person is checked against
        the person's other records, and a link that no longer holds becomes a review item
        (never a silent unlink). Manual and verified links are never changed automatically."""
        repo = uow.repo
        record_id = row["id"]
        linked = row["status"] == RecordStatus.ACTIVE and row["person_id"] is not None
        automatic = linked and row["link_kind"] == LinkKind.AUTOMATIC
        dumped = demographics.model_dump(mode="json")
        uow.record(
            "record_updated",
            "source_record",
            record_id,
            before=record_snapshot(row),
            after={**record_snapshot(row), "status": "active", "demographics": dumped},
            record_id=record_id,
            person_id=row["person_id"],
        )
        if linked:
            payload = {"event": "record_updated", "record_id": record_id}
            uow.emit(UPDATED_TOPIC, {**payload, "person_ids": [row["person_id"]]})
        history, outbox = uow.take_events()  # written by the same call
        written = await repo.register_update(
            record_id=record_id,
            lock_keys=[*prepared.keys, *row["old_keys"]],
            record=RecordWrite(
                demographics=dumped,
                normalized=prepared.normalized,
                search=prepared.search,
                source=source,
                others=others,
                keys=prepared.keys,
            ),
            touch_person=row["person_id"] if linked else None,
            own_person=row["person_id"] if automatic else None,
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
            return Registered(decision, record_id, person_id, False, reviews)

        person_id = row["person_id"]
        record_row = {
            **dict(row),
            "status": RecordStatus.ACTIVE.value,
            "merged_into": None,
            "demographics": demographics,
            "version": written["version"],
            "updated_at": written["updated_at"],
            "others": written["others"],
        }
        person_row = _person_row(written)
        if not automatic:
            return Registered(
                Decision.UNCHANGED_LINK, record_id, person_id, False, [], record_row, person_row,
                []
            )
        no_match = set(row["no_match"])
        own = self._parties_by_person(written["own_parties"], None)
        if own:
            (verdict,) = self.matcher.verdicts(subject, own, no_match)
            if verdict.decision == MatchDecision.LINK:
                return Registered(
                    Decision.UNCHANGED_LINK, record_id, person_id, False, [], record_row,
                    person_row, [],
                )
            verdict.reason = "after an update the link no longer holds: " + verdict.reason
            items = await self._open_review_rows(uow, record_id, [verdict])
            return Registered(
                Decision.REVIEW, record_id, person_id, False, [i["id"] for i in items],
                record_row, person_row, items,
            )
        persons = self._candidate_persons(written, record_id)
        persons.pop(person_id, None)
        outcome = self.matcher.decide(subject, persons, no_match)
        items = await self._open_review_rows(uow, record_id, outcome.reviews)
        review_ids = [i["id"] for i in items]
        if outcome.person_id is None:
            decision = Decision.REVIEW if items else Decision.UNCHANGED_LINK
            return Registered(
                decision, record_id, person_id, False, review_ids, record_row, person_row, items
            )
        link = await repo.link_row(record_id)
        await self.set_link(
            uow,
            record_id,
            outcome.person_id,
            LinkKind.AUTOMATIC,
            outcome.score,
            outcome.explanation,
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
        return Registered(Decision.LINKED, record_id, outcome.person_id, False, review_ids)

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
        self, found: Row, exclude: int | None
    ) -> dict[int, list[Party]]:
        """The candidates the database selected (matching.blocking.select_candidates, made in
        the SQL function register_candidates), as persons with all their active records; a
        DEBUG line when the floor, the margin or the cap left some out (at 1M records they do
        on nearly every registration: by design, not news)."""
        selected = found["prefetched"] or ()
        if found["candidates_found"] and found["candidates_found"] > len(selected):
            log.debug(
                "event=candidates_selected found=%d scored=%d cap=%d",
                found["candidates_found"],
                len(selected),
                self.matcher.settings.max_candidates,
            )
        if not selected:
            return {}
        return self._parties_by_person(found["parties"], exclude)

    def _parties_by_person(
        self, parties: Sequence[Sequence[Any]] | None, exclude: int | None
    ) -> dict[int, list[Party]]:
        """[record id, domain id, person id, normalized, version] rows (by record id) as
        parties (migration 0004 added the version)."""
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

    def party(self, row: Row) -> Party:
        return Party(
            record_id=row["id"],
            domain=self.matcher.namespaces.get(row["domain_id"], str(row["domain_id"])),
            person_id=row["person_id"],
            normalized=row["normalized"],
            version=row["version"],
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
            LinkKind.AUTOMATIC,
            outcome.score,
            outcome.explanation,
            before=None,
        )
        review_ids = await self.open_reviews(uow, subject.record_id, outcome.reviews)
        return decision, person_id, review_ids

    async def open_reviews(
        self, uow: UnitOfWork, record_id: int, verdicts: Sequence[Verdict]
    ) -> list[int]:
        return [item["id"] for item in await self._open_review_rows(uow, record_id, verdicts)]

    async def _open_review_rows(
        self, uow: UnitOfWork, record_id: int, verdicts: Sequence[Verdict]
    ) -> list[Row]:
        """Open a review item per verdict (one already open is left as it is); the new rows."""
        items = []
        for verdict in verdicts:
            item = await uow.repo.insert_review_item(
                record_id,
                verdict.best_record_id,
                verdict.person_id,
                verdict.probability,
                verdict.reason,
                verdict.explanation,
            )
            if item is not None:
                items.append(item)
                uow.record(
                    "review_opened",
                    "review_item",
                    item["id"],
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
            person["id"],
            after={"status": "active", "enterprise_id": person["enterprise_id"]},
            person_id=person["id"],
            record_id=record_id,
        )
        return person["id"]

    async def set_link(
        self,
        uow: UnitOfWork,
        record_id: int,
        person_id: int,
        kind: LinkKind,
        score: float | None,
        explanation: dict[str, Any] | None,
        *,
        before: Row | None,
    ) -> None:
        await uow.repo.set_link(record_id, person_id, kind, score, explanation, uow.actor)
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
        row = await repo.person_row(person_id, for_update=True)
        if row is None or row["status"] != PersonStatus.ACTIVE:
            return
        status = PersonStatus.MERGED if merged_into else PersonStatus.RETIRED
        await repo.set_person_status(person_id, status, merged_into)
        uow.record(
            "person_" + status.value,
            "person",
            person_id,
            before={"status": row["status"], "merged_into": row["merged_into"]},
            after={"status": status.value, "merged_into": merged_into},
            person_id=person_id,
        )

    async def move_person(
        self, uow: UnitOfWork, from_person: int, to_person: int, kind: LinkKind | None
    ) -> list[int]:
        """Relink every active record of ``from_person`` to ``to_person``; retire the first."""
        repo = uow.repo
        moved = []
        for row in await repo.person_record_rows([from_person]):
            link = await repo.link_row(row["id"])
            assert link is not None
            await self.set_link(
                uow,
                row["id"],
                to_person,
                kind or LinkKind(link["kind"]),
                link["score"],
                link["explanation"],
                before=link,
            )
            moved.append(row["id"])
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
        old = await repo.record_row_by_identifier(domain.id, retired, for_update=True)
        new = await repo.record_row_by_identifier(domain.id, survivor, for_update=True)
        if old is None or old["status"] != RecordStatus.ACTIVE:
            return False, "retired identifier unknown: nothing to merge", [], []
        if new is None:
            record_id, person_id = await self._rename(uow, domain, old, survivor)
            return (
                True,
                "surviving identifier unknown: identifier changed",
                [record_id],
                [person_id],
            )
        if new["status"] != RecordStatus.ACTIVE:
            raise InvalidState(f"surviving identifier {survivor!r} is not active")
        await repo.set_record_status(old["id"], RecordStatus.MERGED, new["id"])
        await repo.set_blocking_keys(old["id"], [])
        uow.record(
            "record_merged",
            "source_record",
            old["id"],
            before=record_snapshot(old),
            after={**record_snapshot(old), "status": "merged", "merged_into": new["id"]},
            record_id=old["id"],
            person_id=old["person_id"],
        )
        await self.dismiss_reviews(uow, old["id"])
        persons = [new["person_id"]]
        if old["person_id"] != new["person_id"]:
            persons.append(old["person_id"])
            await self.move_person(uow, old["person_id"], new["person_id"], None)
        await repo.touch_person(new["person_id"])
        uow.emit(
            CHANGED_TOPIC,
            {
                "event": "merge",
                "record_id": new["id"],
                "retired_record_id": old["id"],
                "person_ids": persons,
            },
        )
        return True, "merged", [new["id"], old["id"]], persons

    async def change_identifier(
        self, uow: UnitOfWork, domain: Domain, old_value: str, new_value: str
    ) -> tuple[int, int]:
        repo = uow.repo
        await repo.lock([record_key(domain.id, old_value), record_key(domain.id, new_value)])
        old = await repo.record_row_by_identifier(domain.id, old_value, for_update=True)
        if old is None or old["status"] != RecordStatus.ACTIVE:
            raise UnknownIdentifier(domain.namespace, old_value)
        return await self._rename(uow, domain, old, new_value)

    async def _rename(
        self, uow: UnitOfWork, domain: Domain, old: Row, new_value: str
    ) -> tuple[int, int]:
        repo = uow.repo
        clash = await repo.record_row_by_identifier(domain.id, new_value)
        if clash is not None:
            raise IdentifierConflict(
                f"identifier {new_value!r} already belongs to another record in {domain.namespace}"
            )
        await repo.set_record_identifier(old["id"], new_value)
        others = [(int(d), v, t or None) for d, v, t in old["others"]]
        prepared = self.matcher.prepare(
            Demographics.model_validate(old["demographics"]).as_matching_input(),
            [(domain.id, new_value, None), *others],
        )
        await repo.set_blocking_keys(old["id"], prepared.keys)
        uow.record(
            "identifier_changed",
            "source_record",
            old["id"],
            before=record_snapshot(old),
            after={**record_snapshot(old), "identifier": new_value},
            record_id=old["id"],
            person_id=old["person_id"],
        )
        await repo.touch_person(old["person_id"])
        uow.emit(
            CHANGED_TOPIC,
            {
                "event": "identifier_changed",
                "record_id": old["id"],
                "old_identifier": old["identifier"],
                "person_ids": [old["person_id"]],
            },
        )
        return old["id"], old["person_id"]

    # --- link / unlink / remove -------------------------------------------------------------

    async def link(
        self, uow: UnitOfWork, a: Row, b: Row, kind: LinkKind
    ) -> list[int]:
        """Make the persons of records ``a`` and ``b`` one (b's person merges into a's)."""
        repo = uow.repo
        await repo.delete_no_match(a["id"], b["id"])
        person_a, person_b = a["person_id"], b["person_id"]
        if person_a == person_b:
            link = await repo.link_row(b["id"])
            if link is not None and link["kind"] != kind.value:
                await self.set_link(
                    uow, b["id"], person_a, kind, link["score"], link["explanation"], before=link
                )
            return [person_a]
        await self.move_person(uow, person_b, person_a, kind)
        uow.emit(
            CHANGED_TOPIC,
            {"event": "link", "record_ids": [a["id"], b["id"]], "person_ids": [person_a, person_b]},
        )
        return [person_a, person_b]

    async def unlink(
        self, uow: UnitOfWork, a: Row, b: Row, reason: str | None
    ) -> list[int]:
        """Separate record ``b`` from ``a``'s person and assert they are different people."""
        repo = uow.repo
        if await repo.add_no_match(a["id"], b["id"], uow.actor, reason):
            uow.record(
                "no_match_added",
                "no_match",
                b["id"],
                after={"record_a": a["id"], "record_b": b["id"]},
                record_id=b["id"],
                person_id=b["person_id"],
            )
        if a["person_id"] != b["person_id"]:
            return []
        person_id = await self.new_person(uow, b["id"])
        link = await repo.link_row(b["id"])
        await self.set_link(uow, b["id"], person_id, LinkKind.MANUAL, None, None, before=link)
        uow.emit(
            CHANGED_TOPIC,
            {
                "event": "unlink",
                "record_ids": [a["id"], b["id"]],
                "person_ids": [a["person_id"], person_id],
            },
        )
        return [a["person_id"], person_id]

    async def remove(self, uow: UnitOfWork, domain: Domain, value: str) -> tuple[int, int | None]:
        repo = uow.repo
        await repo.lock([record_key(domain.id, value)])
        row = await repo.record_row_by_identifier(domain.id, value, for_update=True)
        if row is None or row["status"] != RecordStatus.ACTIVE:
            raise UnknownIdentifier(domain.namespace, value)
        await repo.set_record_status(row["id"], RecordStatus.REMOVED)
        await repo.set_blocking_keys(row["id"], [])
        uow.record(
            "record_removed",
            "source_record",
            row["id"],
            before=record_snapshot(row),
            after={**record_snapshot(row), "status": "removed"},
            record_id=row["id"],
            person_id=row["person_id"],
        )
        await self.dismiss_reviews(uow, row["id"])
        if row["person_id"] is not None:
            await self.retire_if_empty(uow, row["person_id"])
        uow.emit(
            CHANGED_TOPIC,
            {"event": "remove", "record_id": row["id"], "person_ids": [row["person_id"]]},
        )
        return row["id"], row["person_id"]
