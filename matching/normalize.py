"""Normalisation of demographics into comparable, JSON-serialisable values.

Everything here is pure and deterministic: the same input always gives the same output, in any
process. The functions marked *stable* in ``matching/__init__.py`` are used by the service for its
search columns; their signatures do not change.

Phonetic key choice: NYSIIS (jellyfish). It was designed for personal names (New York State
Identification and Intelligence System) and keeps more of the name than Soundex, so fewer
unrelated names share a key and it is usable as a blocking key. Unlike Metaphone (built for
English words) it keeps SMITH/SMYTHE and SCHMIDT/SMITH apart while common spelling variants
meet (JON/JOHN, CATHERINE/KATHERINE, MACDONALD/MCDONALD); variants it misses are caught by the
Jaro-Winkler levels. It is a fixed algorithm, so keys stored in the database stay valid.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

import jellyfish
import phonenumbers
from anyascii import anyascii
from nicknames import NickNamer

__all__ = [
    "PartialDate",
    "SSN_OID",
    "birth_date_problem",
    "clean_identifier",
    "fold",
    "given_name_variants",
    "normalize_address",
    "normalize_family",
    "normalize_given",
    "normalize_phone",
    "normalize_postal_code",
    "normalize_record",
    "normalize_sex",
    "normalize_suffix",
    "parse_birth_date",
    "phone_number",
    "phonetic",
]

_NON_ALNUM = re.compile(r"[^A-Z0-9]+")

#: Honorifics and titles dropped from name fields (they are not identity).
TITLES = frozenset(
    "MR MRS MS MISS MX DR PROF REV FR SIR DAME LADY LORD HON SR SRA SRTA HERR FRAU MME MLLE"
    " MD PHD DDS DO RN ESQ CAPT COL GEN LT SGT".split()
)
# "SR" appears in TITLES (Spanish "Señor") but is treated as a suffix when it trails a name.

#: Generational suffixes, mapped to one spelling. They are their own field.
SUFFIXES = {
    "JR": "JR", "JNR": "JR", "JUNIOR": "JR",
    "SR": "SR", "SNR": "SR", "SENIOR": "SR",
    "I": "I", "II": "II", "III": "III", "IV": "IV", "V": "V",
    "2ND": "II", "3RD": "III", "4TH": "IV",
}

#: Surname particles: kept as tokens, but also removed for the "core" family name.
PARTICLES = frozenset(
    "VAN VON DER DEN DE DEL DELLA DI DA DOS DAS DU LA LE LES TER TEN BIN BINTI BEN BAT AL EL ST"
    " MAC MC O".split()
)

#: Address words unified to one spelling (USPS-style short forms).
ADDRESS_WORDS = {
    "STREET": "ST", "STR": "ST", "ST": "ST",
    "AVENUE": "AVE", "AV": "AVE", "AVE": "AVE", "AVEN": "AVE",
    "ROAD": "RD", "RD": "RD",
    "DRIVE": "DR", "DRV": "DR", "DR": "DR",
    "LANE": "LN", "LN": "LN",
    "BOULEVARD": "BLVD", "BLVD": "BLVD", "BOUL": "BLVD",
    "COURT": "CT", "CT": "CT",
    "PLACE": "PL", "PL": "PL",
    "SQUARE": "SQ", "SQ": "SQ",
    "TERRACE": "TER", "TERR": "TER", "TER": "TER",
    "PARKWAY": "PKWY", "PKWY": "PKWY",
    "HIGHWAY": "HWY", "HWY": "HWY",
    "CIRCLE": "CIR", "CIR": "CIR",
    "TRAIL": "TRL", "TRL": "TRL",
    "WAY": "WAY", "WY": "WAY",
    "APARTMENT": "APT", "APT": "APT", "UNIT": "APT", "FLAT": "APT", "NO": "APT",
    "SUITE": "STE", "STE": "STE",
    "BUILDING": "BLDG", "BLDG": "BLDG",
    "FLOOR": "FL", "FL": "FL",
    "NORTH": "N", "SOUTH": "S", "EAST": "E", "WEST": "W",
    "NORTHEAST": "NE", "NORTHWEST": "NW", "SOUTHEAST": "SE", "SOUTHWEST": "SW",
    "MOUNT": "MT", "MT": "MT", "FORT": "FT", "FT": "FT", "SAINT": "ST",
    "POBOX": "POBOX", "PO": "PO", "BOX": "BOX",
}

#: Words that say little about where someone lives; left out of address tokens.
ADDRESS_NOISE = frozenset({"APT", "STE", "BLDG", "FL", "PO", "BOX", "THE", "OF"})

#: HL7 table 0001 and FHIR administrative-gender to one of M, F, O, U.
#: HL7 "A" (ambiguous) is an administrative sex other than male or female -> "O";
#: HL7 "N" (not applicable) says nothing about the person -> "U".
_SEX_CODES = {
    "M": "M", "MALE": "M", "MAN": "M",
    "F": "F", "FEMALE": "F", "WOMAN": "F", "W": "F",
    "O": "O", "OTHER": "O", "A": "O", "AMBIGUOUS": "O", "X": "O",
    "U": "U", "UNKNOWN": "U", "UNK": "U", "N": "U", "NOT APPLICABLE": "U",
}

#: Identifier types that identify a person across organisations (cleaned to digits/letters).
PERSON_LEVEL_TYPES = frozenset({"SS", "SSN", "NI", "NH", "NNxxx", "PPN", "DL", "HC", "JHN"})

#: Assigning authority of US Social Security numbers (HL7 OID of the SSA): the one definition
#: in matching (synth.SSN_DOMAIN is this value).
SSN_OID = "2.16.840.1.113883.4.1"

_SSN_DOMAINS = frozenset({SSN_OID, "SSN", "SSA", "US-SSN"})

MIN_BIRTH_YEAR = 1850
MAX_TOKENS = 8


# --------------------------------------------------------------------------------------------
# text


def fold(text: str | None) -> str:
    """Unicode to ASCII, uppercase, punctuation to single spaces, collapsed and stripped."""
    if not text:
        return ""
    if not isinstance(text, str):
        text = str(text)
    return _NON_ALNUM.sub(" ", anyascii(text).upper()).strip()


def _trim(tokens: list[str], *, leading: frozenset[str], trailing: frozenset[str]) -> list[str]:
    """Drop leading titles and trailing suffixes/titles, always keeping at least one token."""
    out = list(tokens)
    while len(out) > 1 and out[-1] in trailing:
        out.pop()
    while len(out) > 1 and out[0] in leading:
        out.pop(0)
    return out


_TRAILING = frozenset(SUFFIXES) | (TITLES - {"SR"})
_LEADING = TITLES - {"SR"}


def normalize_family(text: str | None) -> str:
    """Folded family name without titles or generational suffixes ("Smith Jr." -> "SMITH")."""
    return " ".join(_trim(fold(text).split(), leading=_LEADING, trailing=_TRAILING))


def normalize_given(text: str | None) -> str:
    """Folded given name(s) without titles or suffixes ("Dr. Mary-Ann" -> "MARY ANN")."""
    tokens = _trim(fold(text).split(), leading=_LEADING, trailing=_TRAILING)
    if len(tokens) == 1 and tokens[0] in _LEADING:
        return ""
    return " ".join(tokens)


def normalize_suffix(text: str | None) -> str:
    """Generational suffix in one spelling: JR, SR, I..V; anything else -> ""."""
    for token in fold(text).split():
        if token in SUFFIXES:
            return SUFFIXES[token]
    return ""


@lru_cache(maxsize=65536)
def phonetic(text: str | None) -> str:
    """NYSIIS key of one folded name token; "" for empty (see module docstring for the choice)."""
    folded = fold(text).replace(" ", "")
    if not folded:
        return ""
    letters = "".join(ch for ch in folded if ch.isalpha())
    if not letters:
        return ""
    return jellyfish.nysiis(letters)


@lru_cache(maxsize=1)
def _nicknamer() -> NickNamer:
    """The nickname table, loaded once on first use (read-only)."""
    return NickNamer()


@lru_cache(maxsize=65536)
def given_name_variants(token: str) -> tuple[str, ...]:
    """The token followed by the canonical names it may be a nickname of (BOB -> ROBERT ...).

    Two given names are nickname-equivalent when their variant tuples share a value. The token
    itself comes first; the rest are sorted, so the result is stable.
    """
    token = fold(token).replace(" ", "")
    if not token:
        return ()
    namer = _nicknamer()
    related = {fold(n).replace(" ", "") for n in namer.canonicals_of(token.lower())}
    related.discard(token)
    return (token, *sorted(related))


@lru_cache(maxsize=1)
def _given_names() -> frozenset[str]:
    """Given names people have: every first name of Faker's person providers (all locales)
    and every name of the nickname table, folded like a normalised given name."""
    import importlib
    import pkgutil

    import faker.providers.person

    names: set[str] = set()
    for module in pkgutil.iter_modules(faker.providers.person.__path__):
        if not module.ispkg:
            continue
        provider = importlib.import_module(f"faker.providers.person.{module.name}").Provider
        for attribute in ("first_names", "first_names_male", "first_names_female"):
            value = provider.__dict__.get(attribute)  # locales without their own list inherit
            if isinstance(value, list | tuple | dict | set | frozenset):
                names.update(value)
    namer = _nicknamer()
    for table in (namer.canonical_lookup, namer.nickname_lookup):
        for key, values in table.items():
            names.add(key)
            names.update(values)
    folded = (fold(name).replace(" ", "") for name in names)
    return frozenset(name for name in folded if name.isalpha())


def is_given_name(token: str) -> bool:
    """Whether a normalised given name is a name people have, not only a misspelling of one
    (about 28,000 names from Faker's locales and the nickname table; loaded on first use in
    about 0.7 s). Used where a spelling difference may be a sibling's name, not a typo."""
    return token in _given_names()


