"""The match model: comparisons with m/u, a prior, and vectorised scoring and explanation.

Match weight of a pair = log2(prior / (1 - prior)) + sum over comparisons of log2(m / u) of the
level reached (+ a term-frequency adjustment on exact name levels). ``probability(weight)``
turns it into the posterior match probability. The model is data: ``save`` writes one readable
JSON file, ``load`` reads it back, ``MatchModel.default()`` loads the shipped model.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matching.comparisons import (
    Comparison,
    EncodedRecords,
    EncodedRow,
    PairView,
    RowPair,
    as_normalized,
    default_comparisons,
    encode,
    encode_row,
    full_name_key,
    row_level,
    stack_rows,
)

__all__ = [
    "ComparisonOutcome",
    "EncodingCache",
    "Explanation",
    "MatchModel",
    "DEFAULT_MODEL_PATH",
    "probability",
    "weight_of",
    "term_frequencies_from",
]

DEFAULT_MODEL_PATH = Path(__file__).parent / "data" / "default_model.json"
FORMAT = "identity-matching-model"
TF_MIN = 1e-7  # floor for a term frequency (unseen very rare names)
TF_MAX_ADJUST = 6.0  # cap on the term-frequency weight adjustment, in bits
FULL_NAME_MIN_PERSONS = 3  # persons sharing a full name before its own frequency is used
SMALL_N = 16  # up to this many candidates score() compares pairs in plain Python (same results)
ENCODING_CACHE_SIZE = 16384  # encoded candidates kept per model (about 0.7 KB each)


_LEVEL_WEIGHTS: dict[tuple[float, float, bool], float] = {}


def _level_weight(level: Any) -> float:
    """``level.weight`` (np.log2 of m/u), memoised on (m, u, null): the small path needs it per
    pair and np.log2 on one float costs a microsecond."""
    key = (level.m, level.u, level.null)
    weight = _LEVEL_WEIGHTS.get(key)
    if weight is None:
        weight = level.weight
        if len(_LEVEL_WEIGHTS) < 65536:
            _LEVEL_WEIGHTS[key] = weight
    return weight


def _full_name_weight(u: np.ndarray, tf_full: np.ndarray) -> np.ndarray:
    """The frequency adjustment of an agreeing full name: log2 of both names' u over the
    chance that another person has that full name (bounded as two names' adjustments are)."""
    value = np.log2(u / np.maximum(tf_full, TF_MIN))
    return np.clip(value, -2 * TF_MAX_ADJUST, 2 * TF_MAX_ADJUST)


def probability(weight: float | np.ndarray) -> Any:
    """Posterior match probability of a match weight (log2 odds)."""
    w = np.clip(np.asarray(weight, dtype=float), -1000, 1000)
    result = 1.0 / (1.0 + np.exp2(-w))
    return float(result) if np.ndim(result) == 0 else result


def weight_of(prob: float) -> float:
    """The match weight (log2 odds) of a probability, the inverse of :func:`probability`."""
    p = min(max(prob, 1e-15), 1 - 1e-15)
    return math.log2(p / (1 - p))


def term_frequencies_from(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Build the ``term_frequencies`` table ({"family": {v: n}, "given": {...}, "total": n},
    and the full names that are common among persons: see :func:`full_name_table`)."""
    family: dict[str, int] = {}
    given: dict[str, int] = {}
    people: set[tuple[str, str, str]] = set()
    for raw in records:
        rec = as_normalized(raw)
        if rec["family"]:
            family[rec["family"]] = family.get(rec["family"], 0) + 1
        if rec["given"]:
            given[rec["given"]] = given.get(rec["given"], 0) + 1
        if rec["family"] and rec["given"]:
            people.add((rec["given"], rec["family"], rec.get("birth_date") or ""))
    # a record without a birth date is one more person only when no record of the name has
    # one (a source that sends no birth date, beside one that does, is not a namesake)
    dated = {(first, last) for first, last, born in people if born}
    people = {p for p in people if p[2] or (p[0], p[1]) not in dated}
    named: dict[str, int] = {}
    for first, last, _ in people:
        key = full_name_key(first, last)
        named[key] = named.get(key, 0) + 1
    table: dict[str, Any] = {"family": family, "given": given, "total": len(records)}
    table.update(full_name_table(named, len(people), table))
    return table


def full_name_table(
    named: dict[str, int], persons: int, names: dict[str, Any]
) -> dict[str, Any]:
    """The full names more common than their two names make them: {"full": {key: n},
    "persons": N}, from ``named`` (persons per full name, :func:`full_name_key`) and
    ``persons`` (persons with both names), over ``names`` (the family/given/total table).

    Fellegi-Sunter weighs an agreeing given and family name as independent evidence: the
    chance that a namesake shares both is taken as the product of the two names' frequencies.
    Common names go together far more often than that (JOSE with RODRIGUEZ, LINH with
    NGUYEN), so a pair agreeing on a common full name looked like more evidence than it is.
    A person is told apart by name and birth date here (the records of one person mostly
    share both, so a person's own duplicates do not make a name look common; counted over
    records they did). Kept: names of at least :data:`FULL_NAME_MIN_PERSONS` persons whose
    share of persons other than one, (n - 1) / N, is above the product of the two names'
    frequencies (the only ones that change a weight), so the table stays small."""
    total = float(names.get("total") or 0)
    family, given = names.get("family") or {}, names.get("given") or {}
    full: dict[str, int] = {}
    if persons <= 0 or total <= 0:
        return {"full": full, "persons": persons}
    for key, n in named.items():
        if n < FULL_NAME_MIN_PERSONS:
            continue
        first, _, last = key.partition("|")
        expected = (given.get(first, 0) / total) * (family.get(last, 0) / total)
        if (n - 1) / persons > expected:
            full[key] = n
    return {"full": full, "persons": persons}


@dataclass
class ComparisonOutcome:
    """How one comparison came out for one pair."""

    comparison: str
    level: int
    label: str
    m: float | None
    u: float | None
    weight: float
    tf_adjustment: float
    left: Any
    right: Any
    #: the comparison whose agreement this u is conditional on (ConditionalU), if any
    u_given: str | None = None

    @property
    def contribution(self) -> float:
        return self.weight + self.tf_adjustment


@dataclass
class Explanation:
    """Why a pair scored what it did: the prior, each comparison's level and weight, the total."""

    prior: float
    prior_weight: float
    comparisons: list[ComparisonOutcome]
    total_weight: float
    probability: float

    def level_of(self, comparison: str) -> str:
        for outcome in self.comparisons:
            if outcome.comparison == comparison:
                return outcome.label
        raise KeyError(comparison)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prior": self.prior,
            "prior_weight": round(self.prior_weight, 4),
            "comparisons": [
                {
                    "comparison": c.comparison,
                    "level": c.level,
                    "label": c.label,
                    "m": c.m,
                    "u": c.u,
                    "weight": round(c.weight, 4),
                    "tf_adjustment": round(c.tf_adjustment, 4),
                    "contribution": round(c.contribution, 4),
                    "left": c.left,
                    "right": c.right,
                    **({"u_given": c.u_given} if c.u_given else {}),
                }
                for c in self.comparisons
            ],
            "total_weight": round(self.total_weight, 4),
            "probability": self.probability,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


class EncodingCache:
    """A bounded LRU of encoded records keyed by the caller's keys, e.g. (record id, version).

    Process-local by design: encodings hold Python string hashes, which differ between
    processes, so never persist or share them. A key must change whenever its record changes
    (include the record's version). Encodings depend on the model's term-frequency table, so
    the cache empties itself when it is used with another table. Thread-safe: lookups and
    insertions take a lock; encoding happens outside it.
    """

    def __init__(self, size: int = ENCODING_CACHE_SIZE) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._rows: OrderedDict[Hashable, EncodedRow] = OrderedDict()
        self._lock = threading.Lock()
        self._tf: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __getstate__(self) -> dict[str, Any]:
        # a copied or pickled model starts with an empty cache: encodings never leave the
        # process (string hashes differ between processes) and a lock cannot be pickled
        return {"size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["size"])  # type: ignore[misc]

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def rows(
        self,
        records: Sequence[dict[str, Any]],
        keys: Sequence[Hashable],
        term_frequencies: dict[str, Any] | None,
    ) -> list[EncodedRow]:
        """Encoded rows of ``records`` (in order), encoding only the keys not cached."""
        if len(keys) != len(records):
            raise ValueError(f"{len(keys)} keys for {len(records)} records")
        out: list[EncodedRow | None] = [None] * len(records)
        missing: list[int] = []
        with self._lock:
            if term_frequencies is not self._tf:
                self._rows.clear()
                self._tf = term_frequencies
            cached = self._rows
            for i, key in enumerate(keys):
                row = cached.get(key)
                if row is None:
                    missing.append(i)
                else:
                    cached.move_to_end(key)
                    out[i] = row
            self.hits += len(records) - len(missing)
            self.misses += len(missing)
        if not missing:
            return out  # type: ignore[return-value]
        fresh = [(keys[i], encode_row(records[i], term_frequencies)) for i in missing]
        for i, (_, row) in zip(missing, fresh, strict=True):
            out[i] = row
        if self.size:
            with self._lock:
                if term_frequencies is self._tf:
                    cached = self._rows
                    for key, row in fresh:
                        cached[key] = row
                        cached.move_to_end(key)
                    while len(cached) > self.size:
                        cached.popitem(last=False)
        return out  # type: ignore[return-value]


_SHOWN = {
    "family_name": lambda r: r["family"] or None,
    "given_name": lambda r: r["given"] or None,
    "birth_date": lambda r: r["birth_date"],
    "sex": lambda r: r["sex"],
    "suffix": lambda r: r["suffix"] or None,
    "address": lambda r: r["addresses"][0]["line"] if r["addresses"] else None,
    "postal_code": lambda r: r["postal_codes"] or None,
    "phone": lambda r: r["phones"] or None,
    "person_identifier": lambda r: [
        f"{x['domain']}|{x['value']}" for x in r["identifiers"] if x.get("person_level")
    ] or None,
}


@dataclass
class ConditionalU:
    """The u of one comparison's levels among non-matching pairs that agree on another one.

    Fellegi-Sunter adds the weights of comparisons as if they were independent evidence. Among
    non-matches some are not: the members of a household share their family name *and* their
    address and phone, so that two records agreeing on the family name agree on the address
    far more often than two random records do. For a pair whose ``given`` comparison reaches
    one of ``given_levels``, the weight of ``comparison`` is log2(m / u) with this ``u``
    (per level) instead of the level's own u: the two agreements then count as much as they
    tell together. ``u`` is estimated (matching.estimate) from pairs that share the given
    comparison's key, weighted by how unlikely they are to be matches.
    """

    comparison: str
    given: str
    given_levels: tuple[str, ...]
    u: list[float]
    #: Further comparisons that must reach one of their levels too, ((name, levels), ...):
    #: the u among pairs that agree on the family *and* the given name (a father and his son
    #: of one name share a home; two namesakes seldom do). Of several conditional u of one
    #: comparison the first whose conditions all hold applies: the narrower comes first.
    also: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def requirements(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """Every (comparison, levels) that must hold for this u to apply."""
        return ((self.given, self.given_levels), *self.also)

    def describe(self) -> str:
        """"family_name" or "family_name and given_name": what the u is conditional on."""
        return " and ".join(name for name, _ in self.requirements())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "comparison": self.comparison,
            "given": self.given,
            "given_levels": list(self.given_levels),
            "u": [round(x, 10) for x in self.u],
        }
        if self.also:
            out["also"] = [{"given": name, "given_levels": list(levels)}
                           for name, levels in self.also]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConditionalU:
        return cls(data["comparison"], data["given"], tuple(data["given_levels"]),
                   [float(x) for x in data["u"]],
                   tuple((a["given"], tuple(a["given_levels"])) for a in data.get("also") or ()))


#: One conditional u as scoring uses it: ((comparison index, level indices) that must all
#: hold, the weight per level under it, the ConditionalU itself).
Condition = tuple[tuple[tuple[int, frozenset[int]], ...], list[float], ConditionalU]


def _holding(levels: Sequence[int], conditions: Sequence[Condition] | None
             ) -> Condition | None:
    """The first of one comparison's conditions that a pair (its level per comparison)
    meets, or None."""
    for condition in conditions or ():
        if all(levels[index] in agreeing for index, agreeing in condition[0]):
            return condition
    return None


#: More levels than any comparison has (levels are small non-negative integers).
_MAX_LEVELS = 128


def condition_mask(levels: np.ndarray, requirements: Sequence[tuple[int, frozenset[int]]]
                   ) -> np.ndarray:
    """Which pairs (rows of ``levels``) meet every requirement (comparison index, levels)."""
    when = np.ones(len(levels), bool)
    for index, agreeing in requirements:
        lookup = np.zeros(_MAX_LEVELS, bool)  # a table lookup: np.isin costs ~10 us a call
        lookup[list(agreeing)] = True
        when &= lookup[levels[:, index]]
    return when


def applied_conditions(levels: np.ndarray, conditions: Sequence[Condition]
                       ) -> list[tuple[np.ndarray, Condition]]:
    """Per conditional u of one comparison, in order, the pairs it applies to: those that meet
    its requirements and no earlier one's."""
    taken = np.zeros(len(levels), bool)
    out = []
    for condition in conditions:
        when = condition_mask(levels, condition[0]) & ~taken
        taken |= when
        out.append((when, condition))
    return out


@dataclass
class MatchModel:
    """Comparisons + prior. Score with :meth:`score`, batch with :meth:`score_pairs`."""

    comparisons: list[Comparison]
    prior: float = 1e-5
    term_frequencies: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    conditional_u: list[ConditionalU] = field(default_factory=list, kw_only=True)
    #: Twins' share of the pairs the twin rule meets across two sources (given names different,
    #: the rest of a twin's evidence the same), estimated on a site's index by
    #: ``matching.calibrate.estimate_twin_share``; None: not known (the rule refuses them all).
    twin_share: float | None = field(default=None, kw_only=True)
    #: Namesake parents and children's share of the pairs the generational rule meets across
    #: two sources (birth years a generation apart, the rest alike), estimated on a site's
    #: index by ``matching.calibrate.estimate_generation_share``; None: not known (the rule
    #: sends them all to a steward).
    generation_share: float | None = field(default=None, kw_only=True)
    encodings: EncodingCache = field(
        default_factory=EncodingCache, repr=False, compare=False, kw_only=True
    )

    def __post_init__(self) -> None:
        self._conditions()  # validates

    def condition_masks(
        self, levels: np.ndarray, conditional: Sequence[ConditionalU] | None = None
    ) -> list[tuple[int, np.ndarray, ConditionalU]]:
        """Each conditional u (``conditional``, default the model's own) with the index of its
        comparison and the pairs (rows of ``levels``, a level per comparison) it applies to:
        those that meet its conditions and no earlier one's of the same comparison."""
        return [
            (j, when, condition[2])
            for j, conditions in self._conditions(conditional).items()
            for when, condition in applied_conditions(levels, conditions)
        ]

    def _conditions(
        self, conditional: Sequence[ConditionalU] | None = None
    ) -> dict[int, list[Condition]]:
        """Per comparison index with a conditional u (``conditional``, default the model's
        own), its conditions in order (see :data:`Condition`). Computed when scoring
        (estimation changes m in place); empty, and free, without conditional u."""
        out: dict[int, list[Condition]] = {}
        conditional = self.conditional_u if conditional is None else conditional
        if not conditional:
            return out
        names = [c.name for c in self.comparisons]
        for cond in conditional:
            if cond.comparison not in names or any(
                    name not in names for name, _ in cond.requirements()):
                raise ValueError(f"conditional u names an unknown comparison: {cond}")
            j = names.index(cond.comparison)
            comparison = self.comparisons[j]
            if len(cond.u) != len(comparison.levels):
                raise ValueError(f"conditional u of {cond.comparison} needs one u per level")
            requirements = []
            for name, wanted in cond.requirements():
                labels = [lv.label for lv in self.comparisons[names.index(name)].levels]
                unknown = set(wanted) - set(labels)
                if unknown:
                    raise ValueError(f"unknown levels of {name}: {sorted(unknown)}")
                requirements.append(
                    (names.index(name), frozenset(labels.index(x) for x in wanted)))
            weights = [
                0.0 if lv.null else float(np.log2(max(lv.m, 1e-12) / max(u, 1e-12)))
                for lv, u in zip(comparison.levels, cond.u, strict=True)
            ]
            out.setdefault(j, []).append((tuple(requirements), weights, cond))
        return out

    def _copy(self, **changes: Any) -> MatchModel:
        fields = {
            "comparisons": self.comparisons,
            "prior": self.prior,
            "term_frequencies": self.term_frequencies,
            "training": self.training,
            "conditional_u": self.conditional_u,
            "twin_share": self.twin_share,
            "generation_share": self.generation_share,
        }
        fields.update(changes)
        return MatchModel(**fields)

    # ---------------------------------------------------------------- construction / storage

    @classmethod
    def untrained(cls, prior: float = 1e-5) -> MatchModel:
        """The comparisons with their hand-set starting m/u values."""
        return cls(default_comparisons(), prior=prior)

    @classmethod
    def default(cls) -> MatchModel:
        """The shipped model (``matching/data/default_model.json``)."""
        return cls.load(DEFAULT_MODEL_PATH)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatchModel:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        return cls(
            comparisons=[Comparison.from_dict(c) for c in data["comparisons"]],
            prior=float(data["prior"]),
            training=dict(data.get("training") or {}),
            conditional_u=[ConditionalU.from_dict(c) for c in data.get("conditional_u") or ()],
            twin_share=None if data.get("twin_share") is None else float(data["twin_share"]),
            generation_share=None if data.get("generation_share") is None
            else float(data["generation_share"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": 1,
            "prior": self.prior,
            "prior_weight": round(self.prior_weight, 4),
            "comparisons": [c.to_dict() for c in self.comparisons],
            **({"conditional_u": [c.to_dict() for c in self.conditional_u]}
               if self.conditional_u else {}),
            **({"twin_share": self.twin_share} if self.twin_share is not None else {}),
            **({"generation_share": self.generation_share}
               if self.generation_share is not None else {}),
            "training": self.training,
        }

    @classmethod
    def load(cls, path: str | Path) -> MatchModel:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def with_term_frequencies(self, table: dict[str, Any] | None) -> MatchModel:
        """A copy that applies the caller's term-frequency table to exact name levels."""
        return self._copy(term_frequencies=table)

    def with_twin_share(self, share: float | None) -> MatchModel:
        """A copy with twins' estimated share of cross-source twin-pattern pairs (``None``:
        unknown)."""
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError("twin share must be in [0, 1]")
        return self._copy(twin_share=share, encodings=self.encodings)

    def with_generation_share(self, share: float | None) -> MatchModel:
        """A copy with namesake generations' estimated share of the cross-source pairs the
        generational rule meets (``None``: unknown)."""
        if share is not None and not 0.0 <= share <= 1.0:
            raise ValueError("generation share must be in [0, 1]")
        return self._copy(generation_share=share, encodings=self.encodings)

    def with_prior(self, prior: float) -> MatchModel:
        """A copy with another prior. The prior is the probability that two random records
        match, so it shrinks as the index grows: about (duplicate records per record) /
        (records in the index). The trained prior fits an index of ``training["records"]``."""
        if not 0.0 < prior < 1.0:
            raise ValueError("prior must be in (0, 1)")
        return self._copy(prior=prior, encodings=self.encodings)  # encodings do not
        # depend on the prior

    # ---------------------------------------------------------------- scoring

    @property
    def prior_weight(self) -> float:
        return weight_of(self.prior)

    def encode(self, records: Sequence[dict[str, Any]]) -> EncodedRecords:
        """Encode records (normalised or raw) once, for repeated scoring."""
        return encode(records, self.term_frequencies)

    def levels(self, view: PairView) -> np.ndarray:
        """Level index reached per comparison: int8 array (n_pairs, n_comparisons)."""
        out = np.empty((view.n, len(self.comparisons)), np.int8)
        for j, comparison in enumerate(self.comparisons):
            out[:, j] = comparison.levels_for(view)
        return out

    def _weights_from_levels(self, view: PairView, levels: np.ndarray) -> np.ndarray:
        total = np.full(view.n, self.prior_weight)
        conditions = self._conditions()
        adjustments: dict[int, np.ndarray | float] = {}
        for j, comparison in enumerate(self.comparisons):
            table = np.array([_level_weight(lv) for lv in comparison.levels])
            weight = table[levels[:, j]]
            for when, (_, weights, _) in applied_conditions(levels, conditions.get(j, ())):
                weight = np.where(when, np.array(weights)[levels[:, j]], weight)
            total += weight
            adjustments[j] = self._tf_adjustment(view, comparison, levels[:, j])
            total += adjustments[j]
        return total + self._full_name_adjustment(view, levels, adjustments)

    def _name_comparisons(self) -> tuple[int, int] | None:
        """Indices of the comparisons adjusted by family and given name frequency."""
        fields = [c.tf_field for c in self.comparisons]
        if "family" in fields and "given" in fields:
            return fields.index("family"), fields.index("given")
        return None

    def _full_name_adjustment(
        self, view: PairView, levels: np.ndarray, adjustments: dict[int, np.ndarray | float]
    ) -> np.ndarray | float:
        """Where both names agree and the full name is common among persons: the weight both
        names' frequencies gave, lowered to what the full name's frequency gives (never
        raised; see :func:`full_name_table`)."""
        names = self._name_comparisons()
        if not self.term_frequencies or names is None or not view.has_tf("full"):
            return 0.0
        tf_full = view.left_tf("full")
        if np.isnan(tf_full).all():
            return 0.0
        f, g = names
        u_f = np.array([lv.u if lv.tf_adjust else np.nan for lv in self.comparisons[f].levels])
        u_g = np.array([lv.u if lv.tf_adjust else np.nan for lv in self.comparisons[g].levels])
        u = u_f[levels[:, f]] * u_g[levels[:, g]]
        hit = ~np.isnan(u) & ~np.isnan(tf_full)
        out = np.zeros(view.n)
        if hit.any():
            given_both = (np.broadcast_to(adjustments[f], (view.n,))[hit]
                          + np.broadcast_to(adjustments[g], (view.n,))[hit])
            out[hit] = np.minimum(0.0, _full_name_weight(u[hit], tf_full[hit]) - given_both)
        return out

    def _tf_adjustment(
        self, view: PairView, comparison: Comparison, levels: np.ndarray
    ) -> np.ndarray | float:
        if not self.term_frequencies or not comparison.tf_field:
            return 0.0
        adjust = np.zeros(view.n)
        tf = view.left_tf(comparison.tf_field)
        for index, level in enumerate(comparison.levels):
            if not level.tf_adjust:
                continue
            hit = (levels == index) & ~np.isnan(tf)
            if hit.any():
                value = np.log2(level.u / np.maximum(tf[hit], TF_MIN))
                adjust[hit] = np.clip(value, -TF_MAX_ADJUST, TF_MAX_ADJUST)
        return adjust

    def score(
        self,
        record: dict[str, Any] | EncodedRecords,
        candidates: Sequence[dict[str, Any]] | EncodedRecords,
        *,
        keys: Sequence[Hashable] | None = None,
    ) -> np.ndarray:
        """Match weights of one record against each candidate (float array, candidate order).

        ``record`` and ``candidates`` may be raw demographics, normalised records (from
        ``normalize_record``) or already encoded (:meth:`encode`); encoding once and reusing
        the encoded candidates is the fast path.

        ``keys`` (one per candidate, e.g. ``(record_id, version)``) lets the model keep each
        candidate's encoding in its bounded, process-local cache (:attr:`encodings`), so a
        candidate seen before is not encoded again. A key must change whenever its record
        changes. Results are the same with or without keys.
        """
        tf = self.term_frequencies
        if isinstance(candidates, EncodedRecords):
            right = candidates
        else:
            if keys is not None:
                rows = self.encodings.rows(candidates, keys, tf)
            else:
                rows = [encode_row(c, tf) for c in candidates]
            if not isinstance(record, EncodedRecords) and 0 < len(rows) <= SMALL_N:
                if self._rows_supported():
                    return np.array(self._score_rows(encode_row(record, tf), rows))
            right = stack_rows(rows)
        if right.n == 0:
            return np.zeros(0)
        if isinstance(record, EncodedRecords):
            left = record
        else:
            left = stack_rows([encode_row(record, tf)])
        view = PairView(left, right)
        return self._weights_from_levels(view, self.levels(view))

    def _rows_supported(self) -> bool:
        """Whether the plain-Python path applies: every level kind has a scalar form, so only
        a term-frequency field it does not know (neither family nor given) rules it out."""
        return all(c.tf_field in (None, "family", "given") for c in self.comparisons)

    def _row_levels(self, left: EncodedRow, rows: Sequence[EncodedRow]) -> list[list[int]]:
        """Level index per comparison for each pair (left, row): :meth:`levels` in Python."""
        first = RowPair(left, rows[0])
        pairs = [first] + [RowPair(left, row, first.a) for row in rows[1:]]
        return [[row_level(c, pair) for c in self.comparisons] for pair in pairs]

    def _score_rows(self, left: EncodedRow, rows: Sequence[EncodedRow]) -> list[float]:
        """Weights of left against each row, computed as :meth:`_weights_from_levels` does
        (same additions in the same order, so the same floats)."""
        prior_weight = self.prior_weight
        conditions = self._conditions()
        tf_cache: dict[tuple[int, int], float] = {}
        out = []
        names = self._name_comparisons() if not math.isnan(left.tf_full) else None
        for levels in self._row_levels(left, rows):
            total = prior_weight
            for j, comparison in enumerate(self.comparisons):
                index = levels[j]
                level = comparison.levels[index]
                condition = _holding(levels, conditions.get(j)) if conditions else None
                if condition is not None:
                    total += condition[1][index]
                else:
                    total += _level_weight(level)
                if self.term_frequencies and comparison.tf_field and level.tf_adjust:
                    adjust = tf_cache.get((j, index))
                    if adjust is None:
                        adjust = self._tf_value(left, comparison, level)
                        tf_cache[(j, index)] = adjust
                    total += adjust
            if names is not None and self.term_frequencies:
                total += self._full_name_value(left, levels, names, tf_cache)
            out.append(total)
        return out

    def _full_name_value(
        self, left: EncodedRow, levels: Sequence[int], names: tuple[int, int],
        tf_cache: dict[tuple[int, int], float],
    ) -> float:
        """:meth:`_full_name_adjustment` of one pair (``tf_cache`` holds the names' own
        adjustments, by (comparison, level), once they are computed)."""
        f, g = names
        level_f = self.comparisons[f].levels[levels[f]]
        level_g = self.comparisons[g].levels[levels[g]]
        if not (level_f.tf_adjust and level_g.tf_adjust):
            return 0.0
        both = tf_cache.get((f, levels[f]), 0.0) + tf_cache.get((g, levels[g]), 0.0)
        target = float(_full_name_weight(np.array([level_f.u * level_g.u]),
                                         np.array([left.tf_full]))[0])
        return min(0.0, target - both)

    @staticmethod
    def _tf_value(left: EncodedRow, comparison: Comparison, level: Any) -> float:
        tf = left.tf_family if comparison.tf_field == "family" else left.tf_given
        if math.isnan(tf):
            return 0.0
        value = np.log2(level.u / np.maximum(np.array([tf]), TF_MIN))
        return float(np.clip(value, -TF_MAX_ADJUST, TF_MAX_ADJUST)[0])

    def score_pairs(
        self,
        left: EncodedRecords,
        left_rows: np.ndarray,
        right: EncodedRecords | None = None,
        right_rows: np.ndarray | None = None,
        *,
        workers: int = 1,
        chunk: int = 65536,
    ) -> np.ndarray:
        """Batch scoring: weight of pair k = left row left_rows[k] vs right row right_rows[k].

        ``right`` defaults to ``left`` (deduplication within one record set). Pairs are scored
        in chunks; ``workers`` > 1 scores chunks on threads (numpy and rapidfuzz release the
        GIL for the heavy work).
        """
        right = left if right is None else right
        if right_rows is None:
            raise ValueError("right_rows is required")
        li, ri = np.asarray(left_rows), np.asarray(right_rows)
        out = np.empty(len(li))

        def run(start: int) -> None:
            view = PairView(left, right, li[start : start + chunk], ri[start : start + chunk])
            out[start : start + chunk] = self._weights_from_levels(view, self.levels(view))

        starts = range(0, len(li), chunk)
        if workers > 1 and len(li) > chunk:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(run, starts))
        else:
            for start in starts:
                run(start)
        return out

    def pair_levels(
        self,
        left: EncodedRecords,
        left_rows: np.ndarray,
        right: EncodedRecords | None = None,
        right_rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """Level index per comparison for each pair (used by estimation)."""
        right = left if right is None else right
        if right_rows is None:
            raise ValueError("right_rows is required")
        view = PairView(left, right, np.asarray(left_rows), np.asarray(right_rows))
        return self.levels(view)

    def probability(self, weight: float | np.ndarray) -> Any:
        return probability(weight)

    def explain(self, record: dict[str, Any], candidate: dict[str, Any]) -> Explanation:
        """Per comparison: level reached and its weight; the prior; total and probability."""
        return self.explain_many(record, [candidate])[0]

    def explain_many(
        self,
        record: dict[str, Any],
        candidates: Sequence[dict[str, Any]],
        *,
        keys: Sequence[Hashable] | None = None,
    ) -> list[Explanation]:
        """:meth:`explain` of one record against each candidate, encoding the record once and
        each candidate at most once (``keys`` as in :meth:`score`); the totals are the
        weights :meth:`score` gives."""
        if not candidates:
            return []
        tf = self.term_frequencies
        left_rec = as_normalized(record)
        right_recs = [as_normalized(c) for c in candidates]
        left_row = encode_row(left_rec, tf)
        if keys is not None:
            rows = self.encodings.rows(right_recs, keys, tf)
        else:
            rows = [encode_row(c, tf) for c in right_recs]
        levels: Sequence[Sequence[int]]
        adjust: list[list[float]]
        if self._rows_supported():
            levels = self._row_levels(left_row, rows)
            adjust = [
                [
                    self._tf_value(left_row, comparison, comparison.levels[lv[j]])
                    if tf and comparison.tf_field and comparison.levels[lv[j]].tf_adjust
                    else 0.0
                    for j, comparison in enumerate(self.comparisons)
                ]
                for lv in levels
            ]
            names = self._name_comparisons()
            if tf and names is not None and not math.isnan(left_row.tf_full):
                for lv, row_adjust in zip(levels, adjust, strict=True):
                    cache = {(j, lv[j]): row_adjust[j] for j in names}
                    row_adjust[names[1]] += self._full_name_value(left_row, lv, names, cache)
        else:
            view = PairView(stack_rows([left_row]), stack_rows(rows))
            array = self.levels(view)
            columns = [
                np.broadcast_to(self._tf_adjustment(view, c, array[:, j]), (view.n,))
                for j, c in enumerate(self.comparisons)
            ]
            names = self._name_comparisons()
            if names is not None:  # the full name's adjustment is shown with the given name's
                columns[names[1]] = columns[names[1]] + self._full_name_adjustment(
                    view, array, dict(enumerate(columns)))
            levels = array.tolist()
            adjust = [[float(col[i]) for col in columns] for i in range(view.n)]
        explanations = []
        conditions = self._conditions()
        for pair, right_rec in enumerate(right_recs):
            outcomes = []
            total = self.prior_weight
            row = [int(x) for x in levels[pair]]
            for j, comparison in enumerate(self.comparisons):
                index = row[j]
                level = comparison.levels[index]
                shown = _SHOWN.get(comparison.name, lambda r: None)
                u, weight, given = (None if level.null else level.u), level.weight, None
                condition = _holding(row, conditions.get(j))
                if condition is not None:
                    cond = condition[2]
                    u = None if level.null else cond.u[index]
                    weight, given = condition[1][index], cond.describe()
                outcome = ComparisonOutcome(
                    comparison=comparison.name,
                    level=index,
                    label=level.label,
                    m=None if level.null else level.m,
                    u=u,
                    weight=weight,
                    tf_adjustment=adjust[pair][j],
                    left=shown(left_rec),
                    right=shown(right_rec),
                    u_given=given,
                )
                total += outcome.contribution
                outcomes.append(outcome)
            explanations.append(
                Explanation(
                    prior=self.prior,
                    prior_weight=self.prior_weight,
                    comparisons=outcomes,
                    total_weight=total,
                    probability=probability(total),
                )
            )
        return explanations
