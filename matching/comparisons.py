"""Comparisons as ordered lists of levels, evaluated as array work over record pairs.

A comparison (family name, birth date, ...) is an ordered list of levels. Each level names a
vectorised predicate and carries m (probability of the level among true matches) and u (among
non-matches). A pair reaches the first level whose predicate holds; a "null" level (a value
missing on either side) is neutral and weighs nothing.

Records are encoded once (:func:`encode`) into numpy columns: strings become 64-bit hashes, so
equality, phonetic, nickname and token-overlap tests are integer comparisons; Jaro-Winkler runs
in rapidfuzz only for the pairs that still need it. Hashes are Python's string hash: stable
within a process, which is all that is needed because both sides are encoded in one process.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rapidfuzz.distance import JaroWinkler
from rapidfuzz.process import cdist, cpdist

from matching.normalize import normalize_record

__all__ = [
    "Comparison",
    "EncodedRecords",
    "Level",
    "PairView",
    "PREDICATES",
    "ROW_PREDICATES",
    "RowPair",
    "as_normalized",
    "EncodedRow",
    "default_comparisons",
    "encode",
    "encode_row",
    "row_level",
    "stack_rows",
]

K_TOKENS = 4  # family tokens / previous family names kept per record
K_VARIANTS = 6  # given-name nickname variants kept per record
K_ADDRESS = 8  # address tokens kept per record
K_PHONES = 3
K_POSTAL = 2
K_IDS = 3
_SEX_CODE = {"M": 1, "F": 2, "O": 3}
_SUFFIX_CODE = {"JR": 1, "SR": 2, "I": 3, "II": 4, "III": 5, "IV": 6, "V": 7}


def _h(text: str | None) -> int:
    if not text:
        return 0
    value = hash(text)
    return value if value != 0 else 1


def as_normalized(record: dict[str, Any]) -> dict[str, Any]:
    """A normalised record: returned as is when already normalised, else normalised here.

    Raw input may be a demographics dict, or ``{"demographics": ..., "identifiers": [...]}``.
    """
    if "family_key" in record:
        return record
    if "demographics" in record:
        return normalize_record(record["demographics"] or {}, record.get("identifiers"))
    return normalize_record(record, record.get("identifiers"))


@dataclass
class EncodedRecords:
    """Records as numpy columns (one row per record), ready for array comparisons."""

    n: int
    ints: dict[str, np.ndarray]
    strings: dict[str, np.ndarray]  # object arrays of str, for Jaro-Winkler
    tf: dict[str, np.ndarray]  # term frequency of each record's value (nan when unknown)

    def take(self, rows: np.ndarray) -> EncodedRecords:
        return EncodedRecords(
            n=len(rows),
            ints={k: v[rows] for k, v in self.ints.items()},
            strings={k: v[rows] for k, v in self.strings.items()},
            tf={k: v[rows] for k, v in self.tf.items()},
        )


def _pad(values: Sequence[int], width: int) -> list[int]:
    out = list(values[:width])
    return out + [0] * (width - len(out))


# integer columns: (name, width); width 0 is a 1-D column. One encoded record is one int64 row
# of all of them side by side (ROW_WIDTH values), so rows can be cached and stacked cheaply.
_INT_COLUMNS: tuple[tuple[str, int], ...] = (
    ("fam", 0), ("fam_phon", 0), ("fam_tok", K_TOKENS), ("prev_fam", K_TOKENS),
    ("giv", 0), ("giv_phon", 0), ("giv_var", K_VARIANTS), ("initial", 0),
    ("dob", 3), ("dob_digits", 8), ("sex", 0), ("suffix", 0),
    ("postal", K_POSTAL), ("postal3", K_POSTAL), ("phone", K_PHONES), ("addr_line", 0),
    ("addr_tok", K_ADDRESS), ("pid_dom", K_IDS), ("pid_val", K_IDS),
)
_INT8_COLUMNS = frozenset({"dob_digits"})
_SLICES: dict[str, tuple[int, int, bool]] = {}
_offset = 0
for _name, _width in _INT_COLUMNS:
    _SLICES[_name] = (_offset, _offset + max(_width, 1), _width == 0)
    _offset += max(_width, 1)
ROW_WIDTH = _offset
_NO_DIGITS = [0] * 8
_ENCODE_CHUNK = 32768  # records encoded at a time by encode() (bounds its temporary memory)


@dataclass(frozen=True, slots=True)
class EncodedRow:
    """One record encoded (see :func:`encode_row`): the int64 row as bytes, the two strings
    compared by Jaro-Winkler and the term frequencies (nan when unknown)."""

    ints: bytes
    fam: str
    giv: str
    tf_family: float
    tf_given: float


def encode_row(
    record: dict[str, Any], term_frequencies: dict[str, Any] | None = None
) -> EncodedRow:
    """Encode one normalised (or raw) record; :func:`stack_rows` turns rows into columns."""
    r = as_normalized(record)
    tables = term_frequencies or {}
    family = r.get("family") or ""
    given = r.get("given") or ""
    year, month, day = r.get("birth_year"), r.get("birth_month"), r.get("birth_day")
    if year and month and day:
        digits = [int(c) for c in f"{year:04d}{month:02d}{day:02d}"]
        if len(digits) != 8:
            raise ValueError(f"birth date out of range: {year}-{month}-{day}")
    else:
        digits = _NO_DIGITS
    codes = r.get("postal_codes") or []
    addresses = r.get("addresses") or []
    person_ids = [x for x in r.get("identifiers") or [] if x.get("person_level")]
    values = [
        _h(r.get("family_key") or ""),
        _h(r.get("family_phonetic")),
        *_pad([_h(t) for t in r.get("family_tokens") or []], K_TOKENS),
        *_pad([_h(p.replace(" ", "")) for p in r.get("previous_family") or []], K_TOKENS),
        _h(given),
        _h(r.get("given_phonetic")),
        *_pad([_h(v) for v in r.get("given_variants") or []], K_VARIANTS),
        ord(given[0]) if given else 0,
        int(year or 0), int(month or 0), int(day or 0),
        *digits,
        _SEX_CODE.get(r.get("sex") or "", 0),
        _SUFFIX_CODE.get(r.get("suffix") or "", 0),
        *_pad([_h(c) for c in codes], K_POSTAL),
        *_pad([_h(c[:3]) for c in codes], K_POSTAL),
        *_pad([_h(p[-10:]) for p in r.get("phones") or []], K_PHONES),
        _h(addresses[0]["line"]) if addresses else 0,
        *_pad([_h(t) for t in r.get("address_tokens") or []], K_ADDRESS),
        *_pad([_h(x["domain"]) for x in person_ids], K_IDS),
        *_pad([_h(x["domain"] + "|" + x["value"]) for x in person_ids], K_IDS),
    ]
    tf_fam = tf_giv = math.nan
    total = float(tables.get("total") or 0)
    if total > 0:
        count = (tables.get("family") or {}).get(family)
        if count:
            tf_fam = count / total
        count = (tables.get("given") or {}).get(given)
        if count:
            tf_giv = count / total
    return EncodedRow(
        array("q", values).tobytes(), r.get("family_key") or "", given, tf_fam, tf_giv
    )


def stack_rows(rows: Sequence[EncodedRow]) -> EncodedRecords:
    """Columns of encoded rows (in order), the same arrays :func:`encode` returns."""
    n = len(rows)
    block = np.frombuffer(b"".join([row.ints for row in rows]), np.int64).reshape(n, ROW_WIDTH)
    ints: dict[str, np.ndarray] = {}
    for name, (start, stop, scalar) in _SLICES.items():
        column = block[:, start] if scalar else block[:, start:stop]
        if name in _INT8_COLUMNS:
            ints[name] = column.astype(np.int8)
        else:
            ints[name] = np.ascontiguousarray(column) if n > 1 else column.copy()
    fam_str = np.empty(n, object)
    giv_str = np.empty(n, object)
    fam_str[:] = [row.fam for row in rows]
    giv_str[:] = [row.giv for row in rows]
    return EncodedRecords(
        n=n,
        ints=ints,
        strings={"fam": fam_str, "giv": giv_str},
        tf={
            "family": np.array([row.tf_family for row in rows], dtype=float),
            "given": np.array([row.tf_given for row in rows], dtype=float),
        },
    )


def encode(
    records: Sequence[dict[str, Any]],
    term_frequencies: dict[str, Any] | None = None,
) -> EncodedRecords:
    """Encode normalised (or raw) records into columns. Do this once per record set."""
    n = len(records)
    if n <= _ENCODE_CHUNK:
        return stack_rows([encode_row(r, term_frequencies) for r in records])
    # large sets: chunk by chunk into the final columns, so the rows never all exist at once
    out: EncodedRecords | None = None
    for start in range(0, n, _ENCODE_CHUNK):
        part = stack_rows(
            [encode_row(r, term_frequencies) for r in records[start : start + _ENCODE_CHUNK]]
        )
        if out is None:
            out = EncodedRecords(
                n=n,
                ints={k: np.empty((n, *v.shape[1:]), v.dtype) for k, v in part.ints.items()},
                strings={k: np.empty(n, object) for k in part.strings},
                tf={k: np.empty(n) for k in part.tf},
            )
        stop = start + part.n
        for group, target in ((part.ints, out.ints), (part.strings, out.strings),
                              (part.tf, out.tf)):
            for k, v in group.items():
                target[k][start:stop] = v
    assert out is not None
    return out


class PairView:
    """Aligned columns for a set of pairs (left row li[k] against right row ri[k]).

    When every pair shares one left record (one record against its candidates), the left side
    is kept as a single row and broadcast, which is what makes one-vs-many scoring cheap.
    """

    def __init__(
        self,
        left: EncodedRecords,
        right: EncodedRecords,
        li: np.ndarray | None = None,
        ri: np.ndarray | None = None,
    ) -> None:
        self._left, self._right = left, right
        self._li, self._ri = li, ri
        self.single_left = li is None
        self.n = right.n if ri is None else len(ri)
        self._cache: dict[str, np.ndarray] = {}
        self._rows_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _rows(self, side: str, sel: np.ndarray) -> np.ndarray | None:
        rows = self._li if side == "L" else self._ri
        if rows is None:
            return None if len(sel) == self.n else sel
        if len(sel) == self.n:
            return rows
        # the levels of one comparison gather several columns for the same selection
        cached = self._rows_cache.get(side)
        if cached is not None and cached[0] is sel:
            return cached[1]
        picked = rows[sel]
        self._rows_cache[side] = (sel, picked)
        return picked

    def left_at(self, name: str, sel: np.ndarray) -> np.ndarray:
        """Left column for the selected pairs (one broadcast row when the left is single)."""
        col = self._left.ints[name]
        if self.single_left:
            return col[:1]
        return col[self._rows("L", sel)]

    def right_at(self, name: str, sel: np.ndarray) -> np.ndarray:
        col = self._right.ints[name]
        rows = self._rows("R", sel)
        return col if rows is None else col[rows]

    def left_tf(self, name: str) -> np.ndarray:
        col = self._left.tf[name]
        if self._li is None:
            return np.broadcast_to(col[:1], (self.n,))
        return col[self._li]

    def cached(self, key: str, sel: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]):
        """A per-pair value computed once per pair (shared by several levels of a comparison)."""
        store = self._cache.get(key)
        if store is None:
            store = np.full(self.n, np.nan)
            self._cache[key] = store
        values = store[sel]
        todo = np.isnan(values)
        if todo.any():
            fresh = compute(sel[todo])
            store[sel[todo]] = fresh
            values[todo] = fresh
        return values

    def jaro_winkler(self, name: str, sel: np.ndarray) -> np.ndarray:
        return self.cached("jw:" + name, sel, lambda s: self._jaro_winkler(name, s))

    def _jaro_winkler(self, name: str, sel: np.ndarray) -> np.ndarray:
        strings = self._right.strings[name]
        rows = self._rows("R", sel)
        right = strings if rows is None else strings[rows]
        if self._li is None:
            query = self._left.strings[name][0]
            return cdist([query], right, scorer=JaroWinkler.normalized_similarity)[0]
        left = self._left.strings[name][self._rows("L", sel)]
        return cpdist(left, right, scorer=JaroWinkler.normalized_similarity, workers=1)


# --------------------------------------------------------------------------------------------
# vectorised predicates: (view, sel, level) -> bool array over the selected pairs

Predicate = Callable[[PairView, np.ndarray, "Level"], np.ndarray]


def _eq(view: PairView, sel: np.ndarray, name: str) -> np.ndarray:
    a, b = view.left_at(name, sel), view.right_at(name, sel)
    return (a == b) & (b != 0) & (a != 0)


def _any_shared(view: PairView, sel: np.ndarray, left: str, right: str | None = None) -> np.ndarray:
    a = view.left_at(left, sel)
    b = view.right_at(right or left, sel)
    a3 = a[:, :, None]
    hit = (a3 == b[:, None, :]) & (a3 != 0)
    return hit.reshape(hit.shape[0], -1).any(axis=1)


def _shared_count(view: PairView, sel: np.ndarray, name: str) -> np.ndarray:
    a = view.left_at(name, sel)
    b = view.right_at(name, sel)
    a3 = a[:, :, None]
    hit = (a3 == b[:, None, :]) & (a3 != 0)
    return hit.any(axis=2).sum(axis=1)


def _in(view: PairView, sel: np.ndarray, scalar: str, vector: str, left_scalar: bool) -> np.ndarray:
    if left_scalar:
        s, v = view.left_at(scalar, sel), view.right_at(vector, sel)
    else:
        s, v = view.right_at(scalar, sel), view.left_at(vector, sel)
    return ((v == s[:, None]) & (s[:, None] != 0)).any(axis=1)


def p_else(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return np.ones(len(sel), bool)


def _missing(view: PairView, sel: np.ndarray, name: str) -> np.ndarray:
    a, b = view.left_at(name, sel), view.right_at(name, sel)
    if a.ndim == 2:
        return (a[:, 0] == 0) | (b[:, 0] == 0)
    return (a == 0) | (b == 0)


def family_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _missing(view, sel, "fam")


def family_exact(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _eq(view, sel, "fam")


def family_jaro_winkler(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return view.jaro_winkler("fam", sel) >= (level.threshold or 0.0)


def family_token_shared(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _any_shared(view, sel, "fam_tok")


def family_phonetic(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _eq(view, sel, "fam_phon")


def family_previous(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    """A maiden/previous family name on one side equals the other's family (or theirs)."""
    return (
        _in(view, sel, "fam", "prev_fam", left_scalar=True)
        | _in(view, sel, "fam", "prev_fam", left_scalar=False)
        | _any_shared(view, sel, "prev_fam")
    )


