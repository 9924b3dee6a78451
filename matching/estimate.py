"""Training a :class:`MatchModel` from unlabelled records (labels optional).

The recipe (the one that works at MPI prevalence, where true matches are a tiny share of pairs):

1. **u from random pairs.** Random pairs are almost all non-matches, so the share of random
   pairs reaching each level is u.
2. **prior from a deterministic rule.** Pairs that agree exactly on family, given and full birth
   date, or on a person-level identifier, are counted among blocked pairs; divided by the rule's
   assumed recall and by the number of possible pairs this gives the probability that two
   random records match.
3. **m by EM on blocked pairs, u fixed.** Only m and the blocked-pair match share move; u stays
   at its random-pair value (EM with every parameter free drifts to a solution that separates
   families or twins instead of persons). Each EM pass is run on pairs from one blocking key
   family and estimates only the comparisons that the key does not use (a key that requires
   equal birth dates says nothing about how often birth dates of matches differ). Passes are
   ordered by how little their key biases m (a shared identifier first); each comparison takes
   its m from the first pass that estimated it. Demographic-only passes count households
   (Jr/Sr, twins: same name, address and phone) as matches and so overstate how often matches
   disagree on birth date; the identifier pass does not.
4. **labels**, when given (confirmed and rejected pairs), are clamped to posterior 1 and 0 in
   every EM pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matching.blocking import blocking_keys, candidate_pairs
from matching.comparisons import EncodedRecords, as_normalized, default_comparisons
from matching.model import MatchModel

__all__ = ["EM_PASSES", "LabelledPair", "estimate_prior", "estimate_u", "estimate_m", "train"]

#: (blocking key family, comparisons NOT estimated from that pass because the key uses them),
#: in order of preference: each comparison takes its m from the first pass that estimates it
#: from at least MIN_PASS_PAIRS pairs. A shared identifier biases no demographic comparison;
#: the demographic keys come after it.
EM_PASSES: tuple[tuple[str, frozenset[str]], ...] = (
    ("id", frozenset({"person_identifier"})),
    ("gp_dob", frozenset({"given_name", "birth_date"})),
    ("fp_gp_pc", frozenset({"family_name", "given_name", "contact"})),
    ("dob_pc", frozenset({"birth_date", "contact"})),
    ("ph_gi", frozenset({"contact", "given_name"})),
)
DETERMINISTIC_RECALL = 0.6
MIN_PASS_PAIRS = 500
#: Dirichlet smoothing of m: the hand-set starting m counts as this many pseudo-pairs, so a
#: level never seen among matches in training keeps a small probability instead of ~0.
PSEUDO_PAIRS = 50.0
FLOOR = 1e-6


@dataclass(frozen=True)
class LabelledPair:
    """A steward's verdict on two records (indices into the training records)."""

    left: int
    right: int
    match: bool


def _level_shares(levels: np.ndarray, n_levels: int, null_levels: set[int],
                  weights: np.ndarray | None = None) -> np.ndarray:
    counts = np.bincount(levels.astype(np.int64), weights=weights, minlength=n_levels)
    counts = counts.astype(float)
    for index in null_levels:
        counts[index] = 0.0
    total = counts.sum()
    shares = counts / total if total > 0 else np.full(n_levels, 1.0 / n_levels)
    return np.maximum(shares, FLOOR)


def estimate_u(
    model: MatchModel, encoded: EncodedRecords, *, pairs: int = 500_000, seed: int = 0
) -> dict[str, list[float]]:
    """u per level from random record pairs (self-pairs excluded)."""
    rng = np.random.default_rng(seed)
    n = encoded.n
    left = rng.integers(0, n, pairs)
    right = rng.integers(0, n, pairs)
    keep = left != right
    levels = model.pair_levels(encoded, left[keep], encoded, right[keep])
    out: dict[str, list[float]] = {}
    for j, comparison in enumerate(model.comparisons):
        nulls = {i for i, lv in enumerate(comparison.levels) if lv.null}
        shares = _level_shares(levels[:, j], len(comparison.levels), nulls)
        # a level never seen among random pairs: half a pair's worth, not zero
        shares = np.maximum(shares, 0.5 / max(int(keep.sum()), 1))
        out[comparison.name] = [float(x) for x in shares]
    return out


def estimate_prior(
    model: MatchModel,
    encoded: EncodedRecords,
    blocked: np.ndarray,
    *,
    recall: float = DETERMINISTIC_RECALL,
) -> tuple[float, int]:
    """Probability that two random records match, from a deterministic rule on blocked pairs.

    Rule: exact family, exact given and exact full birth date, or the same person-level
    identifier. Returns (prior, pairs the rule accepted).
    """
    if len(blocked) == 0:
        return 1.0 / max(encoded.n, 2), 0
    names = [c.name for c in model.comparisons]
    levels = model.pair_levels(encoded, blocked[:, 0], encoded, blocked[:, 1])

    def at(name: str, label: str) -> np.ndarray:
        j = names.index(name)
        labels = [lv.label for lv in model.comparisons[j].levels]
        return levels[:, j] == labels.index(label)

    rule = (at("family_name", "exact") & at("given_name", "exact") & at("birth_date", "exact"))
    if "person_identifier" in names:
        rule |= at("person_identifier", "same value")
    accepted = int(rule.sum())
    n = encoded.n
    possible = n * (n - 1) / 2
    prior = max(accepted / recall, 1.0) / possible
    return float(min(prior, 0.5)), accepted


