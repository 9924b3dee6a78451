"""``identity calibrate``: estimate a match model from the live index, show what it would
change, and (``--apply``) put it in service.

The estimation is :func:`matching.estimate.train` on the index's active records with the
stewards' decisions as labels; the dry run is :func:`matching.calibrate.plan` over the same
records under the proposed model and thresholds. Each proposal is stored as a version of the
match model (table ``match_model``) and written as ``model-v<N>.json`` next to a readable diff
against the model in service. Applying it is one core command (:class:`identity.mpi.ApplyModel`):
the model becomes active in every worker, and the links, review items and dismissals of the
plan are made in one transaction, in history under one command id (undo reverts them all).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from identity.model import CommandResult
from identity.mpi import ApplyModel, Envelope, Mpi, PlannedLink, PlannedReview
from identity.mpi.matcher import described
from identity.store.calibration import CalibrationQueries
from identity.store.repository import Repository
from identity.store.state import IndexRow
from matching.blocking import candidate_pairs, sweep_keys
from matching.calibrate import (
    IndexState,
    Plan,
    ThresholdProposal,
    estimate_generation_share,
    estimate_twin_share,
    model_diff,
    plan,
    probability_bands,
    propose_auto_link,
    review_for_budget,
)
from matching.decision import Decision, DecisionResult, decide
from matching.estimate import LabelledPair, train
from matching.model import MatchModel, term_frequencies_from
from matching.pairs import LINK, NO_MATCH, REVIEW, decide_pairs

log = logging.getLogger("identity.calibration")

__all__ = ["CalibrationSchedule", "Due", "Proposal", "TrainReport", "apply", "guards", "is_due",
           "propose", "save", "train_report"]

#: Fewer active records than this: nothing to estimate from.
MIN_RECORDS = 2


@dataclass
class Proposal:
    """A proposed model, the thresholds it would run with and what it would change."""

    version: int
    model: MatchModel
    scoring: MatchModel
    """``model`` with the index's name frequencies: what the plan scored with."""
    current: MatchModel
    auto_link: float
    review: float
    plan: Plan
    rows: list[IndexRow]
    review_items: dict[frozenset[int], int]
    threshold: ThresholdProposal | None = None
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def diff(self) -> str:
        return model_diff(self.current, self.model)

    def record_id(self, row: int) -> int:
        return self.rows[row].record_id


def labelled_pairs(
    rows: list[IndexRow], labels: list[tuple[int, int, bool]]
) -> list[LabelledPair]:
    """Steward decisions (record id, record id, same person?) as pairs of rows of ``rows``."""
    index = {row.record_id: i for i, row in enumerate(rows)}
    return [LabelledPair(index[a], index[b], same) for a, b, same in labels
            if a in index and b in index]


