"""Calibration: what a new model and thresholds would change in an index, before they do.

Pure functions over an :class:`IndexState` (the active records, the person each belongs to,
which links are automatic, the open review pairs and the steward decisions), used by
``identity calibrate``:

- :func:`propose_auto_link` picks the lowest auto-link threshold whose expected false links
  stay within a budget (expected false links per 10,000 links, from the posteriors), and
  :func:`review_for_budget` the lowest review threshold that keeps the review queue within
  what stewards can work through;
- :func:`estimate_twin_share` estimates how many of the pairs the twin rule meets across two
  sources are twins at this site (the rest: a given name replaced at one of the sources), and
  :func:`estimate_generation_share` how many of those the generational rule meets are a
  namesake parent and child (the rest: a birth date replaced at one of the sources);
- :func:`plan` re-scores the index under a model: the links that would be made (by
  probability band), review items that would close or open, automatic links that would no
  longer hold (reported, never undone automatically), hard-rule hits, expected false links,
  and how the model judges the pairs stewards decided;
- :func:`join_persons` keeps of the pairs that decide LINK the links the service would make
  person by person (no hard rule between the two persons' records; a record reaching two
  persons that a hard rule keeps apart goes to a steward).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from matching.blocking import DEFAULT_MAX_BLOCK
from matching.decision import DEFAULT_AUTO_LINK, DEFAULT_REVIEW, PLACEHOLDER_NAMES
from matching.model import MatchModel
from matching.pairs import LINK, NO_MATCH, REVIEW, DecidedPairs, decide_pairs

__all__ = [
    "BANDS",
    "IndexState",
    "Plan",
    "ThresholdProposal",
    "RuleShare",
    "estimate_generation_share",
    "estimate_twin_share",
    "expected_false_per_10k",
    "join_persons",
    "persons_after",
    "plan",
    "probability_bands",
    "propose_auto_link",
    "review_for_budget",
]

#: Probability bands of the report (lower bounds).
BANDS = (0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 0.9999)
#: A person with more records than this has its within-person pairs sampled, not all scored.
MAX_PERSON_PAIRS = 200


def _band(p: float) -> str:
    lower = [b for b in BANDS if p >= b]
    return f">={lower[-1]}" if lower else "<0.5"


def probability_bands(probabilities: Sequence[float] | np.ndarray) -> dict[str, int]:
    """How many of ``probabilities`` fall in each band of BANDS (empty bands left out)."""
    counts = Counter(_band(float(p)) for p in probabilities)
    return {key: counts[key] for key in ["<0.5", *(f">={b}" for b in BANDS)] if counts[key]}


def expected_false_per_10k(probabilities: np.ndarray) -> float:
    """Expected false links per 10,000 links if every pair of ``probabilities`` were linked:
    the posteriors' own estimate, sum(1 - p) / n."""
    if not len(probabilities):
        return 0.0
    return float(10_000 * np.sum(1.0 - probabilities) / len(probabilities))


@dataclass(frozen=True)
class ThresholdProposal:
    """The auto-link threshold a false-link budget implies, and what it costs in review."""

    auto_link: float
    budget: float
    expected_false_per_10k: float
    links: int
    review_pairs: int
    floor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "auto_link": self.auto_link,
            "false_link_budget": self.budget,
            **({"floor": self.floor} if self.floor is not None else {}),
            "expected_false_links_per_10000": round(self.expected_false_per_10k, 2),
            "links": self.links,
            "review_pairs": self.review_pairs,
        }


