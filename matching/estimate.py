"""Training a :class:`MatchModel` from a site's own records (steward labels optional).

The recipe follows Splink's (``estimate_u_using_random_sampling``, then one EM pass per
training blocking rule with that rule's comparisons held out), adapted to an MPI:

1. **u from random pairs.** Random pairs are almost all non-matches, so the share of random
   pairs reaching each level is u. A small record set is enumerated pair by pair instead.
   Once m and the prior are known (step 5), each random pair counts with its chance of being
   a non-match and steps 3 to 5 run again: in a small set dense with duplicates the matches
   are most of the random pairs that agree on a rare value.
2. **A household u.** Among pairs with the same family-name sound (sampled, each weighted by
   its chance of being a non-match once m is known), the share of each contact level: the u of
   the contact comparison given that the family names agree (``MatchModel.conditional_u``).
   Families share name and address; scored as independent evidence, the two made every family
   member look like a duplicate.
3. **m by EM, one pass per training rule, u fixed** (``TRAINING_RULES``: same birth date, same
   name sounds, same postal code, same phone, same person-level identifier). A pass leaves out
   of its likelihood the comparisons its rule fixes (``TrainingRule.fixed``: among its pairs
   they agree by construction, match or not; kept, every pair would look like a match), and
   those that go with them among non-matches (family name with contact, given name with sex).
   The rules are not the service's blocking key families: a key family combines fields to keep
   blocks small, which would leave a pass too few comparisons to tell matches apart. Large
   blocks are sampled.
4. **The prior from the passes.** A pass over rule R finds ``λ_R × N_R`` matches among its
   ``N_R`` pairs; divided by R's recall (the share of the other passes' likely matches that
   share R's key) it estimates the matching pairs in the whole set. The median over the rules
   (kept per rule in ``training["matching_pairs_by_rule"]``, to check them against each other)
   over the possible pairs is the prior. Then every pass runs again with its match share held
   at what that implies, until the estimate settles: a free share runs away in a pass whose
   non-matches u does not describe (a block of one name holds namesakes of one birth cohort),
   or that estimates a single comparison (with u fixed, any share fits one comparison).
5. **m per comparison**: the mean of the passes that estimated it, weighted by the matches each
   compares it on; a pass whose posteriors do not add up to the share it was held at does not
   fit the mixture and is left out; a comparison no pass estimates keeps its starting m.
6. **Labels** (steward decisions: same person / not a duplicate) are clamped to posterior 1 and
   0 in every pass, and the fitted model's posterior on them is reported (``labels_check``).

Deterministic for a given seed. Time is bounded by sampling (at most ``max_pass_pairs`` pairs
per pass, ``u_pairs`` random pairs) whatever the index size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from matching.comparisons import EncodedRecords, as_normalized, default_comparisons
from matching.model import ConditionalU, MatchModel

__all__ = [
    "LabelledPair",
    "PassResult",
    "TRAINING_RULES",
    "TrainingRule",
    "em_pass",
    "estimate_u",
    "train",
]

@dataclass(frozen=True)
class TrainingRule:
    """Pairs that share ``key`` of a record: one EM pass. ``fixed``: the comparisons the rule
    makes agree among its pairs, match or not; the pass leaves them out of its likelihood."""

    name: str
    key: Callable[[dict[str, Any]], str]
    fixed: frozenset[str]


def _first(values: Sequence[Any]) -> str:
    return str(values[0]) if values else ""


def _names(record: dict[str, Any]) -> str:
    family, given = record.get("family_phonetic"), record.get("given_phonetic")
    return f"{family}|{given}" if family and given else ""


def _person_identifier(record: dict[str, Any]) -> str:
    found = sorted(f"{x['domain']}|{x['value']}" for x in record.get("identifiers") or ()
                   if x.get("person_level"))
    return found[0] if found else ""


#: The training rules. They are not the service's blocking key families: a key family combines
#: two or three fields so that its blocks stay small, which would leave a pass one or two
#: comparisons to estimate (too few for the mixture to tell matches from non-matches); a rule on
#: one field leaves the others. Blocks may be large: pairs are sampled. Two kinds of comparison
#: go together among non-matches too, so a rule that fixes one holds out the other: a household
#: shares its family name and its address and phone (family members would look like matches on
#: the other), and a given name mostly implies the sex.
TRAINING_RULES: tuple[TrainingRule, ...] = (
    TrainingRule("birth_date",
                 lambda r: r["birth_date"] if r.get("birth_precision") == "day" else "",
                 frozenset({"birth_date"})),
    TrainingRule("names", _names, frozenset({"family_name", "given_name", "contact", "sex"})),
    TrainingRule("postal_code", lambda r: _first(r.get("postal_codes") or ()),
                 frozenset({"contact", "family_name"})),
    TrainingRule("phone", lambda r: _first(r.get("phones") or ()),
                 frozenset({"contact", "family_name"})),
    TrainingRule("person_identifier", _person_identifier, frozenset({"person_identifier"})),
)

#: A pass whose EM finds fewer matches than this says too little to estimate m from.
MIN_PASS_MATCHES = 10.0
#: Comparisons whose m is not estimated: a generational suffix is compared only when both
#: records carry one, which is mostly a father and a son (same name, same home): EM takes
#: them for duplicates and learns that matches disagree on JR/SR. The hard rules decide those
#: pairs; the hand-set m stays.
NOT_ESTIMATED = frozenset({"suffix"})
#: A pass estimates a comparison's m only from at least this many (posterior-weighted)
#: matches on which the comparison is not missing; else the starting m stays.
MIN_COMPARED_MATCHES = 50.0
#: Dirichlet smoothing of m: the starting m counts as this many pseudo-matches, so that a
#: level never seen among a pass's matches keeps a small probability instead of ~0.
PSEUDO_MATCHES = 5.0
FLOOR = 1e-6
#: Bounds that keep training time flat in the index size (pairs are sampled beyond them).
MAX_PASS_PAIRS = 300_000
#: Refits of every pass with its match share held at what the passes together imply.
REFITS = 3
#: A rule that pairs fewer matches than this share gives no estimate of the matching pairs.
MIN_RECALL = 0.02
MAX_SHARE = 0.999
#: A pass whose posteriors add up to more than MISFIT_HIGH (or less than MISFIT_LOW) times the
#: match share it was held at does not fit the mixture: its m is not used.
MISFIT_HIGH = 1.5
MISFIT_LOW = 1 / 1.5
#: A key value that more than this share of the keyed records hold is no key: its pairs are
#: random pairs, in which matches are too rare for the mixture to find them (a site whose
#: records carry one postcode, a placeholder written into every record). Applied from
#: MIN_KEYED_FOR_SHARE keyed records (a small index has few values of anything).
MAX_KEY_SHARE = 0.1
MIN_KEYED_FOR_SHARE = 1000


@dataclass(frozen=True)
class LabelledPair:
    """A steward's verdict on two records (indices into the training records)."""

    left: int
    right: int
    match: bool


