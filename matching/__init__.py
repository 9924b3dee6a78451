"""Pure, synchronous record matching for the identity MPI.

No asyncio, no SQL, nothing imported from ``identity``. Given a record and candidate records it
returns scores, decisions and explanations; the model is data (one readable JSON file).

Stable public API (signatures do not change):

- ``matching.normalize``: fold, normalize_family, normalize_given, phonetic, parse_birth_date,
  birth_date_problem, PartialDate, normalize_sex, normalize_record.
"""

from matching.normalize import (
    PartialDate,
    birth_date_problem,
    fold,
    normalize_family,
    normalize_given,
    normalize_record,
    normalize_sex,
    parse_birth_date,
    phonetic,
)

__all__ = [
    "PartialDate",
    "birth_date_problem",
    "fold",
    "normalize_family",
    "normalize_given",
    "normalize_record",
    "normalize_sex",
    "parse_birth_date",
    "phonetic",
]
