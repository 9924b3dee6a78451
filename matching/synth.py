"""Synthetic patient population with ground truth, realistic errors and hard non-matches.

``generate(persons, duplicate_rate, seed, hard=False)`` returns one :class:`SynthRecord` per
source record. Every record knows its true ``person_id``; duplicates of a person are spread over
several source domains and carry realistic errors (keyboard and OCR typos, phonetic spellings,
nicknames, swapped given/family, marriage name change, hyphenation change, day/month swap,
missing fields, moves, new phone). Adversarial non-matches share a lot without being the same
person: twins (same birth date, family, address; different, sometimes similar, given names),
Jr/Sr pairs, siblings, spouses at one address, and clusters of very common names born in the
same year. ``relations`` on each record names the group (``twin``, ``jr_sr``, ...) so that
evaluation can count links inside those groups.

Faker (several locales) is only used to fill name, street and city pools once per seed;
sampling from the pools keeps 100,000 persons well under a minute. Same seed, same output.

Writers: :func:`write_csv` (one row per record, ground-truth ``person_id`` column; read back by
:func:`read_csv`), :func:`write_ndjson` (FHIR R4 Patient resources as plain dicts) and
:func:`write_hl7` (HL7 v2.5 ADT^A04 messages, segments separated by carriage returns, optionally
MLLP-framed). The FHIR and HL7 writers name each domain by the namespace and OID of
``authorities`` (default: :data:`SOURCE_DOMAINS`, and ``SSA`` for the SSN), and the HL7 writer
takes MSH-3 from ``applications`` (default: the source domain's namespace).
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from faker import Faker
from nicknames import NickNamer
from rapidfuzz.distance import OSA

from matching.normalize import SSN_OID, fold

__all__ = [
    "SOURCE_DOMAINS",
    "SSN_DOMAIN",
    "SynthRecord",
    "generate",
    "hl7_escape",
    "read_csv",
    "to_fhir_patient",
    "to_hl7_adt_a04",
    "write_csv",
    "write_hl7",
    "write_ndjson",
]

#: Source domains (assigning authorities of the local MRNs): namespace -> OID.
SOURCE_DOMAINS = {
    "STMARY": "1.3.6.1.4.1.21367.13.20.1000",
    "CITYGEN": "1.3.6.1.4.1.21367.13.20.2000",
    "NORTHCLINIC": "1.3.6.1.4.1.21367.13.20.3000",
    "LABCORE": "1.3.6.1.4.1.21367.13.20.4000",
    "RXPLUS": "1.3.6.1.4.1.21367.13.20.5000",
}
SSN_DOMAIN = SSN_OID  # the SSN assigning authority of generated records
TODAY = date(2026, 1, 1)
#: Share of duplicate records registered again in the source that already holds the person
#: (a within-source duplicate with a new MRN); the others go to another source.
SAME_SOURCE_SHARE = 0.02  # fixed, so that ages and the output do not depend on the clock

LOCALES = (("en_US", 0.62), ("es_MX", 0.14), ("de_DE", 0.07), ("fr_FR", 0.06),
           ("vi_VN", 0.06), ("it_IT", 0.05))
COMMON_NAMES = (("SMITH", "JOHN", "M"), ("JOHNSON", "MICHAEL", "M"), ("GARCIA", "MARIA", "F"),
                ("WILLIAMS", "JAMES", "M"), ("BROWN", "MARY", "F"), ("NGUYEN", "LINH", "F"),
                ("RODRIGUEZ", "JOSE", "M"), ("JONES", "DAVID", "M"))
SIMILAR_TWIN_NAMES = {
    "M": (("ETHAN", "EVAN"), ("JACOB", "JACK"), ("AIDEN", "AARON"), ("DANIEL", "DAVID"),
          ("MARCUS", "MARIO"), ("TYLER", "TAYLOR"), ("JASON", "JAYDEN")),
    "F": (("EMMA", "ELLA"), ("MADISON", "MACKENZIE"), ("ANNA", "HANNAH"), ("JULIA", "JULIE"),
          ("MIA", "MAYA"), ("SARA", "SIERRA"), ("LILY", "LUCY")),
}

_KEYBOARD = [
    "QWERTYUIOP", "ASDFGHJKL", "ZXCVBNM",
]
_NEIGHBOURS: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD):
    for _c, _ch in enumerate(_row):
        near = ""
        if _c > 0:
            near += _row[_c - 1]
        if _c < len(_row) - 1:
            near += _row[_c + 1]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_KEYBOARD):
                near += _KEYBOARD[_other][max(0, _c - 1) : _c + 1]
        _NEIGHBOURS[_ch] = near
_OCR = (("RN", "M"), ("M", "RN"), ("CL", "D"), ("D", "CL"), ("I", "L"), ("L", "I"), ("U", "V"),
        ("V", "U"), ("E", "F"), ("O", "Q"), ("H", "N"), ("VV", "W"))
_PHONETIC = (("PH", "F"), ("F", "PH"), ("CK", "K"), ("C", "K"), ("K", "C"), ("Y", "I"),
             ("I", "Y"), ("EI", "IE"), ("IE", "EI"), ("SON", "SEN"), ("SEN", "SON"),
             ("TH", "T"), ("EY", "IE"), ("LL", "L"), ("NN", "N"), ("TT", "T"), ("SS", "S"),
             ("Z", "S"), ("S", "Z"), ("AE", "E"), ("OU", "U"), ("MAC", "MC"), ("MC", "MAC"))


@dataclass
class SynthRecord:
    """One source record of a synthetic person, with its ground truth."""

    record_id: str
    person_id: str
    source_domain: str
    demographics: dict[str, Any]
    identifiers: list[dict[str, Any]]
    duplicate: bool = False
    errors: list[str] = field(default_factory=list)
    relations: dict[str, str] = field(default_factory=dict)

    @property
    def mrn(self) -> str:
        for identifier in self.identifiers:
            if identifier["domain"] == self.source_domain:
                return identifier["value"]
        return ""

    def as_input(self) -> dict[str, Any]:
        """The {"demographics", "identifiers"} shape that the matching functions accept."""
        return {"demographics": self.demographics, "identifiers": self.identifiers}


# --------------------------------------------------------------------------------------------
# pools


@dataclass
class _Pools:
    family: dict[str, list[str]]
    given_m: dict[str, list[str]]
    given_f: dict[str, list[str]]
    streets: list[str]
    street_suffixes: list[str]
    places: list[tuple[str, str, str, str]]  # city, state, zip3, area code


def _pools(seed: int, size: int) -> _Pools:
    family: dict[str, list[str]] = {}
    given_m: dict[str, list[str]] = {}
    given_f: dict[str, list[str]] = {}
    for index, (locale, _) in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed * 101 + index)
        family[locale] = [fake.last_name() for _ in range(size)]
        given_m[locale] = [fake.first_name_male() for _ in range(size // 2)]
        given_f[locale] = [fake.first_name_female() for _ in range(size // 2)]
    fake = Faker("en_US")
    fake.seed_instance(seed * 101 + 99)
    streets = [fake.last_name() if i % 3 else fake.first_name() for i in range(size)]
    suffixes = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Drive", "Lane", "Court",
                "Boulevard", "Place", "Way", "Terrace"]
    places = []
    for _ in range(max(50, size // 10)):
        places.append((fake.city(), fake.state_abbr(include_territories=False),
                       f"{fake.random_int(100, 999):03d}", f"{fake.random_int(201, 989)}"))
    return _Pools(family, given_m, given_f, streets, suffixes, places)


# --------------------------------------------------------------------------------------------
# persons


@dataclass
class _Person:
    person_id: str
    locale: str
    sex: str
    given: str
    middle: str
    family: str
    birth: date
    address: dict[str, Any]
    phone: str
    ssn: str | None
    mothers_maiden_name: str | None
    suffix: str = ""
    multiple_birth: bool | int | None = None
    previous_family: str | None = None
    relations: dict[str, str] = field(default_factory=dict)


class _Generator:
    def __init__(self, seed: int, hard: bool, pool_size: int) -> None:
        self.rng = random.Random(seed)
        self.hard = hard
        self.pools = _pools(seed, pool_size)
        self.nicknamer = NickNamer()
        self._nick_cache: dict[str, list[str]] = {}
        self.persons: list[_Person] = []
        self.ssns: set[str] = set()
        self.locales = [loc for loc, _ in LOCALES]
        self.locale_weights = [w for _, w in LOCALES]

    # ---- basic values

    def locale(self) -> str:
        return self.rng.choices(self.locales, self.locale_weights)[0]

    def given(self, locale: str, sex: str) -> str:
        pool = (self.pools.given_m if sex == "M" else self.pools.given_f)[locale]
        return self.rng.choice(pool)

    def family(self, locale: str) -> str:
        return self.rng.choice(self.pools.family[locale])

    def birth(self, min_age: int = 0, max_age: int = 95) -> date:
        days = self.rng.randint(min_age * 365, max_age * 365 + 364)
        return TODAY - timedelta(days=days + 1)

    def address(self) -> dict[str, Any]:
        city, state, zip3, _ = self.rng.choice(self.pools.places)
        street_name = self.rng.choice(self.pools.streets)
        street = f"{street_name} {self.rng.choice(self.pools.street_suffixes)}"
        lines = [f"{self.rng.randint(1, 9999)} {street}"]
        if self.rng.random() < 0.2:
            lines.append(f"Apt {self.rng.randint(1, 40)}")
        return {"lines": lines, "city": city, "state": state,
                "postal_code": f"{zip3}{self.rng.randint(0, 99):02d}", "country": "US", "use": "H"}

    def phone(self) -> str:
        area = self.rng.choice(self.pools.places)[3]
        return f"{area}{self.rng.randint(200, 999)}{self.rng.randint(0, 9999):04d}"

    def ssn(self) -> str | None:
        if self.rng.random() > 0.7:
            return None
        while True:
            value = f"{self.rng.randint(1, 899):03d}{self.rng.randint(1, 99):02d}" \
                    f"{self.rng.randint(1, 9999):04d}"
            if value[:3] != "666" and value not in self.ssns:
                self.ssns.add(value)
                return value

    def new_person(self, **overrides: Any) -> _Person:
        locale = overrides.pop("locale", None) or self.locale()
        sex = overrides.pop("sex", None) or self.rng.choice("MF")
        person = _Person(
            person_id=f"P{len(self.persons) + 1:07d}",
            locale=locale,
            sex=sex,
            given=overrides.pop("given", None) or self.given(locale, sex),
            middle=self.given(locale, sex) if self.rng.random() < 0.5 else "",
            family=overrides.pop("family", None) or self.family(locale),
            birth=overrides.pop("birth", None) or self.birth(),
            address=overrides.pop("address", None) or self.address(),
            phone=overrides.pop("phone", None) or self.phone(),
            ssn=self.ssn(),
            mothers_maiden_name=overrides.pop("mothers_maiden_name", None)
            or (self.family(locale) if self.rng.random() < 0.3 else None),
        )
        for key, value in overrides.items():
            setattr(person, key, value)
        self.persons.append(person)
        return person

    # ---- households and adversarial groups

    def household(self, budget: int) -> None:
        """Create a group of related persons (uses ``budget`` as an upper bound)."""
        rng = self.rng
        roll = rng.random()
        hard = self.hard
        twin_share, jr_share, common_share = (0.12, 0.1, 0.012) if hard else (0.04, 0.04, 0.0)
        if roll < twin_share and budget >= 2:
            self.twins()
        elif roll < twin_share + jr_share and budget >= 2:
            self.junior_senior()
        elif roll < twin_share + jr_share + common_share and budget >= 6:
            self.common_name_cluster(min(budget, rng.randint(6, 20)))
        elif roll < 0.55 and budget >= 2:
            self.family_home(min(budget, rng.randint(2, 5)))
        else:
            self.new_person()

    def twins(self) -> None:
        rng = self.rng
        group = f"T{len(self.persons)}"
        first = self.new_person(birth=self.birth(0, 70), multiple_birth=1,
                                relations={"twin": group})
        if rng.random() < 0.5:
            sex = first.sex
            pairs = self.similar_twin_names(sex)
            a, b = rng.choice(pairs)
            first.given = a.title()
            second_given = b.title()
        else:
            sex = rng.choice("MF")
            second_given = self.given(first.locale, sex)
            while not self.distinct_names(first.given, second_given):
                second_given = self.given(first.locale, sex)
        self.new_person(locale=first.locale, sex=sex, given=second_given, family=first.family,
                        birth=first.birth, address=dict(first.address), phone=first.phone,
                        mothers_maiden_name=first.mothers_maiden_name, multiple_birth=2,
                        relations={"twin": group})

    def distinct_names(self, a: str, b: str) -> bool:
        """Not equal, not nicknames of each other, at least two edits apart (after folding)."""
        a, b = fold(a).lower(), fold(b).lower()
        related_a = {a} | self.nicknamer.canonicals_of(a) | self.nicknamer.nicknames_of(a)
        related_b = {b} | self.nicknamer.canonicals_of(b) | self.nicknamer.nicknames_of(b)
        return not related_a & related_b and OSA.distance(a, b) >= 2

    def similar_twin_names(self, sex: str) -> list[tuple[str, str]]:
        """Similar twin names that are not nicknames of each other (parents avoid those); each
        pair is at least two edits apart (closer names are indistinguishable from a typo)."""
        return [(a, b) for a, b in SIMILAR_TWIN_NAMES[sex] if self.distinct_names(a, b)]

    def junior_senior(self) -> None:
        rng = self.rng
        group = f"J{len(self.persons)}"
        senior = self.new_person(sex="M", birth=self.birth(45, 90), suffix="SR",
                                 relations={"jr_sr": group})
        junior_birth = senior.birth + timedelta(days=rng.randint(19 * 365, 38 * 365))
        if junior_birth >= TODAY:
            junior_birth = TODAY - timedelta(days=400)
        self.new_person(locale=senior.locale, sex="M", given=senior.given,
                        family=senior.family, birth=junior_birth,
                        address=dict(senior.address), phone=senior.phone, suffix="JR",
                        relations={"jr_sr": group})
        senior.middle = senior.middle or self.given(senior.locale, "M")
        self.persons[-1].middle = senior.middle if rng.random() < 0.6 else ""

    def common_name_cluster(self, size: int) -> None:
        family, given, sex = self.rng.choice(COMMON_NAMES)
        year = self.rng.randint(1950, 2010)
        group = f"C{len(self.persons)}"
        for _ in range(size):
            birth = date(year, self.rng.randint(1, 12), self.rng.randint(1, 28))
            self.new_person(locale="en_US", sex=sex, given=given.title(),
                            family=family.title(), birth=birth, relations={"common": group})

    def family_home(self, size: int) -> None:
        rng = self.rng
        group = f"H{len(self.persons)}"
        address, phone = self.address(), self.phone()
        locale = self.locale()
        family = self.family(locale)
        mother_maiden = self.family(locale)
        parent_a = self.new_person(locale=locale, sex="M", family=family, address=address,
                                   phone=phone, birth=self.birth(25, 70),
                                   relations={"spouse": group})
        wife_given = self.given(locale, "F")
        while not self.distinct_names(wife_given, parent_a.given):
            wife_given = self.given(locale, "F")
        parent_b = self.new_person(
            locale=locale, sex="F", given=wife_given,
            family=family if rng.random() < 0.8 else mother_maiden,
            address=dict(address), phone=phone,
            birth=parent_a.birth + timedelta(days=rng.randint(-5 * 365, 5 * 365)),
            relations={"spouse": group},
        )
        if parent_b.family == family:
            parent_b.previous_family = mother_maiden
        taken = [parent_a.given, parent_b.given]
        for _ in range(size - 2):
            child_birth = parent_b.birth + timedelta(days=rng.randint(20 * 365, 40 * 365))
            if child_birth >= TODAY:
                child_birth = TODAY - timedelta(days=rng.randint(30, 3000))
            sex = rng.choice("MF")
            # one household rarely reuses a first name (a namesake son is the Jr/Sr group's case)
            given = self.given(locale, sex)
            for _ in range(20):
                if all(self.distinct_names(given, other) for other in taken):
                    break
                given = self.given(locale, sex)
            taken.append(given)
            self.new_person(locale=locale, sex=sex, given=given, family=family,
                            address=dict(address), phone=phone, birth=child_birth,
                            mothers_maiden_name=mother_maiden, relations={"sibling": group})

    # ---- records and errors

    def demographics(self, person: _Person) -> dict[str, Any]:
        name: dict[str, Any] = {"family": person.family, "given": [person.given], "use": "L"}
        if person.middle:
            name["given"].append(person.middle)
        if person.suffix:
            name["suffix"] = person.suffix.title()
        names = [name]
        if person.previous_family:
            names.append({"family": person.previous_family, "given": [person.given], "use": "M"})
        demo: dict[str, Any] = {
            "names": names,
            "birth_date": person.birth.isoformat(),
            "sex": person.sex,
            "addresses": [json.loads(json.dumps(person.address))],
            "phones": [{"value": self.format_phone(person.phone), "use": "home"}],
        }
        if person.mothers_maiden_name:
            demo["mothers_maiden_name"] = person.mothers_maiden_name
        if person.multiple_birth is not None and self.rng.random() < 0.6:
            demo["multiple_birth"] = person.multiple_birth
        return demo

    def format_phone(self, digits: str) -> str:
        style = self.rng.randrange(4)
        if style == 0:
            return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
        if style == 1:
            return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
        if style == 2:
            return f"+1 {digits[:3]} {digits[3:6]} {digits[6:]}"
        return digits

    def typo(self, text: str) -> str:
        if len(text) < 3:
            return text
        rng = self.rng
        upper = text.upper()
        kind = rng.randrange(5)
        pos = rng.randrange(1, len(text))
        if kind == 0:  # keyboard neighbour substitution
            ch = upper[pos]
            near = _NEIGHBOURS.get(ch)
            if near:
                upper = upper[:pos] + rng.choice(near) + upper[pos + 1 :]
        elif kind == 1:  # deletion
            upper = upper[:pos] + upper[pos + 1 :]
        elif kind == 2:  # transposition
            if pos < len(upper) - 1:
                upper = upper[:pos] + upper[pos + 1] + upper[pos] + upper[pos + 2 :]
        elif kind == 3:  # doubled letter
            upper = upper[:pos] + upper[pos] + upper[pos:]
        else:  # OCR confusion
            options = [(a, b) for a, b in _OCR if a in upper[1:]]
            if options:
                a, b = rng.choice(options)
                upper = upper[0] + upper[1:].replace(a, b, 1)
        return upper.title() if text[:1].isupper() and not text.isupper() else upper

    def phonetic_spelling(self, text: str) -> str:
        upper = text.upper()
        options = [(a, b) for a, b in _PHONETIC if a in upper]
        if not options:
            return self.typo(text)
        a, b = self.rng.choice(options)
        return upper.replace(a, b, 1).title()

    def nickname(self, given: str) -> str | None:
        key = given.lower()
        if key not in self._nick_cache:
            self._nick_cache[key] = sorted(self.nicknamer.nicknames_of(key))
        options = self._nick_cache[key]
        return self.rng.choice(options).title() if options else None

    def duplicate(self, person: _Person) -> tuple[dict[str, Any], list[str]]:
        rng = self.rng
        demo = self.demographics(person)
        name = demo["names"][0]
        errors: list[str] = []
        n_errors = rng.choices((0, 1, 2, 3), (0.25, 0.4, 0.25, 0.1) if self.hard
                               else (0.35, 0.4, 0.2, 0.05))[0]
        catalogue = [
            ("family_typo", 8), ("given_typo", 5), ("phonetic_family", 5),
            ("phonetic_given", 3), ("nickname", 8), ("swap_names", 1.5),
            ("marriage", 4), ("hyphenation", 3), ("day_month_swap", 3), ("dob_digit", 3),
            ("missing_fields", 10), ("moved", 12), ("new_phone", 10), ("middle_dropped", 6),
            ("uppercase", 6), ("no_sex", 2),
        ]
        kinds = [k for k, _ in catalogue]
        weights = [w for _, w in catalogue]
        chosen: list[str] = []
        while len(chosen) < n_errors:
            kind = rng.choices(kinds, weights)[0]
            if kind not in chosen:
                chosen.append(kind)
        for kind in chosen:
            applied = self.apply_error(kind, person, demo, name)
            if applied:
                errors.append(kind)
        return demo, errors

    def apply_error(
        self, kind: str, person: _Person, demo: dict[str, Any], name: dict[str, Any]
    ) -> bool:
        rng = self.rng
        if kind == "family_typo":
            name["family"] = self.typo(name["family"])
        elif kind == "given_typo":
            name["given"][0] = self.typo(name["given"][0])
        elif kind == "phonetic_family":
            name["family"] = self.phonetic_spelling(name["family"])
        elif kind == "phonetic_given":
            name["given"][0] = self.phonetic_spelling(name["given"][0])
        elif kind == "nickname":
            nick = self.nickname(name["given"][0])
            if not nick:
                return False
            name["given"][0] = nick
        elif kind == "swap_names":
            name["family"], name["given"][0] = name["given"][0], name["family"]
        elif kind == "marriage":
            if person.sex != "F" or (TODAY - person.birth).days < 18 * 365:
                return False
            new_family = self.family(person.locale)
            if rng.random() < 0.5:
                demo["names"].append({"family": name["family"], "given": list(name["given"]),
                                      "use": "M"})
            name["family"] = new_family
        elif kind == "hyphenation":
            if "-" in name["family"]:
                name["family"] = name["family"].split("-")[rng.randrange(2)]
            elif " " in name["family"]:
                name["family"] = name["family"].replace(" ", "-")
            else:
                other = self.family(person.locale)
                name["family"] = (
                    f"{name['family']}-{other}" if rng.random() < 0.7
                    else f"{other}-{name['family']}"
                )
        elif kind == "day_month_swap":
            birth = person.birth
            if birth.day > 12 or birth.day == birth.month:
                return False
            demo["birth_date"] = date(birth.year, birth.day, birth.month).isoformat()
        elif kind == "dob_digit":
            text = person.birth.strftime("%Y%m%d")
            for _ in range(10):
                pos = rng.choice((3, 5, 7, 6))
                changed = text[:pos] + str(rng.randrange(10)) + text[pos + 1 :]
                try:
                    value = datetime.strptime(changed, "%Y%m%d").date()
                except ValueError:
                    continue
                if changed != text and value < TODAY:
                    demo["birth_date"] = value.isoformat()
                    return True
            return False
        elif kind == "missing_fields":
            for key in rng.sample(["phones", "addresses", "mothers_maiden_name", "sex"], 2):
                demo.pop(key, None)
            if rng.random() < 0.1:
                demo.pop("birth_date", None)
        elif kind == "moved":
            demo["addresses"] = [self.address()]
        elif kind == "new_phone":
            demo["phones"] = [{"value": self.format_phone(self.phone()), "use": "mobile"}]
        elif kind == "middle_dropped":
            if len(name["given"]) < 2:
                return False
            name["given"] = name["given"][:1] if rng.random() < 0.6 else [
                name["given"][0], name["given"][1][0]
            ]
        elif kind == "uppercase":
            name["family"] = name["family"].upper()
            name["given"] = [g.upper() for g in name["given"]]
        elif kind == "no_sex":
            demo["sex"] = rng.choice(["U", "unknown"])
        return True


def generate(
    persons: int, duplicate_rate: float, seed: int, hard: bool = False
) -> list[SynthRecord]:
    """A synthetic population of ``persons`` people and their source records.

    ``duplicate_rate`` is the share of persons that have more than one record (each such
    person gets 1 extra record, sometimes 2 or 3). Duplicates go to other source domains
    mostly (SAME_SOURCE_SHARE stay in the same source, as a within-source duplicate with a new
    MRN). ``hard`` raises the share of twins, Jr/Sr pairs and common-name clusters, and the
    error rate.
    """
    if persons < 0 or not 0.0 <= duplicate_rate <= 1.0:
        raise ValueError("persons must be >= 0 and duplicate_rate in [0, 1]")
    pool_size = 400 if persons < 2000 else 2000
    gen = _Generator(seed, hard, pool_size)
    while len(gen.persons) < persons:
        gen.household(persons - len(gen.persons))
    gen.persons = gen.persons[:persons]
    rng = gen.rng
    domains = list(SOURCE_DOMAINS)
    counters = dict.fromkeys(domains, 0)
    records: list[SynthRecord] = []

    def mrn(domain: str) -> str:
        counters[domain] += 1
        return f"{domain[:2]}{counters[domain] + 100000:07d}"

    for person in gen.persons:
        home = rng.choice(domains)
        extra = 0
        if rng.random() < duplicate_rate:
            extra = rng.choices((1, 2, 3), (0.8, 0.15, 0.05))[0]
        used = [home]
        for copy in range(1 + extra):
            if copy == 0:
                domain, demo, errors = home, gen.demographics(person), []
            else:
                free = [d for d in domains if d not in used]
                stay = rng.random() < SAME_SOURCE_SHARE or not free
                domain = home if stay else rng.choice(free)
                used.append(domain)
                demo, errors = gen.duplicate(person)
                if domain == home:
                    errors.append("same_source")
            identifiers = [{"domain": domain, "value": mrn(domain), "type": "MR"}]
            if person.ssn and rng.random() < 0.8:
                ssn = person.ssn
                identifiers.append({"domain": SSN_DOMAIN, "value":
                                    f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}" if rng.random() < 0.5
                                    else ssn, "type": "SS"})
            records.append(SynthRecord(
                record_id=f"R{len(records) + 1:08d}",
                person_id=person.person_id,
                source_domain=domain,
                demographics=demo,
                identifiers=identifiers,
                duplicate=copy > 0,
                errors=errors,
                relations=dict(person.relations),
            ))
    return records


# --------------------------------------------------------------------------------------------
# writers and reader

CSV_COLUMNS = (
    "record_id", "person_id", "source_domain", "mrn", "family", "given", "middle", "prefix",
    "suffix", "previous_family", "birth_date", "sex", "address_line1", "address_line2", "city",
    "state", "postal_code", "country", "phone", "ssn", "mothers_maiden_name", "multiple_birth",
    "duplicate", "errors", "relations",
)


def _to_row(record: SynthRecord) -> dict[str, str]:
    demo = record.demographics
    names = demo.get("names") or [{}]
    name = names[0]
    given = name.get("given") or []
    address = (demo.get("addresses") or [{}])[0]
    lines = address.get("lines") or []
    ssn = next((i["value"] for i in record.identifiers if i["type"] == "SS"), "")
    previous = ";".join(n.get("family", "") for n in names[1:])
    multiple = demo.get("multiple_birth")
    return {
        "record_id": record.record_id,
        "person_id": record.person_id,
        "source_domain": record.source_domain,
        "mrn": record.mrn,
        "family": name.get("family", ""),
        "given": given[0] if given else "",
        "middle": " ".join(given[1:]),
        "prefix": name.get("prefix", ""),
        "suffix": name.get("suffix", ""),
        "previous_family": previous,
        "birth_date": demo.get("birth_date", "") or "",
        "sex": demo.get("sex", "") or "",
        "address_line1": lines[0] if lines else "",
        "address_line2": lines[1] if len(lines) > 1 else "",
        "city": address.get("city", ""),
        "state": address.get("state", ""),
        "postal_code": address.get("postal_code", ""),
        "country": address.get("country", ""),
        "phone": ((demo.get("phones") or [{}])[0]).get("value", ""),
        "ssn": ssn,
        "mothers_maiden_name": demo.get("mothers_maiden_name", "") or "",
        "multiple_birth": "" if multiple is None else str(multiple),
        "duplicate": "1" if record.duplicate else "0",
        "errors": ";".join(record.errors),
        "relations": ";".join(f"{k}={v}" for k, v in sorted(record.relations.items())),
    }


def write_csv(records: Iterable[SynthRecord], path: str | Path) -> None:
    """One row per record; ``person_id`` is the ground truth."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow(_to_row(record))