@dataclass(frozen=True)
class PassResult:
    """One EM pass: its rule, pairs, the match share it converged to and what it estimated."""

    rule: str
    pairs: int
    sampled: int
    match_share: float
    matches: float
    iterations: int
    estimated: tuple[str, ...]
    m: dict[str, list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.pairs,
            "sampled": self.sampled,
            "match_share": round(self.match_share, 6),
            "matches": round(self.matches, 1),
            "iterations": self.iterations,
            "estimated": list(self.estimated),
        }


def _level_shares(
    levels: np.ndarray, n_levels: int, null_levels: set[int], weights: np.ndarray | None = None
) -> np.ndarray:
    counts = np.bincount(levels.astype(np.int64), weights=weights, minlength=n_levels)
    counts = counts.astype(float)
    for index in null_levels:
        counts[index] = 0.0
    total = counts.sum()
    shares = counts / total if total > 0 else np.full(n_levels, 1.0 / n_levels)
    return np.maximum(shares, FLOOR)


def _random_pairs(n: int, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct-record pairs: every pair of a small set, else ``pairs`` drawn at random."""
    if n < 2:
        return np.zeros((0, 2), np.int64)
    if n * (n - 1) // 2 <= pairs:
        i, j = np.triu_indices(n, k=1)
        return np.stack([i, j], axis=1).astype(np.int64)
    left = rng.integers(0, n, pairs)
    right = rng.integers(0, n, pairs)
    keep = left != right
    return np.stack([left[keep], right[keep]], axis=1)


def _random_pair_levels(
    model: MatchModel, encoded: EncodedRecords, pairs: int, seed: int
) -> np.ndarray:
    sample = _random_pairs(encoded.n, pairs, np.random.default_rng(seed))
    if len(sample) == 0:
        return np.zeros((0, len(model.comparisons)), np.int8)
    return model.pair_levels(encoded, sample[:, 0], encoded, sample[:, 1])


def _u_from_levels(
    model: MatchModel, levels: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, list[float]]:
    """u per level: the share of the pairs at each level, each pair counted with its weight
    (None: 1)."""
    if len(levels) == 0:
        return {c.name: [lv.u for lv in c.levels] for c in model.comparisons}
    out: dict[str, list[float]] = {}
    for j, comparison in enumerate(model.comparisons):
        nulls = {i for i, lv in enumerate(comparison.levels) if lv.null}
        shares = _level_shares(levels[:, j], len(comparison.levels), nulls, weights)
        # a level never seen among random pairs: half a pair's worth, not zero
        shares = np.maximum(shares, 0.5 / len(levels))
        out[comparison.name] = [float(x) for x in shares]
    return out


def estimate_u(
    model: MatchModel, encoded: EncodedRecords, *, pairs: int = 500_000, seed: int = 0
) -> dict[str, list[float]]:
    """u per level from random record pairs (all pairs of a small set; self-pairs excluded),
    every pair counted as a non-match (``train`` then takes out the matches among them)."""
    return _u_from_levels(model, _random_pair_levels(model, encoded, pairs, seed))


def _log_ratios(
    model: MatchModel, m: dict[str, np.ndarray], u: dict[str, np.ndarray]
) -> list[np.ndarray]:
    """log2(m/u) per level of each comparison (0 at null levels)."""
    out = []
    for c in model.comparisons:
        ratio = np.log2(np.maximum(m[c.name], FLOOR) / np.maximum(u[c.name], FLOOR))
        for index, level in enumerate(c.levels):
            if level.null:
                ratio[index] = 0.0
        out.append(ratio)
    return out


def _posterior(log_odds: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp2(-np.clip(log_odds, -60, 60)))


def em_pass(
    model: MatchModel,
    levels: np.ndarray,
    u: dict[str, list[float]],
    *,
    fixed: frozenset[str] = frozenset(),
    clamp: np.ndarray | None = None,
    match_share: float | None = None,
    conditional: Sequence[ConditionalU] = (),
    iterations: int = 60,
    tolerance: float = 1e-5,
) -> tuple[dict[str, list[float]], float, int, np.ndarray]:
    """EM for m and the match share on one set of pairs (``levels``: their level per
    comparison), u fixed; the comparisons in ``fixed`` are left out of the likelihood and not
    estimated. ``clamp`` holds 1 / 0 for labelled pairs and NaN for the others; labelled pairs
    inform m, not the match share. ``match_share``: hold the match share at this value
    instead of estimating it (a pass that estimates a single comparison cannot tell it from
    m, since u is fixed: any share fits). Returns (m of the estimated comparisons, match share of
    the unlabelled pairs, iterations run, posterior match probability of each pair)."""
    comparisons = [(j, c) for j, c in enumerate(model.comparisons) if c.name not in fixed]
    if len(levels) == 0 or not comparisons:
        return {}, 0.0, 0, np.zeros(len(levels))
    fixed_posterior = np.zeros(len(levels), bool) if clamp is None else ~np.isnan(clamp)
    free = ~fixed_posterior
    start: dict[str, np.ndarray] = {}
    m: dict[str, np.ndarray] = {}
    for _, c in comparisons:
        values = np.array([0.0 if lv.null else lv.m for lv in c.levels], dtype=float)
        start[c.name] = values / values.sum()
        m[c.name] = start[c.name].copy()
    u_arr = {c.name: np.asarray(u[c.name], dtype=float) for _, c in comparisons}
    nulls = {c.name: [i for i, lv in enumerate(c.levels) if lv.null] for _, c in comparisons}
    columns = {c.name: levels[:, j].astype(np.int64) for j, c in comparisons}
    # a conditional u applies where its conditions hold (all of them in this pass)
    conditions = [
        (model.comparisons[j].name, when, np.asarray(cond.u, dtype=float))
        for j, when, cond in model.condition_masks(levels, [
            cond for cond in conditional if cond.comparison in columns
            and all(name in columns for name, _ in cond.requirements())])
    ]
    lam = 0.1 if match_share is None else min(max(match_share, 1e-9), 1 - 1e-9)
    done = 0
    posterior = np.zeros(len(levels))
    for done in range(1, iterations + 1):  # noqa: B007 - the count is returned
        log_bf = np.zeros(len(levels))
        for _, c in comparisons:
            ratio = np.log2(np.maximum(m[c.name], FLOOR) / np.maximum(u_arr[c.name], FLOOR))
            ratio[nulls[c.name]] = 0.0
            log_bf += ratio[columns[c.name]]
        for name, when, cond_u in conditions:
            ratio = np.log2(np.maximum(m[name], FLOOR) / np.maximum(u_arr[name], FLOOR))
            cond_ratio = np.log2(np.maximum(m[name], FLOOR) / np.maximum(cond_u, FLOOR))
            ratio[nulls[name]] = cond_ratio[nulls[name]] = 0.0
            column = columns[name]
            log_bf += np.where(when, cond_ratio[column] - ratio[column], 0.0)
        posterior = _posterior(np.log2(lam / (1 - lam)) + log_bf)
        if clamp is not None:
            posterior[fixed_posterior] = clamp[fixed_posterior]
        new_lam = lam
        if match_share is None and free.any():
            new_lam = float(np.clip(posterior[free].mean(), 1e-9, 1 - 1e-9))
        delta = abs(new_lam - lam) / max(lam, 1e-9)
        lam = new_lam
        for _, c in comparisons:
            counts = np.bincount(columns[c.name], weights=posterior, minlength=len(c.levels))
            counts[nulls[c.name]] = 0.0
            counts = counts + PSEUDO_MATCHES * start[c.name]
            new_m = np.maximum(counts / counts.sum(), FLOOR)
            delta = max(delta, float(np.abs(new_m - m[c.name]).max()))
            m[c.name] = new_m
        if delta < tolerance:
            break
    m_out = {name: [float(x) for x in values] for name, values in m.items()}
    return m_out, lam, done, posterior


def _block_pairs(
    codes: np.ndarray, limit: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """Pairs (i < j) of records with the same key code (-1: no key): all of them when there
    are at most ``limit``, else ``limit`` drawn uniformly among them (a block is drawn with
    probability proportional to its pairs, then two of its members), without enumerating
    large blocks. Returns (pairs, number of pairs in all)."""
    keyed = np.flatnonzero(codes >= 0)
    if len(keyed) < 2:
        return np.zeros((0, 2), np.int64), 0
    order = keyed[np.argsort(codes[keyed], kind="stable")]
    _, starts, sizes = np.unique(codes[order], return_index=True, return_counts=True)
    big = sizes >= 2
    starts, sizes = starts[big], sizes[big]
    block_pairs = sizes.astype(np.int64) * (sizes - 1) // 2
    total = int(block_pairs.sum())
    if total == 0:
        return np.zeros((0, 2), np.int64), 0
    if total <= limit:
        parts = []
        for start, size in zip(starts, sizes, strict=True):
            i, j = np.triu_indices(int(size), k=1)
            members = order[start : start + size]
            parts.append(np.stack([members[i], members[j]], axis=1))
        pairs = np.concatenate(parts)
    else:
        block = rng.choice(len(sizes), limit, p=block_pairs / total)
        size = sizes[block]
        first = rng.integers(0, size)
        second = (first + rng.integers(1, size)) % size  # another member of the same block
        pairs = np.stack([order[starts[block] + first], order[starts[block] + second]], axis=1)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0), total


def _key_codes(records: Sequence[dict[str, Any]], rule: TrainingRule) -> np.ndarray:
    """The rule's key of each record as an integer code (-1: the record has no such key, or
    one that more than :data:`MAX_KEY_SHARE` of the keyed records share)."""
    seen: dict[str, int] = {}
    out = np.full(len(records), -1, np.int64)
    for row, record in enumerate(records):
        key = rule.key(record)
        if key:
            out[row] = seen.setdefault(key, len(seen))
    keyed = out[out >= 0]
    if len(keyed) >= MIN_KEYED_FOR_SHARE:
        counts = np.bincount(keyed)
        common = np.flatnonzero(counts > MAX_KEY_SHARE * len(keyed))
        out[np.isin(out, common)] = -1
    return out


@dataclass
class _Pass:
    rule: TrainingRule
    pairs: np.ndarray
    total: int
    levels: np.ndarray | None = None
    result: PassResult | None = None
    posterior: np.ndarray | None = None
    recall: float | None = None
    fit: float = 1.0
    #: The share of the records that have the pass's key.
    coverage: float = 0.0


def _fit(run: _Pass) -> float:
    """The pass's posterior mean over the match share it was held at (1: consistent)."""
    assert run.result is not None and run.posterior is not None
    if not len(run.posterior) or run.result.match_share <= 0:
        return 1.0
    return float(run.posterior.mean() / run.result.match_share)