def propose_auto_link(
    probabilities: np.ndarray,
    budget: float,
    *,
    review: float = DEFAULT_REVIEW,
    ceiling: float = DEFAULT_AUTO_LINK,
    floor: float | None = None,
) -> ThresholdProposal:
    """The lowest threshold t (not above ``ceiling``, not below ``review`` nor ``floor``) such
    that linking every pair with probability >= t expects at most ``budget`` false links per
    10,000 links.

    The budget is an average over every link, most of them near-certain: alone it can set the
    threshold where single pairs have a 10-25 % chance of being two people. ``floor`` is the
    least probability any one link may have.

    ``probabilities``: the pairs the hard rules let link (a pair they forbid goes to review
    whatever the threshold). The posteriors are the model's own: a model whose m and u fit the
    data gives honest ones, and ``plan`` checks them against steward decisions.
    """
    if budget < 0:
        raise ValueError("the false-link budget must be >= 0")
    p = np.sort(np.asarray(probabilities, dtype=float))[::-1]
    p = p[p >= review]
    chosen = ceiling
    if len(p):
        expected = np.cumsum(1.0 - p) * 10_000 / np.arange(1, len(p) + 1)
        # a threshold links every pair at or above it: only the last of equal probabilities
        # ends a prefix that a threshold can make
        ends = np.flatnonzero(np.append(p[1:] != p[:-1], True))
        within = ends[expected[ends] <= budget]
        if len(within):
            # the longest such prefix within budget; its last probability is the threshold
            chosen = min(ceiling, float(p[within[-1]]))
    if floor is not None:
        chosen = min(ceiling, max(chosen, floor))
    links = p[p >= chosen]
    return ThresholdProposal(
        auto_link=chosen,
        budget=budget,
        expected_false_per_10k=expected_false_per_10k(links),
        links=int(len(links)),
        review_pairs=int(((p >= review) & (p < chosen)).sum()),
        floor=floor,
    )


#: Review thresholds a review budget proposes lie on this grid (the least one above the
#: probabilities it leaves out).
REVIEW_STEP = 1e-4


def review_for_budget(queue: Sequence[float] | np.ndarray, items: int, *, floor: float,
                      ceiling: float) -> float:
    """The least review threshold t (``floor`` <= t <= ``ceiling``, on a REVIEW_STEP grid) at
    which at most ``items`` of the review queue stay: ``queue`` holds each item's probability
    (an item stays while its probability reaches the threshold). A budget that even
    ``ceiling`` cannot meet gives ``ceiling``: pairs a hard rule holds at or above auto-link
    go to a steward whatever the review threshold."""
    p = np.sort(np.asarray(queue, dtype=float))[::-1]
    p = p[p >= floor]
    if len(p) <= max(items, 0):
        return floor
    first_out = float(p[max(items, 0)])  # the most probable item the budget leaves out
    above = (math.floor(first_out / REVIEW_STEP) + 1) * REVIEW_STEP
    return float(min(ceiling, max(floor, round(above, 6))))


@dataclass(frozen=True)
class IndexState:
    """The index as calibration sees it. Rows are active records; pairs are row pairs."""

    normalized: Sequence[dict[str, Any]]
    persons: Sequence[Hashable]
    automatic: Sequence[bool]
    sources: Sequence[str | None] = ()
    open_reviews: Collection[frozenset[int]] = frozenset()
    no_match: Collection[frozenset[int]] = frozenset()
    same_person: Collection[frozenset[int]] = frozenset()

    def __post_init__(self) -> None:
        n = len(self.normalized)
        if len(self.persons) != n or len(self.automatic) != n:
            raise ValueError("persons and automatic need one entry per record")
        if self.sources and len(self.sources) != n:
            raise ValueError("sources need one entry per record")


@dataclass
class Plan:
    """What re-scoring the index under a model would do (see :func:`plan`)."""

    links: list[tuple[int, int, float]] = field(default_factory=list)
    links_for_a_steward: list[tuple[int, int, float]] = field(default_factory=list)
    links_in_conflict: list[tuple[int, int, float]] = field(default_factory=list)
    reviews_to_open: list[tuple[int, int, float]] = field(default_factory=list)
    reviews_closed_by_link: list[tuple[int, int, float]] = field(default_factory=list)
    reviews_to_dismiss: list[tuple[int, int, float]] = field(default_factory=list)
    reviews_kept: list[tuple[int, int, float]] = field(default_factory=list)
    """The open review items that stay open (their pair's probability under the model)."""
    links_no_longer_holding: list[tuple[int, float]] = field(default_factory=list)
    hard_rules: Counter[str] = field(default_factory=Counter)
    expected_false_links: float = 0.0
    expected_false_links_existing: float = 0.0
    labels: dict[str, Any] = field(default_factory=dict)
    persons_joined: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "links": {"pairs": len(self.links), "persons_joined": self.persons_joined,
                      "by_band": probability_bands([p for *_, p in self.links])},
            "links_for_a_steward": len(self.links_for_a_steward),
            "links_in_conflict": len(self.links_in_conflict),
            "review_items": {
                "to_open": len(self.reviews_to_open),
                "closed_by_a_link": len(self.reviews_closed_by_link),
                "to_dismiss": len(self.reviews_to_dismiss),
            },
            "links_no_longer_holding": len(self.links_no_longer_holding),
            "hard_rules": dict(self.hard_rules.most_common()),
            "expected_false_links": {
                "new_links": round(self.expected_false_links, 2),
                "existing_automatic_links": round(self.expected_false_links_existing, 2),
            },
            "steward_decisions": self.labels,
        }


