"""Accuracy of blocking + scoring + decisions + persons joined against ground truth.

Figures (all in one flat dict):

- ``pair_completeness``: share of true match pairs that blocking puts side by side;
- ``pairwise_precision/recall/f1``: over all record pairs, "in the same predicted person" vs
  "the same true person", the persons joined from the LINK decisions as the service joins
  them (:func:`matching.calibrate.plan`, every record a person to start with: a link joins two
  persons only when no hard rule stands between their records; a record whose links reach two
  persons a rule keeps apart is left to a steward, ``links_held``), not as the links'
  transitive closure;
- ``cluster_precision/recall``: predicted persons that are exactly a true person / true persons
  found exactly;
- ``auto_link_precision``: share of LINK pair decisions that are true matches;
- ``review_pairs`` / ``review_share``: REVIEW decisions, per record
  (``review_share_at_threshold``: the same with a higher review threshold; links unchanged);
  ``review_items_per_1000_records``: the same per 1,000 records (stewards handle about 20);
  ``review_person_pairs`` (``..._per_1000_records``): the REVIEW pairs as a steward meets
  them, one per two predicted persons (after clustering the links) with at least one REVIEW
  pair between them; a REVIEW pair inside one predicted person needs no steward (the service
  opens an item per record and candidate person, never against the record's own person);
- ``true_pair_bands``: every true pair by the probability its blocked pair scored (bands
  :data:`BANDS`), or ``not_blocked``: ``{band: {"pairs", "share"}}`` (shares of all true pairs);
- ``hard_rules``: per hard rule (the names :func:`matching.decision.decide` returns) the pairs
  it fired on, how many of them are true pairs (and their share of all true pairs), and the same
  among pairs at or above the auto-link threshold (the links it stopped). Rules are only
  consulted for pairs at or above the review threshold: below it nothing they say changes the
  outcome. ``hard_rules_fired`` is the plain count per rule;
- ``twin_links``, ``jr_sr_links`` (and ``*_merged``): LINK decisions (and predicted persons)
  joining two different members of a twin pair / Jr-Sr pair; both should be zero.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matching.blocking import DEFAULT_MAX_BLOCK, blocking_keys, candidate_pairs
from matching.calibrate import (
    IndexState,
    RuleShare,
    estimate_generation_share,
    estimate_twin_share,
    persons_after,
    plan,
)
from matching.columns import ColumnMapping, read_records
from matching.decision import (
    DEFAULT_AUTO_LINK,
    DEFAULT_REVIEW,
)
from matching.model import MatchModel, term_frequencies_from
from matching.normalize import normalize_record
from matching.pairs import decide_pairs
from matching.synth import SSN_DOMAIN, SynthRecord

__all__ = ["BANDS", "evaluate_csv", "evaluate_records",
           "pairwise_figures", "review_person_pairs", "true_pair_bands"]

#: Probability bands of true pairs: (name, lower bound inclusive); the upper bound is the next
#: band's lower bound.
BANDS: tuple[tuple[str, float], ...] = (
    ("<0.5", 0.0), ("0.5-0.8", 0.5), ("0.8-0.95", 0.8), ("0.95-0.99", 0.95),
    ("0.99-0.999", 0.99), (">=0.999", 0.999),
)
NOT_BLOCKED = "not_blocked"


def _pairs_within(labels: Sequence[Any]) -> int:
    return sum(c * (c - 1) // 2 for c in Counter(labels).values())


def pairwise_figures(truth: Sequence[Any], predicted: Sequence[Any]) -> dict[str, float]:
    """Pairwise and cluster precision/recall/F1 of a predicted clustering against the truth."""
    true_pairs = _pairs_within(truth)
    predicted_pairs = _pairs_within(predicted)
    both = _pairs_within(list(zip(truth, predicted, strict=True)))
    precision = both / predicted_pairs if predicted_pairs else 1.0
    recall = both / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    true_sets: dict[Any, set[int]] = {}
    predicted_sets: dict[Any, set[int]] = {}
    for row, (t, p) in enumerate(zip(truth, predicted, strict=True)):
        true_sets.setdefault(t, set()).add(row)
        predicted_sets.setdefault(p, set()).add(row)
    true_frozen = {frozenset(s) for s in true_sets.values()}
    exact = sum(1 for s in predicted_sets.values() if frozenset(s) in true_frozen)
    return {
        "true_pairs": true_pairs,
        "predicted_pairs": predicted_pairs,
        "pairwise_precision": precision,
        "pairwise_recall": recall,
        "pairwise_f1": f1,
        "cluster_precision": exact / len(predicted_sets) if predicted_sets else 1.0,
        "cluster_recall": exact / len(true_sets) if true_sets else 1.0,
    }


def evaluate_records(
    records: Sequence[SynthRecord],
    model: MatchModel | None = None,
    *,
    auto_link: float = DEFAULT_AUTO_LINK,
    review: float = DEFAULT_REVIEW,
    max_block: int = DEFAULT_MAX_BLOCK,
    person_identifying_domains: Collection[str] = (SSN_DOMAIN,),
    use_term_frequencies: bool = True,
    scale_prior: bool = True,
    workers: int = 2,
    estimate_shares: bool = False,
) -> dict[str, Any]:
    """Run blocking, scoring, decisions and the joining of persons over labelled records;
    return figures.

    ``estimate_shares``: estimate the twin and the generational rules' shares on the records
    (as ``identity calibrate`` does, :func:`matching.calibrate.estimate_twin_share` and
    :func:`matching.calibrate.estimate_generation_share`) where the model has none.

    ``scale_prior``: the prior (probability that two random records match) shrinks as the
    record set grows; the model's prior fits its training set of ``training["records"]``
    records, so for a larger set it is scaled by training size / evaluated size, as the
    service does for its index size (``MatchModel.with_prior``). It is never raised for a
    smaller set.
    """
    started = time.perf_counter()
    model = model or MatchModel.default()
    trained_on = int(model.training.get("records") or 0)
    if scale_prior and trained_on and len(records) > trained_on:
        # Only ever lowered: raising the prior for a set smaller than the training set made
        # households link (m/u independence does not hold for them), which a MPI must not do.
        model = model.with_prior(model.prior * trained_on / len(records))
    normalized = [normalize_record(r.demographics, r.identifiers) for r in records]
    if use_term_frequencies:
        model = model.with_term_frequencies(term_frequencies_from(normalized))
    truth = [r.person_id for r in records]
    n = len(records)
    keys = [blocking_keys(r) for r in normalized]
    pairs = candidate_pairs(keys, max_block=max_block)
    t_blocked = time.perf_counter()

    sources = [r.source_domain for r in records]
    twin, generation = model.twin_share, model.generation_share
    # scored without the rules' shares first: a share weighs a probability once, in the
    # decisions below and in the joining of persons (matching.calibrate.plan)
    model = model.with_twin_share(None).with_generation_share(None)
    decided = decide_pairs(
        normalized,
        model,
        sources=sources,
        auto_link=auto_link,
        review=review,
        person_identifying_domains=person_identifying_domains,
        pairs=pairs,
        workers=workers,
    )
    scored = (pairs, decided.probabilities.copy())
    shares: dict[str, RuleShare] = {}
    if estimate_shares and twin is None:
        shares["twin_share"] = estimate_twin_share(decided, sources)
        twin = shares["twin_share"].share
    if estimate_shares and generation is None:
        shares["generation_share"] = estimate_generation_share(decided, sources)
        generation = shares["generation_share"].share
    if twin is not None or generation is not None:
        model = model.with_twin_share(twin).with_generation_share(generation)
        decided = decide_pairs(
            normalized, model, sources=sources, auto_link=auto_link, review=review,
            person_identifying_domains=person_identifying_domains, pairs=pairs,
            probabilities=scored[1],
        )
    probs, decisions = decided.probabilities, decided.decisions

    truth_arr = np.array(truth, dtype=object)
    is_match = truth_arr[pairs[:, 0]] == truth_arr[pairs[:, 1]] if len(pairs) else np.zeros(0)
    true_pairs_total = _pairs_within(truth)

    rules: Counter[str] = Counter()
    rules_true: Counter[str] = Counter()
    rules_at_link: Counter[str] = Counter()
    rules_true_at_link: Counter[str] = Counter()
    for k, fired_rules in enumerate(decided.hard_rules):
        if fired_rules:
            fired = set(fired_rules)
            rules.update(fired)
            at_link = bool(probs[k] >= auto_link)
            if is_match[k]:
                rules_true.update(fired)
            if at_link:
                rules_at_link.update(fired)
                if is_match[k]:
                    rules_true_at_link.update(fired)
    t_decided = time.perf_counter()

    # persons as the service joins them, one record a person to start with: a link joins two
    # persons only when no hard rule stands between their records (matching.calibrate.plan)
    joined = plan(
        IndexState(normalized, list(range(n)), [True] * n, [r.source_domain for r in records]),
        model, auto_link=auto_link, review=review,
        person_identifying_domains=person_identifying_domains, max_block=max_block,
        workers=workers, scored=scored,
    )
    labels = np.array(persons_after(list(range(n)), joined.links), dtype=np.int64)
    figures = pairwise_figures(truth, labels.tolist())

    linked = decisions == 0
    reviewed = decisions == 1
    person_pairs = review_person_pairs(labels, pairs[reviewed])

    def relation_links(kind: str, mask: np.ndarray) -> int:
        count = 0
        for a, b in pairs[mask]:
            ra, rb = records[int(a)], records[int(b)]
            if ra.person_id != rb.person_id and kind in ra.relations and (
                ra.relations.get(kind) == rb.relations.get(kind)
            ):
                count += 1
        return count

    def relation_merged(kind: str) -> int:
        members: dict[tuple[str, Any], set[str]] = {}
        for row, record in enumerate(records):
            group = record.relations.get(kind)
            if group is not None:
                members.setdefault((group, labels[row]), set()).add(record.person_id)
        return sum(1 for persons in members.values() if len(persons) > 1)

    bands = true_pair_bands(probs[is_match] if len(pairs) else np.zeros(0), true_pairs_total)
    hard_rules = {
        rule: {
            "pairs": rules[rule],
            "true_pairs": rules_true[rule],
            "true_pair_share": rules_true[rule] / true_pairs_total if true_pairs_total else 0.0,
            "at_auto_link": rules_at_link[rule],
            "true_at_auto_link": rules_true_at_link[rule],
        }
        for rule in sorted(rules, key=lambda r: (-rules_true[r], -rules[r], r))
    }

    result_figures: dict[str, Any] = {
        "records": n,
        "persons": len(set(truth)),
        "duplicate_records": n - len(set(truth)),
        "candidate_pairs": int(len(pairs)),
        "true_pairs_total": true_pairs_total,
        "true_pairs_blocked": int(is_match.sum()) if len(pairs) else 0,
        "pair_completeness": (float(is_match.sum()) / true_pairs_total)
        if true_pairs_total else 1.0,
        **figures,
        "link_pairs": int(linked.sum()),
        "links_held": len(joined.links_in_conflict),
        "auto_link_precision": float(is_match[linked].mean()) if linked.any() else 1.0,
        "auto_link_recall": float(is_match[linked].sum() / max(is_match.sum(), 1)),
        "review_pairs": int(reviewed.sum()),
        "review_share": float(reviewed.sum() / n) if n else 0.0,
        "review_items_per_1000_records": float(1000 * reviewed.sum() / n) if n else 0.0,
        "review_true_match_share": float(is_match[reviewed].mean()) if reviewed.any() else 0.0,
        "review_person_pairs": person_pairs,
        "review_person_pairs_per_1000_records": float(1000 * person_pairs / n) if n else 0.0,
        "review_share_at_threshold": {
            str(level): float((reviewed & (probs >= level)).sum() / n) if n else 0.0
            for level in (0.5, 0.8, 0.9, 0.95, 0.99)
            if level >= review
        },
        "missed_true_pairs_no_match": int((is_match & (decisions == 2)).sum())
        if len(pairs) else 0,
        "twin_links": relation_links("twin", linked),
        "jr_sr_links": relation_links("jr_sr", linked),
        "twin_merged": relation_merged("twin"),
        "jr_sr_merged": relation_merged("jr_sr"),
        "household_links": relation_links("household", linked),
        "household_merged": relation_merged("household"),
        "true_pair_bands": bands,
        "hard_rules_fired": dict(rules),
        "hard_rules": hard_rules,
        "seconds": {
            "normalize_and_block": round(t_blocked - started, 2),
            "score_and_decide": round(t_decided - t_blocked, 2),
            "cluster_and_count": round(time.perf_counter() - t_decided, 2),
        },
        "thresholds": {"auto_link": auto_link, "review": review, "max_block": max_block},
        "prior": model.prior,
        **{name: found.to_dict() for name, found in shares.items()},
    }
    return result_figures


def review_person_pairs(labels: np.ndarray, review_rows: np.ndarray) -> int:
    """How many pairs of predicted persons (``labels``: a cluster per row) have a REVIEW pair
    (``review_rows``: (k, 2) row pairs) between them; pairs inside one person do not count."""
    if not len(review_rows):
        return 0
    a, b = labels[review_rows[:, 0]], labels[review_rows[:, 1]]
    apart = a != b
    low, high = np.minimum(a[apart], b[apart]), np.maximum(a[apart], b[apart])
    return len(set(zip(low.tolist(), high.tolist(), strict=True)))


def true_pair_bands(true_probs: np.ndarray, true_pairs_total: int) -> dict[str, dict[str, Any]]:
    """True pairs per probability band (blocked ones by their score) and not blocked."""
    edges = np.array([lower for _, lower in BANDS[1:]])
    index = np.searchsorted(edges, true_probs, side="right")
    counts = np.bincount(index, minlength=len(BANDS))
    bands = {name: int(count) for (name, _), count in zip(BANDS, counts, strict=True)}
    bands[NOT_BLOCKED] = true_pairs_total - len(true_probs)
    return {
        name: {"pairs": count, "share": count / true_pairs_total if true_pairs_total else 0.0}
        for name, count in bands.items()
    }


def evaluate_csv(
    path: str | Path,
    model: MatchModel | None = None,
    *,
    truth_column: str | None = None,
    columns: ColumnMapping | str | None = None,
    truth_pattern: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate on a labelled CSV: the :func:`matching.synth.write_csv` layout, or any layout
    with a column mapping (:class:`matching.columns.ColumnMapping`); ``truth_column`` and
    ``truth_pattern`` override the mapping's truth (see :func:`matching.columns.iter_records`).
    """
    records = read_records(path, columns, truth_column=truth_column, truth_pattern=truth_pattern)
    return evaluate_records(records, model, **options)