async def propose(
    mpi: Mpi, *, actor: str, seed: int = 0, from_budgets: bool = True
) -> Proposal:
    """Estimate a model from the index, re-score the index under it (dry run) and store it as
    a new version, not in service (:func:`save` writes it to files, :func:`apply` puts it in
    service). ``from_budgets``: propose auto-link from ``matching.false_link_budget`` and the
    review threshold from ``matching.review_budget`` when set (False: keep the thresholds in
    service)."""
    settings = mpi.settings.matching
    async with mpi.db.read() as conn:
        queries = CalibrationQueries(conn)
        rows = await queries.index_rows()
        open_items = await queries.open_review_pairs()
        labels = await Repository(conn).steward_labels()
        active = await queries.active_model()
    if len(rows) < MIN_RECORDS:
        raise ValueError("the index holds fewer than two active records: nothing to estimate")
    current = mpi.matcher.model
    normalized = [row.normalized for row in rows]
    pairs = labelled_pairs(rows, labels)
    # the estimation and the re-scoring are CPU work: on a thread, so that a service that
    # calibrates on a schedule keeps answering meanwhile
    model = await asyncio.to_thread(partial(train, normalized, labels=pairs, seed=seed))
    scoring = model.with_term_frequencies(
        term_frequencies_from(normalized) if settings.term_frequencies else None
    )

    index = {row.record_id: i for i, row in enumerate(rows)}
    review_items = {
        frozenset((index[a], index[b])): item
        for item, a, b in open_items if a in index and b in index and a != b
    }
    persons = [row.person_id if row.person_id is not None else f"record-{row.record_id}"
               for row in rows]
    state = IndexState(
        normalized,
        persons,
        [row.link_kind in (None, "automatic") for row in rows],
        [row.namespace for row in rows],
        open_reviews=set(review_items),
        no_match={frozenset((index[a], index[b])) for a, b, same in labels
                  if not same and a in index and b in index},
        same_person={frozenset((index[a], index[b])) for a, b, same in labels
                     if same and a in index and b in index},
    )
    identifying = mpi.matcher.person_identifying
    explicit = settings.model_fields_set
    review = settings.review
    auto_link = active.auto_link if active is not None else settings.auto_link
    threshold = None
    # every pair the sweep blocks (sweep_keys) scored once: the rules' shares are counted
    # from it, the budget's threshold and the plan decide from its scores
    swept = await asyncio.to_thread(partial(
        candidate_pairs, [sweep_keys(r) for r in normalized], max_block=settings.max_block))
    eligible = await asyncio.to_thread(partial(
        decide_pairs, normalized, scoring, sources=state.sources, auto_link=review,
        review=review, person_identifying_domains=identifying, pairs=swept,
        no_match=state.no_match, placeholder_names=settings.placeholder_names,
    ))
    scored = (eligible.pairs, eligible.probabilities.copy())
    twins = estimate_twin_share(eligible, state.sources)
    generations = estimate_generation_share(eligible, state.sources)
    model = model.with_twin_share(twins.share).with_generation_share(generations.share)
    scoring = scoring.with_twin_share(twins.share).with_generation_share(generations.share)
    model.training["twin_share"] = twins.to_dict()
    model.training["generation_share"] = generations.to_dict()
    if twins.share is not None or generations.share is not None:
        # the rules' pairs weighed instead of refused or held
        eligible = await asyncio.to_thread(partial(
            decide_pairs, normalized, scoring, sources=state.sources, auto_link=review,
            review=review, person_identifying_domains=identifying,
            no_match=state.no_match, placeholder_names=settings.placeholder_names,
            pairs=scored[0], probabilities=scored[1],
        ))
    linkable = eligible.probabilities[eligible.decisions == LINK]
    what_if = None
    if "auto_link" in explicit:
        auto_link = settings.auto_link  # set explicitly: it wins over any proposal
    elif settings.false_link_budget is not None and from_budgets:
        threshold = propose_auto_link(
            linkable, settings.false_link_budget, review=review, ceiling=settings.auto_link,
            floor=settings.auto_link_floor,
        )
        auto_link = threshold.auto_link
    if threshold is None:
        # what the budget would do, for the operator who keeps the threshold in service
        budget = settings.false_link_budget
        what_if = propose_auto_link(linkable, AUTO_BUDGET if budget is None else budget,
                                    review=review, ceiling=settings.auto_link,
                                    floor=settings.auto_link_floor)
    if active is not None and not from_budgets and "review" not in explicit:
        review = active.review
    review = min(review, auto_link)
    planned = partial(
        plan, state, scoring, auto_link=auto_link, person_identifying_domains=identifying,
        max_block=settings.max_block, seed=seed, placeholder_names=settings.placeholder_names,
        scored=scored,
    )
    result = await asyncio.to_thread(partial(planned, review=review))
    review_proposal = None
    if "review" not in explicit and settings.review_budget is not None and from_budgets:
        # items the plan does not see (a record no longer active) stay open whatever it does
        unseen = len(open_items) - len(review_items)
        review_proposal = await asyncio.to_thread(partial(
            _review_from_budget, result, planned, review=review, auto_link=auto_link,
            items=math.floor(settings.review_budget * len(rows) / 1000) - unseen,
        ))
        review, result = review_proposal.review, review_proposal.plan
    report = {
        "records": len(rows),
        "steward_labels": len(pairs),
        "thresholds": {"auto_link": auto_link, "review": review},
        **({"threshold_proposal": threshold.to_dict()} if threshold else {}),
        **({"review_proposal": review_proposal.to_dict(settings.review_budget)}
           if review_proposal else {}),
        **({"with_a_budget": what_if.to_dict()} if what_if else {}),
        **result.to_dict(),
        "training": {k: model.training.get(k) for k in
                     ("matching_pairs", "matching_pairs_by_rule", "em_passes", "twin_share",
                      "generation_share")},
    }
    async with mpi.db.transaction() as conn:
        version = await CalibrationQueries(conn).add_model(
            model=model.to_dict(), auto_link=auto_link, review=review, created_by=actor,
            report=_plain(report),
        )
    model.training.update(version=version, name=f"calibrated-v{version}")
    log.info("event=model_proposed version=%d records=%d links=%d", version, len(rows),
             len(result.links))
    return Proposal(version, model, scoring, current, auto_link, review, result, rows,
                    review_items, threshold, report)