@dataclass(frozen=True)
class RuleShare:
    """Two people's share of a hard rule's pairs across two sources (see
    :func:`estimate_twin_share`, :func:`estimate_generation_share`): ``within`` and ``across``
    count the rule's pairs inside one source and across two, ``ratio`` is how many record
    pairs of the index cross two sources per pair inside one, ``share`` the estimate (None: no
    pair across sources to weigh, or no second source)."""

    within: int
    across: int
    ratio: float
    share: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"within_one_source": self.within, "across_sources": self.across,
                "pairs_across_per_pair_within": round(self.ratio, 4), "share": self.share}


#: Pairs inside one source counted for every pair no pair inside one source showed
#: (Jeffreys' 1/2): with none seen, the share is still not taken for zero.
PSEUDO_COUNT = 0.5


def _rule_share(decided: DecidedPairs, sources: Sequence[str | None], rule: str) -> RuleShare:
    """Two people's share of the pairs across two sources that ``rule`` names in ``decided``
    (which must come from a model without that rule's share: the rule then names them all).

    A rule's pattern is two people, or one person whose record was changed at one of the
    sources. Two people are as readily registered by one source as the other, so they show
    the pattern inside one source about as often as the sources' sizes pair records inside one
    source rather than across two; a change made at a second source shows it only across. So
    the pairs inside one source, scaled by the ratio of record pairs across sources to pairs
    inside one (from the sources' sizes), estimate the two-people pairs among those across.
    Families that keep to one source raise the estimate (the safe side)."""
    sizes = Counter(s for s in sources if s)
    total = sum(sizes.values())
    inside = sum(n * (n - 1) / 2 for n in sizes.values())
    across_all = (total * (total - 1) / 2) - inside
    ratio = across_all / inside if inside else float("inf")
    within = across = 0
    for k, rules in enumerate(decided.hard_rules):
        if rule not in rules:
            continue
        a, b = int(decided.pairs[k, 0]), int(decided.pairs[k, 1])
        if not sources[a] or not sources[b]:
            continue
        if sources[a] == sources[b]:
            within += 1
        else:
            across += 1
    share = None
    if across and across_all and inside:
        share = min(1.0, (within + PSEUDO_COUNT) * ratio / across)
    return RuleShare(within, across, ratio if inside else 0.0, share)


def estimate_twin_share(decided: DecidedPairs, sources: Sequence[str | None]) -> RuleShare:
    """Twins' share of the pairs ``probable_twin`` refuses across two sources: family name,
    birth date and home the same, given names clearly different — twins, or one person whose
    given name was replaced at one of the sources (:func:`_rule_share`)."""
    return _rule_share(decided, sources, "probable_twin")


def estimate_generation_share(decided: DecidedPairs, sources: Sequence[str | None]
                              ) -> RuleShare:
    """Namesake parents and children's share of the pairs ``birth_years_apart`` holds across
    two sources: birth years a generation apart, the rest alike — a parent and child of one
    name, or one person whose birth date was replaced at one of the sources
    (:func:`_rule_share`)."""
    return _rule_share(decided, sources, "birth_years_apart")


def _root(parent: dict[Hashable, Hashable], x: Hashable) -> Hashable:
    """``x``'s representative in the union-find forest ``parent`` (paths halved on the way)."""
    while parent.get(x, x) != x:
        parent[x] = parent.get(parent[x], parent[x])
        x = parent[x]
    return x