# --------------------------------------------------------------------------------------------
# dates


@dataclass(frozen=True, slots=True)
class PartialDate:
    """A birth date known to the year, month or day."""

    year: int
    month: int | None = None
    day: int | None = None

    @property
    def precision(self) -> str:
        if self.day is not None:
            return "day"
        if self.month is not None:
            return "month"
        return "year"

    @property
    def iso(self) -> str:
        if self.month is None:
            return f"{self.year:04d}"
        if self.day is None:
            return f"{self.year:04d}-{self.month:02d}"
        return f"{self.year:04d}-{self.month:02d}-{self.day:02d}"


_ISO_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?(?:[T ].*)?$")
_HL7_DATE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(?:\d{2,6}(?:\.\d{1,4})?)?(?:[+-]\d{4})?$")


#: Names given to a newborn (or an unidentified patient) before the real one is known, as
#: folded here, compared without spaces (BABYGIRL is BABY GIRL). BABY alone is left out: it
#: is a given name and a family name in Kerala (BABY JOHN). A site adds its own through
#: ``[matching] placeholder_names`` (matching.decision's rule reads that list).
PLACEHOLDER_NAMES = frozenset({"BABY GIRL", "BABY BOY", "INFANT", "NEWBORN", "BB", "BB GIRL",
                               "BB BOY", "UNKNOWN"})