@dataclass(frozen=True)
class ReviewProposal:
    """The review threshold a review budget implies (:func:`_review_from_budget`)."""

    review: float
    plan: Plan
    items: int
    """Open review items the budget allows (those the plan does not see taken off)."""
    left_out: list[float]
    """Probabilities of the pairs the configured threshold would put to a steward and the
    proposed one does not."""

    def to_dict(self, budget: float | None) -> dict[str, Any]:
        return {"review": self.review, "review_budget": budget,
                "items_allowed": max(self.items, 0), "items": _queue(self.plan),
                "pairs_left_out": len(self.left_out),
                "pairs_left_out_by_band": probability_bands(self.left_out)}


def _queue_probabilities(result: Plan) -> list[float]:
    """The probability of each review item the plan leaves open (kept or opened)."""
    return [p for *_, p in result.reviews_kept] + [p for *_, p in result.reviews_to_open]


def _queue(result: Plan) -> int:
    return len(_queue_probabilities(result))


def _review_from_budget(result: Plan, planned: Callable[..., Plan], *, review: float,
                        auto_link: float, items: int) -> ReviewProposal:
    """The lowest review threshold (from ``review`` up to ``auto_link``) at which the plan
    leaves at most ``items`` review items open, and the plan at it. Raising the threshold
    changes more than the queue's tail (a pair a hard rule holds below it is no longer a
    conflict between two persons), so the plan is made again at each threshold tried."""
    queue = _queue_probabilities(result)
    chosen, at = review, result
    for _ in range(3):
        if _queue(at) <= items:
            break
        higher = review_for_budget(_queue_probabilities(at), items, floor=chosen,
                                   ceiling=auto_link)
        if higher <= chosen:
            break
        chosen, at = higher, planned(review=higher)
    return ReviewProposal(chosen, at, items, [p for p in queue if p < chosen])


@dataclass
class TrainReport:
    """``identity train --report``: the model trained with the stewards' decisions as labels,
    and what those decisions change: the weights against the same training without them and
    against the model in service, the open review queue as each model would decide it, and
    how each model decides the pairs stewards decided."""

    model: MatchModel
    labels_diff: str
    service_diff: str
    report: dict[str, Any]


_DECIDED = {LINK: "link", REVIEW: "review", NO_MATCH: "no_match"}


