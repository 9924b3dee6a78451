"""The core's use of the matching engine: normalise a record, compute its blocking keys and
search columns, and decide between link, review and new person.

matching/ scores one record against candidates and decides each pair (probability thresholds
plus hard rules no weight overrides). The MPI decides about *persons*: a person is linked
automatically only when one of its records reaches LINK and none of its records trips a hard
rule; several persons reaching LINK are never linked (they all go to a steward), since a false
merge puts one patient's data in another's chart. A person one of whose records holds the same
identifier as the new record in a person-identifying domain (``identifies_person``: one
identifier, one person) reaches LINK whatever the probability, unless a hard rule fires on
one of its records: then it goes to a steward with the rule's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jellyfish
import numpy as np

from identity.config import MatchingSettings
from identity.model import Domain, MatchGrade
from matching.blocking import blocking_keys
from matching.decision import Decision, DecisionResult, decide, family_given_names
from matching.model import Explanation, MatchModel, probability
from matching.normalize import is_given_name, normalize_record

log = logging.getLogger("identity.mpi.matcher")


@dataclass(frozen=True)
class Prepared:
    normalized: dict[str, Any]
    search: dict[str, Any]  # values of the source_record search columns
    keys: list[str]  # blocking keys


@dataclass(frozen=True)
class Party:
    """A source record as the matcher sees it."""

    record_id: int
    domain: str  # namespace
    person_id: int | None
    normalized: dict[str, Any]
    version: int | None = None  # the record's version: keys the model's encoding cache


@dataclass
class Verdict:
    """The engine's view of one candidate person.

    The explanation is computed when first asked for: only the pairs that end up on a link or
    a review item are explained (an explanation costs about as much as scoring)."""

    person_id: int
    decision: Decision  # LINK, REVIEW or NO_MATCH for the person as a whole
    probability: float  # best over the person's records
    best_record_id: int
    reason: str
    explain: Callable[[], dict[str, Any]] = field(repr=False, compare=False)
    _explanation: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def explanation(self) -> dict[str, Any]:
        if self._explanation is None:
            self._explanation = self.explain()
        return self._explanation


@dataclass
class Outcome:
    person_id: int | None  # link to this person; None: create a new person
    score: float | None = None
    explanation: dict[str, Any] | None = None
    reviews: list[Verdict] = field(default_factory=list)


@dataclass(frozen=True)
class Ranked:
    party: Party
    weight: float
    probability: float
    grade: MatchGrade
    explanation: dict[str, Any]


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


def prepare_record(
    demographics: dict[str, Any],
    identifiers: Sequence[tuple[int, str, str | None]],
    namespaces: dict[int, str],
    person_identifying: frozenset[str],
) -> Prepared:
    """Normalised record, search columns and blocking keys (a plain function, so that bulk
    import can run it in worker processes)."""
    norm = normalize_record(
        demographics,
        [{"domain": namespaces.get(d, str(d)), "value": v, "type": t} for d, v, t in identifiers],
    )
    for identifier in norm["identifiers"]:
        if identifier["domain"] in person_identifying:
            identifier["person_level"] = True
    return Prepared(norm, search_columns(norm), blocking_keys(norm))


class Matcher:
    def __init__(self, model: MatchModel, settings: MatchingSettings) -> None:
        self.model = model
        self.base_prior = model.prior
        self.base_prior_records = model.training.get("records")
        self.settings = settings
        self.namespaces: dict[int, str] = {}
        self.person_identifying: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return str(self.model.training.get("name") or "matching-model")

    def set_domains(self, domains: Iterable[Domain]) -> None:
        domains = list(domains)
        self.namespaces = {d.id: d.namespace for d in domains}
        self.person_identifying = frozenset(
            d.namespace for d in domains if d.identifies_person and not d.is_enterprise
        )

    def use_term_frequencies(self, table: dict[str, Any] | None) -> None:
        self.model = self.model.with_term_frequencies(table)

    def use_model(
        self, model: MatchModel, *, auto_link: float | None = None, review: float | None = None
    ) -> None:
        """Score with ``model`` from now on (term frequencies and the prior's fit to the index
        are applied again by the caller), and decide with these thresholds where given."""
        self.model = model
        self.base_prior = model.prior
        self.base_prior_records = model.training.get("records")
        update = {k: v for k, v in (("auto_link", auto_link), ("review", review))
                  if v is not None}
        if update:
            self.settings = self.settings.model_copy(update=update)

    def calibrate(self, index_size: int) -> None:
        """Fit the prior to the index size. The prior (the chance that two random records are
        one person) shrinks as the index grows; the trained prior fits the training set, so
        for a larger index it is scaled down by training size / index size. It is never
        raised for a smaller index: that made household members link in evaluation."""
        trained_on = int(self.base_prior_records or 0)
        prior = self.base_prior
        if trained_on and index_size > trained_on:
            prior = self.base_prior * trained_on / index_size
        if prior != self.model.prior:
            self.model = self.model.with_prior(prior)
            log.info("event=prior_calibrated index_records=%d prior=%.3g", index_size, prior)

    # --- preparation ------------------------------------------------------------------------

    def prepare(
        self,
        demographics: dict[str, Any],
        identifiers: Sequence[tuple[int, str, str | None]],
    ) -> Prepared:
        """``identifiers``: (domain id, value, type) of every identifier the record carries."""
        return prepare_record(demographics, identifiers, self.namespaces, self.person_identifying)

    # --- decisions --------------------------------------------------------------------------

    def pair(
        self,
        subject: Party,
        other: Party,
        prob: float,
        no_match: bool,
        family_names: frozenset[str] = frozenset(),
    ) -> DecisionResult:
        """matching's decision for one pair of records (thresholds and hard rules);
        ``family_names``: see :func:`matching.decision.family_given_names`."""
        return decide(
            prob,
            auto_link=self.settings.auto_link,
            review=self.settings.review,
            record_source_domain=subject.domain,
            candidate_source_domain=other.domain,
            record_identifiers=subject.normalized.get("identifiers"),
            candidate_identifiers=other.normalized.get("identifiers"),
            person_identifying_domains=self.person_identifying,
            no_match_asserted=no_match,
            record=subject.normalized,
            candidate=other.normalized,
            family_names=family_names,
            placeholder_names=self.settings.placeholder_names,
            twin_share=self.model.twin_share,
            generation_share=self.model.generation_share,
        )

    def verdicts(
        self,
        subject: Party,
        persons: dict[int, list[Party]],
        no_match: AbstractSet[int],
        *,
        matches_only: bool = False,
    ) -> list[Verdict]:
        """Score ``subject`` against every record of every candidate person.

        ``matches_only``: leave out the persons that can only be NO_MATCH — every record
        below the review threshold and no person-identifying identifier shared — without
        running the decision rules on them (the rules only ever lower a decision, and a
        person is linked or reviewed only through a record at or above review). At 1M records
        most of up to max_candidates candidates are such persons."""
        parties = [p for records in persons.values() for p in records]
        if not parties:
            return []
        weights = self.model.score(
            subject.normalized, [p.normalized for p in parties], keys=_cache_keys(parties)
        )
        probs = [float(x) for x in np.atleast_1d(probability(weights))]
        return self.verdicts_of(subject, parties, probs, no_match, matches_only=matches_only)

    def verdicts_of(
        self,
        subject: Party,
        parties: Sequence[Party],
        probs: Sequence[float],
        no_match: AbstractSet[int],
        *,
        matches_only: bool = False,
    ) -> list[Verdict]:
        """:meth:`verdicts` of ``parties`` (the records of the candidate persons) already
        scored: ``probs`` their match probabilities, in order (bulk import scores a whole
        chunk at once)."""
        grouped: dict[int, list[tuple[Party, float]]] = {}
        for party, prob in zip(parties, probs, strict=True):
            grouped.setdefault(party.person_id or 0, []).append((party, prob))
        if matches_only:
            review = self.settings.review
            grouped = {
                person_id: pairs
                for person_id, pairs in grouped.items()
                if max(prob for _, prob in pairs) >= review
                or any(self._shares_person_identifier(subject, party) for party, _ in pairs)
            }
            if not grouped:
                return []
        # names of the candidates born the same day into the subject's family: a twin's name
        # among them makes a misspelt given name ambiguous (matching's twin rule)
        family = family_given_names(subject.normalized, [p.normalized for p in parties])
        # each pair with its decision's probability (a twin share may have lowered it)
        by_person: dict[int, list[tuple[Party, float, DecisionResult]]] = {
            person_id: [
                (party, result.probability, result)
                for party, prob in pairs
                for result in (
                    self.pair(subject, party, prob, party.record_id in no_match, family),
                )
            ]
            for person_id, pairs in grouped.items()
        }
        verdicts = []
        for person_id, results in by_person.items():
            note = ""
            links = [r for r in results if r[2].decision == Decision.LINK]
            vetoes = [r for r in results if r[2].hard_rules]
            reviews = [r for r in results if r[2].decision == Decision.REVIEW]
            shared = [r for r in results if self._shares_person_identifier(subject, r[0])]
            if links and not vetoes:
                decision, focus = Decision.LINK, max(links, key=lambda r: r[1])
            elif shared and not vetoes:
                # One identifier, one person: the same identifier in a person-identifying
                # domain links whatever the probability, unless a hard rule says otherwise.
                decision, focus = Decision.LINK, max(shared, key=lambda r: r[1])
                focus = (focus[0], focus[1], _linked_on_identifier(focus[2], self._shared(
                    subject, focus[0])))
            elif shared:
                # The same national ID, yet a hard rule says two people: one of the records
                # is wrong, or it is one person with wrong demographics. A steward decides.
                decision, focus = Decision.REVIEW, vetoes[0]
                note = (f"shares a person-identifying identifier "
                        f"({', '.join(self._shared(subject, focus[0])) or 'another record'}) "
                        f"but a hard rule forbids the link; ")
            elif links or reviews:
                decision = Decision.REVIEW
                focus = (
                    vetoes[0]
                    if vetoes and (links or reviews)
                    else max(links + reviews, key=lambda r: r[1])
                )
            else:
                decision, focus = Decision.NO_MATCH, max(results, key=lambda r: r[1])
            best = max(results, key=lambda r: r[1])
            verdicts.append(
                Verdict(
                    person_id=person_id,
                    decision=decision,
                    probability=best[1],
                    best_record_id=focus[0].record_id,
                    reason=note + ("; ".join(focus[2].reasons) or decision.value),
                    explain=partial(self._explain_with, self.model, subject, focus[0], focus[2]),
                )
            )
        verdicts.sort(key=lambda v: -v.probability)
        return verdicts

    def links_on_identifier(self, subject: Party, other: Party, result: DecisionResult) -> bool:
        """The pair shares an identifier in a person-identifying domain and no hard rule
        fired on it: one identifier, one person (linked whatever the probability)."""
        return not result.hard_rules and self._shares_person_identifier(subject, other)

    def _shares_person_identifier(self, subject: Party, other: Party) -> bool:
        return bool(self._shared(subject, other))

    def _shared(self, subject: Party, other: Party) -> list[str]:
        """The person-identifying domains in which the two records hold the same identifier."""
        mine = {
            (i["domain"], i["value"])
            for i in subject.normalized.get("identifiers") or []
            if i["domain"] in self.person_identifying
        }
        return sorted({
            i["domain"] for i in other.normalized.get("identifiers") or []
            if (i["domain"], i["value"]) in mine
        })

    def decide(
        self, subject: Party, persons: dict[int, list[Party]], no_match: AbstractSet[int]
    ) -> Outcome:
        return self.outcome(self.verdicts(subject, persons, no_match, matches_only=True))

    @staticmethod
    def outcome(verdicts: list[Verdict]) -> Outcome:
        """The person-level decision from the verdicts on the candidate persons (made with
        ``matches_only``): link to the one person that reaches LINK, else review items."""
        links = [v for v in verdicts if v.decision == Decision.LINK]
        reviews = [v for v in verdicts if v.decision == Decision.REVIEW]
        if len(links) == 1:
            chosen = links[0]
            return Outcome(chosen.person_id, chosen.probability, chosen.explanation, reviews)
        if len(links) > 1:
            for verdict in links:
                verdict.reason = "several persons reach the auto-link threshold: " + verdict.reason
            return Outcome(None, None, None, links + reviews)
        return Outcome(None, None, None, reviews)

    def explain(
        self, subject: Party, other: Party, result: DecisionResult | None = None
    ) -> dict[str, Any]:
        return self._explain_with(self.model, subject, other, result)

    @staticmethod
    def _explain_with(
        model: MatchModel, subject: Party, other: Party, result: DecisionResult | None
    ) -> dict[str, Any]:
        """The explanation of one pair by ``model`` (the model that scored it)."""
        return described(
            model, model.explain(subject.normalized, other.normalized), other.record_id, result
        )

    # --- ranking for queries ($match, PDQ) --------------------------------------------------

    def rank(
        self,
        query: dict[str, Any],
        parties: Sequence[Party],
        limit: int,
        *,
        explain: bool = True,
    ) -> list[Ranked]:
        """The ``limit`` best of ``parties`` against query demographics, best first, each with
        its grade and (with ``explain``) the explanation of its weight."""
        if not parties:
            return []
        keys = _cache_keys(parties)
        weights = np.atleast_1d(
            self.model.score(query, [p.normalized for p in parties], keys=keys)
        )
        order = [int(i) for i in np.argsort(-weights, kind="stable")[:limit]]
        family = family_given_names(query, [p.normalized for p in parties])
        results = [
            decide(
                float(probability(float(weights[i]))),
                auto_link=self.settings.auto_link,
                review=self.settings.review,
                record_identifiers=query.get("identifiers"),
                candidate_identifiers=parties[i].normalized.get("identifiers"),
                person_identifying_domains=self.person_identifying,
                record=query,
                candidate=parties[i].normalized,
                family_names=family,
                placeholder_names=self.settings.placeholder_names,
            )
            for i in order
        ]
        explained: list[dict[str, Any]] = [{} for _ in order]
        if explain:  # one batch: the query is encoded once
            explanations = self.model.explain_many(
                query,
                [parties[i].normalized for i in order],
                keys=None if keys is None else [keys[i] for i in order],
            )
            explained = [
                described(self.model, explanation, parties[i].record_id, result)
                for i, explanation, result in zip(order, explanations, results, strict=True)
            ]
        ranked = []
        for i, result, explanation in zip(order, results, explained, strict=True):
            if result.decision == Decision.LINK:
                grade = MatchGrade.CERTAIN
            elif result.decision == Decision.REVIEW:
                grade = MatchGrade.PROBABLE
            elif result.hard_rules:
                grade = MatchGrade.CERTAINLY_NOT
            else:
                grade = MatchGrade.POSSIBLE
            ranked.append(
                Ranked(parties[i], float(weights[i]), result.probability, grade, explanation)
            )
        return ranked


def _linked_on_identifier(result: DecisionResult, domains: Sequence[str]) -> DecisionResult:
    """A pair's decision made LINK because the records share a person-identifying identifier
    and no hard rule fired (the probability alone did not link them)."""
    reason = (f"same identifier in person-identifying domain(s) {', '.join(domains)}: one "
              "identifier, one person")
    return DecisionResult(Decision.LINK, result.probability, (reason, *result.reasons),
                          result.hard_rules)


def described(
    model: MatchModel, explanation: Explanation, record_id: int, result: DecisionResult | None
) -> dict[str, Any]:
    """An explanation as links, review items and $match carry it: which model, which record,
    and (when decided) the decision with its reasons."""
    out = explanation.to_dict()
    out["model"] = str(model.training.get("name") or "matching-model")
    out["record_id"] = record_id
    if result is not None:
        out["decision"] = result.to_dict()
    return out


def _cache_keys(parties: Sequence[Party]) -> list[tuple[int, int]] | None:
    """(record id, version) of each candidate, so that a candidate seen before is not encoded
    again; None (no caching) when a version is unknown."""
    if any(p.version is None for p in parties):
        return None
    return [(p.record_id, p.version) for p in parties]  # type: ignore[misc]


def load_model(settings: MatchingSettings) -> MatchModel:
    model = MatchModel.load(settings.model) if settings.model else MatchModel.default()
    is_given_name("")  # load the given-name table now, not during the first twin decision
    log.info("event=match_model_loaded path=%s", settings.model or "default")
    return model