_PLACEHOLDERS_COMPACT = frozenset("".join(p.split()) for p in PLACEHOLDER_NAMES)


def placeholder_given(
    tokens: Sequence[str], compact: Collection[str] = _PLACEHOLDERS_COMPACT
) -> bool:
    """Whether name tokens (normalised) are a placeholder (``compact``: placeholders without
    spaces, default :data:`PLACEHOLDER_NAMES`), a trailing twin letter or number ignored
    (BABY GIRL A, BABY BOY 2): no name to compare."""
    tokens = list(tokens)
    while len(tokens) > 1 and (len(tokens[-1]) == 1 or tokens[-1].isdigit()):
        tokens = tokens[:-1]
    return bool(tokens) and "".join(tokens) in compact


#: The problem of a birth date after today: a data entry error (2062 for 1962), kept and
#: compared (``normalize_record``) with a weight of its own, never trusted as a plain date.
FUTURE = "in the future"


def _parse(text: str | None, today: date | None) -> tuple[PartialDate | None, str | None]:
    """The date and its problem. A date after today is returned with the problem FUTURE;
    every other problem comes without a date."""
    if text is None:
        return None, "missing"
    raw = str(text).strip()
    if not raw:
        return None, "missing"
    match = _ISO_DATE.match(raw) if "-" in raw[:8] else _HL7_DATE.match(raw)
    if match is None:
        return None, "unrecognised format"
    year_s, month_s, day_s = match.groups()
    year = int(year_s)
    month = int(month_s) if month_s else None
    day = int(day_s) if day_s else None
    today = today or date.today()
    if year < MIN_BIRTH_YEAR:
        return None, f"year before {MIN_BIRTH_YEAR}"
    if month is not None and not 1 <= month <= 12:
        return None, "month out of range"
    if day is not None:
        try:
            full = date(year, month or 1, day)
        except ValueError:
            return None, "day out of range for month"
        if full > today:
            return PartialDate(year, month, day), FUTURE
    elif year > today.year or (month is not None and (year, month) > (today.year, today.month)):
        return PartialDate(year, month, day), FUTURE
    return PartialDate(year, month, day), None