def names_swapped(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    lf, lg = view.left_at("fam", sel), view.left_at("giv", sel)
    rf, rg = view.right_at("fam", sel), view.right_at("giv", sel)
    return (lf == rg) & (lg == rf) & (lf != 0) & (lg != 0)


def given_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _missing(view, sel, "giv")


def given_exact(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _eq(view, sel, "giv")


def given_jaro_winkler(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return view.jaro_winkler("giv", sel) >= (level.threshold or 0.0)


def given_nickname(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _any_shared(view, sel, "giv_var")


def given_phonetic(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    """Same NYSIIS key and not far apart in spelling (NYSIIS alone puts JOHN and JAMES
    together); ``threshold`` is the minimum Jaro-Winkler similarity."""
    same = _eq(view, sel, "giv_phon")
    if level.threshold and same.any():
        same[same] = view.jaro_winkler("giv", sel[same]) >= level.threshold
    return same


def given_initial(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _eq(view, sel, "initial")


def dob_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return (view.left_at("dob", sel)[:, 0] == 0) | (view.right_at("dob", sel)[:, 0] == 0)


def _full(dob: np.ndarray) -> np.ndarray:
    return (dob[:, 1] != 0) & (dob[:, 2] != 0)


def dob_exact(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    a, b = view.left_at("dob", sel), view.right_at("dob", sel)
    return (a == b).all(axis=1) & _full(b) & _full(a)


def dob_transposed(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    a, b = view.left_at("dob", sel), view.right_at("dob", sel)
    return (
        (a[:, 0] == b[:, 0]) & (a[:, 1] == b[:, 2]) & (a[:, 2] == b[:, 1])
        & (a[:, 1] != a[:, 2]) & _full(a) & _full(b)
    )


def dob_one_digit(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    a, b = view.left_at("dob", sel), view.right_at("dob", sel)
    da, db = view.left_at("dob_digits", sel), view.right_at("dob_digits", sel)
    return ((da != db).sum(axis=1) == 1) & _full(a) & _full(b)


def dob_year_month(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    a, b = view.left_at("dob", sel), view.right_at("dob", sel)
    return (a[:, 0] == b[:, 0]) & (a[:, 1] == b[:, 1]) & (a[:, 1] != 0)


def dob_year(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    a, b = view.left_at("dob", sel), view.right_at("dob", sel)
    return np.abs(a[:, 0] - b[:, 0]) <= int(level.threshold or 0)


def sex_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _missing(view, sel, "sex")


def sex_exact(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _eq(view, sel, "sex")


def suffix_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _missing(view, sel, "suffix")


def suffix_exact(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _eq(view, sel, "suffix")


def postal_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _missing(view, sel, "postal")


def postal_exact(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _any_shared(view, sel, "postal")


def postal_prefix(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _any_shared(view, sel, "postal3")


def phone_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _missing(view, sel, "phone")


def phone_shared(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return view.cached("phone_shared", sel, lambda s: _any_shared(view, s, "phone")) > 0


def address_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _missing(view, sel, "addr_tok")


def address_exact(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return view.cached("addr_exact", sel, lambda s: _eq(view, s, "addr_line")) > 0


def address_token_overlap(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    shared = view.cached("addr_shared", sel, lambda s: _shared_count(view, s, "addr_tok"))
    return shared >= int(level.threshold or 1)


def contact_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    """Neither an address nor a phone comparable on both sides."""
    has_left = (view.left_at("addr_tok", sel)[:, 0] != 0) | (view.left_at("postal", sel)[:, 0] != 0)
    has_right = (view.right_at("addr_tok", sel)[:, 0] != 0) | (
        view.right_at("postal", sel)[:, 0] != 0
    )
    phones = (view.left_at("phone", sel)[:, 0] != 0) & (view.right_at("phone", sel)[:, 0] != 0)
    return ~((has_left & has_right) | phones)


def address_and_phone(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return address_exact(view, sel, level) & phone_shared(view, sel, level)


def identifier_missing(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    """No person-level identifier domain in common."""
    return ~_any_shared(view, sel, "pid_dom")


def identifier_agree(view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
    return _any_shared(view, sel, "pid_val")


PREDICATES: dict[str, Predicate] = {
    f.__name__: f
    for f in (
        p_else, family_missing, family_exact, family_jaro_winkler, family_token_shared,
        family_phonetic, family_previous, names_swapped, given_missing, given_exact,
        given_jaro_winkler, given_nickname, given_phonetic, given_initial, dob_missing,
        dob_exact, dob_transposed, dob_one_digit, dob_year_month, dob_year, sex_missing,
        sex_exact, suffix_missing, suffix_exact, postal_missing, postal_exact, postal_prefix,
        phone_missing, phone_shared, address_missing, address_exact, address_token_overlap,
        identifier_missing, identifier_agree, contact_missing, address_and_phone,
    )
}
PREDICATES["else"] = p_else


# --------------------------------------------------------------------------------------------
# levels and comparisons (data)


@dataclass
class Level:
    """One level of a comparison: a predicate plus its m and u probabilities."""

    label: str
    predicate: str
    m: float = 0.5
    u: float = 0.5
    threshold: float | None = None
    null: bool = False
    tf_adjust: bool = False

    @property
    def weight(self) -> float:
        """log2 Bayes factor m/u; a null level weighs 0."""
        if self.null:
            return 0.0
        return float(np.log2(max(self.m, 1e-12) / max(self.u, 1e-12)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "predicate": self.predicate}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.null:
            out["null"] = True
        else:
            out["m"] = round(self.m, 8)
            out["u"] = round(self.u, 10)
        if self.tf_adjust:
            out["tf_adjust"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Level:
        if data["predicate"] not in PREDICATES:
            raise ValueError(f"unknown predicate {data['predicate']!r}")
        return cls(
            label=data["label"],
            predicate=data["predicate"],
            m=float(data.get("m", 0.5)),
            u=float(data.get("u", 0.5)),
            threshold=data.get("threshold"),
            null=bool(data.get("null", False)),
            tf_adjust=bool(data.get("tf_adjust", False)),
        )


@dataclass
class Comparison:
    """An ordered list of levels; the first level whose predicate holds is the one reached."""

    name: str
    levels: list[Level]
    tf_field: str | None = None  # "family" or "given": term-frequency table used by tf levels
    description: str = ""

    def weights(self) -> np.ndarray:
        return np.array([lv.weight for lv in self.levels])

    def levels_for(self, view: PairView) -> np.ndarray:
        """Index of the level reached by each pair (int8 array of length view.n)."""
        n = view.n
        out = np.full(n, -1, np.int8)
        remaining = np.arange(n)
        for index, level in enumerate(self.levels):
            if remaining.size == 0:
                break
            hit = PREDICATES[level.predicate](view, remaining, level)
            if hit.shape != remaining.shape:
                hit = np.broadcast_to(hit, remaining.shape)
            out[remaining[hit]] = index
            remaining = remaining[~hit]
        out[remaining] = len(self.levels) - 1
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.tf_field:
            out["tf_field"] = self.tf_field
        out["levels"] = [lv.to_dict() for lv in self.levels]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        return cls(
            name=data["name"],
            levels=[Level.from_dict(lv) for lv in data["levels"]],
            tf_field=data.get("tf_field"),
            description=data.get("description", ""),
        )


def default_comparisons() -> list[Comparison]:
    """The comparisons of the shipped model, with starting m/u values before training."""
    L = Level  # noqa: N806 - short alias keeps the table readable
    return [
        Comparison("family_name", [
            L("missing", "family_missing", null=True),
            L("exact", "family_exact", 0.88, 0.002, tf_adjust=True),
            L("swapped with given", "names_swapped", 0.005, 1e-6),
            L("jaro-winkler >= 0.94", "family_jaro_winkler", 0.04, 0.001, threshold=0.94),
            L("compound part shared", "family_token_shared", 0.03, 0.0005),
            L("previous/maiden name", "family_previous", 0.02, 0.0002),
            L("phonetic", "family_phonetic", 0.01, 0.002),
            L("jaro-winkler >= 0.85", "family_jaro_winkler", 0.01, 0.01, threshold=0.85),
            L("different", "else", 0.005, 0.985),
        ], tf_field="family", description="primary family name"),
        Comparison("given_name", [
            L("missing", "given_missing", null=True),
            L("exact", "given_exact", 0.88, 0.005, tf_adjust=True),
            L("swapped with family", "names_swapped", 0.005, 1e-6),
            L("jaro-winkler >= 0.94", "given_jaro_winkler", 0.04, 0.002, threshold=0.94),
            L("nickname", "given_nickname", 0.03, 0.002),
            L("phonetic", "given_phonetic", 0.01, 0.002, threshold=0.75),
            L("jaro-winkler >= 0.85", "given_jaro_winkler", 0.01, 0.01, threshold=0.85),
            L("same initial", "given_initial", 0.01, 0.06),
            L("different", "else", 0.005, 0.92),
        ], tf_field="given", description="first given name"),
        Comparison("birth_date", [
            L("missing", "dob_missing", null=True),
            L("exact", "dob_exact", 0.9, 0.0001),
            L("day/month transposed", "dob_transposed", 0.02, 0.00001),
            L("one digit off", "dob_one_digit", 0.03, 0.0005),
            L("same year and month", "dob_year_month", 0.02, 0.001),
            L("same year", "dob_year", 0.01, 0.012, threshold=0),
            L("within 1 year", "dob_year", 0.005, 0.03, threshold=1),
            L("different", "else", 0.005, 0.95),
        ], description="birth date, partial dates compare at their precision"),
        Comparison("sex", [
            L("missing", "sex_missing", null=True),
            L("same", "sex_exact", 0.98, 0.5),
            L("different", "else", 0.02, 0.5),
        ]),
        Comparison("suffix", [
            L("missing", "suffix_missing", null=True),
            L("same", "suffix_exact", 0.95, 0.3),
            L("different (JR vs SR)", "else", 0.05, 0.7),
        ], description="generational suffix; only compared when both records carry one"),
        Comparison("contact", [
            L("missing", "contact_missing", null=True),
            L("same address and phone", "address_and_phone", 0.55, 0.00002),
            L("same address", "address_exact", 0.15, 0.0002),
            L("same house and street", "address_token_overlap", 0.03, 0.0002, threshold=3),
            L("same phone", "phone_shared", 0.1, 0.0002),
            L("same postal code", "postal_exact", 0.05, 0.01),
            L("different", "else", 0.12, 0.99),
        ], description="address, postal code and phone as one comparison: a household shares "
           "all three, so counting them separately would count one fact three times"),
        Comparison("person_identifier", [
            L("no common domain", "identifier_missing", null=True),
            L("same value", "identifier_agree", 0.97, 0.000001),
            L("different value", "else", 0.03, 0.999999),
        ], description="person-level identifiers (SSN, national id) in a shared domain"),
    ]


# --------------------------------------------------------------------------------------------
# the same predicates on one pair of encoded rows, in plain Python (no numpy per-call overhead):
# the small-candidate path of MatchModel.score. Each must agree exactly with its vectorised twin
# above (tests/matching/test_score_fast.py checks levels and weights on generated populations).

_ROW_STRUCT = struct.Struct(f"={ROW_WIDTH}q")
_F32 = struct.Struct("=f")


def _col(name: str) -> int | slice:
    start, stop, scalar = _SLICES[name]
    return start if scalar else slice(start, stop)


class RowPair:
    """One pair of encoded rows for the plain-Python predicates (memoises Jaro-Winkler)."""

    __slots__ = ("a", "b", "left", "right", "_jw")

    def __init__(self, left: EncodedRow, right: EncodedRow,
                 a: tuple[int, ...] | None = None) -> None:
        self.left, self.right = left, right
        self.a = a if a is not None else _ROW_STRUCT.unpack(left.ints)
        self.b = _ROW_STRUCT.unpack(right.ints)
        self._jw: dict[str, float] = {}

    def jaro_winkler(self, name: str) -> float:
        """As the vectorised path computes it: rapidfuzz's similarity rounded to float32."""
        value = self._jw.get(name)
        if value is None:
            if name == "fam":
                sim = JaroWinkler.normalized_similarity(self.left.fam, self.right.fam)
            else:
                sim = JaroWinkler.normalized_similarity(self.left.giv, self.right.giv)
            value = _F32.unpack(_F32.pack(sim))[0]
            self._jw[name] = value
        return value


_FAM, _FAM_PHON, _FAM_TOK, _PREV_FAM = _col("fam"), _col("fam_phon"), _col("fam_tok"), _col(
    "prev_fam")
_GIV, _GIV_PHON, _GIV_VAR, _INITIAL = _col("giv"), _col("giv_phon"), _col("giv_var"), _col(
    "initial")
_DOB_START = _SLICES["dob"][0]
_DIGITS = _col("dob_digits")
_SEX, _SUFFIX, _POSTAL, _POSTAL3 = _col("sex"), _col("suffix"), _col("postal"), _col("postal3")
_PHONE, _ADDR_LINE, _ADDR_TOK = _col("phone"), _col("addr_line"), _col("addr_tok")
_PID_DOM, _PID_VAL = _col("pid_dom"), _col("pid_val")
_FIRST = {name: _SLICES[name][0] for name in _SLICES}


def _r_eq(p: RowPair, i: int) -> bool:
    a, b = p.a[i], p.b[i]
    return a == b and b != 0 and a != 0


def _r_any_shared(p: RowPair, left: slice, right: slice | None = None) -> bool:
    b = p.b[right or left]
    return any(x != 0 and x in b for x in p.a[left])


def _r_in(p: RowPair, scalar: int, vector: slice, left_scalar: bool) -> bool:
    s, v = (p.a[scalar], p.b[vector]) if left_scalar else (p.b[scalar], p.a[vector])
    return s != 0 and s in v


def _r_missing(p: RowPair, name: str) -> bool:
    i = _FIRST[name]
    return p.a[i] == 0 or p.b[i] == 0


def _r_dob(p: RowPair) -> tuple[tuple[int, ...], tuple[int, ...]]:
    s = _DOB_START
    return p.a[s : s + 3], p.b[s : s + 3]


def _r_full(d: tuple[int, ...]) -> bool:
    return d[1] != 0 and d[2] != 0


def _r_dob_exact(p: RowPair, lv: Level) -> bool:
    a, b = _r_dob(p)
    return a == b and _r_full(b) and _r_full(a)


def _r_dob_transposed(p: RowPair, lv: Level) -> bool:
    a, b = _r_dob(p)
    return (a[0] == b[0] and a[1] == b[2] and a[2] == b[1] and a[1] != a[2]
            and _r_full(a) and _r_full(b))


def _r_dob_one_digit(p: RowPair, lv: Level) -> bool:
    a, b = _r_dob(p)
    diff = sum(x != y for x, y in zip(p.a[_DIGITS], p.b[_DIGITS], strict=True))
    return diff == 1 and _r_full(a) and _r_full(b)


def _r_dob_year_month(p: RowPair, lv: Level) -> bool:
    a, b = _r_dob(p)
    return a[0] == b[0] and a[1] == b[1] and a[1] != 0


def _r_dob_year(p: RowPair, lv: Level) -> bool:
    a, b = _r_dob(p)
    return abs(a[0] - b[0]) <= int(lv.threshold or 0)


def _r_names_swapped(p: RowPair, lv: Level) -> bool:
    lf, lg, rf, rg = p.a[_FAM], p.a[_GIV], p.b[_FAM], p.b[_GIV]
    return lf == rg and lg == rf and lf != 0 and lg != 0


def _r_given_phonetic(p: RowPair, lv: Level) -> bool:
    same = _r_eq(p, _GIV_PHON)
    if lv.threshold and same:
        return p.jaro_winkler("giv") >= lv.threshold
    return same


def _r_address_token_overlap(p: RowPair, lv: Level) -> bool:
    b = p.b[_ADDR_TOK]
    shared = sum(1 for x in p.a[_ADDR_TOK] if x != 0 and x in b)
    return shared >= int(lv.threshold or 1)


def _r_contact_missing(p: RowPair, lv: Level) -> bool:
    t, c, ph = _FIRST["addr_tok"], _FIRST["postal"], _FIRST["phone"]
    a, b = p.a, p.b
    has_left = a[t] != 0 or a[c] != 0
    has_right = b[t] != 0 or b[c] != 0
    phones = a[ph] != 0 and b[ph] != 0
    return not ((has_left and has_right) or phones)


RowPredicate = Callable[[RowPair, "Level"], bool]

ROW_PREDICATES: dict[str, RowPredicate] = {
    "p_else": lambda p, lv: True,
    "else": lambda p, lv: True,
    "family_missing": lambda p, lv: _r_missing(p, "fam"),
    "family_exact": lambda p, lv: _r_eq(p, _FAM),
    "family_jaro_winkler": lambda p, lv: p.jaro_winkler("fam") >= (lv.threshold or 0.0),
    "family_token_shared": lambda p, lv: _r_any_shared(p, _FAM_TOK),
    "family_phonetic": lambda p, lv: _r_eq(p, _FAM_PHON),
    "family_previous": lambda p, lv: (
        _r_in(p, _FAM, _PREV_FAM, True) or _r_in(p, _FAM, _PREV_FAM, False)
        or _r_any_shared(p, _PREV_FAM)
    ),
    "names_swapped": _r_names_swapped,
    "given_missing": lambda p, lv: _r_missing(p, "giv"),
    "given_exact": lambda p, lv: _r_eq(p, _GIV),
    "given_jaro_winkler": lambda p, lv: p.jaro_winkler("giv") >= (lv.threshold or 0.0),
    "given_nickname": lambda p, lv: _r_any_shared(p, _GIV_VAR),
    "given_phonetic": _r_given_phonetic,
    "given_initial": lambda p, lv: _r_eq(p, _INITIAL),
    "dob_missing": lambda p, lv: _r_missing(p, "dob"),
    "dob_exact": _r_dob_exact,
    "dob_transposed": _r_dob_transposed,
    "dob_one_digit": _r_dob_one_digit,
    "dob_year_month": _r_dob_year_month,
    "dob_year": _r_dob_year,
    "sex_missing": lambda p, lv: _r_missing(p, "sex"),
    "sex_exact": lambda p, lv: _r_eq(p, _SEX),
    "suffix_missing": lambda p, lv: _r_missing(p, "suffix"),
    "suffix_exact": lambda p, lv: _r_eq(p, _SUFFIX),
    "postal_missing": lambda p, lv: _r_missing(p, "postal"),
    "postal_exact": lambda p, lv: _r_any_shared(p, _POSTAL),
    "postal_prefix": lambda p, lv: _r_any_shared(p, _POSTAL3),
    "phone_missing": lambda p, lv: _r_missing(p, "phone"),
    "phone_shared": lambda p, lv: _r_any_shared(p, _PHONE),
    "address_missing": lambda p, lv: _r_missing(p, "addr_tok"),
    "address_exact": lambda p, lv: _r_eq(p, _ADDR_LINE),
    "address_token_overlap": _r_address_token_overlap,
    "contact_missing": _r_contact_missing,
    "address_and_phone": lambda p, lv: (
        _r_eq(p, _ADDR_LINE) and _r_any_shared(p, _PHONE)
    ),
    "identifier_missing": lambda p, lv: not _r_any_shared(p, _PID_DOM),
    "identifier_agree": lambda p, lv: _r_any_shared(p, _PID_VAL),
}


def row_level(comparison: Comparison, pair: RowPair) -> int:
    """Index of the level ``pair`` reaches: :meth:`Comparison.levels_for` for one pair."""
    for index, level in enumerate(comparison.levels):
        if ROW_PREDICATES[level.predicate](pair, level):
            return index
    return len(comparison.levels) - 1