@dataclass(frozen=True)
class Joined:
    """:func:`join_persons`' answer: the ``links`` to make and the LINK pairs ``held`` back
    (a hard rule between the persons they would join, or a record reaching two persons that
    one stands between)."""

    links: list[tuple[int, int, float]]
    held: list[tuple[int, int, float]]


def _reached_persons(persons: Sequence[Hashable], links: Iterable[tuple[int, int, float]]
                    ) -> dict[int, set[Hashable]]:
    """Per row, the other persons its ``links`` reach (rows reaching none left out)."""
    reached: dict[int, set[Hashable]] = {}
    for a, b, _ in links:
        if persons[a] != persons[b]:
            reached.setdefault(a, set()).add(persons[b])
            reached.setdefault(b, set()).add(persons[a])
    return reached


def join_persons(
    persons: Sequence[Hashable],
    links: Sequence[tuple[int, int, float]],
    conflicts: Iterable[tuple[int, int]],
) -> Joined:
    """The pairs deciding LINK (``links``: rows a, b and probability) that join persons as the
    service, one record at a time, would join them.

    Linking pairwise and taking the transitive closure joins more than the service does: it
    links a record to a person only when no record of that person has a hard rule against it,
    and only when one person reaches auto-link. A W-2 without a birth date that reaches both a
    father's and his namesake son's census records would join father and son. So, with
    ``persons`` each row's person now and ``conflicts`` the row pairs a hard rule fired on (or
    a steward called different people):

    - a record whose links reach two persons with a conflict between them is left to a
      steward (all its links are held);
    - the other links, most probable first, join two persons only when no conflict stands
      between any of their records (persons as the links made so far have joined them).

    Links inside what is one person already are kept: they join nothing new."""
    parent: dict[Hashable, Hashable] = {}

    def find(x: Hashable) -> Hashable:
        return _root(parent, x)

    members: dict[Hashable, set[int]] = {}
    for row, person in enumerate(persons):
        members.setdefault(person, set()).add(row)
    barred: dict[Hashable, set[int]] = {}  # rows in conflict with some member of the person
    for a, b in conflicts:
        if persons[a] != persons[b]:
            barred.setdefault(persons[a], set()).add(b)
            barred.setdefault(persons[b], set()).add(a)
    ambiguous = {
        row for row, found in _reached_persons(persons, links).items()
        if any(barred.get(x, set()) & members[y] for x, y in combinations(found, 2))
    }

    def union(a: int, b: int) -> bool:
        ra, rb = find(persons[a]), find(persons[b])
        if ra == rb:
            return True
        if barred.get(ra, set()) & members[rb]:
            return False
        if len(members[ra]) < len(members[rb]):
            ra, rb = rb, ra
        parent[rb] = ra
        members[ra] |= members.pop(rb)
        barred.setdefault(ra, set()).update(barred.pop(rb, set()))
        return True

    made: list[tuple[int, int, float]] = []
    held: list[tuple[int, int, float]] = []
    for link in sorted(links, key=lambda link: -link[2]):
        free = link[0] not in ambiguous and link[1] not in ambiguous
        (made if free and union(link[0], link[1]) else held).append(link)
    return Joined(made, held)


def _conflicts_below_review(state: IndexState, model: MatchModel, blocked: DecidedPairs,
                            linking: Sequence[tuple[int, int, float]],
                            options: dict[str, Any]) -> list[tuple[int, int]]:
    """The row pairs below review that a hard rule would still fire on, between two persons
    one record's links reach (the rules are put only to pairs at or above review otherwise):
    a father and his namesake son, both reached by a record without a birth date, score far
    below review, yet the generational rule says they are two people."""
    persons = state.persons
    wanted = {tuple(two) for found in _reached_persons(persons, linking).values()
              if len(found) > 1 for two in combinations(found, 2)}
    if not wanted:
        return []
    code = {person: i for i, person in enumerate(dict.fromkeys(persons))}
    width = len(code)
    of = np.fromiter((code[p] for p in persons), np.int64, len(persons))
    first, second = of[blocked.pairs[:, 0]], of[blocked.pairs[:, 1]]
    keys = np.minimum(first, second) * width + np.maximum(first, second)
    wanted_keys = np.fromiter(
        (min(code[x], code[y]) * width + max(code[x], code[y]) for x, y in wanted), np.int64)
    unruled = np.fromiter((not rules for rules in blocked.hard_rules), bool, len(blocked))
    below = np.flatnonzero((blocked.decisions == NO_MATCH) & unruled
                           & np.isin(keys, wanted_keys))
    if not len(below):
        return []
    decided = decide_pairs(
        state.normalized, model, sources=state.sources or None, no_match=state.no_match,
        pairs=blocked.pairs[below], probabilities=blocked.probabilities[below],
        auto_link=options["auto_link"], review=0.0,
        person_identifying_domains=options["person_identifying_domains"],
        placeholder_names=options["placeholder_names"],
    )
    return [(int(a), int(b)) for (a, b), rules in zip(decided.pairs, decided.hard_rules,
                                                       strict=True) if rules]