def parse_birth_date(text: str | None, *, today: date | None = None) -> PartialDate | None:
    """ISO (YYYY, YYYY-MM, YYYY-MM-DD) or HL7 (YYYY[MM[DD[time]]]) birth date; None if invalid
    (a date after today included)."""
    parsed, problem = _parse(text, today)
    return None if problem else parsed


def birth_date_problem(text: str | None, *, today: date | None = None) -> str | None:
    """Why ``parse_birth_date`` rejects the text ("missing", "month out of range", ...) or None."""
    return _parse(text, today)[1]


# --------------------------------------------------------------------------------------------
# sex, phone, address, identifiers


def normalize_sex(code: str | None) -> str | None:
    """HL7 table 0001 / FHIR administrative-gender to "M", "F", "O" or "U"; unknown codes -> None.

    HL7 "A" (ambiguous) maps to "O"; HL7 "N" (not applicable) maps to "U".
    """
    if code is None:
        return None
    return _SEX_CODES.get(fold(str(code)))


def normalize_phone(value: str | None, region: str = "US") -> str:
    """Phone digits: E.164 without "+" when phonenumbers can parse it, else the last 10 digits."""
    if not value:
        return ""
    text = str(value)
    digits = re.sub(r"\D", "", text)
    if len(digits) < 7:
        return ""
    try:
        parsed = phonenumbers.parse(text, region or "US")
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is not None and parsed.national_number:
        return f"{parsed.country_code}{parsed.national_number}"
    return digits[-10:]


def phone_number(phone: Any) -> str | None:
    """The number of one ``phones`` entry, to be normalised: a string as it is; from a dict
    (an HL7 v2 XTN or FHIR ContactPoint as identity.model.Phone holds it, or just ``value``)
    XTN.1 (``value`` when ``formatted``, the default), else XTN.12 (``unformatted``), else
    XTN.5 + .6 + .7 (``country_code``, ``area_code``, ``local_number``). None for an e-mail
    address (no number) and for a FHIR contact point that is not a phone or sms."""
    if not isinstance(phone, dict):
        return None if phone is None else str(phone)
    if phone.get("system") not in (None, "phone", "sms"):
        return None
    if phone.get("formatted", True) and phone.get("value"):
        return str(phone["value"])
    if phone.get("unformatted"):
        return str(phone["unformatted"])
    parts = [str(phone.get(key) or "") for key in ("country_code", "area_code", "local_number")]
    return "".join(parts) or None


def normalize_postal_code(value: str | None, country: str | None = None) -> str:
    """Postal code folded without spaces; US ZIP+4 cut to the 5-digit ZIP."""
    code = fold(value).replace(" ", "")
    if not code:
        return ""
    if (country or "US").upper() in ("US", "USA") and code.isdigit() and len(code) in (9, 5):
        return code[:5]
    return code


