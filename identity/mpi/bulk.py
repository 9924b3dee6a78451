"""Bulk import: the initial load of an empty index from a file, in one transaction.

Feeding a million records one registration at a time costs a million transactions. An initial
load instead matches the whole set at once with the same engine and the same rules, then
writes everything with COPY:

1. normalise every record and compute its blocking keys (in worker processes);
2. all candidate pairs from the blocking keys; score them in one vectorised batch;
3. decide each pair above the review threshold (thresholds and hard rules, as the feed does);
4. cluster the LINK pairs, most probable first, joining two clusters only when no pair of
   records across them trips a hard rule (the feed's person-level rule: a person is linked only
   when none of its records vetoes); refused and REVIEW pairs between different persons become
   review items, as do records sharing a person-identifying identifier across persons;
5. COPY persons, records, links, blocking keys, other identifiers, review items and one history
   row per record, then commit.

It refuses a non-empty index (incremental loads go through the feeds, which see the existing
persons). No ITI-10 notifications are sent for an initial load.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from identity.errors import InvalidInput, InvalidState
from identity.model import RecordInput
from identity.mpi.commands import Envelope, ImportRecords
from identity.mpi.core import Core
from identity.mpi.matcher import Party, Prepared, prepare_record
from identity.mpi.uow import UnitOfWork
from identity.store.bulk import BULK_STATEMENT_TIMEOUT, BulkWriter
from identity.store.registration import search_values
from identity.store.repository import Repository
from matching.blocking import candidate_pairs
from matching.decision import Decision as MatchDecision
from matching.decision import family_given_names_of_pairs
from matching.model import probability

log = logging.getLogger("identity.mpi.bulk")

CHUNK = 2000


@dataclass
class ImportReport:
    records: int = 0
    persons: int = 0
    linked_records: int = 0  # records that share their person with another record
    review_items: int = 0
    duplicates_skipped: int = 0
    candidate_pairs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Resolved:
    domain_id: int
    namespace: str
    value: str
    identifiers: list[tuple[int, str, str | None]]  # primary first
    demographics: dict[str, Any]  # as received (stored)


def _prepare_chunk(
    args: tuple[list[tuple[dict[str, Any], list[tuple[int, str, str | None]]]],
                dict[int, str], frozenset[str]],
) -> list[Prepared]:
    rows, namespaces, person_identifying = args
    return [
        prepare_record(_without_none(d), ids, namespaces, person_identifying) for d, ids in rows
    ]


def _without_none(value: Any) -> Any:
    """Demographics as stored (None for absent fields) to the shape matching/ takes."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class _Clusters:
    """Union-find over record indices that keeps each cluster's members."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.members: dict[int, list[int]] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def of(self, root: int) -> list[int]:
        return self.members.get(root, [root])

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if len(self.of(ra)) < len(self.of(rb)):
            ra, rb = rb, ra
        self.members[ra] = self.of(ra) + self.of(rb)
        self.members.pop(rb, None)
        self.parent[rb] = ra


async def bulk_import(core: Core, command: ImportRecords, envelope: Envelope) -> ImportReport:
    """Handle ImportRecords: the whole load matched in this process (normalising in
    ``command.workers`` processes), then written in one transaction."""
    inputs: Iterable[RecordInput] = command.records
    source = envelope.source
    workers = command.workers
    report = ImportReport()
    started = time.perf_counter()
    async with core.db.connection() as conn:
        if await Repository(conn).has_records():  # checked again, under lock, before writing
            raise InvalidState(
                "bulk import needs an empty index; load more records through the feeds"
            )
    resolved = await _resolve(core, inputs, source, report)
    report.records = len(resolved)
    matcher = core.matcher
    settings = core.settings.matching

    t0 = time.perf_counter()
    jobs = [
        ([(r.demographics, r.identifiers) for r in resolved[i : i + CHUNK]],
         matcher.namespaces, matcher.person_identifying)
        for i in range(0, len(resolved), CHUNK)
    ]
    if workers > 1 and len(jobs) > 1:
        # forkserver: the workers do not inherit (and, touching refcounts, copy) this
        # process's heap, which holds every record of the load.
        context = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            prepared = [p for chunk in pool.map(_prepare_chunk, jobs) for p in chunk]
    else:
        prepared = [p for job in jobs for p in _prepare_chunk(job)]
    report.seconds["normalize"] = round(time.perf_counter() - t0, 2)

    matcher.calibrate(len(resolved))
    t0 = time.perf_counter()
    pairs = candidate_pairs([p.keys for p in prepared], max_block=settings.max_block)
    report.candidate_pairs = int(len(pairs))
    norms = [p.normalized for p in prepared]
    model = matcher.model
    encoded = model.encode(norms)
    weights = (
        model.score_pairs(encoded, pairs[:, 0], encoded, pairs[:, 1], workers=workers)
        if len(pairs)
        else np.zeros(0)
    )
    probs = np.atleast_1d(probability(weights)) if len(pairs) else np.zeros(0)
    report.seconds["score"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    parties = [
        Party(i, r.namespace, None, prepared[i].normalized) for i, r in enumerate(resolved)
    ]
    clusters, reviews, best = _cluster(matcher, parties, pairs, probs, settings.review)
    report.seconds["cluster"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    async with core.unit(envelope) as uow:
        report.persons, report.linked_records, report.review_items = await _write(
            uow, resolved, prepared, clusters, reviews, best, source
        )
    report.seconds["write"] = round(time.perf_counter() - t0, 2)
    async with core.db.connection() as conn:
        await conn.execute("ANALYZE", timeout=BULK_STATEMENT_TIMEOUT)
    await core.refresh_term_frequencies()
    report.seconds["total"] = round(time.perf_counter() - started, 2)
    log.info(
        "event=bulk_import records=%d persons=%d reviews=%d seconds=%s",
        report.records, report.persons, report.review_items, report.seconds["total"],
    )
    return report


async def _resolve(
    core: Core, inputs: Iterable[RecordInput], source: str | None, report: ImportReport
) -> list[_Resolved]:
    domains: dict[Any, Any] = {}

    async def domain_of(authority: Any) -> Any:
        if authority not in domains:
            domains[authority] = await core.domains.resolve_for_feed(authority, source)
        return domains[authority]

    by_key: dict[tuple[int, str], _Resolved] = {}
    for index, inp in enumerate(inputs):
        try:
            domain = await domain_of(inp.identifier.authority)
        except InvalidInput as exc:
            raise InvalidInput(f"record {index + 1}: {exc}") from exc
        if source is not None:
            core.check_source(domain, source)
        others: list[tuple[int, str, str | None]] = []
        for ref in inp.other_identifiers:
            other = await domain_of(ref.authority)
            if (other.id, ref.value) != (domain.id, inp.identifier.value):
                others.append((other.id, ref.value, ref.type))
        key = (domain.id, inp.identifier.value)
        if key in by_key:
            report.duplicates_skipped += 1  # the last occurrence wins
        by_key[key] = _Resolved(
            domain.id,
            domain.namespace,
            inp.identifier.value,
            [(domain.id, inp.identifier.value, inp.identifier.type), *others],
            inp.demographics.model_dump(mode="json"),
        )
    core.matcher.set_domains(core.domains.all())
    return list(by_key.values())


def _cluster(
    matcher: Any,
    parties: list[Party],
    pairs: np.ndarray,
    probs: np.ndarray,
    review: float,
) -> tuple[_Clusters, list[tuple[int, int, float, str]], dict[int, float]]:
    """Clusters of records (persons), review pairs, and each linked record's best probability."""
    clusters = _Clusters(len(parties))
    links: list[tuple[float, int, int]] = []
    candidates: list[tuple[int, int, float, str]] = []
    # as a feed sees a record: the given names of its candidates born the same day into its
    # family (a twin's name among them makes a misspelling ambiguous)
    family = family_given_names_of_pairs([p.normalized for p in parties], pairs)
    none: frozenset[str] = frozenset()
    for k in np.flatnonzero(probs >= review):
        a, b = int(pairs[k, 0]), int(pairs[k, 1])
        prob = float(probs[k])
        names = family.get(a, none) | family.get(b, none)
        result = matcher.pair(parties[b], parties[a], prob, False, names)
        if result.decision == MatchDecision.LINK or matcher.links_on_identifier(
            parties[b], parties[a], result
        ):
            links.append((prob, a, b))
        elif result.decision == MatchDecision.REVIEW:
            candidates.append((a, b, prob, "; ".join(result.reasons)))
    for k in np.flatnonzero(probs < review):
        a, b = int(pairs[k, 0]), int(pairs[k, 1])
        if matcher._shares_person_identifier(parties[a], parties[b]):  # noqa: SLF001
            prob = float(probs[k])
            names = family.get(a, none) | family.get(b, none)
            result = matcher.pair(parties[b], parties[a], prob, False, names)
            if matcher.links_on_identifier(parties[b], parties[a], result):
                links.append((prob, a, b))  # one identifier, one person
            else:
                candidates.append((a, b, prob, "shares a person-identifying identifier; "
                                   + "; ".join(result.reasons)))
    links.sort(key=lambda item: -item[0])
    best: dict[int, float] = {}
    for prob, a, b in links:
        ra, rb = clusters.find(a), clusters.find(b)
        if ra == rb:
            best[a], best[b] = max(best.get(a, 0), prob), max(best.get(b, 0), prob)
            continue
        veto = next(
            (
                result
                for x in clusters.of(ra)
                for y in clusters.of(rb)
                if (
                    result := matcher.pair(
                        parties[x], parties[y], 1.0, False,
                        family.get(x, none) | family.get(y, none),
                    )
                ).hard_rules
            ),
            None,
        )
        if veto is not None:
            candidates.append((a, b, prob, "; ".join(veto.reasons)))
            continue
        clusters.union(a, b)
        best[a], best[b] = max(best.get(a, 0), prob), max(best.get(b, 0), prob)
    reviews = [c for c in candidates if clusters.find(c[0]) != clusters.find(c[1])]
    return clusters, reviews, best


