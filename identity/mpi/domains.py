"""Assigning authorities: configuration synced into the database, resolution of the names a
message uses (namespace, OID or both), and which sources may assign in which domain."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from identity.config import Settings
from identity.errors import AmbiguousDomain, InvalidInput, UnknownDomain, UnknownTargetDomain
from identity.model import AuthorityRef, Domain
from identity.store.db import Database
from identity.store.repository import Repository

log = logging.getLogger("identity.mpi.domains")


class DomainRegistry:
    """An in-memory view of the domain table, refreshed on a miss (another process may have
    auto-registered a domain)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._by_id: dict[int, Domain] = {}
        self._by_namespace: dict[str, Domain] = {}
        self._by_oid: dict[str, Domain] = {}

    @property
    def by_id(self) -> dict[int, Domain]:
        return self._by_id

    async def sync_from_settings(self) -> None:
        """Write the configured domains and the enterprise domain into the database."""
        mpi = self.settings.mpi
        async with self.db.transaction(detached=True) as conn:
            repo = Repository(conn)
            await repo.upsert_domain(
                namespace=mpi.enterprise_namespace,
                oid=mpi.enterprise_oid,
                sources=(),
                identifies_person=True,
                is_enterprise=True,
            )
            for domain in self.settings.domains:
                await repo.upsert_domain(
                    namespace=domain.namespace,
                    oid=domain.oid,
                    sources=domain.sources,
                    identifies_person=domain.identifies_person,
                )
        await self.refresh()

    async def refresh(self) -> None:
        # detached: the cache must hold committed domains only, even inside an atomic block
        async with self.db.connection(detached=True) as conn:
            domains = await Repository(conn).domains()
        self._by_id = {d.id: d for d in domains}
        self._by_namespace = {d.namespace: d for d in domains}
        self._by_oid = {d.oid: d for d in domains if d.oid}

    def all(self) -> list[Domain]:
        return sorted(self._by_id.values(), key=lambda d: d.id)

    @property
    def enterprise(self) -> Domain:
        return next(d for d in self._by_id.values() if d.is_enterprise)

    def _lookup(self, ref: AuthorityRef) -> Domain | None:
        by_ns = self._by_namespace.get(ref.namespace) if ref.namespace else None
        by_oid = self._by_oid.get(ref.oid) if ref.oid else None
        if by_ns and by_oid and by_ns.id != by_oid.id:
            raise AmbiguousDomain(
                f"namespace {ref.namespace!r} and OID {ref.oid!r} name different domains"
            )
        found = by_ns or by_oid
        if found is not None:
            # Every part given must agree with the configuration (TF2 ITI-8, PID-3 CX.4).
            if ref.oid and found.oid and ref.oid != found.oid:
                raise AmbiguousDomain(
                    f"OID {ref.oid!r} does not belong to namespace {found.namespace!r}"
                )
            if ref.namespace and ref.namespace != found.namespace and by_ns is None and by_oid:
                raise AmbiguousDomain(
                    f"namespace {ref.namespace!r} does not belong to OID {ref.oid!r}"
                )
        return found

    def known(self, ref: AuthorityRef, source: str | None = None) -> Domain | None:
        """The domain a message's authority names, from the cache only and without raising
        (an audit record names what it can): None when unknown or contradictory. An absent
        authority is completed, as for a feed, when ``source`` owns exactly one domain."""
        if not ref.namespace and not ref.oid:
            owned = [
                d for d in self._by_id.values()
                if source is not None and source in d.sources and not d.is_enterprise
            ]  # fmt: skip
            return owned[0] if len(owned) == 1 else None
        try:
            return self._lookup(ref)
        except AmbiguousDomain:
            return None

    async def resolve(self, ref: AuthorityRef) -> Domain:
        """The domain a message names, for a query or a reference (never creates one)."""
        if not ref.namespace and not ref.oid:
            raise InvalidInput("identifier has no assigning authority", field="authority")
        found = self._lookup(ref)
        if found is None:
            await self.refresh()
            found = self._lookup(ref)
        if found is None:
            raise UnknownDomain(str(ref))
        return found

    async def resolve_targets(self, refs: Sequence[AuthorityRef]) -> list[Domain]:
        """Target domains of a query; the first unknown one raises with its 1-based position."""
        domains = []
        for position, ref in enumerate(refs, start=1):
            try:
                domains.append(await self.resolve(ref))
            except (UnknownDomain, AmbiguousDomain, InvalidInput) as exc:
                raise UnknownTargetDomain(str(ref), position=position) from exc
        return domains

    async def resolve_for_feed(self, ref: AuthorityRef, source: str | None) -> Domain:
        """The domain a feed assigns in. An absent authority is completed when the source owns
        exactly one domain; an unknown one is created when mpi.auto_register_domains is set."""
        if not ref.namespace and not ref.oid:
            owned = [
                d
                for d in self._by_id.values()
                if source is not None and source in d.sources and not d.is_enterprise
            ]
            if len(owned) == 1:
                return owned[0]
            raise InvalidInput(
                "identifier has no assigning authority and the source does not own exactly one "
                "domain",
                field="authority",
            )
        try:
            return await self.resolve(ref)
        except UnknownDomain:
            if not self.settings.mpi.auto_register_domains:
                raise
        namespace = ref.namespace or ref.oid
        assert namespace is not None
        # detached: a domain is configuration, committed at once even inside an atomic block
        async with self.db.transaction(detached=True) as conn:
            await Repository(conn).insert_domain_if_absent(namespace, ref.oid)
        log.info("event=domain_auto_registered namespace=%s oid=%s", namespace, ref.oid or "")
        await self.refresh()
        return await self.resolve(ref)