def normalize_address(address: dict[str, Any]) -> dict[str, Any]:
    """Address lines to unified tokens (STREET -> ST, APARTMENT -> APT ...) plus its parts."""
    lines = address.get("lines") or []
    if isinstance(lines, str):
        lines = [lines]
    words: list[str] = []
    for line in lines:
        for token in fold(line).split():
            words.append(ADDRESS_WORDS.get(token, token))
    country = fold(address.get("country")) or ""
    tokens = [w for w in words if w not in ADDRESS_NOISE]
    return {
        "line": " ".join(words),
        "tokens": tokens[:MAX_TOKENS],
        "house_number": next((t for t in tokens if t[:1].isdigit()), ""),
        "city": fold(address.get("city")),
        "state": fold(address.get("state")),
        "postal_code": normalize_postal_code(address.get("postal_code"), country or None),
        "country": country,
        "use": address.get("use") or "",
    }


def clean_identifier(identifier: dict[str, Any]) -> dict[str, Any] | None:
    """An identifier with its value cleaned; SSN-like values to 9 digits; None if empty/invalid."""
    domain = str(identifier.get("domain") or "").strip()
    value = str(identifier.get("value") or "").strip()
    id_type = str(identifier.get("type") or "").strip().upper()
    if not value:
        return None
    is_ssn = id_type in ("SS", "SSN") or domain.upper() in _SSN_DOMAINS
    if is_ssn:
        digits = re.sub(r"\D", "", value)
        if len(digits) != 9 or digits[:3] in ("000", "666") or digits[0] == "9":
            return None
        if digits[3:5] == "00" or digits[5:] == "0000" or len(set(digits)) == 1:
            return None
        if digits in ("123456789", "078051120"):
            return None
        value = digits
    else:
        value = re.sub(r"\s+", "", value).upper()
    return {
        "domain": domain,
        "value": value,
        "type": id_type,
        "person_level": is_ssn or id_type in PERSON_LEVEL_TYPES,
    }


# --------------------------------------------------------------------------------------------
# the record


def _name_parts(name: dict[str, Any]) -> dict[str, Any]:
    given_field = name.get("given") or []
    if isinstance(given_field, str):
        given_field = [given_field]
    given_tokens: list[str] = []
    first_given = ""
    further: list[str] = []  # further given names of a name without a first one
    for i, part in enumerate(given_field):
        if i == 0 and not str(part or "").strip():  # sent blank, not a title that folds away
            further = [t for p in given_field[1:] for t in normalize_given(p).split()]
            break
        tokens = normalize_given(part).split()
        if tokens and not given_tokens:
            first_given = " ".join(tokens)  # HANS JOSEF for Hans-Josef: one compound name
        given_tokens.extend(tokens)
    family_raw = name.get("family") or ""
    family = normalize_family(family_raw)
    suffix = normalize_suffix(name.get("suffix")) or _trailing_suffix(family_raw, given_field)
    family_tokens = family.split()
    core = [t for t in family_tokens if t not in PARTICLES] or family_tokens
    return {
        "family": family,
        "family_tokens": family_tokens[:MAX_TOKENS],
        "family_core": " ".join(core),
        "family_key": "".join(family_tokens),
        "particles": [t for t in family_tokens if t in PARTICLES and t not in core],
        "given_tokens": given_tokens[:MAX_TOKENS],
        "first_given": first_given,
        "further_given": further[:MAX_TOKENS],
        "prefix": fold(name.get("prefix")),
        "suffix": suffix,
        "use": str(name.get("use") or "").upper(),
    }


def _trailing_suffix(family_raw: str, given: list[str]) -> str:
    for text in (family_raw, given[-1] if given else ""):
        tokens = fold(text).split()
        if len(tokens) > 1 and tokens[-1] in SUFFIXES:
            return SUFFIXES[tokens[-1]]
    return ""


def _region(addresses: list[dict[str, Any]]) -> str:
    for address in addresses:
        country = fold(address.get("country"))
        if len(country) == 2:
            return country
        if country in ("USA", "UNITED STATES"):
            return "US"
    return "US"