def train(
    records: Sequence[dict[str, Any]],
    *,
    labels: Sequence[LabelledPair] = (),
    u_pairs: int = 500_000,
    seed: int = 0,
    max_pass_pairs: int = MAX_PASS_PAIRS,
    rules: Sequence[TrainingRule] = TRAINING_RULES,
    start: MatchModel | None = None,
) -> MatchModel:
    """Train a model on records (raw demographics dicts, {"demographics", "identifiers"} dicts
    or normalised records). Labels, when given, are index pairs into ``records``.

    ``start`` gives the comparisons and the starting m (default: the hand-set ones); what no
    pass can estimate (e.g. a comparison the data never fills) keeps its starting value.
    """
    model = MatchModel.from_dict(start.to_dict()) if start else MatchModel(default_comparisons())
    rng = np.random.default_rng(seed)
    normalized = [as_normalized(r) for r in records]
    n = len(normalized)
    encoded = model.encode(normalized)

    random_levels = _random_pair_levels(model, encoded, u_pairs, seed)
    u = _u_from_levels(model, random_levels)
    _set_u(model, u)

    # Households: the u of the contact comparison among pairs with the same family name.
    household_codes = _key_codes(normalized, HOUSEHOLD_RULE)
    household_pairs, household_total = _block_pairs(household_codes, max_pass_pairs, rng)
    household_levels = model.pair_levels(
        encoded, household_pairs[:, 0], encoded, household_pairs[:, 1]
    ) if len(household_pairs) else np.zeros((0, len(model.comparisons)), np.int8)
    household = _conditional_u(model, household_levels, None)
    conditional = [household] if household else []

    codes = {rule.name: _key_codes(normalized, rule) for rule in rules}
    passes = []
    for rule in rules:
        pairs, total = _block_pairs(codes[rule.name], max_pass_pairs, rng)
        if total:
            passes.append(_Pass(rule, pairs, total,
                                coverage=float((codes[rule.name] >= 0).mean())))
    label_pairs = np.array([[p.left, p.right] for p in labels], dtype=np.int64).reshape(-1, 2)
    label_clamp = np.array([1.0 if p.match else 0.0 for p in labels])
    label_levels = (
        model.pair_levels(encoded, label_pairs[:, 0], encoded, label_pairs[:, 1])
        if len(label_pairs) else None
    )
    for run in passes:
        run.levels = model.pair_levels(encoded, run.pairs[:, 0], encoded, run.pairs[:, 1])

    def run_pass(run: _Pass, share: float | None) -> None:
        levels, clamp = run.levels, None
        if label_levels is not None:
            levels = np.concatenate([levels, label_levels])
            clamp = np.concatenate([np.full(len(run.pairs), np.nan), label_clamp])
        m, lam, iterations, posterior = em_pass(model, levels, u, fixed=run.rule.fixed,
                                                clamp=clamp, match_share=share,
                                                conditional=conditional)
        run.posterior = posterior[: len(run.pairs)]
        run.result = PassResult(
            rule=run.rule.name,
            pairs=run.total,
            sampled=len(run.pairs),
            match_share=lam,
            matches=lam * run.total,
            iterations=iterations,
            estimated=tuple(sorted(m)),
            m=m,
        )

    def refit(matches: float | None) -> tuple[float | None, dict[str, float]]:
        estimates: dict[str, float] = {}
        for _ in range(REFITS):
            if matches is None:
                break
            for run in passes:
                recall = run.recall if run.recall is not None else 1.0
                run_pass(run, min(matches * recall / run.total, MAX_SHARE))
            again, estimates = _matching_pairs(passes, codes)
            if again is None or abs(again - matches) <= 0.01 * matches:
                return again, estimates
            matches = again
        return matches, estimates

    # First each pass with its match share free; then, as long as it moves, every pass again
    # with its share held at what the passes together imply (the matching pairs in all, times
    # the share of matches that the rule pairs, over its pairs): a free share runs away in a
    # pass whose non-matches u does not describe well (a large block of one family name holds
    # families) or that estimates one comparison only.
    for run in passes:
        run_pass(run, None)
    matches, estimates = _matching_pairs(passes, codes)
    if matches is not None:
        matches, estimates = refit(matches)
    sources = _combine_m(model, passes)
    possible = n * (n - 1) / 2
    if matches and len(random_levels):
        # Random pairs are not all non-matches: in a set dense with duplicates the matches
        # among them are most of the pairs that agree on a rare value (Febrl3's 5,000 records
        # hold 6,538 matching pairs; a birth date in common: u 1/1,900 counted, 1/18,000
        # among non-matches), and a u that counts them undervalues every agreement. Each
        # random pair now counts with its chance of being a non-match under the fitted
        # model, and the passes run again under that u. (Judged by the other comparisons
        # only, twins would stay in the birth date's u, but with three fields a match's two
        # names alone seldom tell it from a non-match: Febrl3's u stayed 4x too high.)
        share = min(matches / possible, MAX_SHARE)
        prior_odds = np.log2(share / (1 - share))
        weights = 1.0 - _posterior(prior_odds + _log_bayes(model, random_levels))
        u = _u_from_levels(model, random_levels, weights)
        _set_u(model, u)
        again, again_estimates = refit(matches)
        if again is not None:
            matches, estimates = again, again_estimates
        sources = _combine_m(model, passes)

    # The household u again, now that m is known: the same-family pairs weighted by how
    # unlikely each is to be a match (their match share from the matching pairs and the share
    # of matches that share a family name, as for the passes).
    if household and matches and len(household_pairs):
        recall = _recall(passes, household_codes)
        share = min(matches * (recall if recall is not None else 1.0) / household_total,
                    MAX_SHARE)
        model.conditional_u = [household]
        log_odds = np.log2(share / (1 - share)) + _log_bayes(model, household_levels)
        refined = _conditional_u(model, household_levels, 1.0 - _posterior(log_odds))
        conditional = [refined] if refined else []
    # The same among pairs of one full name (the names pass's pairs): a father and his son of
    # one name share a home, two namesakes seldom do, so a full name and a home agreeing tell
    # more than a family name and a home; how much, the site's own pairs say.
    names_run = next((run for run in passes if run.rule.name == "names"), None)
    if conditional and matches and names_run is not None and len(names_run.pairs):
        share = min(matches * (names_run.recall if names_run.recall is not None else 1.0)
                    / names_run.total, MAX_SHARE)
        model.conditional_u = list(conditional)
        # each pair's chance of being a non-match from everything but the contact whose u
        # is estimated (with it, a son at his father's home looked like his father)
        log_odds = np.log2(share / (1 - share)) + _log_bayes(model, names_run.levels,
                                                             leave_out="contact")
        full_name = _conditional_u(model, names_run.levels, 1.0 - _posterior(log_odds),
                                   given_too=True, min_weight=MIN_FULL_NAME_NON_MATCHES)
        if full_name is not None:
            conditional = [full_name, *conditional]
    model.conditional_u = list(conditional)
    model.with_prior(0.5)  # validates the conditional u against the comparisons

    done = [run for run in passes if run.result is not None]
    model.prior = (
        min(max(matches / possible, 1e-12), 0.5) if matches and possible >= 1
        else min(1.0 / max(possible, 1.0), 0.5)
    )
    model.training = {
        "method": "u from random pairs; m by EM per training rule with the rule's comparisons "
                  "held out; prior from the EM passes (matching/estimate.py)",
        "records": n,
        "u_random_pairs": u_pairs,
        "em_passes": {run.rule.name: {**run.result.to_dict(),  # type: ignore[union-attr]
                                      "fit": round(run.fit, 3)} for run in done},
        "m_source_passes": sources,
        "matching_pairs": round(matches, 1) if matches else None,
        "matching_pairs_by_rule": estimates,
        "household_pairs": household_total,
        "labels": len(labels),
        "seed": seed,
    }
    if label_levels is not None:
        model.training["labels_check"] = _labels_check(model, label_levels, label_clamp)
    return model