def estimate_m(
    model: MatchModel,
    encoded: EncodedRecords,
    pairs: np.ndarray,
    u: dict[str, list[float]],
    *,
    skip: frozenset[str] = frozenset(),
    labels: Sequence[LabelledPair] = (),
    iterations: int = 40,
    tolerance: float = 1e-5,
) -> tuple[dict[str, list[float]], float]:
    """EM for m with u fixed, on one set of blocked pairs. Returns (m per comparison, λ).

    Comparisons in ``skip`` are still part of the likelihood (with the model's current m) but
    their m is not re-estimated from these pairs.
    """
    if labels:
        extra = np.array([[p.left, p.right] for p in labels], dtype=np.int64)
        pairs = np.concatenate([pairs, extra]) if len(pairs) else extra
    if len(pairs) == 0:
        return {}, 0.0
    levels = model.pair_levels(encoded, pairs[:, 0], encoded, pairs[:, 1])
    clamp = np.full(len(pairs), np.nan)
    if labels:
        clamp[-len(labels) :] = [1.0 if p.match else 0.0 for p in labels]
    comparisons = model.comparisons
    m = {c.name: np.array([lv.m for lv in c.levels], dtype=float) for c in comparisons}
    start = {}
    for c in comparisons:
        prior_m = np.array([0.0 if lv.null else lv.m for lv in c.levels], dtype=float)
        start[c.name] = prior_m / prior_m.sum()
    u_arr = {name: np.array(values, dtype=float) for name, values in u.items()}
    nulls = {c.name: {i for i, lv in enumerate(c.levels) if lv.null} for c in comparisons}
    lam = 0.01
    for _ in range(iterations):
        log_bf = np.zeros(len(pairs))
        for j, c in enumerate(comparisons):
            ratio = np.log2(np.maximum(m[c.name], FLOOR) / np.maximum(u_arr[c.name], FLOOR))
            for index in nulls[c.name]:
                ratio[index] = 0.0
            log_bf += ratio[levels[:, j]]
        log_odds = np.log2(lam / (1 - lam)) + log_bf
        posterior = 1.0 / (1.0 + np.exp2(-np.clip(log_odds, -60, 60)))
        fixed = ~np.isnan(clamp)
        posterior[fixed] = clamp[fixed]
        new_lam = float(np.clip(posterior.mean(), 1e-6, 0.999))
        delta = abs(new_lam - lam)
        lam = new_lam
        for j, c in enumerate(comparisons):
            if c.name in skip:
                continue
            counts = np.bincount(levels[:, j].astype(np.int64), weights=posterior,
                                 minlength=len(c.levels))
            for index in nulls[c.name]:
                counts[index] = 0.0
            counts = counts + PSEUDO_PAIRS * start[c.name]
            new_m = np.maximum(counts / counts.sum(), FLOOR)
            delta = max(delta, float(np.abs(new_m - m[c.name]).max()))
            m[c.name] = new_m
        if delta < tolerance:
            break
    return {name: [float(x) for x in values] for name, values in m.items()
            if name not in skip}, lam


def train(
    records: Sequence[dict[str, Any]],
    *,
    labels: Sequence[LabelledPair] = (),
    u_pairs: int = 500_000,
    seed: int = 0,
    recall: float = DETERMINISTIC_RECALL,
    max_block: int = 100,
    start: MatchModel | None = None,
) -> MatchModel:
    """Train a model on records (raw demographics dicts, {"demographics", "identifiers"} dicts
    or normalised records). Labels, when given, are index pairs into ``records``."""
    model = start or MatchModel(default_comparisons())
    normalized = [as_normalized(r) for r in records]
    encoded = model.encode(normalized)
    keys = [blocking_keys(r) for r in normalized]

    u = estimate_u(model, encoded, pairs=u_pairs, seed=seed)
    for comparison in model.comparisons:
        for level, value in zip(comparison.levels, u[comparison.name], strict=True):
            if not level.null:
                level.u = value

    blocked = candidate_pairs(keys, max_block=max_block)
    prior, accepted = estimate_prior(model, encoded, blocked, recall=recall)
    model.prior = prior

    estimates: dict[str, list[float]] = {}
    sources: dict[str, str] = {}
    lambdas = {}
    for family, skip in EM_PASSES:
        pairs = candidate_pairs(keys, max_block=max_block, families=(family,))
        if len(pairs) + len(labels) < MIN_PASS_PAIRS:
            lambdas[family] = {"pairs": int(len(pairs)), "used": False}
            continue
        m, lam = estimate_m(model, encoded, pairs, u, skip=skip, labels=labels)
        lambdas[family] = {"pairs": int(len(pairs)), "match_share": round(lam, 6), "used": True}
        for name, values in m.items():
            if name not in estimates:
                estimates[name] = values
                sources[name] = family
    for comparison in model.comparisons:
        if comparison.name not in estimates:
            continue
        mean = np.asarray(estimates[comparison.name])
        non_null = [i for i, lv in enumerate(comparison.levels) if not lv.null]
        total = mean[non_null].sum()
        for i in non_null:
            comparison.levels[i].m = float(max(mean[i] / total, FLOOR))

    model.training = {
        "records": len(records),
        "u_random_pairs": u_pairs,
        "blocked_pairs": int(len(blocked)),
        "deterministic_rule_pairs": accepted,
        "deterministic_rule_recall": recall,
        "em_passes": lambdas,
        "m_source_pass": sources,
        "labels": len(labels),
        "seed": seed,
    }
    return model
