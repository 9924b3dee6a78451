"""From a match probability and the hard-rule context to LINK / REVIEW / NO_MATCH.

Thresholds are probabilities: ``probability >= auto_link`` links, ``probability >= review``
goes to a steward, anything lower is no match. Hard rules are applied after the thresholds and
no weight overrides them:

1. a steward's no-match assertion for the pair -> NO_MATCH;
2. different identifiers in the same person-identifying domain (e.g. two SSNs) -> never LINK;
   two numbers one mistyping apart are one (one keystroke, or two digits of which at most one
   in the serial: siblings' and twins' numbers differ there);
3. different identifiers from the same source domain (two MRNs of one hospital) -> never LINK:
   REVIEW as a possible duplicate within that source;
4. sex AND birth date both disagreeing -> never LINK;
5. (our addition) conflicting generational suffixes (JR vs SR, II vs III) -> never LINK, and
   NO_MATCH when the birth years are GENERATION_YEARS or more apart (a parent and child);
6. (our addition) possible twin: the full birth date (or a variant one slip away: a digit off,
   two digits swapped, day and month transposed) and the family name (or a close spelling) or
   the home (address line, phone) agree but the given names differ (neither equal,
   nickname-equivalent, swapped, one typo, a phonetic spelling, nor within two typos where one
   or both are no names people have: PATRICK / PATRVRCK, RAHCEL / RACHYEL), or a multiple-birth
   indicator is on either record and the given names differ (then a one-keystroke difference is
   only "similar": a twin JACK and his brother JACOB misspelt JACB). Given names that agree by
   spelling are still only "similar" when the second given names clearly differ (MARIA LUISA /
   MARIA ELENA, HANS / HANS-JOSEF) or when the family's other names (``family_names``) make the
   spelling ambiguous (JACOB misspelt JACO and his brother JACK; JACKK and JACB where JACK and
   JACOB were born that day). Clearly different given names (JOHN vs JAMES) -> NO_MATCH; similar
   ones (an initial J vs JAMES, Jaro-Winkler >= SIMILAR_GIVEN) -> never LINK. A shared
   person-level identifier (same SSN) lifts the NO_MATCH to "never LINK" and, without a
   multiple-birth indicator, waives the similar-name case (twins do not share an SSN). Different
   birth orders of a multiple birth (1 vs 2) -> NO_MATCH. Where a site's twin share is known
   (``twin_share``, estimated from its index: twins, unlike a given name replaced at a second
   source, show the same pattern inside one source as across two), a pair from two sources with
   clearly different given names, no multiple-birth indicator and no sex disagreement is weighed
   instead of refused: its probability times (1 - twin_share) links when it reaches auto-link;
   below auto-link the pair is still refused (NO_MATCH), as without a share: the share turns
   refusals into links where the site's data say so, never into review items;
7. (our addition) birth years a generation apart (GENERATION_YEARS or more, not a one-digit
   slip, neither date after today) -> never LINK: a namesake parent and child without
   suffixes. Where the site's share of them is known (``generation_share``, estimated from
   its index as the twin share is: a parent and child show the pattern inside one source as
   across two, a birth date replaced at a second source only across), a pair from two
   sources is weighed instead: its probability times (1 - generation_share) links when it
   reaches auto-link; below, the rule holds it for a steward as without a share.
8. (our addition) the same identifier in a person-identifying domain, but neither the family
   nor the given name agrees (where either record has no family name: neither the given name
   nor the birth date) -> never LINK: a mistyped national ID on another person's record, or a
   family member's, not one person (the MPI links on a shared person-level identifier
   otherwise, whatever the probability: one identifier, one person). A record without a
   given name compares its further given names' initials with the other's names (rules 8
   and 10): a middle name is all it has to compare.
9. (our addition) a newborn not yet named: either record has no name, or a placeholder name
   (``PLACEHOLDER_NAMES``: BABY GIRL, BABY BOY, INFANT, NEWBORN, BB, UNKNOWN ...; a trailing
   twin letter or number and spaces ignored) -> never LINK unless the two records share an
   identifier of a person-identifying domain (one identifier, one person). Twins are born the
   same day to the same mother and share every demographic a placeholder leaves. The rule
   fires only where the probability reaches review: a missing name is no evidence of two
   people, so it never pushes a pair below review (a placeholder newborn stays a candidate).
   A placeholder is scored as no given name (matching.comparisons), not as a different one.
10. (our addition) the same identifier in a person-identifying domain and the same family
   name, given names that are different names, and no birth date that agrees -> never LINK:
   one family member's number in another's record (a spouse's SSN on a tax form), or one
   person whose given name was replaced. When both records carry further given names and no
   initial of one's is among the other's -> NO_MATCH (``identifier_given_and_middle_disagree``):
   a replaced given name leaves the middle name as it was, a family member has a middle name of
   their own. Otherwise the rule holds the pair only when both given names are names people
   have or initials (``is_given_name``): a family member's number comes with that member's
   name, not with WIFE, RESIDENT or a spelling no name has.

"Never LINK" means: REVIEW when the probability reaches the review threshold, else NO_MATCH.
Rules that end in NO_MATCH win over the others.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import combinations
from typing import Any

import numpy as np
from rapidfuzz.distance import OSA, JaroWinkler

from matching.comparisons import as_normalized
from matching.normalize import (
    FUTURE,
    PLACEHOLDER_NAMES,
    clean_identifier,
    given_name_variants,
    is_given_name,
    placeholder_given,
)

__all__ = ["Decision", "DecisionResult", "decide", "family_given_names",
           "family_given_names_of_pairs", "DEFAULT_AUTO_LINK", "DEFAULT_REVIEW"]

DEFAULT_AUTO_LINK = 0.999
DEFAULT_REVIEW = 0.5
#: Given names at least this close (Jaro-Winkler) count as the same name misspelt.
CLOSE_GIVEN = 0.94
#: Given names at least this close (or phonetically equal, or one an initial) are "similar".
SIMILAR_GIVEN = 0.85
#: Family and given names this close (Jaro-Winkler) to the other record's given and family
#: names are the two names swapped and misspelt.
SWAPPED_SIMILAR = 0.88
#: Conflicting suffixes with birth years this far apart are a parent and a child.
GENERATION_YEARS = 12


class Decision(StrEnum):
    LINK = "LINK"
    REVIEW = "REVIEW"
    NO_MATCH = "NO_MATCH"


@dataclass(frozen=True)
class DecisionResult:
    decision: Decision
    probability: float
    reasons: tuple[str, ...] = field(default_factory=tuple)
    hard_rules: tuple[str, ...] = field(default_factory=tuple)  # rule names that fired

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.value,
            "probability": self.probability,
            "reasons": list(self.reasons),
            "hard_rules": list(self.hard_rules),
        }


def _by_domain(identifiers: Sequence[dict[str, Any]] | None) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for raw in identifiers or []:
        cleaned = clean_identifier(raw) if "person_level" not in raw else raw
        if cleaned is None:
            continue
        out.setdefault(cleaned["domain"], set()).add(cleaned["value"])
    return out


def _middle_initials(record: dict[str, Any]) -> set[str]:
    """The initials of a record's given names after the first (a multi-word first name, MAN
    OF THE for DONNA, leaves its words among them: every initial counts)."""
    return {token[:1] for token in (record.get("middle") or "").split()}


def _given_differs(a: dict[str, Any], b: dict[str, Any], relation: str) -> bool:
    """For the identifier rules: the given names disagree (``relation``, the two given names'
    relation, is "different"), or one record has no given name and no initial of its further
    given names is the other's given or further initial (a middle name is all it has to
    compare: ANDREW against CHANDLER K)."""
    if relation == "different":
        return True
    if a.get("given") and b.get("given"):
        return False
    bare, other = (a, b) if not a.get("given") else (b, a)
    mine = _middle_initials(bare)
    theirs = _middle_initials(other) | ({other["given"][:1]} if other.get("given") else set())
    return bool(mine) and bool(theirs) and not mine & theirs


def _a_name(record: dict[str, Any]) -> bool:
    """Whether the record's given name, when it has one, is a name people have or an initial
    (not a word such as WIFE or RESIDENT, nor a spelling no name has)."""
    given = record.get("given") or ""
    return not given or len(given) == 1 or is_given_name(given)


def _typo(x: str, y: str) -> bool:
    """One keystroke apart: one character replaced, or two neighbours swapped."""
    return len(x) == len(y) and OSA.distance(x, y) <= 1


#: The last characters of a national id that number people in sequence (an SSN's serial).
SERIAL_DIGITS = 4


def _mistyped(x: str, y: str) -> bool:
    """One national id written for the other: one keystroke apart, or two characters replaced
    of which at most one in the serial part (the last SERIAL_DIGITS). Siblings' and twins'
    numbers, issued in sequence, differ in the serial; a number copied by hand or read by OCR
    goes wrong anywhere."""
    if _typo(x, y):
        return True
    if len(x) != len(y) or len(x) <= SERIAL_DIGITS:
        return False
    wrong = [i for i, (p, q) in enumerate(zip(x, y, strict=True)) if p != q]
    return len(wrong) == 2 and sum(i >= len(x) - SERIAL_DIGITS for i in wrong) <= 1


def _conflicting_domains(
    left: dict[str, set[str]],
    right: dict[str, set[str]],
    domains: Collection[str],
    *,
    typos: bool = False,
) -> list[str]:
    """The domains in which the two records hold identifiers and share none. With ``typos``,
    values one mistyping apart (:func:`_mistyped`) are no conflict: two people's national ids
    that close are far rarer than a mistyped number (not so an MRN: a source numbers its
    patients in order)."""
    return sorted(
        d for d in domains
        if d in left and d in right and not left[d] & right[d]
        and not (typos and any(_mistyped(x, y) for x in left[d] for y in right[d]))
    )


def _placeholder(a: dict[str, Any], placeholders: Collection[str]) -> str | None:
    """Why a normalised record's name says it is a newborn not yet named (no name at all, or
    a placeholder in the given names, the family name or both together), or None. A trailing
    twin letter or number (BABY GIRL A, BABY BOY 2) is ignored."""
    given = list(a.get("given_tokens") or [])
    family = list(a.get("family_tokens") or ([a["family"]] if a.get("family") else []))
    if not given and not family:
        return "no name"
    compact = {"".join(p.split()) for p in placeholders}
    for tokens in (given, family, family + given, given + family):
        if placeholder_given(tokens, compact):
            return "placeholder name " + " ".join(t for t in (a.get("family"), a.get("given"),
                                                              a.get("middle")) if t)
    return None


def _dates_disagree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if not a.get("birth_year") or not b.get("birth_year"):
        return False
    for part in ("birth_year", "birth_month", "birth_day"):
        x, y = a.get(part), b.get(part)
        if x is None or y is None:
            return False
        if x != y:
            return True
    return False


def _given_relation(
    a: dict[str, Any],
    b: dict[str, Any],
    *,
    multiple_birth: bool = False,
    sex_differs: bool = False,
    family_names: Collection[str] = (),
) -> str:
    """ "same" (equal, nickname, swapped, one typo or phonetic spelling), "similar" or "different".

    Twins' names may be similar (EMMA / ELLA) but are rarely one keystroke or one sound apart;
    names that close are treated as one name misspelt, except when a multiple-birth indicator
    is present (a one-keystroke difference below CLOSE_GIVEN is then only "similar") or when the
    records disagree on sex (MARIA / MARIANO: only equal or nickname names are "same").
    The first names being "same", the pair is still only "similar" when the second given names
    (or the parts of a compound first name) are clearly different, or when a spelling
    difference is ambiguous: ``family_names`` (given names of other records born the same day
    into the same family) hold a third person's name near both spellings.
    """
    relation = _spelling_relation(a, b, multiple_birth=multiple_birth, sex_differs=sex_differs)
    if relation != "same" or (a.get("given") or "") == (b.get("given") or "") == "":
        return relation
    if _second_names_differ(a, b):
        return "similar"  # MARIA LUISA / MARIA ELENA, HANS / HANS-JOSEF, JOHN PAUL / JOHN MARK
    if (a.get("given") or "") != (b.get("given") or "") and _ambiguous(
        a.get("given") or "", b.get("given") or "", family_names
    ):
        return "similar"  # JACE: JACOB misspelt, or his brother JACK?
    return "same"


def _spelling_relation(
    a: dict[str, Any], b: dict[str, Any], *, multiple_birth: bool, sex_differs: bool
) -> str:
    ga, gb = a.get("given") or "", b.get("given") or ""
    if not ga or not gb or ga == gb:
        return "same"
    if set(a.get("given_variants") or []) & set(b.get("given_variants") or []):
        return "same"
    if _swapped(a, b):
        return "same"  # given and family swapped: the same names in the wrong fields
    if _split(a, gb) or _split(b, ga):
        return "same"  # one name written as two (BR INLRY / BRINLEY)
    similarity = JaroWinkler.normalized_similarity(ga, gb)
    if sex_differs:
        return "similar" if similarity >= SIMILAR_GIVEN else "different"
    if similarity >= CLOSE_GIVEN:
        return "same"
    one_typo = min(len(ga), len(gb)) >= 4 and OSA.distance(ga, gb) <= 1
    if one_typo:
        # one keystroke apart: a typo, not a sibling's name, unless the records say multiple birth
        return "similar" if multiple_birth else "same"
    if (
        a.get("given_phonetic")
        and a.get("given_phonetic") == b.get("given_phonetic")
        and min(len(ga), len(gb)) >= 5
        and OSA.distance(ga, gb) <= 2
    ):
        return "same"  # a phonetic misspelling (TIFFANY / TIPHANY)
    if (
        not multiple_birth
        and min(len(ga), len(gb)) >= 4
        and OSA.distance(ga, gb) <= 2
        and not (is_given_name(ga) and is_given_name(gb))
    ):
        # a name people have and a spelling of it that is no name (PATRICK / PATRVRCK), or two
        # spellings that are no names (RAHCEL / RACHYEL, both one keystroke from RACHEL): one
        # person's name misspelt, no evidence of a second person (a third name of the family
        # near both still makes it ambiguous: _given_relation)
        return "same"
    if (
        similarity >= SIMILAR_GIVEN
        or ((len(ga) == 1 or len(gb) == 1) and ga[0] == gb[0])
    ):
        return "similar"
    return "different"


def _split(a: dict[str, Any], other: str) -> bool:
    """``a``'s given names, joined, are ``other`` or one keystroke from it: one name split by
    a stray space (BR INLRY for BRINLEY), not a first and a middle name (MARY ANN is two
    names people have, so it stays two)."""
    tokens = a.get("given_tokens") or []
    if len(tokens) < 2 or not other:
        return False
    joined = "".join(tokens[:2])
    if all(is_given_name(t) for t in tokens[:2]) and joined != other:
        return False
    return joined == other or (min(len(joined), len(other)) >= 5
                               and OSA.distance(joined, other) <= 1)


def _swapped(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Given and family names swapped: the same names in the wrong fields, each equal or
    misspelt at most slightly (both crossed Jaro-Winkler similarities >= SWAPPED_SIMILAR and
    together above the direct ones, as the comparison level ``names_swapped_similar``):
    LIEBENBERG BIANCA written BIANCA LIEBENBRRG is one person, not a twin."""
    if bool(a.get("family")) and a.get("family") == b.get("given") and (
        b.get("family") == a.get("given")
    ):
        return True
    fa, ga = a.get("family_key") or "", a.get("given") or ""
    fb, gb = b.get("family_key") or "", b.get("given") or ""
    if not (fa and ga and fb and gb):
        return False
    first = JaroWinkler.normalized_similarity(fa, gb)
    second = JaroWinkler.normalized_similarity(ga, fb)
    return (
        first >= SWAPPED_SIMILAR
        and second >= SWAPPED_SIMILAR
        and first + second
        > JaroWinkler.normalized_similarity(fa, fb) + JaroWinkler.normalized_similarity(ga, gb)
    )