def _combine_m(model: MatchModel, passes: Sequence[_Pass]) -> dict[str, list[str]]:
    """m of each comparison: the mean of its passes, weighted by the matches each pass's
    sample compares it on (a few matches say little). A pass whose pairs do not fit the
    mixture is left out: with its match share held, EM's posteriors then add up to far more
    (or less) than that share, because its non-matches do not follow u (namesakes of one birth
    cohort in a block of one name, twins at one address). Returns the passes used per
    comparison."""
    sources: dict[str, list[str]] = {}
    done = [run for run in passes if run.result is not None]
    for run in done:
        run.fit = _fit(run)
    for j, comparison in enumerate(model.comparisons):
        nulls = [i for i, lv in enumerate(comparison.levels) if lv.null]
        mass = {
            run.rule.name: float(run.posterior[  # type: ignore[index]
                ~np.isin(run.levels[:, j], nulls)].sum())  # type: ignore[index]
            for run in done
        }
        if comparison.name in NOT_ESTIMATED:
            continue
        used = [run for run in done if comparison.name in run.result.m  # type: ignore[union-attr]
                and mass[run.rule.name] >= MIN_COMPARED_MATCHES
                and MISFIT_LOW <= run.fit <= MISFIT_HIGH]
        if not used:
            continue
        weights = [mass[run.rule.name] for run in used]
        mean = sum(w * np.asarray(run.result.m[comparison.name])  # type: ignore[union-attr]
                   for w, run in zip(weights, used, strict=True)) / sum(weights)
        non_null = [i for i, lv in enumerate(comparison.levels) if not lv.null]
        total = mean[non_null].sum()
        for i in non_null:
            comparison.levels[i].m = float(max(mean[i] / total, FLOOR))
        sources[comparison.name] = [run.rule.name for run in used]
    return sources