def persons_after(persons: Sequence[Hashable], links: Sequence[tuple[int, int, float]]
                   ) -> list[Hashable]:
    """Each row's person once the planned ``links`` are made (persons they join are one)."""
    parent: dict[Hashable, Hashable] = {}

    def find(x: Hashable) -> Hashable:
        return _root(parent, x)

    for a, b, _ in links:
        ra, rb = find(persons[a]), find(persons[b])
        if ra != rb:
            parent[rb] = ra
    return [find(p) for p in persons]


def _one_review_per_two_persons(
    pairs: Sequence[tuple[int, int, float]],
    after: Sequence[Hashable],
    open_reviews: Collection[frozenset[int]],
) -> list[tuple[int, int, float]]:
    """The review items to open: one per two persons (as they are after the planned links),
    for their most probable pair, as the service opens one per record and candidate person;
    none inside one person, none between two persons an open item already joins."""
    covered = {frozenset((after[a], after[b])) for a, b in (tuple(p) for p in open_reviews
                                                         if len(p) == 2)}
    best: dict[frozenset[Hashable], tuple[int, int, float]] = {}
    for a, b, p in pairs:
        key = frozenset((after[a], after[b]))
        if len(key) < 2 or key in covered:
            continue
        if key not in best or p > best[key][2]:
            best[key] = (a, b, p)
    return sorted(best.values())


def _within_person_pairs(state: IndexState, rng: np.random.Generator) -> np.ndarray:
    """Row pairs inside each person with two or more records, at least one automatic."""
    members: dict[Hashable, list[int]] = {}
    for row, person in enumerate(state.persons):
        members.setdefault(person, []).append(row)
    out: list[tuple[int, int]] = []
    for rows in members.values():
        if len(rows) < 2 or not any(state.automatic[r] for r in rows):
            continue
        pairs = list(combinations(sorted(rows), 2))
        if len(pairs) > MAX_PERSON_PAIRS:
            chosen = rng.choice(len(pairs), MAX_PERSON_PAIRS, replace=False)
            pairs = [pairs[i] for i in sorted(chosen)]
        out.extend(pairs)
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def _decide(state: IndexState, model: MatchModel, pairs: np.ndarray | None,
            options: dict[str, Any]) -> DecidedPairs:
    return decide_pairs(
        state.normalized, model, sources=state.sources or None,
        no_match=state.no_match, pairs=pairs, **options,
    )


