"""Comparisons as ordered lists of levels, evaluated as array work over record pairs.

A comparison (family name, birth date, ...) is an ordered list of levels. Each level names a
predicate, a registered :class:`LevelKind`, and carries m (probability of the level among true
matches) and u (among non-matches). A pair reaches the first level whose predicate holds; a
"null" level (a value missing on either side) is neutral and weighs nothing. A level kind is one
object with both forms of its test: ``vectorised`` over many pairs (numpy) and ``scalar`` for
one pair (plain Python, the small-candidate path); the two agree exactly.

Records are encoded once (:func:`encode`) into numpy columns: strings become 64-bit hashes, so
equality, phonetic, nickname and token-overlap tests are integer comparisons; Jaro-Winkler runs
in rapidfuzz only for the pairs that still need it. Hashes are Python's string hash: stable
within a process, which is all that is needed because both sides are encoded in one process.
"""

from __future__ import annotations

import math
import struct
from abc import ABC, abstractmethod
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rapidfuzz.distance import JaroWinkler
from rapidfuzz.process import cdist, cpdist

from matching.normalize import normalize_record, placeholder_given

__all__ = [
    "Comparison",
    "EncodedRecords",
    "LEVEL_KINDS",
    "Level",
    "LevelKind",
    "PairView",
    "RowPair",
    "as_normalized",
    "EncodedRow",
    "default_comparisons",
    "encode",
    "encode_row",
    "level_kind",
    "register_level_kind",
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
    ("dob", 3), ("dob_digits", 8), ("dob_odd", 0), ("sex", 0), ("suffix", 0),
    ("postal", K_POSTAL), ("postal3", K_POSTAL), ("phone", K_PHONES), ("addr_line", 0),
    ("addr_tok", K_ADDRESS), ("pid_dom", K_IDS), ("pid_val", K_IDS), ("mid_initial", 0),
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
    compared by Jaro-Winkler and the term frequencies (nan when unknown): family name, given
    name, and the full name among persons when it is more common than its two names make it
    (see :func:`matching.model.term_frequencies_from`)."""

    ints: bytes
    fam: str
    giv: str
    tf_family: float
    tf_given: float
    tf_full: float = math.nan


def encode_row(
    record: dict[str, Any], term_frequencies: dict[str, Any] | None = None
) -> EncodedRow:
    """Encode one normalised (or raw) record; :func:`stack_rows` turns rows into columns."""
    r = as_normalized(record)
    tables = term_frequencies or {}
    family = r.get("family") or ""
    # a placeholder (BABY GIRL) is no given name: compared as missing, not as a different one
    named = not placeholder_given(r.get("given_tokens") or ())
    given = (r.get("given") or "") if named else ""
    middle = (r.get("middle") or "") if named else ""
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
        _h(r.get("given_phonetic")) if named else 0,
        *_pad([_h(v) for v in (r.get("given_variants") or []) if named], K_VARIANTS),
        ord(given[0]) if given else 0,
        int(year or 0), int(month or 0), int(day or 0),
        *digits,
        1 if year and r.get("birth_date_problem") else 0,  # a date kept despite a problem
        _SEX_CODE.get(r.get("sex") or "", 0),
        _SUFFIX_CODE.get(r.get("suffix") or "", 0),
        *_pad([_h(c) for c in codes], K_POSTAL),
        *_pad([_h(c[:3]) for c in codes], K_POSTAL),
        *_pad([_h(p[-10:]) for p in r.get("phones") or []], K_PHONES),
        _h(addresses[0]["line"]) if addresses else 0,
        *_pad([_h(t) for t in r.get("address_tokens") or []], K_ADDRESS),
        *_pad([_h(x["domain"]) for x in person_ids], K_IDS),
        *_pad([_h(x["domain"] + "|" + x["value"]) for x in person_ids], K_IDS),
        ord(middle[0]) if middle else 0,
    ]
    tf_fam = tf_giv = tf_full = math.nan
    total = float(tables.get("total") or 0)
    if total > 0:
        count = (tables.get("family") or {}).get(family)
        if count:
            tf_fam = count / total
        count = (tables.get("given") or {}).get(given)
        if count:
            tf_giv = count / total
    persons = float(tables.get("persons") or 0)
    if persons > 0 and family and given:
        count = (tables.get("full") or {}).get(full_name_key(given, family))
        if count and count > 1:  # the chance that another person has this full name
            tf_full = (count - 1) / persons
    return EncodedRow(
        array("q", values).tobytes(), r.get("family_key") or "", given, tf_fam, tf_giv,
        tf_full,
    )


def full_name_key(given: str, family: str) -> str:
    """The key of a full name (normalised given and family name) in the term-frequency table."""
    return f"{given}|{family}"


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
            "full": np.array([row.tf_full for row in rows], dtype=float),
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

    def has_tf(self, name: str) -> bool:
        return name in self._left.tf

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

    def crossed_jaro_winkler(self, left: str, right: str, sel: np.ndarray) -> np.ndarray:
        """Jaro-Winkler of the left side's ``left`` strings against the right side's ``right``
        strings (``"fam"``/``"giv"``): names written in each other's fields."""
        return self.cached(f"jw:{left}>{right}", sel,
                           lambda s: self._jaro_winkler(right, s, left_name=left))

    def _jaro_winkler(self, name: str, sel: np.ndarray, left_name: str | None = None
                      ) -> np.ndarray:
        left_name = left_name or name
        strings = self._right.strings[name]
        rows = self._rows("R", sel)
        right = strings if rows is None else strings[rows]
        if self._li is None:
            query = self._left.strings[left_name][0]
            return cdist([query], right, scorer=JaroWinkler.normalized_similarity)[0]
        left = self._left.strings[left_name][self._rows("L", sel)]
        return cpdist(left, right, scorer=JaroWinkler.normalized_similarity, workers=1)


# --------------------------------------------------------------------------------------------
# one pair of encoded rows, in plain Python (no numpy per-call overhead): the small-candidate
# path of MatchModel.score

_ROW_STRUCT = struct.Struct(f"={ROW_WIDTH}q")
_F32 = struct.Struct("=f")


def _col(name: str) -> int | slice:
    start, stop, scalar = _SLICES[name]
    return start if scalar else slice(start, stop)


def _span(name: str) -> slice:
    start, stop, _ = _SLICES[name]
    return slice(start, stop)


_FIRST = {name: _SLICES[name][0] for name in _SLICES}


class RowPair:
    """One pair of encoded rows for the scalar forms of the level kinds (memoises
    Jaro-Winkler)."""

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

    def crossed_jaro_winkler(self) -> tuple[float, float]:
        """Jaro-Winkler of the left family against the right given name, and of the left
        given name against the right family (as the vectorised path computes them)."""
        sims = []
        for key, x, y in (("fam>giv", self.left.fam, self.right.giv),
                          ("giv>fam", self.left.giv, self.right.fam)):
            value = self._jw.get(key)
            if value is None:
                value = _F32.unpack(_F32.pack(JaroWinkler.normalized_similarity(x, y)))[0]
                self._jw[key] = value
            sims.append(value)
        return sims[0], sims[1]


# --------------------------------------------------------------------------------------------
# array helpers: over the selected pairs of a PairView


def _eq(view: PairView, sel: np.ndarray, name: str) -> np.ndarray:
    a, b = view.left_at(name, sel), view.right_at(name, sel)
    return (a == b) & (b != 0) & (a != 0)


def _any_shared(view: PairView, sel: np.ndarray, name: str) -> np.ndarray:
    a = view.left_at(name, sel)
    b = view.right_at(name, sel)
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


def _missing(view: PairView, sel: np.ndarray, name: str) -> np.ndarray:
    a, b = view.left_at(name, sel), view.right_at(name, sel)
    if a.ndim == 2:
        return (a[:, 0] == 0) | (b[:, 0] == 0)
    return (a == 0) | (b == 0)


def _full(dob: np.ndarray) -> np.ndarray:
    return (dob[:, 1] != 0) & (dob[:, 2] != 0)


# row helpers: the same tests on one RowPair


def _r_any_shared(p: RowPair, cols: slice) -> bool:
    b = p.b[cols]
    return any(x != 0 and x in b for x in p.a[cols])


def _r_in(p: RowPair, scalar: int, vector: slice, left_scalar: bool) -> bool:
    s, v = (p.a[scalar], p.b[vector]) if left_scalar else (p.b[scalar], p.a[vector])
    return s != 0 and s in v


_DOB_START = _SLICES["dob"][0]


def _r_dobs(p: RowPair) -> tuple[tuple[int, ...], tuple[int, ...]]:
    s = _DOB_START
    return p.a[s : s + 3], p.b[s : s + 3]


def _r_full(d: tuple[int, ...]) -> bool:
    return d[1] != 0 and d[2] != 0


# --------------------------------------------------------------------------------------------
# level kinds: what a level tests, in both forms


class LevelKind(ABC):
    """What a level tests (its ``predicate`` in the model JSON), in both forms.

    - :meth:`vectorised` answers for the pairs ``sel`` of a :class:`PairView` (a bool array of
      ``len(sel)``, or one that broadcasts to it): the batch and many-candidate path;
    - :meth:`scalar` answers for one :class:`RowPair` in plain Python: the small-candidate path.

    Both are abstract, so a kind without one of them cannot be created, and the two must agree
    exactly (tests/matching/test_score_fast.py checks every registered kind on generated
    pairs). Both read ``level.threshold`` where the kind has one. A kind is resolved once, when a
    :class:`Level` is made (``level.kind``), not per pair.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        """Whether each selected pair of ``view`` reaches ``level``."""

    @abstractmethod
    def scalar(self, pair: RowPair, level: Level) -> bool:
        """Whether ``pair`` reaches ``level``: :meth:`vectorised` for one pair."""

    def __reduce__(self) -> tuple[Any, ...]:
        # a copied or unpickled level refers to the registered kind, not to a copy of it
        return (level_kind, (self.name,))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class _OnColumn(LevelKind):
    """A kind that tests one encoded column; ``cache_key`` shares its per-pair result between
    levels of one comparison (vectorised form)."""

    __slots__ = ("column", "cache_key", "_at")

    def __init__(self, name: str, column: str, cache_key: str | None = None) -> None:
        super().__init__(name)
        self.column = column
        self.cache_key = cache_key
        self._at: Any = _col(column)


class Always(LevelKind):
    """Every pair: the last ("else") level of a comparison."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        return np.ones(len(sel), bool)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        return True


class Missing(_OnColumn):
    """The column (its first value, for a multi-valued one) is empty on either side."""

    __slots__ = ()

    def __init__(self, name: str, column: str) -> None:
        super().__init__(name, column)
        self._at = _FIRST[column]

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        return _missing(view, sel, self.column)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        i = self._at
        return pair.a[i] == 0 or pair.b[i] == 0


class Exact(_OnColumn):
    """The same non-empty value on both sides (a single-valued column)."""

    __slots__ = ()

    def __init__(self, name: str, column: str, cache_key: str | None = None) -> None:
        super().__init__(name, column, cache_key)
        if not isinstance(self._at, int):
            raise ValueError(f"{column!r} is multi-valued; use AnyShared")

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        column = self.column
        if self.cache_key is None:
            return _eq(view, sel, column)
        return view.cached(self.cache_key, sel, lambda s: _eq(view, s, column)) > 0

    def scalar(self, pair: RowPair, level: Level) -> bool:
        i = self._at
        a, b = pair.a[i], pair.b[i]
        return a == b and b != 0 and a != 0


class AnyShared(_OnColumn):
    """A non-empty value of one side's list is in the other's (a multi-valued column)."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        column = self.column
        if self.cache_key is None:
            return _any_shared(view, sel, column)
        return view.cached(self.cache_key, sel, lambda s: _any_shared(view, s, column)) > 0

    def scalar(self, pair: RowPair, level: Level) -> bool:
        b = pair.b[self._at]
        return any(x != 0 and x in b for x in pair.a[self._at])


class NoneShared(_OnColumn):
    """No non-empty value in common (the negation of :class:`AnyShared`)."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        return ~_any_shared(view, sel, self.column)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        b = pair.b[self._at]
        return not any(x != 0 and x in b for x in pair.a[self._at])


class SharedCount(_OnColumn):
    """At least ``threshold`` (default 1) values of the left list are in the right one."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        column, key = self.column, self.cache_key or "count:" + self.column
        shared = view.cached(key, sel, lambda s: _shared_count(view, s, column))
        return shared >= int(level.threshold or 1)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        b = pair.b[self._at]
        shared = sum(1 for x in pair.a[self._at] if x != 0 and x in b)
        return shared >= int(level.threshold or 1)


class JaroWinklerAtLeast(LevelKind):
    """Jaro-Winkler similarity of the ``"fam"`` or ``"giv"`` strings >= ``threshold``."""

    __slots__ = ("column",)

    def __init__(self, name: str, column: str) -> None:
        super().__init__(name)
        if column not in ("fam", "giv"):
            raise ValueError(f"no strings kept for {column!r}")
        self.column = column

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        return view.jaro_winkler(self.column, sel) >= (level.threshold or 0.0)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        return pair.jaro_winkler(self.column) >= (level.threshold or 0.0)


class SameKeySimilarSpelling(_OnColumn):
    """Same (phonetic) key and, when the level has a ``threshold``, a Jaro-Winkler similarity
    of the strings at least that (NYSIIS alone puts JOHN and JAMES together)."""

    __slots__ = ("strings",)

    def __init__(self, name: str, column: str, strings: str) -> None:
        super().__init__(name, column)
        self.strings = strings

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        same = _eq(view, sel, self.column)
        if level.threshold and same.any():
            same[same] = view.jaro_winkler(self.strings, sel[same]) >= level.threshold
        return same

    def scalar(self, pair: RowPair, level: Level) -> bool:
        i = self._at
        a, b = pair.a[i], pair.b[i]
        same = a == b and b != 0 and a != 0
        if level.threshold and same:
            return pair.jaro_winkler(self.strings) >= level.threshold
        return same


class Both(LevelKind):
    """Two kinds hold at once."""

    __slots__ = ("first", "second")

    def __init__(self, name: str, first: LevelKind, second: LevelKind) -> None:
        super().__init__(name)
        self.first, self.second = first, second

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        return self.first.vectorised(view, sel, level) & self.second.vectorised(view, sel, level)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        return self.first.scalar(pair, level) and self.second.scalar(pair, level)


class PreviousFamily(LevelKind):
    """A maiden/previous family name on one side equals the other's family (or theirs)."""

    __slots__ = ()
    _FAM, _PREV = _FIRST["fam"], _span("prev_fam")

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        return (
            _in(view, sel, "fam", "prev_fam", left_scalar=True)
            | _in(view, sel, "fam", "prev_fam", left_scalar=False)
            | _any_shared(view, sel, "prev_fam")
        )

    def scalar(self, pair: RowPair, level: Level) -> bool:
        fam, prev = self._FAM, self._PREV
        return (_r_in(pair, fam, prev, True) or _r_in(pair, fam, prev, False)
                or _r_any_shared(pair, prev))


class NamesSwapped(LevelKind):
    """Family and given name swapped between the sides."""

    __slots__ = ()
    _FAM, _GIV = _FIRST["fam"], _FIRST["giv"]

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        lf, lg = view.left_at("fam", sel), view.left_at("giv", sel)
        rf, rg = view.right_at("fam", sel), view.right_at("giv", sel)
        return (lf == rg) & (lg == rf) & (lf != 0) & (lg != 0)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        a, b = pair.a, pair.b
        lf, lg, rf, rg = a[self._FAM], a[self._GIV], b[self._FAM], b[self._GIV]
        return lf == rg and lg == rf and lf != 0 and lg != 0


class NamesSwappedSimilar(LevelKind):
    """Family and given name swapped between the sides, and each misspelt at most slightly:
    both crossed Jaro-Winkler similarities (left family / right given, left given / right
    family) at least ``threshold`` and together above the direct ones (LIEBENBERG BIANCA
    written BIANCA LIEBENBRRG; JOHN JOHNSON and JOHN JOHNSEN are no swap)."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        threshold = level.threshold or 0.0
        out = ((view.left_at("fam", sel) != 0) & (view.left_at("giv", sel) != 0)
               & (view.right_at("fam", sel) != 0) & (view.right_at("giv", sel) != 0))
        if out.any():
            out[out] = view.crossed_jaro_winkler("fam", "giv", sel[out]) >= threshold
        if out.any():
            out[out] = view.crossed_jaro_winkler("giv", "fam", sel[out]) >= threshold
        if out.any():
            chosen = sel[out]
            crossed = (view.crossed_jaro_winkler("fam", "giv", chosen)
                       + view.crossed_jaro_winkler("giv", "fam", chosen))
            direct = view.jaro_winkler("fam", chosen) + view.jaro_winkler("giv", chosen)
            out[out] = crossed > direct
        return out

    def scalar(self, pair: RowPair, level: Level) -> bool:
        threshold = level.threshold or 0.0
        if not (pair.left.fam and pair.left.giv and pair.right.fam and pair.right.giv):
            return False
        first, second = pair.crossed_jaro_winkler()
        if first < threshold or second < threshold:
            return False
        # float32 similarities summed in double, as the array path sums its cached ones
        return first + second > pair.jaro_winkler("fam") + pair.jaro_winkler("giv")


class DobExact(LevelKind):
    """The same full birth date (year, month and day known on both sides)."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        a, b = view.left_at("dob", sel), view.right_at("dob", sel)
        return (a == b).all(axis=1) & _full(b) & _full(a)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        a, b = _r_dobs(pair)
        return a == b and _r_full(b) and _r_full(a)


DOB_EXACT = DobExact("dob_exact")


class DobExactImplausible(LevelKind):
    """The same full birth date on both sides, and an implausible one (after today): a copied
    data-entry error is evidence, but not as much as a real date shared."""

    __slots__ = ()
    _ODD = _FIRST["dob_odd"]

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        odd = (view.left_at("dob_odd", sel) != 0) | (view.right_at("dob_odd", sel) != 0)
        return odd & DOB_EXACT.vectorised(view, sel, level)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        return bool(pair.a[self._ODD] or pair.b[self._ODD]) and DOB_EXACT.scalar(pair, level)


class DobTransposed(LevelKind):
    """Same year, day and month swapped (full dates, day != month)."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        a, b = view.left_at("dob", sel), view.right_at("dob", sel)
        return (
            (a[:, 0] == b[:, 0]) & (a[:, 1] == b[:, 2]) & (a[:, 2] == b[:, 1])
            & (a[:, 1] != a[:, 2]) & _full(a) & _full(b)
        )

    def scalar(self, pair: RowPair, level: Level) -> bool:
        a, b = _r_dobs(pair)
        return (a[0] == b[0] and a[1] == b[2] and a[2] == b[1] and a[1] != a[2]
                and _r_full(a) and _r_full(b))


class DobOneDigit(LevelKind):
    """Full dates whose YYYYMMDD digits differ in exactly one place."""

    __slots__ = ()
    _DIGITS = _span("dob_digits")

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        a, b = view.left_at("dob", sel), view.right_at("dob", sel)
        da, db = view.left_at("dob_digits", sel), view.right_at("dob_digits", sel)
        return ((da != db).sum(axis=1) == 1) & _full(a) & _full(b)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        a, b = _r_dobs(pair)
        digits = self._DIGITS
        diff = sum(x != y for x, y in zip(pair.a[digits], pair.b[digits], strict=True))
        return diff == 1 and _r_full(a) and _r_full(b)


class DobDigitsSwapped(LevelKind):
    """Full dates whose YYYYMMDD digits differ by two adjacent digits swapped (1992 / 1929,
    10-28 / 01-28): one slip of the keyboard, as one digit off is."""

    __slots__ = ()
    _DIGITS = _span("dob_digits")

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        a, b = view.left_at("dob", sel), view.right_at("dob", sel)
        da, db = view.left_at("dob_digits", sel), view.right_at("dob_digits", sel)
        differ = da != db
        swapped = np.zeros(len(differ), dtype=bool)
        for i in range(differ.shape[1] - 1):
            swapped |= (differ[:, i] & differ[:, i + 1] & (da[:, i] == db[:, i + 1])
                        & (da[:, i + 1] == db[:, i]))
        return (differ.sum(axis=1) == 2) & swapped & _full(a) & _full(b)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        a, b = _r_dobs(pair)
        da, db = pair.a[self._DIGITS], pair.b[self._DIGITS]
        at = [i for i, (x, y) in enumerate(zip(da, db, strict=True)) if x != y]
        return (len(at) == 2 and at[1] == at[0] + 1 and da[at[0]] == db[at[1]]
                and da[at[1]] == db[at[0]] and _r_full(a) and _r_full(b))


class DobYearMonth(LevelKind):
    """Same year and (known) month."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        a, b = view.left_at("dob", sel), view.right_at("dob", sel)
        return (a[:, 0] == b[:, 0]) & (a[:, 1] == b[:, 1]) & (a[:, 1] != 0)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        a, b = _r_dobs(pair)
        return a[0] == b[0] and a[1] == b[1] and a[1] != 0


class DobYearWithin(LevelKind):
    """Birth years at most ``threshold`` (default 0) apart."""

    __slots__ = ()

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        a, b = view.left_at("dob", sel), view.right_at("dob", sel)
        return np.abs(a[:, 0] - b[:, 0]) <= int(level.threshold or 0)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        a, b = _r_dobs(pair)
        return abs(a[0] - b[0]) <= int(level.threshold or 0)


class ContactMissing(LevelKind):
    """Neither an address nor a phone comparable on both sides."""

    __slots__ = ()
    _TOK, _POSTAL, _PHONE = _FIRST["addr_tok"], _FIRST["postal"], _FIRST["phone"]

    def vectorised(self, view: PairView, sel: np.ndarray, level: Level) -> np.ndarray:
        has_left = (view.left_at("addr_tok", sel)[:, 0] != 0) | (
            view.left_at("postal", sel)[:, 0] != 0
        )
        has_right = (view.right_at("addr_tok", sel)[:, 0] != 0) | (
            view.right_at("postal", sel)[:, 0] != 0
        )
        phones = (view.left_at("phone", sel)[:, 0] != 0) & (view.right_at("phone", sel)[:, 0] != 0)
        return ~((has_left & has_right) | phones)

    def scalar(self, pair: RowPair, level: Level) -> bool:
        t, c, ph = self._TOK, self._POSTAL, self._PHONE
        a, b = pair.a, pair.b
        has_left = a[t] != 0 or a[c] != 0
        has_right = b[t] != 0 or b[c] != 0
        phones = a[ph] != 0 and b[ph] != 0
        return not ((has_left and has_right) or phones)


LEVEL_KINDS: dict[str, LevelKind] = {}


def register_level_kind(kind: LevelKind) -> LevelKind:
    """Make ``kind`` usable as a level's ``predicate`` (its name must be new)."""
    if not isinstance(kind, LevelKind):
        raise TypeError(f"{kind!r} is not a LevelKind")
    if kind.name in LEVEL_KINDS:
        raise ValueError(f"level kind {kind.name!r} already registered")
    LEVEL_KINDS[kind.name] = kind
    return kind


def level_kind(name: str) -> LevelKind:
    """The registered kind of a level's ``predicate`` name."""
    kind = LEVEL_KINDS.get(name)
    if kind is None:
        raise ValueError(f"unknown predicate {name!r}")
    return kind


_address_exact = Exact("address_exact", "addr_line", cache_key="addr_exact")
_phone_shared = AnyShared("phone_shared", "phone", cache_key="phone_shared")
for _kind in (
    Always("else"),
    Always("p_else"),  # the name the else predicate had as a function; kept for old files
    Missing("family_missing", "fam"),
    Exact("family_exact", "fam"),
    JaroWinklerAtLeast("family_jaro_winkler", "fam"),
    AnyShared("family_token_shared", "fam_tok"),
    Exact("family_phonetic", "fam_phon"),
    PreviousFamily("family_previous"),
    NamesSwapped("names_swapped"),
    NamesSwappedSimilar("names_swapped_similar"),
    Missing("given_missing", "giv"),
    Exact("given_exact", "giv"),
    JaroWinklerAtLeast("given_jaro_winkler", "giv"),
    AnyShared("given_nickname", "giv_var"),
    SameKeySimilarSpelling("given_phonetic", "giv_phon", strings="giv"),
    Exact("given_initial", "initial"),
    Missing("middle_missing", "mid_initial"),
    Exact("middle_initial_exact", "mid_initial"),
    Missing("dob_missing", "dob"),
    DOB_EXACT,
    DobExactImplausible("dob_exact_implausible"),
    DobTransposed("dob_transposed"),
    DobOneDigit("dob_one_digit"),
    DobDigitsSwapped("dob_digits_swapped"),
    DobYearMonth("dob_year_month"),
    DobYearWithin("dob_year"),
    Missing("sex_missing", "sex"),
    Exact("sex_exact", "sex"),
    Missing("suffix_missing", "suffix"),
    Exact("suffix_exact", "suffix"),
    Missing("postal_missing", "postal"),
    AnyShared("postal_exact", "postal"),
    AnyShared("postal_prefix", "postal3"),
    Missing("phone_missing", "phone"),
    _phone_shared,
    Missing("address_missing", "addr_tok"),
    _address_exact,
    SharedCount("address_token_overlap", "addr_tok", cache_key="addr_shared"),
    ContactMissing("contact_missing"),
    Both("address_and_phone", _address_exact, _phone_shared),
    NoneShared("identifier_missing", "pid_dom"),
    AnyShared("identifier_agree", "pid_val"),
):
    register_level_kind(_kind)
del _kind


# --------------------------------------------------------------------------------------------
# levels and comparisons (data)


@dataclass
class Level:
    """One level of a comparison: what it tests (``predicate``, the name of a registered
    :class:`LevelKind`) plus its m and u probabilities.

    ``kind`` is the registered kind itself, resolved whenever ``predicate`` is set (so when the
    level is made or loaded, never per pair); an unknown predicate raises ``ValueError``.
    """

    label: str
    predicate: str
    m: float = 0.5
    u: float = 0.5
    threshold: float | None = None
    null: bool = False
    tf_adjust: bool = False
    kind: LevelKind = field(init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "predicate":
            object.__setattr__(self, "kind", level_kind(value))
        elif name == "kind":
            raise AttributeError("set predicate, not kind")
        object.__setattr__(self, name, value)

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
            hit = level.kind.vectorised(view, remaining, level)
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
            L("swapped with given, misspelt", "names_swapped_similar", 0.003, 2e-6,
              threshold=0.88),
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
            # a swap is one fact, weighed once by family_name's swap levels: neutral here
            L("swapped with family", "names_swapped", null=True),
            L("swapped with family, misspelt", "names_swapped_similar", null=True,
              threshold=0.88),
            L("jaro-winkler >= 0.94", "given_jaro_winkler", 0.04, 0.002, threshold=0.94),
            L("nickname", "given_nickname", 0.03, 0.002),
            L("phonetic", "given_phonetic", 0.01, 0.002, threshold=0.75),
            L("jaro-winkler >= 0.85", "given_jaro_winkler", 0.01, 0.01, threshold=0.85),
            L("same initial", "given_initial", 0.01, 0.06),
            L("different", "else", 0.005, 0.92),
        ], tf_field="given", description="first given name"),
        Comparison("birth_date", [
            L("missing", "dob_missing", null=True),
            L("exact, after today", "dob_exact_implausible", 0.005, 0.00002),
            L("exact", "dob_exact", 0.9, 0.0001),
            L("day/month transposed", "dob_transposed", 0.02, 0.00001),
            L("one digit off", "dob_one_digit", 0.03, 0.0005),
            L("two digits swapped", "dob_digits_swapped", 0.01, 0.0002),
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
        Comparison("middle_initial", [
            L("missing", "middle_missing", null=True),
            L("same", "middle_initial_exact", 0.9, 0.08),
            L("different", "else", 0.1, 0.92),
        ], description="initial of the second given name; only compared when both records "
           "carry one (it tells a father from his son of the same name, and two records of "
           "one name and home apart when no birth date is sent)"),
    ]


def row_level(comparison: Comparison, pair: RowPair) -> int:
    """Index of the level ``pair`` reaches: :meth:`Comparison.levels_for` for one pair."""
    for index, level in enumerate(comparison.levels):
        if level.kind.scalar(pair, level):
            return index
    return len(comparison.levels) - 1