def _near(x: str, y: str) -> bool:
    """Two given names one slip of the pen apart (two edits, or Jaro-Winkler >= SIMILAR)."""
    return OSA.distance(x, y) <= 2 or JaroWinkler.normalized_similarity(x, y) >= SIMILAR_GIVEN


def _ambiguous(ga: str, gb: str, family_names: Collection[str]) -> bool:
    """A spelling difference between ``ga`` and ``gb`` that could as well be a third person's
    name in the family: a name in ``family_names`` that people have (:func:`is_given_name`),
    near both spellings, and not merely a third spelling of one name ("same" as both). MIA
    misspelt MAY links by spelling to her twin MAYA, yet MAY and MAYA are both near MIA; JACOB
    misspelt JACO is one keystroke from his brother JACK, and both are near JACOB. Two
    spellings that are no names are ambiguous when two names of the family are near them."""
    spelled = {g: {"given": g, "given_variants": list(given_name_variants(g))} for g in (ga, gb)}
    if not is_given_name(ga) and not is_given_name(gb):
        # two misspellings (JACKK, JACB): one name misspelt twice, unless two of the family's
        # names, not spellings of one name, are near them (JACK and his twin JACOB)
        names = [{"given": n, "given_variants": list(given_name_variants(n))}
                 for n in sorted(family_names)
                 if is_given_name(n) and (_near(ga, n) or _near(gb, n))]
        if any(_spelling_relation(x, y, multiple_birth=False, sex_differs=False) != "same"
               for x, y in combinations(names, 2)):
            return True
    for name in family_names:
        if (
            name in spelled
            or not is_given_name(name)  # RENZTO is RENATO misspelt, not a third person
            or not (_near(ga, name) and _near(gb, name))
        ):
            continue
        third = {"given": name, "given_variants": list(given_name_variants(name))}
        if not all(
            _spelling_relation(third, spelled[g], multiple_birth=False, sex_differs=False)
            == "same"
            for g in (ga, gb)
        ):
            return True
    return False


