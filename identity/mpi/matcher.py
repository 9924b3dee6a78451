"""How the core turns a record into normalised values, search columns and blocking keys, and
how it decides between link, review and new person.

This module holds the *deterministic rule* of the foundation:

1. two records sharing an identifier in a person-identifying domain are the same person;
2. otherwise an exact match on normalised family name, given name, full birth date and sex links;
3. anything less creates a new person.

Safety overrides (the MPI must never merge two people): a candidate person holding a *different*
identifier in a person-identifying domain that the record also has, or a different identifier
from the record's own source domain, is not linked automatically; the pair goes to review. A
steward's no-match assertion excludes a candidate. Candidates pointing at more than one person
are never linked: the record gets a new person and each candidate person becomes a review item.

The probabilistic engine of matching/ replaces the rule (issue: matching engine) behind the same
interface: ``prepare`` and ``decide``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jellyfish

from matching.normalize import normalize_record

RULE_NAME = "deterministic-v1"


@dataclass(frozen=True)
class Prepared:
    normalized: dict[str, Any]
    search: dict[str, Any]  # values of the source_record search columns
    keys: list[str]  # blocking keys


@dataclass(frozen=True)
class Subject:
    """The record being decided on."""

    record_id: int
    domain_id: int
    identifiers: frozenset[tuple[int, str]]  # (domain id, value), primary included
    keys: frozenset[str]


@dataclass(frozen=True)
class Candidate:
    record_id: int
    domain_id: int
    person_id: int
    identifiers: frozenset[tuple[int, str]]
    keys: frozenset[str] = frozenset()


@dataclass
class Outcome:
    person_id: int | None  # link to this person; None: create a new person
    score: float | None = None
    explanation: dict[str, Any] | None = None
    reviews: list[tuple[int, int | None, str, dict[str, Any]]] = field(default_factory=list)
    """(person id, other record id or None, reason, explanation) for the steward."""


def sound(name: str | None) -> str:
    """Phonetic key of the first token of a normalised name, for PDQ phonetic search.

    Metaphone, not the NYSIIS key matching/ uses for blocking: a person searching by sound
    expects SMITH to find SMYTH and SMYTHE (NYSIIS keeps them apart; metaphone gives SM0 for
    all three), JON to find JOHN and CATHERINE to find KATHERINE.
    """
    token = (name or "").split(" ", 1)[0]
    return jellyfish.metaphone(token) if token else ""


def search_columns(norm: dict[str, Any]) -> dict[str, Any]:
    addresses = norm.get("addresses") or []
    return {
        "family_norm": norm.get("family"),
        "given_norm": norm.get("given"),
        "family_phon": sound(norm.get("family_core") or norm.get("family")),
        "given_phon": sound(norm.get("given")),
        "birth_date": norm.get("birth_date"),
        "sex": norm.get("sex"),
        "postal_code": (norm.get("postal_codes") or [None])[0],
        "city_norm": addresses[0]["city"] if addresses else None,
        "phone_digits": norm.get("phones") or [],
        "mothers_maiden_norm": norm.get("mothers_maiden_name"),
    }


class DeterministicMatcher:
    name = RULE_NAME

    def __init__(self, person_identifying_domain_ids: set[int]) -> None:
        self.person_identifying = person_identifying_domain_ids

    def prepare(
        self,
        demographics: dict[str, Any],
        identifiers: Sequence[tuple[int, str, str | None]],
    ) -> Prepared:
        """``identifiers``: (domain id, value, type) of every identifier the record carries."""
        norm = normalize_record(
            demographics, [{"domain": str(d), "value": v, "type": t} for d, v, t in identifiers]
        )
        keys = [
            f"pid:{domain_id}|{value}"
            for domain_id, value, _ in identifiers
            if domain_id in self.person_identifying
        ]
        if (
            norm.get("family")
            and norm.get("given")
            and norm.get("birth_precision") == "day"
            and norm.get("sex") in ("M", "F")
        ):
            keys.append(
                f"exact:{norm['family']}|{norm['given']}|{norm['birth_date']}|{norm['sex']}"
            )
        return Prepared(norm, search_columns(norm), sorted(set(keys)))

    def decide(
        self,
        subject: Subject,
        candidates: Sequence[Candidate],
        person_records: dict[int, Sequence[Candidate]],
        no_match: set[int],
    ) -> Outcome:
        """``person_records``: every active record of each candidate's person."""
        shared_id: dict[int, list[Candidate]] = {}
        exact: dict[int, list[Candidate]] = {}
        for candidate in candidates:
            if candidate.record_id in no_match:
                continue
            shared = {
                pair
                for pair in subject.identifiers & candidate.identifiers
                if pair[0] in self.person_identifying
            }
            if shared:
                shared_id.setdefault(candidate.person_id, []).append(candidate)
            elif any(k.startswith("exact:") for k in subject.keys & candidate.keys):
                exact.setdefault(candidate.person_id, []).append(candidate)

        for rule, persons in (("shared-identifier", shared_id), ("exact-demographics", exact)):
            if not persons:
                continue
            outcome = Outcome(person_id=None)
            if len(persons) > 1:
                for person_id, matched in persons.items():
                    outcome.reviews.append(
                        (
                            person_id,
                            matched[0].record_id,
                            f"{rule}: several persons match",
                            _explain(rule, matched),
                        )
                    )
                return outcome
            ((person_id, matched),) = persons.items()
            conflict = self._conflict(subject, person_records.get(person_id, ()), no_match)
            if conflict:
                outcome.reviews.append(
                    (
                        person_id,
                        matched[0].record_id,
                        f"{rule}: {conflict}",
                        _explain(rule, matched),
                    )
                )
                return outcome
            return Outcome(person_id=person_id, score=1.0, explanation=_explain(rule, matched))
        return Outcome(person_id=None)

    def _conflict(
        self, subject: Subject, records: Sequence[Candidate], no_match: set[int]
    ) -> str | None:
        mine = dict(sorted(subject.identifiers))
        for record in records:
            if record.record_id in no_match:
                return "a steward said a record of this person is a different person"
            if record.domain_id == subject.domain_id:
                return "the person already has another identifier from the same source domain"
            for domain_id, value in record.identifiers:
                if domain_id in self.person_identifying and domain_id in mine:
                    if (domain_id, value) not in subject.identifiers:
                        return "different identifiers in a person-identifying domain"
        return None


def _explain(rule: str, matched: Sequence[Candidate]) -> dict[str, Any]:
    return {"rule": RULE_NAME, "criterion": rule, "records": [c.record_id for c in matched]}
