"""Bulk import, set at a time: a chunk of new records matched against the index and against
each other with the feed's decisions, then written with COPY in one transaction.

Registering a million records one at a time costs a million transactions and a million
candidate reads. :class:`SetLoader` takes a chunk (``CHUNK`` records) of records not yet in
the index and

1. normalises each and computes its blocking keys (``workers`` processes: the feed's
   ``prepare_record``);
2. in one transaction holding the index's tables against writers (feeds wait; reads go on):
   reads the blocks of every key of the chunk in one query (the first ``max_block + 1`` records
   of each, as ``register_candidates`` does);
3. selects each record's candidates as the feed does (``matching.blocking.select_candidates``
   over the index's blocks and the chunk's earlier records: records are decided in file
   order, each seeing the index and the chunk's records before it, as a feed sending them
   one after the other would), then reads every active record of the candidates' persons in
   one query;
4. scores the chunk's pairs in one vectorised batch (the records of a candidate person that
   the batch did not foresee, the chunk's records linked to it meanwhile, are scored when
   met);
5. decides each record with the feed's person-level rules (``Matcher.verdicts_of`` and
   ``Matcher.outcome``: thresholds, hard rules on every record of a person, one identifier one
   person, several persons reaching LINK go to a steward), in file order;
6. writes persons, records, links (with their explanation), blocking keys, other identifiers
   and review items with COPY, and the history and outbox rows the feed writes for a new
   record (``record_created``, ``person_created``, ``link_set``, ``review_opened``; an
   ``identity.changed`` row per record for each ITI-10 consumer), then commits.

So memory holds one chunk and its candidates, whatever the size of the file or of the index,
and a crash loses the chunk not yet committed. Records already in the index (and a record
repeated within a chunk) are not for this path: the importer registers them through the feed
(an update, or nothing when unchanged).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from identity.errors import InvalidInput
from identity.model import Decision, Domain, LinkKind, RecordInput
from identity.mpi.changes import others_snapshot
from identity.mpi.commands import Envelope, ImportRecords, Register
from identity.mpi.core import Core
from identity.mpi.handlers import register
from identity.mpi.matcher import Matcher, Party, Prepared, prepare_record
from identity.mpi.uow import CHANGED_TOPIC, UnitOfWork
from identity.store.bulk import BulkWriter, settle
from identity.store.registration import search_values
from identity.store.state import ResolvedIdentifier
from matching.blocking import select_candidates
from matching.model import probability

log = logging.getLogger("identity.mpi.bulk")

#: Records matched and written per transaction.
CHUNK = 20_000


@dataclass(slots=True)
class Incoming:
    """A record for the set path, its identifiers resolved as the feed resolves them: its
    domain, the record, its other identifiers (domain id, value, type) and the source it is
    registered for."""

    domain: Domain
    record: RecordInput
    others: list[ResolvedIdentifier]
    source: str | None
    demographics: dict[str, Any] | None = None  # as stored (JSON), once :meth:`SetLoader.prepare`d


@dataclass
class Loaded:
    """What one chunk did: each record's decision (LINKED, REVIEW or NEW_PERSON, as a feed's
    Register would answer), the persons made, review items opened, pairs scored and the
    seconds of each step."""

    decisions: list[Decision] = field(default_factory=list)
    known: list[int] = field(default_factory=list)  # positions of records the index held
    persons: int = 0
    review_items: int = 0
    pairs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ImportReport:
    """What :func:`bulk_import` (the ImportRecords command) did."""

    records: int = 0  # written by the set path
    persons: int = 0
    linked_records: int = 0  # records linked to a person that had records before them
    review_items: int = 0
    duplicates_skipped: int = 0
    candidate_pairs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _prepare_rows(
    args: tuple[list[tuple[dict[str, Any], list[ResolvedIdentifier]]], dict[int, str],
                frozenset[str]],
) -> list[Prepared]:
    """``prepare_record`` of several records (a worker process's job)."""
    rows, namespaces, person_identifying = args
    return [prepare_record(d, ids, namespaces, person_identifying) for d, ids in rows]


def _without_none(value: Any) -> Any:
    """Demographics as stored (None for absent fields) to the shape matching/ takes."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


class SetLoader:
    """Matches and writes chunks of new records (see the module's documentation)."""

    def __init__(self, core: Core, *, workers: int = 1) -> None:
        self.core = core
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        # A chunk is millions of small objects, none in a cycle that matters: with the
        # default thresholds the cyclic collector ran every 700 allocations and walked them
        # all over and over (a tenth of the run). What is loaded before (the model, the
        # tables) is frozen out of its walks. :meth:`close` sets both back.
        self._thresholds: tuple[int, int, int] | None = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            gc.unfreeze()
            self._thresholds = None

    # --- 1. normalise ------------------------------------------------------------------------

    async def prepare(self, records: Sequence[Incoming]) -> list[Prepared]:
        """Each record normalised, with its search columns and blocking keys; in ``workers``
        processes (forkserver: they do not copy this process's heap) when there are several."""
        matcher = self.core.matcher
        rows = []
        for r in records:
            # dumped once (pydantic's dump costs as much as normalising): stored as it is,
            # matched without its empty fields and what it was received as (as_matching_input)
            r.demographics = r.record.demographics.model_dump(mode="json")
            matching = _without_none(r.demographics)
            matching.pop("received", None)
            rows.append((matching, [(r.domain.id, r.record.identifier.value,
                                     r.record.identifier.type), *r.others]))
        if self.workers == 1 or len(rows) < 2000:
            # in slices, letting the chunk being written (another task) go on meanwhile
            prepared: list[Prepared] = []
            for i in range(0, len(rows), 500):
                prepared += _prepare_rows(
                    (rows[i : i + 500], matcher.namespaces, matcher.person_identifying))
                await asyncio.sleep(0)
            return prepared
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        step = -(-len(rows) // self.workers)
        loop = asyncio.get_running_loop()
        parts = await asyncio.gather(*(
            loop.run_in_executor(self._pool, _prepare_rows,
                                 (rows[i : i + step], matcher.namespaces,
                                  matcher.person_identifying))
            for i in range(0, len(rows), step)
        ))
        return [p for part in parts for p in part]

    # --- 2-6. match and write ---------------------------------------------------------------

    async def load(
        self, records: Sequence[Incoming], envelope: Envelope,
        prepared: Sequence[Prepared] | None = None,
    ) -> Loaded:
        """Match and write ``records`` (no two with one identifier) in one transaction;
        ``prepared``: their :meth:`prepare`, when done already. Records the index holds
        already are left out (their positions: ``known``): not for this path."""
        loaded = Loaded()
        if not records:
            return loaded
        t0 = time.perf_counter()
        if prepared is None:
            prepared = await self.prepare(records)
        core, matcher = self.core, self.core.matcher
        settings = matcher.settings
        per_key = settings.max_block + 1
        loaded.seconds["prepare"] = time.perf_counter() - t0
        async with core.unit(envelope) as uow:
            t0 = time.perf_counter()
            writer = BulkWriter(uow.conn)
            await writer.lock_index()
            known = await writer.existing(
                [(r.domain.id, r.record.identifier.value) for r in records])
            if known:
                loaded.known = [
                    i for i, r in enumerate(records)
                    if (r.domain.id, r.record.identifier.value) in known
                ]
                records = [r for r in records
                           if (r.domain.id, r.record.identifier.value) not in known]
                skipped = set(loaded.known)
                prepared = [p for i, p in enumerate(prepared) if i not in skipped]
                if not records:
                    return loaded
            keys = [list(dict.fromkeys(p.keys)) for p in prepared]
            ids = await writer.draw("source_record_id_seq", len(records))
            blocks = await writer.blocks(list({k for ks in keys for k in ks}), per_key)
            loaded.seconds["read"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            selected = _select(matcher, ids, keys, blocks, per_key)
            position = {record_id: i for i, record_id in enumerate(ids)}
            wanted = sorted({c for chosen in selected for c in chosen if c not in position})
            t1 = time.perf_counter()
            stored = await writer.person_records(wanted)
            loaded.seconds["read"] += time.perf_counter() - t1
            decided = _Decider(matcher, records, prepared, ids, stored)
            loaded.pairs = decided.score(selected)
            loaded.seconds["score"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            decided.decide(selected)
            loaded.seconds["decide"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            await self._write(uow, writer, decided)
            loaded.seconds["write"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        loaded.seconds["commit"] = time.perf_counter() - t0
        loaded.decisions = decided.decisions
        loaded.persons = decided.new_persons
        loaded.review_items = sum(len(r) for r in decided.reviews)
        return loaded

    async def _write(self, uow: UnitOfWork, writer: BulkWriter, decided: _Decider) -> None:
        records, prepared, ids = decided.records, decided.prepared, decided.ids
        actor = uow.actor
        persons = await writer.draw_persons(decided.new_persons)
        person_ids = [pid for pid, _ in persons]
        enterprise_of = {-(n + 1): eid for n, (_, eid) in enumerate(persons)}

        def real(person: int) -> int:
            return person_ids[-person - 1] if person < 0 else person

        person_of = [real(p) for p in decided.person_of]
        await writer.copy("person", ["id", "enterprise_id"], persons)
        await writer.touch_persons(sorted({p for p in decided.person_of if p > 0}))
        demographics = [
            r.demographics if r.demographics is not None
            else r.record.demographics.model_dump(mode="json")
            for r in records
        ]
        await writer.copy(
            "source_record",
            ["id", "domain_id", "identifier", "demographics", "normalized", "family_norm",
             "given_norm", "family_phon", "given_phon", "birth_date", "sex", "postal_code",
             "city_norm", "phone_digits", "mothers_maiden_norm", "last_source"],
            (
                (ids[i], r.domain.id, r.record.identifier.value, demographics[i],
                 prepared[i].normalized, *search_values(prepared[i].search), r.source)
                for i, r in enumerate(records)
            ),
        )
        await writer.copy(
            "record_identifier",
            ["source_record_id", "domain_id", "identifier", "type_code"],
            (
                (ids[i], d, v, t)
                for i, r in enumerate(records)
                for (d, v), t in {(d, v): t for d, v, t in r.others}.items()
            ),
        )
        await writer.copy(
            "blocking_key", ["key", "source_record_id"],
            ((key, ids[i]) for i, p in enumerate(prepared) for key in dict.fromkeys(p.keys)),
        )
        await writer.copy(
            "link", ["source_record_id", "person_id", "kind", "score", "explanation", "actor"],
            (
                (ids[i], person_of[i], LinkKind.AUTOMATIC.value, score, explanation, actor)
                for i, (score, explanation) in enumerate(decided.links)
            ),
        )
        review_rows = [
            (ids[i], v.best_record_id, real(v.person_id), v.probability, v.reason,
             v.explanation)
            for i, verdicts in enumerate(decided.reviews)
            for v in verdicts
        ]
        review_ids = await writer.draw("review_item_id_seq", len(review_rows))
        await writer.copy(
            "review_item",
            ["id", "record_id", "other_record_id", "person_id", "score", "reason",
             "explanation"],
            ((item_id, *row) for item_id, row in zip(review_ids, review_rows, strict=True)),
        )
        # the history and outbox rows the feed writes for a new record (changes.py)
        items = iter(zip(review_ids, review_rows, strict=True))
        for i, r in enumerate(records):
            record_id, person_id = ids[i], person_of[i]
            uow.record("record_created", "source_record", record_id, after={
                "domain_id": r.domain.id, "identifier": r.record.identifier.value,
                "status": "active", "demographics": demographics[i],
                "others": others_snapshot(r.others)}, record_id=record_id)
            if decided.person_of[i] < 0 and decided.first_of[decided.person_of[i]] == i:
                uow.record("person_created", "person", person_id, after={
                    "status": "active", "enterprise_id": enterprise_of[decided.person_of[i]]},
                    person_id=person_id, record_id=record_id)
            score, explanation = decided.links[i]
            uow.record("link_set", "link", record_id, after={
                "person_id": person_id, "kind": LinkKind.AUTOMATIC.value, "score": score,
                "explanation": explanation, "actor": actor},
                record_id=record_id, person_id=person_id)
            for _ in decided.reviews[i]:
                item_id, row = next(items)
                uow.record("review_opened", "review_item", item_id,
                           after={"status": "open", "reason": row[4]},
                           record_id=record_id, person_id=row[2])
            uow.emit(CHANGED_TOPIC, {"event": "record_added", "record_id": record_id,
                                     "person_ids": [person_id]})
        await writer.events(*uow.take_events())


def _select(
    matcher: Matcher,
    ids: Sequence[int],
    keys: Sequence[Sequence[str]],
    blocks: dict[str, list[int]],
    per_key: int,
) -> list[list[int]]:
    """Each record's candidates as the feed selects them (register_candidates): its blocks as
    the index holds them and as the chunk's earlier records add to them, each cut at
    ``per_key`` records in id order (the chunk's ids come after the index's)."""
    settings = matcher.settings
    local: dict[str, list[int]] = {}
    selected: list[list[int]] = []
    none: list[int] = []
    for record_id, own in zip(ids, keys, strict=True):
        found: dict[str, Sequence[int]] = {}
        for key in own:
            stored = blocks.get(key, none)
            added = local.get(key)
            if added and len(stored) < per_key:
                found[key] = [*stored, *added][:per_key]
            else:
                found[key] = stored
        selected.append([
            int(c) for c in select_candidates(
                found, max_block=settings.max_block, max_candidates=settings.max_candidates,
                margin=settings.candidate_margin, min_keys=settings.candidate_min_keys,
                rare_block=settings.candidate_rare_block,
            )
        ])
        for key in own:
            block = local.setdefault(key, [])
            if len(block) < per_key:
                block.append(record_id)
    return selected


class _Decider:
    """The decisions of one chunk: pairs scored in one batch, then each record decided in
    order by the feed's person-level rules, the chunk's persons growing as it goes (a new
    person has a negative id until written)."""

    def __init__(
        self,
        matcher: Matcher,
        records: Sequence[Incoming],
        prepared: Sequence[Prepared],
        ids: Sequence[int],
        stored: Iterable[tuple[int, int, int, dict[str, Any], int]],
    ) -> None:
        self.matcher = matcher
        self.records = records
        self.prepared = prepared
        self.ids = ids
        namespaces = matcher.namespaces
        # the index's candidate persons, each with all its active records (by record id)
        self.members: dict[int, list[Party]] = {}
        self.person_of_record: dict[int, int] = {}
        norms: list[dict[str, Any]] = []
        self.row: dict[int, int] = {}
        for record_id, domain_id, person_id, normalized, version in sorted(stored):
            party = Party(record_id, namespaces.get(domain_id, str(domain_id)), person_id,
                          normalized, version)
            self.members.setdefault(person_id, []).append(party)
            self.person_of_record[record_id] = person_id
            self.row[record_id] = len(norms)
            norms.append(normalized)
        self.first_chunk_row = len(norms)
        self.chunk = set(ids)
        for record_id, p in zip(ids, prepared, strict=True):
            self.row[record_id] = len(norms)
            norms.append(p.normalized)
        self.encoded = matcher.model.encode(norms)
        self.probs: list[dict[int, float]] = [{} for _ in records]
        self.person_of: list[int] = []
        self.first_of: dict[int, int] = {}  # a new person's first record
        self.links: list[tuple[float | None, dict[str, Any] | None]] = []
        self.reviews: list[list[Any]] = []
        self.decisions: list[Decision] = []
        self.new_persons = 0

    def score(self, selected: Sequence[Sequence[int]]) -> int:
        """Score each record against its candidates and every record of their persons in the
        index; returns the number of pairs."""
        left: list[int] = []
        right: list[int] = []
        for i, chosen in enumerate(selected):
            seen: set[int] = set()
            for c in chosen:
                if c in self.chunk:
                    others = [c]
                elif (person := self.person_of_record.get(c)) is not None:
                    others = [m.record_id for m in self.members[person]]
                else:  # not an active, linked record
                    continue
                for other in others:
                    if other not in seen:
                        seen.add(other)
                        left.append(i)
                        right.append(other)
        self._score(left, right)
        return len(left)

    def _score(self, left: Sequence[int], right: Sequence[int]) -> None:
        if not left:
            return
        rows = self.row
        weights = self.matcher.model.score_pairs(
            self.encoded, np.fromiter((self.first_chunk_row + i for i in left), np.int64),
            self.encoded, np.fromiter((rows[r] for r in right), np.int64),
        )
        probs = np.atleast_1d(probability(weights))
        for i, other, prob in zip(left, right, probs.tolist(), strict=True):
            self.probs[i][other] = prob

    def decide(self, selected: Sequence[Sequence[int]]) -> None:
        matcher = self.matcher
        none: frozenset[int] = frozenset()
        for i, chosen in enumerate(selected):
            record = self.records[i]
            persons = dict.fromkeys(
                p for c in chosen if (p := self.person_of_record.get(c)) is not None
            )
            parties = sorted((m for p in persons for m in self.members[p]),
                             key=lambda m: m.record_id)
            probs = self.probs[i]
            missing = [m.record_id for m in parties if m.record_id not in probs]
            self._score([i] * len(missing), missing)
            subject = Party(0, record.domain.namespace, None, self.prepared[i].normalized)
            grouped: dict[int, list[Party]] = {}
            for m in parties:
                grouped.setdefault(m.person_id or 0, []).append(m)
            ordered = [m for group in grouped.values() for m in group]
            verdicts = matcher.verdicts_of(subject, ordered, [probs[m.record_id] for m in ordered],
                                           none, matches_only=True)
            outcome = Matcher.outcome(verdicts)
            if outcome.person_id is not None:
                person, decision = outcome.person_id, Decision.LINKED
            else:
                self.new_persons += 1
                person = -self.new_persons
                self.first_of[person] = i
                self.members[person] = []
                decision = Decision.REVIEW if outcome.reviews else Decision.NEW_PERSON
            record_id = self.ids[i]
            self.members[person].append(Party(record_id, record.domain.namespace, person,
                                              self.prepared[i].normalized))
            self.person_of_record[record_id] = person
            self.person_of.append(person)
            self.links.append((outcome.score, outcome.explanation))
            self.reviews.append(outcome.reviews)
            self.decisions.append(decision)
            probs.clear()  # not needed again


async def bulk_import(core: Core, command: ImportRecords, envelope: Envelope) -> ImportReport:
    """Handle ImportRecords: the records new to the index (a repeated identifier keeps the
    last) matched and written by :class:`SetLoader`, a chunk per transaction; those the index
    holds already registered through the Register handler, as a FHIR update (counted with
    ``duplicates_skipped``)."""
    report = ImportReport()
    started = time.perf_counter()
    loader = SetLoader(core, workers=command.workers)
    source = envelope.source
    try:
        by_key: dict[tuple[int, str], Incoming] = {}

        async def flush() -> None:
            chunk = list(by_key.values())
            by_key.clear()
            loaded = await loader.load(chunk, envelope)
            # records the index holds already: updated as the feed does (FHIR PUT semantics)
            again = [chunk[i].record for i in loaded.known]
            for record in again:
                async with core.unit(envelope) as uow:
                    await register(Register(subject=record, replace=True), uow, core)
            report.duplicates_skipped += len(again)
            report.records += len(chunk) - len(again)
            report.persons += loaded.persons
            report.linked_records += loaded.decisions.count(Decision.LINKED)
            report.review_items += loaded.review_items
            report.candidate_pairs += loaded.pairs

        for index, inp in enumerate(command.records):
            try:
                domain = await core.domains.resolve_for_feed(inp.identifier.authority, source)
            except InvalidInput as exc:
                raise InvalidInput(f"record {index + 1}: {exc}") from exc
            core.check_source(domain, source)
            await core.refresh_domains_if(domain)
            others = await core.other_identifiers(inp.other_identifiers, domain,
                                                  inp.identifier.value)
            key = (domain.id, inp.identifier.value)
            if key in by_key:
                report.duplicates_skipped += 1  # the last occurrence wins
            by_key[key] = Incoming(domain, inp, others, source)
            if len(by_key) >= command.chunk:
                await flush()
        await flush()
    finally:
        loader.close()
    async with core.db.connection() as conn:
        await settle(conn)
    await core.refresh_term_frequencies()
    report.seconds["total"] = round(time.perf_counter() - started, 2)
    log.info("event=bulk_import records=%d persons=%d reviews=%d seconds=%s",
             report.records, report.persons, report.review_items, report.seconds["total"])
    return report


__all__ = [
    "CHUNK",
    "ImportReport",
    "Incoming",
    "Loaded",
    "SetLoader",
    "bulk_import",
]
