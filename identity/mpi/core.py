"""What every command handler shares: the domains, the matcher, the changes to the index
(identity.mpi.changes), the unit of work, and the steps that turn identifiers as received into
resolved ones."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from identity.config import Settings
from identity.errors import (
    AlreadyProcessed,
    AmbiguousDomain,
    InvalidInput,
    NotFound,
    ReusedMessageId,
    SourceNotAuthorized,
    UnknownDomain,
)
from identity.model import (
    CommandResult,
    Domain,
    IdentifierRef,
    Person,
    RecordInput,
    SourceRecord,
)
from identity.mpi.audit import AuditTrail
from identity.mpi.changes import Changes
from identity.mpi.commands import Envelope, Subject
from identity.mpi.domains import DomainRegistry
from identity.mpi.matcher import Matcher
from identity.mpi.uow import UnitOfWork
from identity.store.db import Database
from identity.store.repository import Repository
from identity.store.state import ResolvedIdentifier
from matching.comparisons import full_name_key
from matching.model import FULL_NAME_MIN_PERSONS, full_name_table

log = logging.getLogger("identity.mpi")


@dataclass
class Core:
    """The MPI core's state, built once per process by :class:`identity.mpi.Mpi`."""

    db: Database
    settings: Settings
    domains: DomainRegistry
    matcher: Matcher
    changes: Changes
    fanout: dict[str, tuple[str, ...]]
    audit: AuditTrail | None = None
    """Where the envelopes' audit records go (None: not audited, e.g. tools)."""
    indexed: int = 0
    """Active records when name frequencies and the prior were last refitted."""

    @asynccontextmanager
    async def unit(self, envelope: Envelope) -> AsyncIterator[UnitOfWork]:
        """One transaction for one command. With the envelope's idempotency pair the message's
        own lock is taken first and a stored reply raises AlreadyProcessed: the same message
        delivered twice at once, to any process, is applied once."""
        async with self.db.transaction() as conn:
            uow = UnitOfWork(conn, envelope, self.fanout, self.audit)
            idempotency = envelope.idempotency
            if idempotency is not None:
                previous, digest = await uow.repo.begin_message(*idempotency)
                if previous is not None:
                    if envelope.reuses(digest):
                        raise ReusedMessageId(*idempotency)
                    raise AlreadyProcessed(previous)
            yield uow
            await uow.flush()

    async def refresh_term_frequencies(self) -> None:
        """Recount how common each name is in the index (used to weigh name agreement), and
        fit the model's prior to the index size."""
        async with self.db.read() as conn:
            counted = await Repository(conn).name_frequencies(FULL_NAME_MIN_PERSONS)
        named = {full_name_key(given, family): n for given, family, n in counted.pop("named")}
        table = counted | full_name_table(named, counted.pop("persons"), counted)
        self.indexed = int(table["total"])
        self.matcher.calibrate(self.indexed)
        if not self.settings.matching.term_frequencies:
            return
        self.matcher.use_term_frequencies(table)
        log.info("event=term_frequencies_loaded records=%s", table["total"])

    # --- identifiers as received -> resolved ---------------------------------------------------

    async def resolve_subject(
        self, subject: Subject, source: str | None, *, strict: bool = True
    ) -> tuple[Domain, RecordInput]:
        """The domain and record a command's patient names. A :class:`Received` patient's own
        identifier is chosen here (:meth:`own_identifier`); ``strict`` False: when the source
        may assign in none of them, the first is taken (ITI-30 A24/A37 name records, they do not
        assign identifiers)."""
        if isinstance(subject, RecordInput):
            domain = await self.domains.resolve_for_feed(subject.identifier.authority, source)
            await self.refresh_domains_if(domain)
            return domain, subject
        try:
            domain, primary = await self.own_identifier(subject.identifiers, source)
        except SourceNotAuthorized:
            if strict:
                raise
            primary = subject.identifiers[0]
            domain = await self.domains.resolve_for_feed(primary.authority, source)
        await self.refresh_domains_if(domain)
        others = tuple(r for r in subject.identifiers if r is not primary)
        record = RecordInput(
            identifier=primary,
            demographics=subject.demographics,
            other_identifiers=(*others, *subject.extra),
            cleared=subject.cleared,
        )
        return domain, record

    async def own_identifier(
        self, refs: Sequence[IdentifierRef], source: str | None
    ) -> tuple[Domain, IdentifierRef]:
        """Of the identifiers a feed sends (PID-3 repetitions), the record's own, with its
        domain. Preference, first match in message order within each rank: a domain whose
        ``sources`` name this sender; then any other domain open to every source that does not
        identify a person; a person-identifying domain (a national ID) only when nothing else
        fits. Raises SourceNotAuthorized (naming the first identifier) when the source may
        assign in none of them."""
        if not refs:
            raise InvalidInput("no patient identifier", field="identifier")
        ranked: list[tuple[int, int, IdentifierRef, Domain]] = []
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
            ranked.append((rank, index, ref, domain))
        if ranked:
            _, _, primary, domain = min(ranked, key=lambda item: item[:2])
            return domain, primary
        first = refs[0]
        domain = await self.domains.resolve_for_feed(first.authority, source)
        raise SourceNotAuthorized(source or "(anonymous)", domain.namespace)

    async def prior_in_domain(
        self, record: RecordInput, domain: Domain, prior: Sequence[IdentifierRef]
    ) -> str:
        """The prior identifier (MRG-1 repetition) in the domain of the record's own identifier:
        the first without an authority or with the same authority as received, else the first
        whose authority resolves to ``domain``."""
        target = record.identifier.authority
        for ref in prior:
            authority = ref.authority
            if not authority.namespace and not authority.oid:
                return ref.value
            if authority == target:
                return ref.value
        if target.namespace or target.oid:
            for ref in prior:
                try:
                    if (await self.domains.resolve(ref.authority)).id == domain.id:
                        return ref.value
                except (UnknownDomain, AmbiguousDomain, InvalidInput):
                    continue
        raise InvalidInput(
            "MRG-1 holds no identifier in the domain of PID-3", field="prior_identifier"
        )

    def check_source(self, domain: Domain, source: str | None) -> None:
        if domain.is_enterprise or not domain.allows(source):
            raise SourceNotAuthorized(source or "(anonymous)", domain.namespace)

    async def refresh_domains_if(self, domain: Domain) -> None:
        if domain.id not in self.domains.by_id or domain.id not in self.matcher.namespaces:
            await self.domains.refresh()
            self.matcher.set_domains(self.domains.all())

    async def other_identifiers(
        self, refs: Sequence[IdentifierRef], primary: Domain, primary_value: str
    ) -> list[ResolvedIdentifier]:
        """Resolve other identifiers; those in unknown domains are skipped (and logged)."""
        resolved: list[ResolvedIdentifier] = []
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

    # --- results ---------------------------------------------------------------------------------

    async def record(self, repo: Repository, record_id: int) -> SourceRecord:
        stored = await repo.record(record_id)
        if stored is None:
            raise NotFound(f"record {record_id} does not exist")
        return stored.to_source_record(self.domains.by_id)

    async def person(self, repo: Repository, person_id: int, *, with_records: bool) -> Person:
        person = await repo.person(person_id)
        if person is None:
            raise NotFound(f"person {person_id} does not exist")
        if not with_records:
            return person
        by_id = self.domains.by_id
        records = [r.to_source_record(by_id) for r in await repo.person_records([person_id])]
        return person.model_copy(update={"records": tuple(records)})

    async def command_result(
        self,
        uow: UnitOfWork,
        applied: bool,
        record_ids: Sequence[int],
        person_ids: Sequence[int],
        note: str | None,
    ) -> CommandResult:
        by_id = self.domains.by_id
        records = [r.to_source_record(by_id) for r in await uow.repo.records(record_ids)]
        persons = [
            await self.person(uow.repo, p, with_records=True) for p in dict.fromkeys(person_ids)
        ]
        return CommandResult(
            command_id=str(uow.command_id),
            applied=applied,
            records=tuple(records),
            persons=tuple(persons),
            note=note,
        )


__all__ = ["Core"]
