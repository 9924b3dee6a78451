"""Every blocked pair of a record set, scored and decided: what evaluation and calibration
both need (``identity evaluate`` against a truth, ``identity calibrate`` against the index's
current links).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matching.blocking import DEFAULT_MAX_BLOCK, blocking_keys, candidate_pairs
from matching.decision import (
    DEFAULT_AUTO_LINK,
    DEFAULT_REVIEW,
    PLACEHOLDER_NAMES,
    Decision,
    decide,
    family_given_names_of_pairs,
)
from matching.model import MatchModel, probability

__all__ = ["LINK", "NO_MATCH", "REVIEW", "DecidedPairs", "decide_pairs"]

LINK, REVIEW, NO_MATCH = 0, 1, 2
_CODE = {Decision.LINK: LINK, Decision.REVIEW: REVIEW, Decision.NO_MATCH: NO_MATCH}


@dataclass(frozen=True)
class DecidedPairs:
    """``pairs`` (k, 2) row indices (i < j), their match ``probabilities``, ``decisions``
    (LINK, REVIEW, NO_MATCH) and, per pair, the hard rules that fired (pairs below the
    review threshold are not put to the rules: they cannot change a NO_MATCH)."""

    pairs: np.ndarray
    probabilities: np.ndarray
    decisions: np.ndarray
    hard_rules: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.pairs)


def decide_pairs(
    normalized: Sequence[dict[str, Any]],
    model: MatchModel,
    *,
    sources: Sequence[str | None] | None = None,
    auto_link: float = DEFAULT_AUTO_LINK,
    review: float = DEFAULT_REVIEW,
    max_block: int = DEFAULT_MAX_BLOCK,
    person_identifying_domains: Collection[str] = (),
    no_match: Collection[frozenset[int]] = (),
    pairs: np.ndarray | None = None,
    workers: int = 2,
    placeholder_names: Collection[str] = PLACEHOLDER_NAMES,
    probabilities: np.ndarray | None = None,
) -> DecidedPairs:
    """Block (unless ``pairs`` are given), score and decide every pair of ``normalized``
    records as the service decides one: thresholds, then the hard rules with the record's
    family names (given names of candidates born the same day into the same family).
    ``sources``: each record's source domain (the same-source rule); ``no_match``: row pairs
    a steward said are different people; ``placeholder_names``: the names of a newborn not yet
    named (:func:`matching.decision.decide`); ``probabilities``: the pairs' scores under
    ``model`` when the caller has them (then nothing is scored again). The probabilities
    returned are the decisions' own: lowered where the model's twin share weighs a pair."""
    if pairs is None:
        pairs = candidate_pairs([blocking_keys(r) for r in normalized], max_block=max_block)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if probabilities is not None:
        probs = np.array(probabilities, dtype=float).reshape(-1)
        if len(probs) != len(pairs):
            raise ValueError("one probability per pair")
    elif len(pairs):
        encoded = model.encode(normalized)
        weights = model.score_pairs(encoded, pairs[:, 0], encoded, pairs[:, 1], workers=workers)
        probs = np.asarray(probability(weights), dtype=float).reshape(-1)
    else:
        probs = np.zeros(0)
    decisions = np.full(len(pairs), NO_MATCH, np.int8)
    rules: list[tuple[str, ...]] = [()] * len(pairs)
    family_names = family_given_names_of_pairs(normalized, pairs)
    no_names: frozenset[str] = frozenset()
    for k in np.flatnonzero(probs >= review):
        a, b = int(pairs[k, 0]), int(pairs[k, 1])
        result = decide(
            float(probs[k]),
            auto_link=auto_link,
            review=review,
            record_source_domain=sources[a] if sources is not None else None,
            candidate_source_domain=sources[b] if sources is not None else None,
            record_identifiers=normalized[a]["identifiers"],
            candidate_identifiers=normalized[b]["identifiers"],
            person_identifying_domains=person_identifying_domains,
            no_match_asserted=frozenset((a, b)) in no_match if no_match else False,
            record=normalized[a],
            candidate=normalized[b],
            family_names=family_names.get(a, no_names) | family_names.get(b, no_names),
            placeholder_names=placeholder_names,
            twin_share=model.twin_share,
            generation_share=model.generation_share,
        )
        probs[k] = result.probability
        decisions[k] = _CODE[result.decision]
        rules[k] = result.hard_rules
    return DecidedPairs(pairs, probs, decisions, rules)
