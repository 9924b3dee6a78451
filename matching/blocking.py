"""Blocking keys: short strings that the store indexes to find candidate records.

Each key starts with its family name and a colon. Two records are candidates when they share at
least one key. The families complement each other so that one error does not lose a pair:

- ``fp_by``   phonetic family + birth year          (given-name errors, day/month errors, moves)
- ``gp_dob``  phonetic given + full birth date      (marriage / family-name changes)
- ``dob_pc``  full birth date + postal code         (name typos in both fields)
- ``nm_dob``  both name keys, unordered + birth date (given/family swapped)
- ``fp_gp_pc`` phonetic family + phonetic given + postal code (no birth date: date errors)
- ``ini_dob`` both name initials, unordered + birth date (typos in both names, moves, swaps)
- ``nm``      phonetic family + phonetic given       (no birth date, no address: a move)
- ``fp_pc`` / ``gp_pc`` one phonetic name + postal code (no birth date, one name misspelt)
- ``ph_gi``   phone number + given initial          (no birth date, no family name)
- ``id``      a shared identifier (domain|value)

Keys of the ``id`` family hold the raw identifier; the service may hash keys before storing.

The calibration's sweep over the whole index (:func:`sweep_keys`) adds two families that a
registration does not look up, where the candidate floor and margin are tuned to the families
above:

- ``fi_dob`` / ``gi_dob`` family initial / given initial + full birth date (one name replaced,
  the other misspelt: COOKSNO and COOKSON born the same day, their given names different)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_BLOCK",
    "DEFAULT_CANDIDATE_MARGIN",
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_MIN_KEYS",
    "DEFAULT_RARE_BLOCK",
    "KEY_FAMILIES",
    "SWEEP_FAMILIES",
    "blocking_keys",
    "candidate_pairs",
    "select_candidates",
    "sweep_keys",
]

KEY_FAMILIES = (
    "fp_by", "gp_dob", "dob_pc", "nm_dob", "ini_dob", "fp_gp_pc", "nm", "fp_pc", "gp_pc",
    "ph_gi", "id",
)

#: Keys shared by more records than this are skipped as uninformative (e.g. a placeholder
#: birth date with a hospital's postal code); the remaining keys still find the candidates.
DEFAULT_MAX_BLOCK = 400
#: At most this many candidates are scored for one incoming record, the best-ranked by keys
#: shared. At 1M records a true duplicate of a record ranks within the first 50 for 99.8% of
#: records (within 200: 99.9%), and 50 candidates are half the scoring work of 200
#: (benchmarks/candidate_recall.py).
DEFAULT_MAX_CANDIDATES = 50
#: A candidate that shares no identifier key is scored only when it shares at least
#: DEFAULT_MIN_KEYS demographic keys (fewer when the record has fewer usable ones: sparse
#: records still find candidates) and no fewer than the best candidate less
#: DEFAULT_CANDIDATE_MARGIN. At 1M records most candidates share one weak key (family name
#: sound + birth year) while a true duplicate shares many; floor and margin drop them whatever
#: the index size (benchmarks/candidate_recall.py, figures in the README).
DEFAULT_MIN_KEYS = 2
#: ... except that one key is enough when its block holds at most this many records: a rare key
#: shared is evidence; the keys whose blocks grow with the index are not.
DEFAULT_RARE_BLOCK = 10
DEFAULT_CANDIDATE_MARGIN = 6


def blocking_keys(normalized: dict[str, Any]) -> list[str]:
    """The blocking keys of one normalised record (see the module docstring), deduplicated."""
    fp = normalized.get("family_phonetic") or ""
    gp = normalized.get("given_phonetic") or ""
    year = normalized.get("birth_year")
    full_date = normalized.get("birth_date") if normalized.get("birth_precision") == "day" else ""
    postal = (normalized.get("postal_codes") or [])[:2]
    phones = (normalized.get("phones") or [])[:2]
    initial = normalized.get("initial") or ""
    keys: list[str] = []
    if fp and year:
        keys.append(f"fp_by:{fp}|{year}")
    if gp and full_date:
        keys.append(f"gp_dob:{gp}|{full_date}")
    if full_date:
        keys.extend(f"dob_pc:{full_date}|{pc}" for pc in postal)
    if fp and gp and full_date:
        first, second = sorted((fp, gp))
        keys.append(f"nm_dob:{first}|{second}|{full_date}")
    family_initial = (normalized.get("family_key") or "")[:1]
    if initial and family_initial and full_date:
        first, second = sorted((initial, family_initial))
        keys.append(f"ini_dob:{first}{second}|{full_date}")
    if fp and gp:
        keys.extend(f"fp_gp_pc:{fp}|{gp}|{pc}" for pc in postal)
        keys.append(f"nm:{fp}|{gp}")
    if fp:
        keys.extend(f"fp_pc:{fp}|{pc}" for pc in postal)
    if gp:
        keys.extend(f"gp_pc:{gp}|{pc}" for pc in postal)
    if initial:
        keys.extend(f"ph_gi:{ph[-10:]}|{initial}" for ph in phones)
    for identifier in normalized.get("identifiers") or []:
        keys.append(f"id:{identifier['domain']}|{identifier['value']}")
    return list(dict.fromkeys(keys))


#: Key families only the calibration's sweep uses (:func:`sweep_keys`).
SWEEP_FAMILIES = ("fi_dob", "gi_dob")


def sweep_keys(normalized: dict[str, Any]) -> list[str]:
    """The blocking keys of one normalised record and the keys of one initial and the full
    birth date (``SWEEP_FAMILIES``): what the calibration blocks the whole index by. A record
    whose one name was replaced and the other misspelt shares no key of a registration's
    families with its duplicate; these blocks are small (the records born one day with one
    initial), so the sweep, which compares every pair sharing a key, affords them."""
    keys = blocking_keys(normalized)
    full_date = normalized.get("birth_date") if normalized.get("birth_precision") == "day" else ""
    if full_date:
        family_initial = (normalized.get("family_key") or "")[:1]
        initial = normalized.get("initial") or ""
        if family_initial:
            keys.append(f"fi_dob:{family_initial}|{full_date}")
        if initial:
            keys.append(f"gi_dob:{initial}|{full_date}")
    return keys


def select_candidates(
    keys_to_records: Mapping[str, Sequence[Hashable]],
    *,
    max_block: int = DEFAULT_MAX_BLOCK,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    margin: int | None = None,
    min_keys: int | None = None,
    rare_block: int | None = None,
) -> list[Hashable]:
    """The candidate selection: from the records found under each key, the ones worth scoring.

    Keys holding more than ``max_block`` records are skipped, unless every key is that large
    (then the smallest block is used). A candidate sharing no ``id`` key is kept only when it
    shares at least ``min_keys`` keys (or as many as the record has usable ones, when it has
    fewer; one is enough when its block holds at most ``rare_block`` records) and no fewer than
    the best candidate less ``margin`` (keys other than ``id`` ones counted; None: no floor, no
    margin, no exception). Candidates are ranked by how many keys they share
    with the incoming record (more shared keys first, ties in order of first appearance) and
    cut at ``max_candidates``. ``id`` keys always count: a shared identifier outranks
    everything.
    """
    blocks = [(key, ids) for key, ids in keys_to_records.items() if ids]
    usable = [(k, ids) for k, ids in blocks if len(ids) <= max_block or k.startswith("id:")]
    if not usable and blocks:
        usable = [min(blocks, key=lambda item: len(item[1]))]
    by_id: dict[Hashable, int] = {}
    by_demographics: dict[Hashable, int] = {}
    rarest: dict[Hashable, int] = {}  # the smallest block among the demographic keys shared
    for key, ids in usable:
        shared = by_id if key.startswith("id:") else by_demographics
        for record_id in ids:
            by_id.setdefault(record_id, 0)  # first-seen order
            by_demographics.setdefault(record_id, 0)
            shared[record_id] += 1
            if not key.startswith("id:"):
                rarest[record_id] = min(rarest.get(record_id, len(ids)), len(ids))
    kept = list(by_id)
    if kept:
        own = sum(1 for k, ids in keys_to_records.items()
                  if not k.startswith("id:") and len(ids) <= max_block)
        by_margin = max(by_demographics.values()) - margin if margin is not None else 0
        floor = max(by_margin, min(min_keys, own) if min_keys is not None else 0)
        kept = [
            rid for rid in kept
            if by_id[rid]
            or by_demographics[rid] >= floor
            or (rare_block is not None and rarest.get(rid, max_block + 1) <= rare_block
                and by_demographics[rid] >= by_margin)
        ]
    # stable: keeps first-seen order among equals
    kept.sort(key=lambda rid: -(100 * by_id[rid] + by_demographics[rid]))
    return kept[:max_candidates]


def candidate_pairs(
    records_keys: Iterable[Sequence[str]],
    *,
    max_block: int = DEFAULT_MAX_BLOCK,
    families: Sequence[str] | None = None,
) -> np.ndarray:
    """All candidate pairs (i < j) of a record set from their blocking keys, as an (n, 2) array.

    Used for training, evaluation and batch deduplication. Blocks larger than ``max_block``
    are skipped, as the service does.
    """
    index: dict[str, list[int]] = defaultdict(list)
    wanted = set(families) if families else None
    for row, keys in enumerate(records_keys):
        for key in keys:
            if wanted is None or key.split(":", 1)[0] in wanted:
                index[key].append(row)
    chunks: list[np.ndarray] = []
    for rows in index.values():
        if len(rows) < 2 or len(rows) > max_block:
            continue
        arr = np.asarray(rows, dtype=np.int64)
        i, j = np.triu_indices(len(arr), k=1)
        chunks.append(np.stack([arr[i], arr[j]], axis=1))
    if not chunks:
        return np.zeros((0, 2), np.int64)
    pairs = np.concatenate(chunks)
    pairs.sort(axis=1)
    width = int(pairs.max()) + 1
    codes = np.unique(pairs[:, 0] * width + pairs[:, 1])
    return np.stack([codes // width, codes % width], axis=1)