def _set_u(model: MatchModel, u: dict[str, list[float]]) -> None:
    for comparison in model.comparisons:
        for level, value in zip(comparison.levels, u[comparison.name], strict=True):
            if not level.null:
                level.u = value


def _matching_pairs(
    passes: Sequence[_Pass], codes: dict[str, np.ndarray]
) -> tuple[float | None, dict[str, float]]:
    """The number of matching pairs in the record set, as the passes imply it: each pass's
    matches divided by its rule's recall (the share of matches that share the rule's key,
    measured on the likely matches of every other pass; the median of those), and the median
    over the passes. Sets each pass's ``recall``. Returns (matching pairs or None, per rule)."""
    estimates: dict[str, float] = {}
    for run in passes:
        assert run.result is not None
        run.recall = _recall([p for p in passes if p is not run], codes[run.rule.name])
        if run.recall is not None and run.recall >= MIN_RECALL and run.result.matches >= 1:
            estimates[run.rule.name] = run.result.matches / run.recall
    if not estimates:
        return None, {}
    return float(np.median(list(estimates.values()))), {
        k: round(v, 1) for k, v in estimates.items()
    }


def _recall(passes: Sequence[_Pass], code: np.ndarray) -> float | None:
    """The share of matches whose records share a key (``code``: its code per record): the
    share of matches whose two records both have the key (measured on the likely matches of
    the pass whose own key the most records have: names, in practice, which every source
    fills, so that its pairs are not picked by which fields a source fills) times the share of
    those that agree on it (measured on the likely matches of each pass, among its pairs whose
    two records have the key; the median over the passes).

    Measured in one step on another pass's matches, the recall of a key that a source leaves
    empty came out far too low when that pass's key is one only some sources fill (an SSN
    filled by sources that leave the birth date empty: the birth-date rule's recall 0.001 on
    the identifier pass's matches, 0.40 in truth), and the matching pairs twice too many."""
    agree: list[float] = []
    measured = [run for run in passes
                if run.posterior is not None and run.posterior.sum() >= MIN_PASS_MATCHES]
    if not measured:
        return None
    for run in measured:
        weight = run.posterior
        a, b = code[run.pairs[:, 0]], code[run.pairs[:, 1]]
        both = (a >= 0) & (b >= 0)
        keyed = float((weight * both).sum())  # type: ignore[operator]
        if keyed >= MIN_PASS_MATCHES:
            agree.append(float((weight * (both & (a == b))).sum()) / keyed)  # type: ignore[operator]
    if not agree:
        return 0.0
    widest = max(measured, key=lambda run: run.coverage)
    a, b = code[widest.pairs[:, 0]], code[widest.pairs[:, 1]]
    weight = widest.posterior
    available = float((weight * ((a >= 0) & (b >= 0))).sum() / weight.sum())  # type: ignore[operator, union-attr]
    return available * float(np.median(agree))