def plan(
    state: IndexState,
    model: MatchModel,
    *,
    auto_link: float = DEFAULT_AUTO_LINK,
    review: float = DEFAULT_REVIEW,
    person_identifying_domains: Collection[str] = (),
    max_block: int = DEFAULT_MAX_BLOCK,
    workers: int = 2,
    seed: int = 0,
    placeholder_names: Collection[str] = PLACEHOLDER_NAMES,
    scored: tuple[np.ndarray, np.ndarray] | None = None,
) -> Plan:
    """Re-score the index under ``model`` and these thresholds (``scored``: every blocked pair
    and its score under ``model``, when the caller has them: not scored again).

    - every blocked pair of records in two different persons: LINK is a link to make
      (``links``) when both records' links are automatic, else it is left to a steward
      (``links_for_a_steward``: manual and verified links are never changed); REVIEW
      opens an item, one per two persons as they are after the planned links (their most
      probable pair; none when an open item joins them already), as the service opens one
      per record and candidate person;
    - the pairs deciding LINK (open review pairs among them) are made only as the service
      would make them, person by person (:func:`join_persons`): the others go to a steward
      (``links_in_conflict``, with the review items);
    - every open review pair: the planned links close it when they put both records in one
      person; NO_MATCH dismisses it;
    - every pair inside a person (sampled in large persons): a record with an automatic link
      that decides LINK with no other record of its person no longer holds (reported only);
    - steward decisions: how the model decides the pairs stewards linked, and how many pairs
      stewards called different people it scores at or above auto-link.
    """
    rng = np.random.default_rng(seed)
    options = {
        "auto_link": auto_link, "review": review, "max_block": max_block,
        "person_identifying_domains": person_identifying_domains, "workers": workers,
        "placeholder_names": placeholder_names,
    }
    out = Plan()
    persons = list(state.persons)

    if scored is None:
        blocked = _decide(state, model, None, options)
    else:
        blocked = decide_pairs(
            state.normalized, model, sources=state.sources or None, no_match=state.no_match,
            pairs=scored[0], probabilities=scored[1],
            **{k: v for k, v in options.items() if k not in ("max_block", "workers")},
        )
    out.hard_rules.update(rule for rules in blocked.hard_rules for rule in rules)
    review_pairs: list[tuple[int, int, float]] = []
    linking: list[tuple[int, int, float]] = []
    conflicts = [(min(p), max(p)) for p in state.no_match if len(p) == 2]
    for k in range(len(blocked)):
        a, b = int(blocked.pairs[k, 0]), int(blocked.pairs[k, 1])
        if persons[a] == persons[b]:
            continue
        p, decision = float(blocked.probabilities[k]), int(blocked.decisions[k])
        if blocked.hard_rules[k]:
            conflicts.append((a, b))
        if decision == LINK:
            if state.automatic[a] and state.automatic[b]:
                linking.append((a, b, p))
            else:
                out.links_for_a_steward.append((a, b, p))
        elif decision == REVIEW and frozenset((a, b)) not in state.open_reviews:
            review_pairs.append((a, b, p))

    reviews = np.array(sorted(tuple(sorted(pair)) for pair in state.open_reviews
                              if len(pair) == 2), dtype=np.int64).reshape(-1, 2)
    open_decided = _decide(state, model, reviews, options) if len(reviews) else None
    if open_decided is not None:  # an open item's pair that the blocking missed links too
        planned = {(a, b) for a, b, _ in linking}
        for k in range(len(open_decided)):
            a, b = int(reviews[k, 0]), int(reviews[k, 1])
            if open_decided.hard_rules[k]:
                conflicts.append((a, b))
            if (open_decided.decisions[k] == LINK and (a, b) not in planned
                    and persons[a] != persons[b] and state.automatic[a] and state.automatic[b]):
                linking.append((a, b, float(open_decided.probabilities[k])))
    conflicts.extend(_conflicts_below_review(state, model, blocked, linking, options))
    joined = join_persons(persons, linking, conflicts)
    out.links, out.links_in_conflict = sorted(joined.links), sorted(joined.held)
    review_pairs.extend(out.links_in_conflict)
    out.persons_joined = len({frozenset((persons[a], persons[b])) for a, b, _ in out.links})
    out.expected_false_links = float(sum(1.0 - p for *_, p in out.links))
    after = persons_after(persons, out.links)
    out.reviews_to_open = _one_review_per_two_persons(review_pairs, after, state.open_reviews)

    if open_decided is not None:
        for k in range(len(open_decided)):
            a, b = int(reviews[k, 0]), int(reviews[k, 1])
            p, decision = float(open_decided.probabilities[k]), int(open_decided.decisions[k])
            if after[a] == after[b]:
                # linked, directly or through the planned links: the links settle it
                out.reviews_closed_by_link.append((a, b, p))
            elif decision == NO_MATCH:
                out.reviews_to_dismiss.append((a, b, p))
            else:
                out.reviews_kept.append((a, b, p))

    inside = _within_person_pairs(state, rng)
    if len(inside):
        decided = _decide(state, model, inside, options)
        best: dict[int, float] = {}
        holds: set[int] = set()
        for k in range(len(decided)):
            a, b = int(inside[k, 0]), int(inside[k, 1])
            p = float(decided.probabilities[k])
            for row in (a, b):
                best[row] = max(best.get(row, 0.0), p)
            if decided.decisions[k] == LINK:
                holds.update((a, b))
        existing = [best[r] for r in holds]
        out.expected_false_links_existing = float(sum(1.0 - p for p in existing))
        out.links_no_longer_holding = sorted(
            (row, p) for row, p in best.items() if state.automatic[row] and row not in holds
        )

    out.labels = _steward_check(state, model, options)
    return out


