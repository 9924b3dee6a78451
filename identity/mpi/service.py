"""The MPI core's public face: one method per command or question, each one transaction.

Front doors call these methods and nothing below them. Commands take an ``actor`` (who caused
the change) and an optional ``message_id`` (the originating message or request), and may take
an ``idempotency`` pair (sender, message control id) with a ``reply`` builder: the reply is
stored in the same transaction as the change, so a re-delivered message gets the same reply
and is not applied twice.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from identity.config import Settings
from identity.errors import (
    AlreadyProcessed,
    InvalidInput,
    NotFound,
    SourceNotAuthorized,
    UnknownDomain,
)
from identity.model import (
    AuthorityRef,
    CommandResult,
    CrossReferences,
    Demographics,
    Domain,
    HistoryEvent,
    IdentifierRef,
    LinkKind,
    MatchCandidate,
    Person,
    RecordInput,
    RegisterResult,
    ReviewItem,
    SearchCriteria,
    SearchResult,
    SourceRecord,
)
from identity.mpi import query, review
from identity.mpi.bulk import ImportReport, bulk_import
from identity.mpi.domains import DomainRegistry
from identity.mpi.feed import Feed, record_key
from identity.mpi.matcher import Matcher, load_model
from identity.mpi.review import StewardDecision
from identity.mpi.uow import CHANGED_TOPIC, UnitOfWork, notify_topic
from identity.store.db import Database
from identity.store.repository import (
    Repository,
    person_from_row,
    record_from_row,
    review_from_row,
)

log = logging.getLogger("identity.mpi")

T = TypeVar("T")


class Mpi:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.domains = DomainRegistry(db, settings)
        self.matcher = Matcher(load_model(settings.matching), settings.matching)
        self.feed = Feed(self.matcher)
        self.fanout = {
            CHANGED_TOPIC: tuple(notify_topic(n.name) for n in settings.notify),
        }

    async def start(self) -> None:
        """Sync configured domains into the database and load them."""
        await self.domains.sync_from_settings()
        self.matcher.set_domains(self.domains.all())
        await self.refresh_term_frequencies()

    async def refresh_term_frequencies(self) -> None:
        """Recount how common each name is in the index (used to weigh name agreement), and
        fit the model's prior to the index size."""
        async with self.db.read() as conn:
            table = await Repository(conn).name_frequencies()
        self.matcher.calibrate(int(table["total"]))
        if not self.settings.matching.term_frequencies:
            return
        self.matcher.use_term_frequencies(table)
        log.info("event=term_frequencies_loaded records=%s", table["total"])

    # --- plumbing ---------------------------------------------------------------------------

    def atomic(self) -> AbstractAsyncContextManager[object]:
        """An async context in which several commands form one transaction: all are committed
        when the block ends without error, none otherwise (e.g. a PMIR message of several
        entries). Reads inside see the block's own changes. Commands inside must be awaited
        one after another in the calling task."""
        return self.db.atomic()

    @asynccontextmanager
    async def _unit(
        self,
        actor: str,
        message_id: str | None,
        idempotency: tuple[str, str] | None = None,
    ) -> AsyncIterator[UnitOfWork]:
        """One transaction. With ``idempotency`` (sender, control id) the message's own lock is
        taken first and a stored reply raises AlreadyProcessed: the same message delivered
        twice at once, to any process, is applied once."""
        async with self.db.transaction() as conn:
            uow = UnitOfWork(conn, actor, message_id, self.fanout)
            if idempotency is not None:
                previous = await uow.repo.begin_message(*idempotency)
                if previous is not None:
                    raise AlreadyProcessed(previous)
            yield uow
            await uow.flush()

    async def _refresh_domains_if(self, domain: Domain) -> None:
        if domain.id not in self.domains.by_id or domain.id not in self.matcher.namespaces:
            await self.domains.refresh()
            self.matcher.set_domains(self.domains.all())

    async def _remember(
        self,
        uow: UnitOfWork,
        idempotency: tuple[str, str] | None,
        reply: Callable[[T], str] | None,
        result: T,
    ) -> str | None:
        if idempotency is None or reply is None:
            return None
        text = reply(result)
        uow.remember_reply(idempotency[0], idempotency[1], text)  # written at flush
        return text

    async def remember_reply(self, sender: str, control_id: str, reply: str) -> str:
        """Store the reply to a message that changed nothing (an error); returns the reply to
        send: the one stored before when the message was processed already."""
        async with self.db.read() as conn:
            return await Repository(conn).save_processed_reply(sender, control_id, reply)

    def _check_source(self, domain: Domain, source: str | None) -> None:
        if domain.is_enterprise or not domain.allows(source):
            raise SourceNotAuthorized(source or "(anonymous)", domain.namespace)

    async def _other_identifiers(
        self, refs: Sequence[IdentifierRef], primary: Domain, primary_value: str
    ) -> list[tuple[int, str, str | None]]:
        """Resolve other identifiers; those in unknown domains are skipped (and logged)."""
        resolved: list[tuple[int, str, str | None]] = []
        for ref in refs:
            try:
                domain = await self.domains.resolve(ref.authority)
            except (UnknownDomain, InvalidInput):
                log.warning("event=other_identifier_skipped authority=%s", ref.authority)
                continue
            if (domain.id, ref.value) == (primary.id, primary_value) or domain.is_enterprise:
                continue
            resolved.append((domain.id, ref.value, ref.type))
        return resolved

    async def primary_identifier(
        self, refs: Sequence[IdentifierRef], source: str | None
    ) -> tuple[IdentifierRef, list[IdentifierRef]]:
        """Of the identifiers a feed sends (PID-3 repetitions), pick the record's own; the others
        are kept as other identifiers. Preference, first match in message order within each
        rank: a domain whose ``sources`` name this sender; then any other domain open to every
        source that does not identify a person; a person-identifying domain (a national ID)
        only when nothing else fits. Raises SourceNotAuthorized (naming the first identifier)
        when the source may assign in none of them."""
        if not refs:
            raise InvalidInput("no patient identifier", field="identifier")
        ranked: list[tuple[int, int, IdentifierRef]] = []
        for index, ref in enumerate(refs):
            try:
                domain = await self.domains.resolve_for_feed(ref.authority, source)
            except (UnknownDomain, InvalidInput):
                if index == 0 and len(refs) == 1:
                    raise
                continue
            if domain.is_enterprise or not domain.allows(source):
                continue
            if source is not None and source in domain.sources:
                rank = 0
            elif not domain.identifies_person:
                rank = 1
            else:
                rank = 2
            ranked.append((rank, index, ref))
        if ranked:
            _, _, primary = min(ranked, key=lambda item: item[:2])
            return primary, [r for r in refs if r is not primary]
        first = refs[0]
        domain = await self.domains.resolve_for_feed(first.authority, source)
        raise SourceNotAuthorized(source or "(anonymous)", domain.namespace)

    # --- feed commands ----------------------------------------------------------------------

    async def register(
        self,
        record: RecordInput,
        *,
        source: str | None,
        actor: str,
        message_id: str | None = None,
        replace: bool = False,
        idempotency: tuple[str, str] | None = None,
        reply: Callable[[RegisterResult], str] | None = None,
    ) -> RegisterResult:
        """Create or update a source record and decide its person.

        ``replace``: the demographics replace the stored ones (FHIR PUT); otherwise they are a
        partial update (HL7 v2: empty = unchanged, ``cleared`` fields deleted).
        """
        domain = await self.domains.resolve_for_feed(record.identifier.authority, source)
        await self._refresh_domains_if(domain)
        self._check_source(domain, source)
        others = await self._other_identifiers(
            record.other_identifiers, domain, record.identifier.value
        )
        async with self._unit(actor, message_id, idempotency) as uow:
            done = await self.feed.register_record(
                uow, domain, record, others, source, replace=replace
            )
            by_id = self.domains.by_id
            result = RegisterResult(
                decision=done.decision,
                record=(
                    record_from_row(done.record_row, by_id)
                    if done.record_row is not None
                    else await self._record(uow.repo, done.record_id)
                ),
                person=(
                    person_from_row(done.person_row)
                    if done.person_row is not None
                    else await self._person(uow.repo, done.person_id, with_records=False)
                ),
                created=done.created,
                review_items=tuple(
                    [review_from_row(r) for r in done.review_rows]
                    if done.review_rows is not None
                    else [review_from_row(await uow.repo.review_row(i)) for i in done.review_ids]
                ),
                command_id=str(uow.command_id),
            )
            await self._remember(uow, idempotency, reply, result)
        decision, record_id, person_id = done.decision, done.record_id, done.person_id
        log.info(
            "event=record_registered decision=%s record=%d person=%d domain=%s actor=%s",
            decision.value,
            record_id,
            person_id,
            domain.namespace,
            actor,
        )
        return result

    async def merge(
        self,
        authority: AuthorityRef,
        retired: str,
        survivor: RecordInput | str,
        *,
        source: str | None,
        actor: str,
        message_id: str | None = None,
        idempotency: tuple[str, str] | None = None,
        reply: Callable[[CommandResult], str] | None = None,
    ) -> CommandResult:
        """Merge ``retired`` into the survivor (same domain). When the survivor is given as a
        RecordInput its demographics are applied in the same transaction."""
        survivor_value = survivor if isinstance(survivor, str) else survivor.identifier.value
        domain = await self.domains.resolve_for_feed(authority, source)
        await self._refresh_domains_if(domain)
        self._check_source(domain, source)
        async with self._unit(actor, message_id, idempotency) as uow:
            applied, note, record_ids, person_ids = await self.feed.merge(
                uow, domain, retired, survivor_value
            )
            if (
                applied
                and isinstance(survivor, RecordInput)
                and (survivor.demographics.model_dump(exclude_none=True) or survivor.cleared)
            ):
                others = await self._other_identifiers(
                    survivor.other_identifiers, domain, survivor_value
                )
                await self.feed.register(uow, domain, survivor, others, source, replace=False)
            result = await self._command_result(uow, applied, record_ids, person_ids, note)
            await self._remember(uow, idempotency, reply, result)
        log.info("event=merge applied=%s domain=%s actor=%s", applied, domain.namespace, actor)
        return result

    async def change_identifier(
        self,
        authority: AuthorityRef,
        old_value: str,
        new_value: str,
        *,
        source: str | None,
        actor: str,
        message_id: str | None = None,
        idempotency: tuple[str, str] | None = None,
        reply: Callable[[CommandResult], str] | None = None,
    ) -> CommandResult:
        domain = await self.domains.resolve_for_feed(authority, source)
        self._check_source(domain, source)
        async with self._unit(actor, message_id, idempotency) as uow:
            record_id, person_id = await self.feed.change_identifier(
                uow, domain, old_value, new_value
            )
            result = await self._command_result(uow, True, [record_id], [person_id], None)
            await self._remember(uow, idempotency, reply, result)
        return result

    async def link(
        self,
        a: RecordInput,
        b: RecordInput,
        *,
        source: str | None,
        actor: str,
        message_id: str | None = None,
        kind: LinkKind = LinkKind.MANUAL,
        idempotency: tuple[str, str] | None = None,
        reply: Callable[[CommandResult], str] | None = None,
    ) -> CommandResult:
        """Declare two records the same person; an unknown record is created first
        (TF2 ITI-30 A24 links even when a record is unknown)."""
        async with self._unit(actor, message_id, idempotency) as uow:
            rows = await self._ensure_records(uow, [a, b], source)
            persons = await self.feed.link(uow, rows[0], rows[1], kind)
            result = await self._command_result(
                uow, True, [rows[0]["id"], rows[1]["id"]], persons, None
            )
            await self._remember(uow, idempotency, reply, result)
        return result

    async def unlink(
        self,
        a: RecordInput,
        b: RecordInput,
        *,
        source: str | None,
        actor: str,
        message_id: str | None = None,
        reason: str | None = None,
        idempotency: tuple[str, str] | None = None,
        reply: Callable[[CommandResult], str] | None = None,
    ) -> CommandResult:
        """Declare two records different people: ``b`` leaves ``a``'s person."""
        async with self._unit(actor, message_id, idempotency) as uow:
            rows = await self._lookup_records(uow, [a.identifier, b.identifier])
            persons = await self.feed.unlink(uow, rows[0], rows[1], reason)
            note = None if persons else "records were not linked"
            result = await self._command_result(
                uow, bool(persons), [rows[0]["id"], rows[1]["id"]], persons, note
            )
            await self._remember(uow, idempotency, reply, result)
        return result

    async def remove(
        self,
        identifier: IdentifierRef,
        *,
        source: str | None,
        actor: str,
        message_id: str | None = None,
    ) -> CommandResult:
        domain = await self.domains.resolve_for_feed(identifier.authority, source)
        self._check_source(domain, source)
        async with self._unit(actor, message_id) as uow:
            record_id, person_id = await self.feed.remove(uow, domain, identifier.value)
            persons = [person_id] if person_id else []
            return await self._command_result(uow, True, [record_id], persons, None)

    async def _ensure_records(
        self, uow: UnitOfWork, inputs: Sequence[RecordInput], source: str | None
    ) -> list[Any]:
        resolved = []
        for inp in inputs:
            domain = await self.domains.resolve_for_feed(inp.identifier.authority, source)
            await self._refresh_domains_if(domain)
            resolved.append((domain, inp))
        await uow.repo.lock(sorted(record_key(d.id, i.identifier.value) for d, i in resolved))
        rows = []
        for domain, inp in resolved:
            row = await uow.repo.record_row_by_identifier(domain.id, inp.identifier.value)
            if row is None:
                self._check_source(domain, source)
                others = await self._other_identifiers(
                    inp.other_identifiers, domain, inp.identifier.value
                )
                await self.feed.register(uow, domain, inp, others, source, replace=False)
                row = await uow.repo.record_row_by_identifier(domain.id, inp.identifier.value)
            if row is None or row["status"] != "active":
                raise NotFound(f"record {inp.identifier.value!r} is not active")
            rows.append(row)
        return rows

    async def _lookup_records(self, uow: UnitOfWork, refs: Sequence[IdentifierRef]) -> list[Any]:
        from identity.errors import UnknownIdentifier

        keys, resolved = [], []
        for ref in refs:
            domain = await self.domains.resolve(ref.authority)
            resolved.append((domain, ref))
            keys.append(record_key(domain.id, ref.value))
        await uow.repo.lock(sorted(keys))
        rows = []
        for domain, ref in resolved:
            row = await uow.repo.record_row_by_identifier(domain.id, ref.value, for_update=True)
            if row is None or row["status"] != "active":
                raise UnknownIdentifier(domain.namespace, ref.value)
            rows.append(row)
        return rows

    async def bulk_import(
        self,
        records: Sequence[RecordInput],
        *,
        actor: str,
        source: str | None = None,
        workers: int = 2,
    ) -> ImportReport:
        """Initial load of an empty index (see identity/mpi/bulk.py)."""
        return await bulk_import(self, records, actor=actor, source=source, workers=workers)

    # --- steward ----------------------------------------------------------------------------

    async def review_items(
        self, status: str | None = "open", limit: int = 100, offset: int = 0
    ) -> list[ReviewItem]:
        async with self.db.read() as conn:
            rows = await Repository(conn).review_rows(status, limit, offset)
        return [review_from_row(r) for r in rows]

    async def decide_review(
        self, item_id: int, decision: StewardDecision, *, actor: str, reason: str | None = None
    ) -> CommandResult:
        async with self._unit(actor, None) as uow:
            persons = await review.decide(uow, self.feed, item_id, decision, reason)
            return await self._command_result(uow, True, [], persons, decision.value)

    async def undo(self, command_id: str, *, actor: str) -> CommandResult:
        async with self._unit(actor, None) as uow:
            persons = await review.undo(uow, self.feed, command_id)
            return await self._command_result(uow, True, [], persons, f"undid {command_id}")

    # --- queries ----------------------------------------------------------------------------

    async def cross_references(
        self, identifier: IdentifierRef, targets: Sequence[AuthorityRef] = ()
    ) -> CrossReferences:
        async with self.db.read() as conn:
            return await query.cross_references(Repository(conn), self.domains, identifier, targets)

    async def match(
        self,
        demographics: Demographics,
        identifiers: Sequence[IdentifierRef] = (),
        *,
        limit: int = 50,
        explain: bool = True,
    ) -> list[MatchCandidate]:
        """Active records ranked by the matching engine against query demographics, best
        first, each with its weight, probability, grade and (with ``explain``; else empty)
        explanation (PDQ approximate search, FHIR $match). Nothing is written."""
        resolved: list[tuple[int, str, str | None]] = []
        for ref in identifiers:
            try:
                domain = await self.domains.resolve(ref.authority)
            except (UnknownDomain, InvalidInput):
                continue
            resolved.append((domain.id, ref.value, ref.type))
        prepared = self.matcher.prepare(demographics.as_matching_input(), resolved)
        async with self.db.read() as conn:
            repo = Repository(conn)
            persons = await self.feed.candidates(repo, prepared.keys, None)
            parties = [p for records in persons.values() for p in records]
            if not parties and prepared.search.get("family_phon"):
                ids = await repo.search_candidates(
                    prepared.search["family_phon"],
                    prepared.search.get("given_phon") or None,
                    self.settings.matching.max_candidates,
                )
                parties = [self.feed.party(r) for r in await repo.record_rows(ids)]
            ranked = self.matcher.rank(prepared.normalized, parties, limit, explain=explain)
            rows = {r["id"]: r for r in await repo.record_rows([x.party.record_id for x in ranked])}
        by_id = self.domains.by_id
        return [
            MatchCandidate(
                record=record_from_row(rows[x.party.record_id], by_id),
                person_id=x.party.person_id,
                weight=x.weight,
                probability=x.probability,
                grade=x.grade,
                explanation=x.explanation,
            )
            for x in ranked
        ]

    async def search(self, criteria: SearchCriteria) -> SearchResult:
        terms = await query.build_search_terms(self.domains, criteria)
        async with self.db.read() as conn:
            total, rows = await Repository(conn).search(terms, criteria.limit, criteria.offset)
        by_id = self.domains.by_id
        return SearchResult(total=total, records=tuple(record_from_row(r, by_id) for r in rows))

    async def search_persons(self, criteria: SearchCriteria) -> tuple[int, list[Person]]:
        """Demographic search by person: the number of persons with a matching record, and the
        persons of the page (``criteria.limit``/``offset`` count persons) with all their active
        records, in two queries on one snapshot. Persons come in the order of their first
        matching record (as :meth:`search` orders records), and each person's records start
        with that record when it is active (the rest by id)."""
        terms = await query.build_search_terms(self.domains, criteria)
        async with self.db.read() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                total, person_rows, record_rows = await Repository(conn).search_persons(
                    terms, criteria.limit, criteria.offset
                )
        by_id = self.domains.by_id
        records: dict[int, list[SourceRecord]] = {}
        for row in record_rows:
            records.setdefault(row["person_id"], []).append(record_from_row(row, by_id))
        persons = []
        for row in person_rows:
            own = records.get(row["id"], [])
            matched = row["matched_record_id"]
            own.sort(key=lambda r: (r.id != matched, r.id))
            persons.append(person_from_row(row, own))
        return total, persons

    async def get_record(self, record_id: int) -> SourceRecord:
        async with self.db.read() as conn:
            return await self._record(Repository(conn), record_id)

    async def find_record(self, identifier: IdentifierRef) -> SourceRecord:
        from identity.errors import UnknownIdentifier

        domain = await self.domains.resolve(identifier.authority)
        async with self.db.read() as conn:
            row = await Repository(conn).record_row_by_identifier(domain.id, identifier.value)
        if row is None:
            raise UnknownIdentifier(domain.namespace, identifier.value)
        return record_from_row(row, self.domains.by_id)

    async def get_person(self, person_id: int) -> Person:
        async with self.db.read() as conn:
            return await self._person(Repository(conn), person_id, with_records=True)

    async def get_person_by_enterprise_id(self, enterprise_id: str) -> Person:
        async with self.db.read() as conn:
            repo = Repository(conn)
            row = await repo.person_row_by_enterprise_id(enterprise_id)
            if row is None:
                raise NotFound(f"no person {enterprise_id}")
            return await self._person(repo, row["id"], with_records=True)

    async def history(
        self,
        *,
        person_id: int | None = None,
        record_id: int | None = None,
        command_id: str | None = None,
    ) -> list[HistoryEvent]:
        async with self.db.read() as conn:
            return await Repository(conn).history(
                person_id=person_id, record_id=record_id, command_id=command_id
            )

    # --- row assembly -----------------------------------------------------------------------

    async def _record(self, repo: Repository, record_id: int) -> SourceRecord:
        row = await repo.record_row(record_id)
        if row is None:
            raise NotFound(f"record {record_id} does not exist")
        return record_from_row(row, self.domains.by_id)

    async def _person(self, repo: Repository, person_id: int, *, with_records: bool) -> Person:
        row = await repo.person_row(person_id)
        if row is None:
            raise NotFound(f"person {person_id} does not exist")
        records = []
        if with_records:
            by_id = self.domains.by_id
            records = [
                record_from_row(r, by_id) for r in await repo.person_record_rows([person_id])
            ]
        return person_from_row(row, records)

    async def _command_result(
        self,
        uow: UnitOfWork,
        applied: bool,
        record_ids: Sequence[int],
        person_ids: Sequence[int],
        note: str | None,
    ) -> CommandResult:
        by_id = self.domains.by_id
        records = [record_from_row(r, by_id) for r in await uow.repo.record_rows(record_ids)]
        persons = [
            await self._person(uow.repo, p, with_records=True) for p in dict.fromkeys(person_ids)
        ]
        return CommandResult(
            command_id=str(uow.command_id),
            applied=applied,
            records=tuple(records),
            persons=tuple(persons),
            note=note,
        )