#: The pairs the household u (``ConditionalU`` of contact given the family name) is estimated on.
HOUSEHOLD_RULE = TrainingRule("household", lambda r: r.get("family_phonetic") or "",
                              frozenset())
#: Fewer same-family pairs with a contact to compare than this: no household u.
MIN_HOUSEHOLD_PAIRS = 200
#: Given-name levels that make two records' full names one name, for the full-name u.
FULL_NAME_GIVEN = frozenset({"exact", "jaro-winkler >= 0.94", "nickname"})
#: Fewer (posterior-weighted) non-matching pairs of one full name than this: no full-name u
#: (the household u applies to them).
MIN_FULL_NAME_NON_MATCHES = 20.0


def _conditional_u(
    model: MatchModel, levels: np.ndarray, weights: np.ndarray | None, *,
    given_too: bool = False, min_weight: float = 0.0,
) -> ConditionalU | None:
    """u of the contact levels among the pairs (``levels``) whose family names agree (any
    level but missing and different) — and, ``given_too``, whose given names are one name
    (:data:`FULL_NAME_GIVEN`) — each pair counted with its weight (its chance of being a
    non-match; None: 1). None when fewer than MIN_HOUSEHOLD_PAIRS such pairs have a contact
    to compare, or their weights add up to less than ``min_weight``."""
    names = [c.name for c in model.comparisons]
    if "contact" not in names or "family_name" not in names or not len(levels):
        return None
    if given_too and "given_name" not in names:
        return None
    j, g = names.index("contact"), names.index("family_name")
    contact, family = model.comparisons[j], model.comparisons[g]
    agreeing = [lv.label for lv in family.levels[:-1] if not lv.null]
    nulls = [i for i, lv in enumerate(contact.levels) if lv.null]
    when = np.isin(levels[:, g], [i for i, lv in enumerate(family.levels)
                                  if lv.label in agreeing])
    also: tuple[tuple[str, tuple[str, ...]], ...] = ()
    if given_too:
        k = names.index("given_name")
        given = model.comparisons[k]
        one_name = tuple(lv.label for lv in given.levels if lv.label in FULL_NAME_GIVEN)
        when &= np.isin(levels[:, k], [i for i, lv in enumerate(given.levels)
                                       if lv.label in one_name])
        also = (("given_name", one_name),)
    when &= ~np.isin(levels[:, j], nulls)
    if int(when.sum()) < MIN_HOUSEHOLD_PAIRS:
        return None
    w = np.ones(len(levels)) if weights is None else weights
    if float(w[when].sum()) < min_weight:
        return None
    counts = np.bincount(levels[when, j].astype(np.int64), weights=w[when],
                         minlength=len(contact.levels)).astype(float)
    counts[nulls] = 0.0
    shares = counts / counts.sum()
    shares = np.maximum(shares, 0.5 / int(when.sum()))
    return ConditionalU("contact", "family_name", tuple(agreeing),
                        [0.0 if i in nulls else float(x) for i, x in enumerate(shares)], also)