async def _write(
    uow: UnitOfWork,
    resolved: list[_Resolved],
    prepared: list[Prepared],
    clusters: _Clusters,
    reviews: list[tuple[int, int, float, str]],
    best: dict[int, float],
    source: str | None,
) -> tuple[int, int, int]:
    repo: Repository = uow.repo
    writer = BulkWriter(repo.conn)
    await writer.lock_index()
    if await repo.has_records():
        raise InvalidState("bulk import needs an empty index; load more records through the feeds")
    n = len(resolved)
    record_ids = await writer.reserve("source_record_id_seq", n)
    roots = sorted({clusters.find(i) for i in range(n)})
    person_ids = await writer.reserve("person_id_seq", len(roots))
    enterprise = await writer.reserve("enterprise_id_seq", len(roots))
    person_of_root = dict(zip(roots, person_ids, strict=True))
    await writer.copy(
        "person",
        ["id", "enterprise_id"],
        [(pid, f"{eid:010d}") for pid, eid in zip(person_ids, enterprise, strict=True)],
    )
    await writer.copy(
        "source_record",
        ["id", "domain_id", "identifier", "demographics", "normalized", "family_norm",
         "given_norm", "family_phon", "given_phon", "birth_date", "sex", "postal_code",
         "city_norm", "phone_digits", "mothers_maiden_norm", "last_source"],
        (
            (record_ids[i], r.domain_id, r.value, r.demographics, prepared[i].normalized,
             *search_values(prepared[i].search), source)
            for i, r in enumerate(resolved)
        ),
    )
    person_of = [person_of_root[clusters.find(i)] for i in range(n)]
    await writer.copy(
        "link",
        ["source_record_id", "person_id", "kind", "score", "actor"],
        ((record_ids[i], person_of[i], "automatic", best.get(i), uow.actor) for i in range(n)),
    )
    await writer.copy(
        "blocking_key",
        ["key", "source_record_id"],
        ((key, record_ids[i]) for i, p in enumerate(prepared) for key in dict.fromkeys(p.keys)),
    )
    await writer.copy(
        "record_identifier",
        ["source_record_id", "domain_id", "identifier", "type_code"],
        (
            (record_ids[i], d, v, t)
            for i, r in enumerate(resolved)
            for d, v, t in dict.fromkeys(r.identifiers[1:])
        ),
    )
    seen: set[tuple[int, int]] = set()
    review_rows = []
    for a, b, prob, reason in reviews:
        record, other = max(a, b), min(a, b)
        key = (record, person_of[other])
        if key in seen:
            continue
        seen.add(key)
        review_rows.append(
            (record_ids[record], record_ids[other], person_of[other], prob, reason)
        )
    await writer.copy(
        "review_item", ["record_id", "other_record_id", "person_id", "score", "reason"], review_rows
    )
    await writer.copy(
        "history",
        ["command_id", "event", "entity", "entity_id", "person_id", "record_id", "after",
         "actor"],
        (
            (uow.command_id, "record_imported", "source_record", record_ids[i], person_of[i],
             record_ids[i],
             {"domain_id": r.domain_id, "identifier": r.value, "person_id": person_of[i]},
             uow.actor)
            for i, r in enumerate(resolved)
        ),
    )
    linked = sum(len(clusters.of(r)) for r in roots if len(clusters.of(r)) > 1)
    return len(roots), linked, len(review_rows)