def read_csv(path: str | Path, truth_column: str = "person_id") -> list[SynthRecord]:
    """Records from a CSV in the :func:`write_csv` layout; ``truth_column`` holds the truth."""
    return list(iter_csv(path, truth_column))


def iter_csv(path: str | Path, truth_column: str = "person_id") -> Iterator[SynthRecord]:
    """:func:`read_csv` one record at a time (for files too large to hold twice): the
    ``synth`` layout of :mod:`matching.columns`, which reads any labelled CSV."""
    from matching.columns import iter_records  # columns builds on this module

    return iter_records(path, truth_column=truth_column)


_FHIR_GENDER = {"M": "male", "F": "female", "O": "other", "U": "unknown"}


#: A domain's namespace and OID (None: named by its namespace only).
Authority = tuple[str, str | None]


def _authority(domain: str, authorities: Mapping[str, Authority] | None) -> Authority:
    if authorities is not None and domain in authorities:
        return authorities[domain]
    if domain in SOURCE_DOMAINS:
        return domain, SOURCE_DOMAINS[domain]
    return "SSA", domain


def to_fhir_patient(
    record: SynthRecord, *, authorities: Mapping[str, Authority] | None = None
) -> dict[str, Any]:
    """A FHIR R4 Patient resource (plain dict) for one record. An identifier's system is
    ``urn:oid:<OID>`` of its domain in ``authorities``, or the namespace when it has no OID."""
    demo = record.demographics
    patient: dict[str, Any] = {"resourceType": "Patient", "id": record.record_id.lower()}
    identifiers = []
    for identifier in record.identifiers:
        namespace, oid = _authority(identifier["domain"], authorities)
        identifiers.append({
            "system": f"urn:oid:{oid}" if oid else namespace,
            "value": identifier["value"],
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                 "code": identifier["type"]}]},
        })
    patient["identifier"] = identifiers
    use_map = {"L": "official", "M": "maiden", "A": "anonymous", "N": "nickname", "D": "usual"}
    names = []
    for name in demo.get("names") or []:
        entry: dict[str, Any] = {"use": use_map.get(name.get("use", "L"), "official")}
        if name.get("family"):
            entry["family"] = name["family"]
        if name.get("given"):
            entry["given"] = list(name["given"])
        if name.get("suffix"):
            entry["suffix"] = [name["suffix"]]
        if name.get("prefix"):
            entry["prefix"] = [name["prefix"]]
        names.append(entry)
    patient["name"] = names
    sex = demo.get("sex")
    if sex:
        patient["gender"] = _FHIR_GENDER.get(str(sex).upper()[:1], "unknown")
    if demo.get("birth_date"):
        patient["birthDate"] = demo["birth_date"]
    patient["address"] = [
        {"use": "home", "line": list(a.get("lines") or []), "city": a.get("city"),
         "state": a.get("state"), "postalCode": a.get("postal_code"),
         "country": a.get("country")}
        for a in demo.get("addresses") or []
    ]
    patient["telecom"] = [
        {"system": "phone", "value": p["value"], "use": p.get("use", "home")}
        for p in demo.get("phones") or []
    ]
    multiple = demo.get("multiple_birth")
    if isinstance(multiple, bool):
        patient["multipleBirthBoolean"] = multiple
    elif isinstance(multiple, int):
        patient["multipleBirthInteger"] = multiple
    if demo.get("mothers_maiden_name"):
        patient["extension"] = [{
            "url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
            "valueString": demo["mothers_maiden_name"],
        }]
    return patient