async def train_report(mpi: Mpi, *, seed: int = 0) -> TrainReport:
    """Train on the index's active records with the stewards' decisions as labels (as
    ``identity train`` does), train again without them, and re-decide the open review items
    and the steward-decided pairs under the model in service and under the new one (with the
    thresholds in service; the new model with the index's name frequencies, as calibrate
    scores). Nothing is stored."""
    settings = mpi.settings.matching
    async with mpi.db.read() as conn:
        queries = CalibrationQueries(conn)
        rows = await queries.index_rows()
        open_items = await queries.open_review_pairs()
        labels = await Repository(conn).steward_labels()
    if len(rows) < MIN_RECORDS:
        raise ValueError("the index holds fewer than two active records: nothing to train on")
    normalized = [row.normalized for row in rows]
    pairs = labelled_pairs(rows, labels)
    labelled = await asyncio.to_thread(partial(train, normalized, labels=pairs, seed=seed))
    unlabelled = (
        await asyncio.to_thread(partial(train, normalized, seed=seed)) if pairs else labelled
    )
    current = mpi.matcher.model
    scoring = labelled.with_term_frequencies(
        term_frequencies_from(normalized) if settings.term_frequencies else None
    )
    index = {row.record_id: i for i, row in enumerate(rows)}
    options: dict[str, Any] = {
        "sources": [row.namespace for row in rows],
        "auto_link": mpi.matcher.settings.auto_link,
        "review": mpi.matcher.settings.review,
        "person_identifying_domains": mpi.matcher.person_identifying,
        "placeholder_names": settings.placeholder_names,
    }

    def decided(model: MatchModel, found: list[tuple[int, int]]) -> list[str]:
        table = np.array(found, dtype=np.int64).reshape(-1, 2)
        result = decide_pairs(normalized, model, pairs=table, **options)
        return [_DECIDED[int(d)] for d in result.decisions]

    def compare(found: list[tuple[int, int]]) -> dict[str, Any]:
        if not found:
            return {"pairs": 0}
        before, after = decided(current, found), decided(scoring, found)
        return {
            "pairs": len(found),
            "in_service": dict(Counter(before)),
            "trained": dict(Counter(after)),
            "moves": {f"{a} -> {b}": n for (a, b), n in sorted(Counter(
                zip(before, after, strict=True)).items()) if a != b},
        }

    queue = [(index[a], index[b]) for _, a, b in open_items if a in index and b in index]
    same = [(index[a], index[b]) for a, b, s in labels if s and a in index and b in index]
    different = [(index[a], index[b]) for a, b, s in labels
                 if not s and a in index and b in index]
    report = {
        "records": len(rows),
        "steward_labels": len(pairs),
        "thresholds": {"auto_link": options["auto_link"], "review": options["review"]},
        "open_review_items": await asyncio.to_thread(compare, queue),
        "steward_decisions": {
            "same_person": await asyncio.to_thread(compare, same),
            "not_a_duplicate": await asyncio.to_thread(compare, different),
        },
    }
    return TrainReport(
        model=labelled,
        labels_diff=model_diff(unlabelled, labelled) if pairs else "(no steward decisions)",
        service_diff=model_diff(current, labelled),
        report=report,
    )


