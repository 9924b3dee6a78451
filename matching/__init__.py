"""Pure, synchronous record matching for the identity MPI.

No asyncio, no SQL, nothing imported from ``identity``. Given a record and candidate records it
returns scores, decisions and explanations; the model is data (one readable JSON file,
``matching/data/default_model.json``).

Public API (the names below are stable):

- ``matching.normalize``: fold, normalize_family, normalize_given, phonetic, parse_birth_date,
  birth_date_problem, PartialDate, normalize_sex, normalize_record
- ``matching.blocking``: blocking_keys, select_candidates, candidate_pairs
- ``matching.model``: MatchModel (default, load, save, encode, score, score_pairs, explain),
  probability, term_frequencies_from
- ``matching.decision``: decide, Decision, DecisionResult
- ``matching.estimate``: train; ``matching.evaluate``: evaluate_records, evaluate_csv;
  ``matching.synth``: generate, write_csv, write_ndjson, write_hl7 (import those modules
  directly; they are not loaded by ``import matching``)
"""

from matching.blocking import blocking_keys, candidate_pairs, select_candidates
from matching.decision import Decision, DecisionResult, decide
from matching.model import Explanation, MatchModel, probability, term_frequencies_from
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
    "Decision",
    "DecisionResult",
    "Explanation",
    "MatchModel",
    "PartialDate",
    "birth_date_problem",
    "blocking_keys",
    "candidate_pairs",
    "decide",
    "fold",
    "normalize_family",
    "normalize_given",
    "normalize_record",
    "normalize_sex",
    "parse_birth_date",
    "phonetic",
    "probability",
    "select_candidates",
    "term_frequencies_from",
]