def _steward_check(state: IndexState, model: MatchModel,
                   options: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, pairs in (("same_person", state.same_person), ("not_a_duplicate", state.no_match)):
        rows = np.array(sorted(tuple(sorted(p)) for p in pairs if len(p) == 2),
                        dtype=np.int64).reshape(-1, 2)
        if not len(rows):
            continue
        # the model's own view of the pair: the steward's assertion is left out here
        decided = decide_pairs(state.normalized, model, sources=state.sources or None,
                               pairs=rows, **options)
        decisions = Counter(
            {LINK: "link", REVIEW: "review", NO_MATCH: "no_match"}[int(d)]
            for d in decided.decisions
        )
        report[name] = {"pairs": len(rows), "model_decides": dict(decisions),
                        "by_band": probability_bands(decided.probabilities)}
    return report


HELD = "none (the rule sends them to a steward)"


def _share(value: float | None, unknown: str = "none (the rule refuses)") -> str:
    return unknown if value is None else f"{value:.4g}"


def model_diff(old: MatchModel, new: MatchModel) -> str:
    """A readable diff of two models: the prior, and each level's m, u and weight (bits) that
    moved by 0.1 bit or more, with the levels one model has and the other lacks."""
    lines = [f"prior: {old.prior:.3g} -> {new.prior:.3g} "
             f"({old.prior_weight:+.1f} -> {new.prior_weight:+.1f} bits)"]
    if old.twin_share != new.twin_share:
        counts = new.training.get("twin_share") or {}
        lines.append(
            f"twin share across sources: {_share(old.twin_share)} -> {_share(new.twin_share)}"
            + (f" (the twin rule's pairs: {counts['within_one_source']} inside one source, "
               f"{counts['across_sources']} across two)" if counts else "")
        )
    if old.generation_share != new.generation_share:
        counts = new.training.get("generation_share") or {}
        lines.append(
            f"namesake generations' share across sources: "
            f"{_share(old.generation_share, HELD)} -> {_share(new.generation_share, HELD)}"
            + (f" (the generational rule's pairs: {counts['within_one_source']} inside one "
               f"source, {counts['across_sources']} across two)" if counts else "")
        )
    before = {c.name: c for c in old.comparisons}
    for comparison in new.comparisons:
        was = before.pop(comparison.name, None)
        levels = {lv.label: lv for lv in (was.levels if was else [])}
        for level in comparison.levels:
            if level.null:
                continue
            prior_level = levels.pop(level.label, None)
            name = f"{comparison.name} / {level.label}"
            if prior_level is None:
                lines.append(f"+ {name}: m {level.m:.4g}, u {level.u:.3g}, "
                             f"{level.weight:+.1f} bits")
            elif abs(level.weight - prior_level.weight) >= 0.1:
                lines.append(
                    f"  {name}: m {prior_level.m:.4g} -> {level.m:.4g}, "
                    f"u {prior_level.u:.3g} -> {level.u:.3g}, "
                    f"{prior_level.weight:+.1f} -> {level.weight:+.1f} bits"
                )
        lines.extend(f"- {comparison.name} / {label}" for label, lv in levels.items()
                     if not lv.null)
    lines.extend(f"- {name}" for name in before)
    old_cond = {(c.comparison, c.describe()) for c in old.conditional_u}
    for cond in new.conditional_u:
        if (cond.comparison, cond.describe()) not in old_cond:
            lines.append(f"+ u of {cond.comparison} given {cond.describe()} agree "
                         f"(households): {', '.join(f'{u:.3g}' for u in cond.u)}")
    return "\n".join(lines)