def save(proposal: Proposal, output_dir: Path) -> Path:
    """Write ``model-v<N>.json`` and ``model-v<N>.diff.txt`` (against the model in service)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"model-v{proposal.version}.json"
    proposal.model.save(path)
    (output_dir / f"model-v{proposal.version}.diff.txt").write_text(
        proposal.diff + "\n", encoding="utf-8"
    )
    return path


async def apply(mpi: Mpi, proposal: Proposal, *, actor: str) -> CommandResult:
    """Put the proposal in service and make its plan, as one command (undo reverts it)."""
    plan_ = proposal.plan
    rid = proposal.record_id
    held = {(a, b) for a, b, _ in plan_.links_in_conflict}
    command = ApplyModel(
        version=proposal.version,
        links=tuple(PlannedLink(a=rid(a), b=rid(b), probability=p) for a, b, p in plan_.links),
        reviews=tuple(
            PlannedReview(record_id=rid(a), other_record_id=rid(b), probability=p,
                          explanation=_explained(mpi, proposal, a, b, held=(a, b) in held))
            for a, b, p in plan_.reviews_to_open
        ),
        linked=tuple(proposal.review_items[frozenset((a, b))]
                     for a, b, _ in plan_.reviews_closed_by_link),
        dismissed=tuple(proposal.review_items[frozenset((a, b))]
                        for a, b, _ in plan_.reviews_to_dismiss),
    )
    return await mpi.handle(command, Envelope(actor=actor))


def _explained(mpi: Mpi, proposal: Proposal, a: int, b: int, *, held: bool = False
               ) -> dict[str, Any]:
    """The explanation a review item opened by the calibration carries: each comparison's level
    and weight under the proposed model, and the decision with the hard rules that fired (the
    rules see the pair alone here, not the family's other given names the plan saw).
    ``held``: the pair decides LINK, but the plan held the link (``Plan.links_in_conflict``):
    the decision shown is REVIEW, with why."""
    left, right = proposal.rows[a], proposal.rows[b]
    explanation = proposal.scoring.explain(left.normalized, right.normalized)
    result = decide(
        explanation.probability, auto_link=proposal.auto_link, review=proposal.review,
        record_source_domain=left.namespace, candidate_source_domain=right.namespace,
        record_identifiers=left.normalized["identifiers"],
        candidate_identifiers=right.normalized["identifiers"],
        person_identifying_domains=mpi.matcher.person_identifying,
        record=left.normalized, candidate=right.normalized,
        placeholder_names=mpi.settings.matching.placeholder_names,
        twin_share=proposal.scoring.twin_share,
        generation_share=proposal.scoring.generation_share,
    )
    if held and result.decision == Decision.LINK:
        result = DecisionResult(Decision.REVIEW, result.probability, (
            f"probability {result.probability:.6f} reaches auto-link {proposal.auto_link}, but "
            "the link is held: a hard rule fired between other records of the two persons it "
            "would join, or the record reaches two persons that a rule keeps apart",
        ) + result.reasons[1:], result.hard_rules)
    return described(proposal.scoring, explanation, right.record_id, result)


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and tuples as Python numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


#: A scheduled calibration needs at least this many active records (fewer: too few pairs).
SCHEDULE_MIN_RECORDS = 1000
#: ``auto`` applies a proposal only when its new links expect at most this many false ones per
#: 10,000 (``matching.false_link_budget`` when set).
AUTO_BUDGET = 10.0
_SCHEDULE_LOCK = 0x6964_6361_6C69  # "idcali": one scheduled calibration at a time


@dataclass(frozen=True)
class Due:
    """Whether a scheduled calibration is due, and why."""

    due: bool
    reason: str


def is_due(
    *, records: int, last_records: int | None, days_since: float | None, growth: float,
    interval_days: float,
) -> Due:
    """Due when the index reached SCHEDULE_MIN_RECORDS and has grown ``growth`` times since the
    last calibration, or ``interval_days`` have passed since it (none yet: due at the minimum)."""
    if records < SCHEDULE_MIN_RECORDS:
        return Due(False, f"{records} records, fewer than {SCHEDULE_MIN_RECORDS}")
    if last_records is None or days_since is None:
        return Due(True, "no calibration yet")
    if records >= growth * max(last_records, 1):
        return Due(True, f"the index grew from {last_records} to {records} records")
    if days_since >= interval_days:
        return Due(True, f"{days_since:.0f} days since the last calibration")
    return Due(False, "not grown enough, not long enough")


def guards(proposal: Proposal, budget: float | None) -> list[str]:
    """Why ``auto`` must not apply a proposal (empty: it may)."""
    report = proposal.report
    failed = []
    broken = report["links_no_longer_holding"]
    if broken:
        failed.append(f"{broken} automatic links would no longer hold")
    links = report["links"]["pairs"]
    expected = report["expected_false_links"]["new_links"]
    limit = AUTO_BUDGET if budget is None else budget
    if links and 10_000 * expected / links > limit:
        failed.append(f"the new links expect {10_000 * expected / links:.1f} false links per "
                      f"10,000, over the budget of {limit}")
    return failed


#: Name frequencies and the prior are refitted when the index has grown by this factor since.
REFRESH_GROWTH = 1.1


class CalibrationSchedule:
    """Every ``refresh`` seconds, in every worker: refit the name frequencies and the prior when
    the index has grown by REFRESH_GROWTH since (an index filled through the feeds would keep
    those of its start until a restart; checked often, since a new index grows fastest and runs
    on the counts of its first minute until then, and counting is one ``count(*)``); every
    ``period`` seconds, with ``[matching] calibrate = "suggest" | "auto"``, check whether a
    calibration is due (one worker at a time, by an advisory lock), run the dry run and, in
    ``auto`` when the guards pass, apply it."""

    def __init__(self, mpi: Mpi, *, period: float = 3600.0, first: float = 60.0,
                 refresh: float = 60.0) -> None:
        self.mpi = mpi
        self.period = period
        self.first = first
        self.refresh = min(refresh, period)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        await asyncio.sleep(self.first)
        loop = asyncio.get_running_loop()
        next_calibration = loop.time()
        while True:
            try:
                await self.refresh_if_grown()
                if (self.mpi.settings.matching.calibrate != "off"
                        and loop.time() >= next_calibration):
                    next_calibration = loop.time() + self.period
                    await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed run is logged and tried again next period
                log.exception("event=scheduled_calibration_failed")
            await asyncio.sleep(self.refresh)

    async def refresh_if_grown(self) -> bool:
        """Refit name frequencies and prior if the index grew by REFRESH_GROWTH; True if so."""
        async with self.mpi.db.read() as conn:
            records = await CalibrationQueries(conn).active_records()
        if records < REFRESH_GROWTH * max(self.mpi.core.indexed, 1) and self.mpi.core.indexed:
            return False
        if records == 0:
            return False
        await self.mpi.refresh_term_frequencies()
        return True

    async def run_once(self) -> Proposal | None:
        """One check (and calibration when due); the proposal made, else None."""
        mpi, settings = self.mpi, self.mpi.settings.matching
        async with mpi.db.connection(detached=True) as conn:
            lock = CalibrationQueries(conn)
            if not await lock.try_lock(_SCHEDULE_LOCK):
                return None  # another worker is at it
            try:
                async with mpi.db.read() as read:
                    queries = CalibrationQueries(read)
                    records = await queries.active_records()
                    last = await queries.last_calibration()
                due = is_due(
                    records=records,
                    last_records=last[0] if last else None,
                    days_since=last[1] if last else None,
                    growth=settings.calibrate_growth,
                    interval_days=settings.calibrate_interval,
                )
                if not due.due:
                    log.debug("event=calibration_not_due reason=%s", due.reason)
                    return None
                # auto never lowers the threshold by itself: a budget trusts the model's own
                # posteriors, which households make over-confident (docs/matching.md); an
                # operator applies such a proposal after reading it
                proposal = await propose(mpi, actor="calibrate:schedule",
                                         from_budgets=settings.calibrate != "auto")
                failed = guards(proposal, settings.false_link_budget)
                applied = settings.calibrate == "auto" and not failed
                if applied:
                    await apply(mpi, proposal, actor="calibrate:schedule")
                log.info(
                    "event=scheduled_calibration version=%d reason=%s mode=%s applied=%s "
                    "links=%d held_back=%s",
                    proposal.version, due.reason, settings.calibrate, applied,
                    len(proposal.plan.links), "; ".join(failed) or "-",
                )
                return proposal
            finally:
                await lock.unlock(_SCHEDULE_LOCK)