def write_ndjson(
    records: Iterable[SynthRecord],
    path: str | Path,
    *,
    authorities: Mapping[str, Authority] | None = None,
) -> None:
    """One FHIR Patient resource per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            patient = to_fhir_patient(record, authorities=authorities)
            handle.write(json.dumps(patient, separators=(",", ":")) + "\n")


def hl7_escape(text: Any) -> str:
    """Escape HL7 v2 delimiters in a data value (default encoding characters ^~\\&)."""
    value = "" if text is None else str(text)
    return (
        value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
        .replace("&", "\\T\\").replace("~", "\\R\\").replace("\r", "\\X0D\\")
        .replace("\n", "\\X0A\\")
    )


def to_hl7_adt_a04(
    record: SynthRecord,
    control_id: str,
    timestamp: str,
    *,
    authorities: Mapping[str, Authority] | None = None,
    applications: Mapping[str, str] | None = None,
) -> str:
    """One HL7 v2.5 ADT^A04 (register a patient) message: MSH, EVN, PID, PV1. MSH-3 is the
    source domain's application in ``applications`` (default: the namespace), MSH-4 the source
    domain; PID-3's CX.4 names each domain as ``authorities`` does."""
    e = hl7_escape
    demo = record.demographics
    application = (applications or {}).get(record.source_domain, record.source_domain)
    msh = (f"MSH|^~\\&|{e(application)}|{e(record.source_domain)}|IDENTITY|MPI|"
           f"{timestamp}||ADT^A04^ADT_A01|{e(control_id)}|P|2.5")
    evn = f"EVN|A04|{timestamp}"
    cx = []
    for identifier in record.identifiers:
        namespace, oid = _authority(identifier["domain"], authorities)
        hd = f"{e(namespace)}&{e(oid)}&ISO" if oid else e(namespace)
        cx.append(f"{e(identifier['value'])}^^^{hd}^{e(identifier['type'])}")
    xpn = []
    for name in demo.get("names") or []:
        given = name.get("given") or []
        xpn.append("^".join([
            e(name.get("family", "")), e(given[0] if given else ""), e(" ".join(given[1:])),
            e(name.get("suffix", "")), e(name.get("prefix", "")), "", e(name.get("use", "L")),
        ]))
    address = (demo.get("addresses") or [None])[0]
    xad = ""
    if address:
        lines = address.get("lines") or []
        xad = "^".join([
            e(lines[0] if lines else ""), e(lines[1] if len(lines) > 1 else ""),
            e(address.get("city", "")), e(address.get("state", "")),
            e(address.get("postal_code", "")), e(address.get("country", "")), "H",
        ])
    phone = (demo.get("phones") or [None])[0]
    xtn = f"{e(phone['value'])}^PRN^PH" if phone else ""
    birth = (demo.get("birth_date") or "").replace("-", "")
    sex = str(demo.get("sex") or "")
    sex = {"male": "M", "female": "F", "other": "O", "unknown": "U"}.get(sex.lower(), sex)
    ssn = next((i["value"] for i in record.identifiers if i["type"] == "SS"), "")
    multiple = demo.get("multiple_birth")
    fields = [""] * 26
    fields[0] = "PID"
    fields[1] = "1"
    fields[3] = "~".join(cx)
    fields[5] = "~".join(xpn)
    fields[6] = e(demo.get("mothers_maiden_name", "") or "")
    fields[7] = birth
    fields[8] = e(sex)
    fields[11] = xad
    fields[13] = xtn
    fields[19] = e(ssn.replace("-", ""))
    if multiple is not None:
        fields[24] = "Y" if multiple else "N"
        if isinstance(multiple, int) and not isinstance(multiple, bool):
            fields[25] = str(multiple)
    pid = "|".join(fields).rstrip("|")
    pv1 = "PV1|1|O"
    return "\r".join((msh, evn, pid, pv1)) + "\r"


MLLP_START, MLLP_END = "\x0b", "\x1c\r"


def write_hl7(
    records: Sequence[SynthRecord],
    path: str | Path,
    start: str = "20260101080000",
    *,
    authorities: Mapping[str, Authority] | None = None,
    applications: Mapping[str, str] | None = None,
    framed: bool = False,
) -> None:
    """ADT^A04 messages, one after the other (each ends with a carriage return; no blank line
    between them). ``framed``: each message in an MLLP block (``0x0B`` message ``0x1C 0x0D``),
    the form MLLP senders such as python-hl7's ``mllp_send`` read from a file."""
    base = datetime.strptime(start, "%Y%m%d%H%M%S")
    before, after = (MLLP_START, MLLP_END) if framed else ("", "")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for index, record in enumerate(records):
            stamp = (base + timedelta(seconds=index)).strftime("%Y%m%d%H%M%S")
            message = to_hl7_adt_a04(
                record, f"MSG{index + 1:09d}", stamp,
                authorities=authorities, applications=applications,
            )
            handle.write(before + message + after)