def _log_bayes(
    model: MatchModel, levels: np.ndarray, leave_out: str | None = None
) -> np.ndarray:
    """log2 Bayes factor of each pair (``levels``) under the model, without the prior and
    without term frequencies (and without the comparison ``leave_out``)."""
    log_bf = np.zeros(len(levels))
    m = {c.name: np.array([lv.m for lv in c.levels], dtype=float) for c in model.comparisons}
    u = {c.name: np.array([lv.u for lv in c.levels], dtype=float) for c in model.comparisons}
    ratios = _log_ratios(model, m, u)
    names = [c.name for c in model.comparisons]
    for j, ratio in enumerate(ratios):
        if names[j] != leave_out:
            log_bf += ratio[levels[:, j].astype(np.int64)]
    conditional = [c for c in model.conditional_u if c.comparison != leave_out]
    for j, when, cond in model.condition_masks(levels, conditional):
        comparison = model.comparisons[j]
        own = ratios[j]
        cond_ratio = np.log2(np.maximum(m[comparison.name], FLOOR)
                             / np.maximum(np.asarray(cond.u), FLOOR))
        cond_ratio[[i for i, lv in enumerate(comparison.levels) if lv.null]] = 0.0
        column = levels[:, j].astype(np.int64)
        log_bf += np.where(when, cond_ratio[column] - own[column], 0.0)
    return log_bf


def _labels_check(
    model: MatchModel, levels: np.ndarray, clamp: np.ndarray
) -> dict[str, Any]:
    """How the fitted model scores the steward-labelled pairs (without term frequencies)."""
    posterior = _posterior(model.prior_weight + _log_bayes(model, levels))
    same, different = clamp == 1.0, clamp == 0.0
    return {
        "same_person": int(same.sum()),
        "same_person_scored_at_least_0.5": int((posterior[same] >= 0.5).sum()),
        "not_duplicate": int(different.sum()),
        "not_duplicate_scored_below_0.5": int((posterior[different] < 0.5).sum()),
    }
