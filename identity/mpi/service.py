"""The MPI core's public face: ``handle`` a command, ``answer`` a message, and the reads.

A front door turns what it received into a command (identity.mpi.commands) and an envelope,
and calls :meth:`Mpi.handle` (or :meth:`Mpi.answer`, which returns the reply to send and
answers a re-delivered message with the reply it got the first time). Every command is handled
by one function of identity.mpi.handlers inside one unit of work (a transaction); the reads
below open no transaction of their own unless they say so.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

from identity import metrics
from identity.config import Settings
from identity.errors import (
    AlreadyProcessed,
    InvalidInput,
    MpiError,
    NotFound,
    ReusedMessageId,
    StoreUnavailable,
    UnknownDomain,
)
from identity.model import (
    AuthorityRef,
    CrossReferences,
    Dashboard,
    Decision,
    DecisionEntry,
    DecisionLog,
    Demographics,
    HistoryEvent,
    IdentifierRef,
    MatchCandidate,
    Person,
    PersonHits,
    PersonView,
    QueueCountsWanted,
    QueueFilter,
    QueuePage,
    QueueSort,
    RecordView,
    ReviewDetail,
    ReviewItem,
    SearchCriteria,
    SearchResult,
    SourceRecord,
    StewardKind,
    StewardSearch,
)
from identity.mpi import query, steward
from identity.mpi.audit import AuditTrail
from identity.mpi.bulk import bulk_import
from identity.mpi.changes import Changes
from identity.mpi.commands import Command, Envelope, ImportRecords
from identity.mpi.core import Core
from identity.mpi.domains import DomainRegistry
from identity.mpi.follow import ModelFollower
from identity.mpi.handlers import HANDLERS
from identity.mpi.matcher import Matcher, load_model
from identity.mpi.outbox import TopicDeliveries, own_topic
from identity.mpi.uow import outbox_routes
from identity.store.db import Database
from identity.store.repository import Repository

log = logging.getLogger("identity.mpi")

R = TypeVar("R")
T = TypeVar("T")

_QUERY_CALLER: ContextVar[str | None] = ContextVar("identity_query_caller", default=None)
"""The caller of the door query the current task answers (``Mpi.query_for``), if any."""


class Mpi:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.domains = DomainRegistry(db, settings)
        self.matcher = Matcher(load_model(settings.matching), settings.matching)
        self.changes = Changes(self.matcher)
        self.audit = AuditTrail(db, settings)
        self.core = Core(
            db=db,
            settings=settings,
            domains=self.domains,
            matcher=self.matcher,
            changes=self.changes,
            fanout=outbox_routes([n.name for n in settings.notify],
                                 write_unconsumed=settings.maintenance.write_unconsumed_topics),
            audit=self.audit,
        )
        self._in_flight: dict[tuple[str, str], tuple[asyncio.Future[str], str | None]] = {}
        self.follower = ModelFollower(self)

    async def start(self) -> None:
        """Sync configured domains into the database and load them; use the match model
        version active in the database, if any (identity.mpi.follow)."""
        await self.domains.sync_from_settings()
        self.matcher.set_domains(self.domains.all())
        await self.follower.sync(refresh=False)
        await self.refresh_term_frequencies()

    async def follow_models(self) -> None:
        """Load each match model version activated from now on (a running service)."""
        await self.follower.listen()

    async def stop(self) -> None:
        await self.follower.stop()
        await self.audit.stop()

    async def refresh_term_frequencies(self) -> None:
        """Recount how common each name is in the index, and fit the model's prior to it."""
        await self.core.refresh_term_frequencies()

    def own_outbox_topic(
        self, topic: str
    ) -> AbstractAsyncContextManager[TopicDeliveries | None]:
        """The deliveries of one outbox topic for a worker that sends them (identity.mpi.outbox);
        None while another worker owns the topic."""
        return own_topic(self.db, topic)

    def atomic(self) -> AbstractAsyncContextManager[object]:
        """An async context in which several commands form one transaction: all are committed
        when the block ends without error, none otherwise (e.g. a PMIR message of several
        entries). Reads inside see the block's own changes. Commands inside must be awaited
        one after another in the calling task."""
        return self.db.atomic()

    # --- commands ---------------------------------------------------------------------------

    async def handle(self, command: Command[R], envelope: Envelope) -> R:
        """Handle one command in one transaction; returns its result. Raises the command's
        typed error (identity.errors) when it is refused, having changed nothing, and
        AlreadyProcessed when the envelope names a message applied before."""
        if isinstance(command, ImportRecords):
            with self.db.writing_as(envelope.actor):
                report: Any = await bulk_import(self.core, command, envelope)
            return report  # type: ignore[no-any-return]
        result, _ = await self._run(command, envelope)
        return result

    async def answer(self, command: Command[Any], envelope: Envelope) -> str:
        """Handle a command of a message that must be answered, re-deliveries included, and
        return the reply to send: the envelope's ``reply`` rendered and stored in the command's
        transaction; for a message (sender, message_id) applied or refused before, the reply
        it got then; for a refused command, the envelope's ``refusal`` (stored too, so that a
        re-sent copy gets it again). A copy of a message still being handled in this process
        (e.g. on a second connection) waits for it and gets its reply; across processes the
        message's lock does the same. StoreUnavailable is raised, not stored: the message must
        succeed when it is sent again once the database is back."""
        idempotency = envelope.idempotency
        if idempotency is None or envelope.reply is None or envelope.refusal is None:
            raise ValueError("answer() needs an envelope with sender, message_id, reply and "
                             "refusal")
        running = self._in_flight.get(idempotency)
        if running is not None:
            future, digest = running
            if envelope.reuses(digest):
                return self._reused(envelope)
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._in_flight[idempotency] = (future, envelope.digest)
        try:
            text = await self._answer(command, envelope)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: only the waiters re-raise it
            raise
        else:
            future.set_result(text)
            return text
        finally:
            del self._in_flight[idempotency]

    async def _answer(self, command: Command[Any], envelope: Envelope) -> str:
        try:
            _, text = await self._run(command, envelope)
        except AlreadyProcessed as exc:
            self._log_redelivered(envelope)
            return exc.reply
        except ReusedMessageId:
            return self._reused(envelope)
        except StoreUnavailable:
            raise
        except MpiError as exc:
            log.info("event=command_refused command=%s message_id=%s error=%s",
                     type(command).__name__, envelope.message_id, type(exc).__name__)
            return await self.refuse(envelope, exc)
        assert text is not None
        return text

    async def refuse(self, envelope: Envelope, exc: Exception) -> str:
        """The reply to a message refused before any command was made of it (a front door's
        parse error) or by its command: the envelope's ``refusal``, stored for the message
        unless a reply is stored already, which is then returned instead (a message refused
        before and now re-sent gets the reply it got then)."""
        assert envelope.refusal is not None
        text = envelope.refusal(exc)
        idempotency = envelope.idempotency
        if idempotency is None:
            return text
        try:
            async with self.db.read() as conn:
                stored, digest = await Repository(conn).save_processed_reply(
                    *idempotency, text, envelope.digest)
        except (StoreUnavailable, InvalidInput):  # the sender or control id cannot be stored
            return text
        if stored != text:
            if envelope.reuses(digest):
                return self._reused(envelope)
            self._log_redelivered(envelope)
        return stored

    def _reused(self, envelope: Envelope) -> str:
        """The refusal of a message whose control id an earlier message with other content
        used: not stored (the id's stored reply stays the first message's)."""
        assert envelope.refusal is not None and envelope.idempotency is not None
        log.info("event=message_id_reused sender=%s message_id=%s",
                 envelope.sender, envelope.message_id)
        return envelope.refusal(ReusedMessageId(*envelope.idempotency))

    async def _run(self, command: Command[R], envelope: Envelope) -> tuple[R, str | None]:
        handler = HANDLERS[type(command)]
        try:
            # the commit's WAL position is remembered for the actor's reads (a replica)
            with self.db.writing_as(envelope.actor):
                async with self.core.unit(envelope) as uow:
                    result = await handler(command, uow, self.core)
                    uow.result = result  # for the envelope's audit_result, at flush
                    text = None
                    idempotency = envelope.idempotency
                    if idempotency is not None and envelope.reply is not None:
                        text = envelope.reply(result)
                        # written at flush, with the change (and its audit records)
                        uow.remember_reply(*idempotency, text, envelope.digest)
        except AlreadyProcessed:
            raise  # audited when it was applied
        except Exception as exc:
            self.audit.failed(envelope.audit, exc)
            raise
        decision = getattr(result, "decision", None)
        if isinstance(decision, Decision):  # a registration, committed (or its savepoint)
            metrics.observe_decision(decision)
        return result, text

    @staticmethod
    def _log_redelivered(envelope: Envelope) -> None:
        log.info("event=message_redelivered sender=%s message_id=%s",
                 envelope.sender, envelope.message_id)

    # --- reads ------------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def query_for(caller: str) -> Iterator[None]:
        """The reads in this block answer a door's query (PIX, PDQ, FHIR read and search,
        $match) from ``caller`` (the actor of its changes: ``hl7:<MSH-3>|<MSH-4>``,
        ``fhir:<client>``): with ``[database] replica_url`` they are served from the replica
        unless it has not replayed the caller's own last change (or lags, or is down). Reads
        outside such a block, and every write path, use the primary."""
        token = _QUERY_CALLER.set(caller)
        try:
            yield
        finally:
            _QUERY_CALLER.reset(token)

    async def _query(self, read: Callable[[Repository], Awaitable[T]]) -> T:
        """``read`` on a repository: on the replica inside ``query_for()`` (when it may
        serve the caller), else on the primary."""
        caller = _QUERY_CALLER.get()
        if caller is None or self.db.replica is None:
            async with self.db.read() as conn:
                return await read(Repository(conn))
        return await self.db.query(lambda conn: read(Repository(conn)), caller=caller)

    async def own_identifier(
        self, identifiers: Sequence[IdentifierRef], source: str | None
    ) -> IdentifierRef:
        """Which of a patient's identifiers the core takes as the record's own when ``source``
        sends them (see Core.own_identifier); for a door that must name the record before it
        has a command (a PMIR entry whose request.url names no Patient)."""
        _, primary = await self.core.own_identifier(identifiers, source)
        return primary

    async def review_items(
        self, status: str | None = "open", limit: int = 100, offset: int = 0
    ) -> list[ReviewItem]:
        async with self.db.read() as conn:
            return await Repository(conn).review_items(status, limit, offset)

    # --- the steward's reads (identity.mpi.steward) -------------------------------------------

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[Repository]:
        """A repository on one read-only snapshot (several reads that must agree)."""
        async with self.db.read() as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                yield Repository(conn)

    async def review_queue(
        self,
        filters: QueueFilter | None = None,
        sort: QueueSort = QueueSort.OLDEST,
        limit: int = 50,
        offset: int = 0,
        counts: QueueCountsWanted = QueueCountsWanted.OPEN,
        *,
        after: str | None = None,
    ) -> QueuePage:
        """A page of the review queue with its counts (docs/steward.md, *Queue*): from
        ``offset``, or after the cursor ``after`` (a page's ``next``)."""
        async with self._snapshot() as repo:
            return await steward.queue(
                self.core, repo, filters or QueueFilter(), sort, limit, offset, counts, after
            )

    async def review_item(self, item_id: int) -> ReviewItem:
        """One review item as stored (NotFound: none)."""
        async with self.db.read() as conn:
            item = await Repository(conn).review_item(item_id)
        if item is None:
            raise NotFound(f"review item {item_id} does not exist")
        return item

    async def review_detail(self, item_id: int) -> ReviewDetail:
        """A review item with both records, the explanation, the record's other candidates,
        the other items of both records and their history."""
        async with self._snapshot() as repo:
            return await steward.review_detail(self.core, repo, item_id)

    async def record_view(self, record_id: int) -> RecordView:
        """A record as received and normalised, its review items and its history."""
        async with self._snapshot() as repo:
            return await steward.record_view(self.core, repo, record_id)

    async def person_view(self, person_id: int) -> PersonView:
        """A person with its identifiers, golden view, open review items and history."""
        async with self._snapshot() as repo:
            return await steward.person_view(self.core, repo, person_id)

    async def find_persons(self, query: StewardSearch) -> PersonHits:
        """Persons by identifier (any domain, or ``DOMAIN|value``) or by demographics (as
        :meth:`search_persons`); one of the two."""
        demographic = {
            k: v for k, v in query.model_dump(exclude={"identifier", "limit", "offset"}).items()
            if v
        }
        if query.identifier and demographic:
            raise InvalidInput("search by identifier or by demographics, not both",
                               field="identifier")
        if query.identifier:
            async with self._snapshot() as repo:
                total, persons = await steward.persons_named(
                    self.core, repo, query.identifier, query.limit, query.offset
                )
            return PersonHits(total=total, persons=tuple(persons))
        if not demographic:
            raise InvalidInput("give an identifier or at least one demographic field")
        criteria = SearchCriteria(
            **demographic, name_mode="exact", limit=query.limit, offset=query.offset
        )
        total, persons = await self.search_persons(criteria)
        return PersonHits(total=total, persons=tuple(persons))

    async def decisions(
        self,
        *,
        actor: str | None = None,
        kind: StewardKind | None = None,
        since: datetime | None = None,
        review_item_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> DecisionLog:
        """The steward commands, newest first (who decided what, when; undone by what)."""
        async with self._snapshot() as repo:
            return await steward.decisions(
                repo, actor=actor, kind=kind, since=since, review_item_id=review_item_id,
                limit=limit, offset=offset,
            )  # fmt: skip

    async def steward_command(self, command_id: str) -> DecisionEntry:
        """One steward command of the decisions log (NotFound: not a steward command)."""
        try:
            uuid.UUID(command_id)
        except ValueError as exc:
            raise InvalidInput(f"not a command id: {command_id!r}") from exc
        async with self.db.read() as conn:
            entry = await Repository(conn).steward_command(command_id)
        if entry is None:
            raise NotFound(f"no steward command {command_id}")
        return entry

    async def steward_dashboard(self, days: int = 14) -> Dashboard:
        async with self._snapshot() as repo:
            return await steward.dashboard(repo, days)

    async def cross_references(
        self, identifier: IdentifierRef, targets: Sequence[AuthorityRef] = ()
    ) -> CrossReferences:
        return await self._query(
            lambda repo: query.cross_references(repo, self.domains, identifier, targets)
        )

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

        async def read(repo: Repository) -> tuple[list[Any], dict[int, Any]]:
            persons = await self.changes.candidates(repo, prepared.keys, None)
            parties = [p for records in persons.values() for p in records]
            if not parties and prepared.search.get("family_phon"):
                ids = await repo.search_candidates(
                    prepared.search["family_phon"],
                    prepared.search.get("given_phon") or None,
                    self.settings.matching.max_candidates,
                )
                parties = [self.changes.party(r) for r in await repo.records(ids)]
            ranked = self.matcher.rank(prepared.normalized, parties, limit, explain=explain)
            stored = {r.id: r for r in await repo.records([x.party.record_id for x in ranked])}
            return ranked, stored

        ranked, stored = await self._query(read)
        by_id = self.domains.by_id
        return [
            MatchCandidate(
                record=stored[x.party.record_id].to_source_record(by_id),
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
        total, found = await self._query(
            lambda repo: repo.search(terms, criteria.limit, criteria.offset)
        )
        by_id = self.domains.by_id
        return SearchResult(total=total, records=tuple(r.to_source_record(by_id) for r in found))

    async def search_persons(self, criteria: SearchCriteria) -> tuple[int, list[Person]]:
        """Demographic search by person: the number of persons with a matching record, and the
        persons of the page (``criteria.limit``/``offset`` count persons) with all their active
        records, in two queries on one snapshot. Persons come in the order of their first
        matching record (as :meth:`search` orders records), and each person's records start
        with that record when it is active (the rest by id)."""
        terms = await query.build_search_terms(self.domains, criteria)

        async def read(repo: Repository) -> Any:
            async with repo.conn.transaction(isolation="repeatable_read", readonly=True):
                return await repo.search_persons(terms, criteria.limit, criteria.offset)

        total, page, stored = await self._query(read)
        by_id = self.domains.by_id
        records: dict[int | None, list[SourceRecord]] = {}
        for record in stored:
            records.setdefault(record.person_id, []).append(record.to_source_record(by_id))
        persons = []
        for person, matched in page:
            own = records.get(person.id, [])
            own.sort(key=lambda r: (r.id != matched, r.id))
            persons.append(person.model_copy(update={"records": tuple(own)}))
        return total, persons

    async def get_record(self, record_id: int) -> SourceRecord:
        return await self._query(lambda repo: self.core.record(repo, record_id))

    async def find_record(self, identifier: IdentifierRef) -> SourceRecord:
        from identity.errors import UnknownIdentifier

        domain = await self.domains.resolve(identifier.authority)
        stored = await self._query(
            lambda repo: repo.record_by_identifier(domain.id, identifier.value)
        )
        if stored is None:
            raise UnknownIdentifier(domain.namespace, identifier.value)
        return stored.to_source_record(self.domains.by_id)

    async def get_person(self, person_id: int) -> Person:
        return await self._query(
            lambda repo: self.core.person(repo, person_id, with_records=True)
        )

    async def get_person_by_enterprise_id(self, enterprise_id: str) -> Person:
        async def read(repo: Repository) -> Person:
            person = await repo.person_by_enterprise_id(enterprise_id)
            if person is None:
                raise NotFound(f"no person {enterprise_id}")
            return await self.core.person(repo, person.id, with_records=True)

        return await self._query(read)

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