def normalize_record(
    demographics: dict[str, Any], identifiers: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A JSON-serialisable normalised record covering every demographic field and identifier.

    Keys (all always present): family, family_tokens, family_core, family_key, family_phonetic,
    particles, given, given_tokens, first_given (the first given name whole, compound names
    included: MARIA LUISA), given_phonetic, given_variants, middle, initial, prefix,
    suffix, previous_family, other_given, mothers_maiden_name, birth_date, birth_year,
    birth_month, birth_day, birth_precision, birth_date_problem, sex, phones, addresses,
    address_tokens, postal_codes, identifiers, multiple_birth.
    """
    names = [n for n in (demographics.get("names") or []) if isinstance(n, dict)]
    parts = [_name_parts(n) for n in names]
    primary = parts[0] if parts else _name_parts({})
    given_tokens = primary["given_tokens"]
    given = given_tokens[0] if given_tokens else ""
    previous_family: list[str] = []
    other_given: list[str] = []
    for other in parts[1:]:
        if other["family"] and other["family"] != primary["family"]:
            if other["family"] not in previous_family:
                previous_family.append(other["family"])
        if other["given_tokens"] and other["given_tokens"][0] != given:
            other_given.append(other["given_tokens"][0])
    mmn = normalize_family(demographics.get("mothers_maiden_name"))

    raw_date = demographics.get("birth_date")
    birth, problem = _parse(raw_date, None)  # a date after today is kept, with its problem

    addresses = [
        normalize_address(a) for a in (demographics.get("addresses") or []) if isinstance(a, dict)
    ]
    region = _region(demographics.get("addresses") or [])
    phones: list[str] = []
    for phone in demographics.get("phones") or []:
        digits = normalize_phone(phone_number(phone), region)
        if digits and digits not in phones:
            phones.append(digits)
    address_tokens: list[str] = []
    for address in addresses[:2]:
        for token in address["tokens"]:
            if token not in address_tokens:
                address_tokens.append(token)
    postal_codes = []
    for address in addresses:
        if address["postal_code"] and address["postal_code"] not in postal_codes:
            postal_codes.append(address["postal_code"])

    cleaned_ids = []
    for identifier in identifiers or []:
        cleaned = clean_identifier(identifier) if isinstance(identifier, dict) else None
        if cleaned is not None:
            cleaned_ids.append(cleaned)

    multiple = demographics.get("multiple_birth")
    if isinstance(multiple, bool) or multiple is None:
        multiple_birth: int | bool | None = multiple
    elif isinstance(multiple, int | float):
        multiple_birth = int(multiple)
    else:
        text = fold(str(multiple))
        multiple_birth = True if text in ("Y", "YES", "TRUE") else (
            False if text in ("N", "NO", "FALSE") else (int(text) if text.isdigit() else None)
        )

    family_core_first = primary["family_core"].split()[0] if primary["family_core"] else ""
    return {
        "family": primary["family"],
        "family_tokens": primary["family_tokens"],
        "family_core": primary["family_core"],
        "family_key": primary["family_key"],
        "family_phonetic": phonetic(family_core_first),
        "particles": primary["particles"],
        "given": given,
        "given_tokens": given_tokens,
        "first_given": primary["first_given"],
        "given_phonetic": phonetic(given),
        "given_variants": list(given_name_variants(given)) if given else [],
        "middle": " ".join(given_tokens[1:] or primary["further_given"]),
        "initial": given[:1],
        "prefix": primary["prefix"],
        "suffix": primary["suffix"],
        "previous_family": previous_family[:MAX_TOKENS],
        "other_given": other_given[:MAX_TOKENS],
        "mothers_maiden_name": mmn,
        "birth_date": birth.iso if birth else None,
        "birth_year": birth.year if birth else None,
        "birth_month": birth.month if birth else None,
        "birth_day": birth.day if birth else None,
        "birth_precision": birth.precision if birth else None,
        "birth_date_problem": problem if raw_date not in (None, "") else None,
        "sex": normalize_sex(demographics.get("sex")),
        "phones": phones,
        "addresses": addresses,
        "address_tokens": address_tokens[: 2 * MAX_TOKENS],
        "postal_codes": postal_codes,
        "identifiers": cleaned_ids,
        "multiple_birth": multiple_birth,
    }