def _second_names_differ(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The first given names agree, but the records name a clearly different second given
    name (JOHN PAUL / JOHN MARK), or a compound first name on one record is not the other's
    (HANS-JOSEF / HANS, MARIA LUISA / MARIA ELENA). A second name on one record only is a
    dropped middle name, not a difference."""
    if _swapped(a, b):
        return False  # given and family swapped: a compound family name is no given name
    if _split(a, b.get("given") or "") or _split(b, a.get("given") or ""):
        return False  # one name written as two
    fa, fb = (a.get("first_given") or "").split(), (b.get("first_given") or "").split()
    if fa and fb and len(fa) != len(fb):
        return True
    if len(fa) > 1 and OSA.distance("".join(fa), "".join(fb)) <= 2:
        return False  # HEINZ-JOSEF misspelt HEINZJ-OSEF: one compound name, one typo
    ma = (a.get("middle") or "").split(" ", 1)[0]
    mb = (b.get("middle") or "").split(" ", 1)[0]
    if not ma or not mb or ma == mb:
        return False
    if (len(ma) == 1 or len(mb) == 1) and ma[0] == mb[0]:
        return False
    return not _near(ma, mb)


def family_given_names(record: dict[str, Any], others: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Given names of the records among ``others`` (a record's candidates) born on the same
    day into the same family as ``record``: its own other spellings, and its twins' names if
    the index holds them. Passed to :func:`decide` as ``family_names``. Empty unless there are
    two or more names (as in :func:`family_given_names_of_pairs`)."""
    a = as_normalized(record)
    if a.get("birth_precision") != "day":
        return frozenset()
    names = set()
    for other in others:
        b = as_normalized(other)
        if b.get("given") and b.get("birth_date") == a["birth_date"] and _family_agrees(a, b):
            names.add(b["given"])
    return frozenset(names) if len(names) >= 2 else frozenset()


def family_given_names_of_pairs(
    normalized: Sequence[dict[str, Any]], pairs: Any
) -> dict[int, frozenset[str]]:
    """:func:`family_given_names` for every record of a batch, from its candidate pairs
    ((k, 2) row indices into ``normalized``); only records whose candidates hold two or more
    different given names appear (the others cannot be ambiguous)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    dates = np.array([as_normalized(r).get("birth_date") or "" for r in normalized], object)
    if not len(pairs):
        return {}
    same_day = (dates[pairs[:, 0]] == dates[pairs[:, 1]]) & (dates[pairs[:, 0]] != "")
    names: dict[int, set[str]] = {}
    for x, y in pairs[same_day].tolist():
        a, b = as_normalized(normalized[x]), as_normalized(normalized[y])
        if a.get("birth_precision") != "day" or not _family_agrees(a, b):
            continue
        if b.get("given"):
            names.setdefault(x, set()).add(b["given"])
        if a.get("given"):
            names.setdefault(y, set()).add(a["given"])
    return {k: frozenset(v) for k, v in names.items() if len(v) >= 2}


def _years_apart(a: dict[str, Any], b: dict[str, Any]) -> int | None:
    if not a.get("birth_year") or not b.get("birth_year"):
        return None
    return abs(int(a["birth_year"]) - int(b["birth_year"]))


def _birth_order(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _shared_value(
    left: dict[str, set[str]], right: dict[str, set[str]], domains: Collection[str]
) -> bool:
    return any(d in left and d in right and left[d] & right[d] for d in domains)


def _same_home(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same first address line or a shared phone number."""
    if set(a.get("phones") or []) & set(b.get("phones") or []):
        return True
    la = (a.get("addresses") or [{}])[0].get("line")
    return bool(la) and la == (b.get("addresses") or [{}])[0].get("line")


def _generations_apart(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Birth years GENERATION_YEARS or more apart and not one slip apart (1950 vs 1980 is one
    digit, 1964 vs 1946 two digits swapped; 1950 vs 1978 is neither). A birth date after today
    is an entry error (4005 for 2005), never a generation."""
    apart = _years_apart(a, b)
    if apart is None or apart < GENERATION_YEARS or FUTURE in (
            a.get("birth_date_problem"), b.get("birth_date_problem")):
        return False
    ya, yb = f"{a['birth_year']:04d}", f"{b['birth_year']:04d}"
    return sum(x != y for x, y in zip(ya, yb, strict=True)) > 1 and not _typo(ya, yb)


def _family_agrees(a: dict[str, Any], b: dict[str, Any]) -> bool:
    fa, fb = a.get("family_tokens") or [], b.get("family_tokens") or []
    if set(fa) & set(fb):
        return True
    if a.get("family_phonetic") and a.get("family_phonetic") == b.get("family_phonetic"):
        return True
    ka, kb = a.get("family_key") or "", b.get("family_key") or ""
    return bool(ka and kb) and JaroWinkler.normalized_similarity(ka, kb) >= SIMILAR_GIVEN


def _close_dates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Full birth dates equal, one digit apart, two adjacent digits swapped, or day and month
    transposed."""
    if a.get("birth_precision") != "day" or b.get("birth_precision") != "day":
        return False
    da, db = a["birth_date"], b["birth_date"]
    if da == db:
        return True
    if sum(x != y for x, y in zip(da, db, strict=True)) == 1 or _typo(da, db):
        return True
    return (a["birth_year"], a["birth_month"], a["birth_day"]) == (
        b["birth_year"], b["birth_day"], b["birth_month"]
    )


def _far_dates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Full birth dates in different years and further apart than one slip (one digit,
    day and month transposed, or the year alone one digit off)."""
    if a.get("birth_precision") != "day" or b.get("birth_precision") != "day":
        return False
    if a["birth_year"] == b["birth_year"] or _close_dates(a, b):
        return False
    return (a["birth_month"], a["birth_day"]) != (b["birth_month"], b["birth_day"])


def _weighed(probability: float, share: float | None, auto_link: float) -> float | None:
    """A rule's pair weighed by the site's share of two people among such pairs across two
    sources (``share``; None: not known or not across): the probability times (1 - share) when
    that still reaches ``auto_link``, else None (the rule decides as without a share)."""
    if share is None:
        return None
    weighed = probability * (1.0 - share)
    return weighed if weighed >= auto_link else None


def decide(
    probability: float,
    *,
    auto_link: float = DEFAULT_AUTO_LINK,
    review: float = DEFAULT_REVIEW,
    record_source_domain: str | None = None,
    candidate_source_domain: str | None = None,
    record_identifiers: Sequence[dict[str, Any]] | None = None,
    candidate_identifiers: Sequence[dict[str, Any]] | None = None,
    person_identifying_domains: Collection[str] = (),
    no_match_asserted: bool = False,
    record: dict[str, Any] | None = None,
    candidate: dict[str, Any] | None = None,
    family_names: Collection[str] = (),
    placeholder_names: Collection[str] = PLACEHOLDER_NAMES,
    twin_share: float | None = None,
    generation_share: float | None = None,
) -> DecisionResult:
    """Decide one pair.

    ``probability`` comes from ``MatchModel.score`` through ``probability(weight)``.
    Identifiers are the {"domain", "value", "type"} dicts of each record (raw or cleaned);
    ``person_identifying_domains`` are the namespaces whose identifiers name one person
    (SSN, national health id ...). ``record``/``candidate`` are the demographics (raw or
    normalised) used by the sex/birth-date, suffix and twin rules; without them those rules
    cannot fire. ``family_names``: given names of the index's records born the same day into
    the same family (:func:`family_given_names`); with them the twin rule also catches a
    misspelling that could be a twin's name. ``placeholder_names``: the names that mark a
    newborn not yet named (rule 9). ``twin_share``: twins' share of the pairs the twin rule
    meets across two sources, as estimated at the site (``MatchModel.twin_share``; rule 6).
    ``generation_share``: namesake parents and children's share of the pairs the generational
    rule meets across two sources (``MatchModel.generation_share``; rule 7).
    """
    if not 0.0 <= review <= auto_link <= 1.0:
        raise ValueError("thresholds must satisfy 0 <= review <= auto_link <= 1")
    reasons: list[str] = []
    fired: list[str] = []  # rules that forbid LINK
    refuse: list[str] = []  # rules that force NO_MATCH

    if no_match_asserted:
        return DecisionResult(
            Decision.NO_MATCH,
            probability,
            ("a steward asserted that these records are different people",),
            ("no_match_assertion",),
        )

    left_ids, right_ids = _by_domain(record_identifiers), _by_domain(candidate_identifiers)
    clash = _conflicting_domains(left_ids, right_ids, person_identifying_domains, typos=True)
    if clash:
        fired.append("person_identifier_conflict")
        reasons.append("different identifiers in person-identifying domain(s): " + ", ".join(clash))
    if (
        record_source_domain
        and record_source_domain == candidate_source_domain
        and _conflicting_domains(left_ids, right_ids, (record_source_domain,))
    ):
        fired.append("same_source_duplicate")
        reasons.append(
            f"different identifiers from the same source {record_source_domain}: "
            "possible duplicate within that source"
        )

    across = bool(record_source_domain and candidate_source_domain
                  and record_source_domain != candidate_source_domain)
    if record is not None and candidate is not None:
        a, b = as_normalized(record), as_normalized(candidate)
        sex_a, sex_b = a.get("sex"), b.get("sex")
        sex_disagrees = sex_a in ("M", "F", "O") and sex_b in ("M", "F", "O") and sex_a != sex_b
        if sex_disagrees and _dates_disagree(a, b):
            fired.append("sex_and_birth_date_disagree")
            reasons.append("sex and birth date both disagree")
        if _generations_apart(a, b):
            reasons.append(
                f"birth dates {a.get('birth_date')} and {b.get('birth_date')} are a generation "
                "apart and not a one-digit slip"
            )
            weighed = _weighed(probability, generation_share if across else None, auto_link)
            if weighed is not None:
                reasons.append(
                    f"namesake parents and children are an estimated {generation_share:.2%} of "
                    f"such pairs across two sources here: probability {probability:.6f} -> "
                    f"{weighed:.6f}"
                )
                probability = weighed
            else:
                fired.append("birth_years_apart")
        years_apart = _years_apart(a, b)
        if a.get("suffix") and b.get("suffix") and a["suffix"] != b["suffix"]:
            reasons.append(f"generational suffixes differ ({a['suffix']} vs {b['suffix']})")
            if years_apart is not None and years_apart >= GENERATION_YEARS:
                refuse.append("generational_pair")
            else:
                fired.append("suffix_conflict")
        order_a, order_b = a.get("multiple_birth"), b.get("multiple_birth")
        if _birth_order(order_a) and _birth_order(order_b) and order_a != order_b:
            refuse.append("different_birth_order")
            reasons.append(f"different birth orders of a multiple birth ({order_a} vs {order_b})")
        multiple = bool(order_a) or bool(order_b)
        relation = _given_relation(
            a, b, multiple_birth=multiple, sex_differs=sex_disagrees, family_names=family_names
        )
        if relation == "different" and (_placeholder(a, placeholder_names)
                                        or _placeholder(b, placeholder_names)):
            # BABY GIRL SMITH, then EMMA SMITH: the baby named, or her twin; a steward knows
            relation = "similar"
        shared = sorted(d for d in person_identifying_domains
                        if d in left_ids and d in right_ids and left_ids[d] & right_ids[d])
        # without a family name on one side, the birth date is the other name's stand-in
        both_families = bool(a.get("family")) and bool(b.get("family"))
        if (shared and (not _family_agrees(a, b) if both_families else not _close_dates(a, b))
                and _given_differs(a, b, _spelling_relation(a, b, multiple_birth=False,
                                                            sex_differs=False))):
            fired.append("identifier_names_disagree")
            reasons.append(
                f"same identifier in person-identifying domain(s) {', '.join(shared)}, but "
                f"neither family nor given name agrees ({a.get('family')} {a.get('given')} vs "
                f"{b.get('family')} {b.get('given')})" if both_families else
                f"same identifier in person-identifying domain(s) {', '.join(shared)}, but "
                f"a family name is missing and neither the given name nor the birth date "
                f"agrees ({a.get('given')}, {a.get('birth_date')} vs {b.get('given')}, "
                f"{b.get('birth_date')})"
            )
        if (shared and _given_differs(a, b, relation) and _family_agrees(a, b)
                and not _close_dates(a, b)):
            middles = _middle_initials(a), _middle_initials(b)
            what = ""
            if all(middles) and not middles[0] & middles[1]:
                # a replaced given name keeps the middle name; a family member has their own
                refuse.append("identifier_given_and_middle_disagree")
                what = "second given names"
            elif _a_name(a) and _a_name(b):
                # a family member's number comes with that member's name, not with WIFE,
                # RESIDENT or a spelling no name has
                fired.append("identifier_given_disagrees")
                what = "no birth date to agree"
            if what:
                reasons.append(
                    f"same identifier in person-identifying domain(s) {', '.join(shared)} and "
                    f"the same family name, but different given names ({a.get('given')} vs "
                    f"{b.get('given')}) and {what}: one family member's number written into "
                    "another's record"
                )
        if relation != "same":
            if multiple or (_close_dates(a, b) and (_family_agrees(a, b) or _same_home(a, b))):
                reasons.append(
                    f"possible twin: same birth date/family, given names differ "
                    f"({a.get('given')} vs {b.get('given')})"
                )
                identifier_agrees = _shared_value(left_ids, right_ids, person_identifying_domains)
                weighed = None
                if (relation == "different" and not identifier_agrees and not multiple
                        and not sex_disagrees and across):
                    weighed = _weighed(probability, twin_share, auto_link)
                if weighed is not None:
                    reasons.append(
                        f"twins are an estimated {twin_share:.2%} of such pairs across two "
                        f"sources here: probability {probability:.6f} -> {weighed:.6f}"
                    )
                    probability = weighed
                elif relation == "different" and not identifier_agrees:
                    refuse.append("probable_twin")
                elif multiple or not identifier_agrees:
                    fired.append("possible_twin")
        if (relation != "same" and _far_dates(a, b) and _family_agrees(a, b)
                and _same_home(a, b)):
            fired.append("possible_sibling")
            reasons.append(
                f"possible siblings: same family and home, given names not the same "
                f"({a.get('given')} vs {b.get('given')}), birth dates {a.get('birth_date')} "
                f"and {b.get('birth_date')} further apart than one slip"
            )
        if probability >= review and not _shared_value(
            left_ids, right_ids, person_identifying_domains
        ):
            why = [w for w in (_placeholder(a, placeholder_names),
                               _placeholder(b, placeholder_names)) if w]
            if why:
                fired.append("newborn_placeholder")
                reasons.append(
                    f"newborn not yet named ({'; '.join(why)}): never linked on demographics, "
                    "twins share them"
                )

    if refuse:
        return DecisionResult(
            Decision.NO_MATCH, probability, tuple(reasons), tuple(fired + refuse)
        )
    if probability >= auto_link and not fired:
        reasons.insert(0, f"probability {probability:.6f} >= auto-link {auto_link}")
        return DecisionResult(Decision.LINK, probability, tuple(reasons), tuple(fired))
    if probability >= review:
        reasons.insert(0, f"probability {probability:.6f} >= review {review}")
        return DecisionResult(Decision.REVIEW, probability, tuple(reasons), tuple(fired))
    reasons.insert(0, f"probability {probability:.6f} < review {review}")
    return DecisionResult(Decision.NO_MATCH, probability, tuple(reasons), tuple(fired))
