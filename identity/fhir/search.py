"""PDQm ITI-78: FHIR search parameters -> the core's SearchCriteria.

The core takes one value per field. FHIR search is an AND of parameters, each an OR of
comma-separated values. A query whose every parameter has one value (the common case) maps to
one SearchCriteria and is paged by the database. Anything else is expanded into a disjunction of
conjunctions, each conjunction run as one or more SearchCriteria (intersected), the results united
in memory, ordered by record id and paged here; each expanded criterion may match at most
``EXPANDED_CAP`` records (otherwise 400 too-costly).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from multidict import MultiDictProxy

from identity.fhir.patient import GENDER_TO_SEX, authority_of, parse_token
from identity.fhir.wire import FhirError, Json, issue, operation_outcome
from identity.model import AuthorityRef, IdentifierRef, SearchCriteria, SourceRecord

EXPANDED_CAP = 1000
MAX_COMBINATIONS = 64

STRING_FIELDS = {
    "family": "family",
    "given": "given",
    "address": "address_line",
    "address-city": "city",
    "address-country": "country",
    "address-postalcode": "postal_code",
    "address-state": "state",
    "mothersMaidenName": "mothers_maiden_name",
}
NAME_FIELDS = {"family", "given"}
TOKEN_PARAMS = {"_id", "active", "gender", "identifier", "telecom"}
SEARCH_PARAMS = set(STRING_FIELDS) | TOKEN_PARAMS | {"birthdate"}
CONTROL_PARAMS = {"_count", "_offset", "_format", "_total", "_pretty", "_summary"}
STRING_MODIFIERS = {None, "exact", "contains"}

GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"

Alternative = dict[str, Any]


@dataclass
class ParsedSearch:
    """The query as AND-groups of OR-alternatives, plus paging and domains to return."""

    groups: list[list[Alternative]] = field(default_factory=list)
    systems: set[str] = field(default_factory=set)  # identifier=system| (domains to return)
    count: int = 20
    offset: int = 0
    echo: list[tuple[str, str]] = field(default_factory=list)  # params understood, for links
    asked_count: int | None = None  # the _count asked for, when it was over the maximum

    def combinations(self) -> list[list[Alternative]]:
        total = 1
        for group in self.groups:
            total *= len(group)
        if total > MAX_COMBINATIONS:
            raise FhirError(400, "too-costly", f"the query expands to {total} combinations of "
                            f"values; at most {MAX_COMBINATIONS} are supported")
        return [list(combo) for combo in itertools.product(*self.groups)]


def _split_values(raw: str) -> list[str]:
    """Comma-separated OR values; ``\\,`` is a literal comma."""
    values, current, escaped = [], [], False
    for char in raw:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return [v for v in values if v != ""]


def _period(value: str, param: str) -> tuple[date, date, str]:
    """First and last day of a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD; a time part is ignored)."""
    text = value.split("T")[0]
    try:
        parts = [int(p) for p in text.split("-")]
        if len(parts) == 1 and len(text) == 4:
            return date(parts[0], 1, 1), date(parts[0], 12, 31), text
        if len(parts) == 2 and len(text) == 7:
            first = date(parts[0], parts[1], 1)
            nxt = date(parts[0] + (parts[1] == 12), parts[1] % 12 + 1, 1)
            return first, nxt - timedelta(days=1), text
        if len(parts) == 3 and len(text) == 10:
            day = date(parts[0], parts[1], parts[2])
            return day, day, text
    except ValueError:
        pass
    raise FhirError(400, "invalid", f"{param}: not a date: {value!r}", expression=param)


def _birthdate_alternative(value: str) -> Alternative:
    prefix = value[:2] if value[:2].isalpha() else "eq"
    rest = value[2:] if value[:2].isalpha() else value
    first, last, text = _period(rest, "birthdate")
    if prefix == "eq":
        return {"birth_date": text}
    if prefix == "ge":
        return {"birth_date_from": first.isoformat()}
    if prefix == "le":
        return {"birth_date_to": last.isoformat()}
    try:
        if prefix in ("gt", "sa"):
            return {"birth_date_from": (last + timedelta(days=1)).isoformat()}
        if prefix in ("lt", "eb"):
            return {"birth_date_to": (first - timedelta(days=1)).isoformat()}
    except OverflowError:  # after 9999-12-31 or before 0001-01-01
        raise FhirError(400, "invalid", f"birthdate: {value!r} is out of range",
                        expression="birthdate") from None
    raise FhirError(400, "not-supported", f"birthdate: prefix {prefix!r} is not supported "
                    "(eq, ge, gt, le, lt, sa, eb are)", expression="birthdate")


def parse_search(
    params: MultiDictProxy[str] | list[tuple[str, str]],
    *,
    default_count: int,
    max_count: int,
    strict: bool,
) -> ParsedSearch:
    parsed = ParsedSearch(count=default_count)
    items = list(params.items()) if isinstance(params, MultiDictProxy) else list(params)
    for key, raw in items:
        name, _, modifier_text = key.partition(":")
        modifier = modifier_text or None
        if name in CONTROL_PARAMS:
            if name == "_count":
                parsed.count = _int(raw, "_count", 0, None)
            elif name == "_offset":
                parsed.offset = _int(raw, "_offset", 0, None)
            continue
        if name not in SEARCH_PARAMS:
            if strict:
                raise FhirError(400, "not-supported", f"unknown search parameter {key!r}",
                                expression=key)
            continue
        values = _split_values(raw)
        if not values:
            continue
        parsed.echo.append((key, raw))
        if name in STRING_FIELDS:
            if modifier not in STRING_MODIFIERS:
                raise FhirError(400, "not-supported", f"{key}: modifier not supported",
                                expression=key)
            parsed.groups.append([_string_alternative(name, modifier, v) for v in values])
            continue
        if modifier is not None:
            raise FhirError(400, "not-supported", f"{key}: modifier not supported", expression=key)
        if name == "birthdate":
            parsed.groups.append([_birthdate_alternative(v) for v in values])
        elif name == "gender":
            parsed.groups.append([_gender_alternative(v) for v in values])
        elif name == "active":
            parsed.groups.append([_active_alternative(v) for v in values])
        elif name == "_id":
            parsed.groups.append([{"_id": _int(v, "_id", 1, None, not_found=True)}
                                  for v in values])
        elif name == "telecom":
            parsed.groups.append([_telecom_alternative(v) for v in values])
        elif name == "identifier":
            tokens = [parse_token(v) for v in values]
            system_only = [s for s, v in tokens if s and v is None]
            if system_only and len(system_only) != len(tokens):
                raise FhirError(400, "invalid", "identifier: do not mix system-only tokens "
                                "(domains to return) with identifier values", expression=key)
            if system_only:
                parsed.systems.update(system_only)
            else:
                parsed.groups.append([{"identifier": (s or None, v)} for s, v in tokens])
    if parsed.count > max_count:
        parsed.asked_count, parsed.count = parsed.count, max_count
    return parsed


def count_lowered(asked: int, used: int, parameter: str = "_count") -> Json:
    """The searchset entry (search.mode ``outcome``) that says a page size asked for was over
    [fhir] max_page_size and the page holds at most that many: the request is served, not
    refused, as FHIR lets a server return fewer than ``_count``."""
    outcome_id = str(uuid.uuid4())
    text = (f"{parameter}={asked} is more than this server's page size: at most {used} "
            "entries per page")
    return {
        "fullUrl": f"urn:uuid:{outcome_id}",
        "resource": {**operation_outcome([issue("informational", text, severity="information",
                                                expression=parameter)]), "id": outcome_id},
        "search": {"mode": "outcome"},
    }


def _int(raw: str, param: str, low: int, high: int | None, not_found: bool = False) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < low or (high is not None and value > high):
        if not_found:
            return 0  # no record has this id
        raise FhirError(400, "invalid", f"{param}: not an integer >= {low}: {raw!r}",
                        expression=param)
    return value


def _string_alternative(name: str, modifier: str | None, value: str) -> Alternative:
    target = STRING_FIELDS[name]
    if name in NAME_FIELDS:
        text = value.rstrip("*")
        # A FHIR string search is a case-insensitive prefix match; :contains is served as a prefix
        # match too (the core has no substring index); :exact is the core's exact match on
        # normalised (case- and accent-folded) values.
        return {target: text if modifier == "exact" else text + "*"}
    return {target: value}


def _gender_alternative(value: str) -> Alternative:
    system, code = parse_token(value, "gender")
    if system not in (None, "", GENDER_SYSTEM) or code not in GENDER_TO_SEX:
        raise FhirError(400, "code-invalid", f"gender: unknown code {value!r}", expression="gender")
    return {"sex": GENDER_TO_SEX[code]}


def _active_alternative(value: str) -> Alternative:
    if value not in ("true", "false"):
        raise FhirError(400, "invalid", f"active: expected true or false, got {value!r}",
                        expression="active")
    return {"active": value == "true"}


def _telecom_alternative(value: str) -> Alternative:
    system, number = parse_token(value, "telecom")
    if system not in (None, "", "phone", "sms") or not number:
        raise FhirError(400, "not-supported", "telecom: only phone numbers are searchable",
                        expression="telecom")
    return {"phone": number}


def criteria_of(
    combination: list[Alternative], limit: int, offset: int
) -> tuple[list[SearchCriteria], set[int] | None, bool | None]:
    """One conjunction -> SearchCriteria to intersect, the _id restriction and ``active``."""
    fields: dict[str, list[Any]] = {}
    ids: set[int] | None = None
    active: bool | None = None
    low: str | None = None
    high: str | None = None
    for alternative in combination:
        for key, value in alternative.items():
            if key == "_id":
                ids = {value} if ids is None else ids & {value}
            elif key == "_ids":
                ids = set(value) if ids is None else ids & set(value)
            elif key == "active":
                if active is not None and active != value:
                    return [], set(), value
                active = value
            elif key == "birth_date_from":
                low = max(low, value) if low else value
            elif key == "birth_date_to":
                high = min(high, value) if high else value
            else:
                fields.setdefault(key, [])
                if value not in fields[key]:
                    fields[key].append(value)
    width = max((len(v) for v in fields.values()), default=1)
    base: dict[str, Any] = {"name_mode": "exact", "limit": limit, "offset": offset,
                            "include_inactive": active is False}
    if low:
        base["birth_date_from"] = low
    if high:
        base["birth_date_to"] = high
    criteria = []
    for index in range(width):
        values = {k: v[min(index, len(v) - 1)] for k, v in fields.items()}
        criteria.append(values)
    return [_criteria(base, values) for values in criteria], ids, active


def _criteria(base: dict[str, Any], values: dict[str, Any]) -> SearchCriteria:
    data = dict(base)
    for key, value in values.items():
        if key == "identifier":
            system, ident = value
            data[key] = IdentifierRef(value=ident, authority=authority_of(system))
        else:
            data[key] = value
    return SearchCriteria(**data)


def has_filters(criteria: SearchCriteria) -> bool:
    keys = set(criteria.model_dump(exclude_defaults=True)) - {
        "limit", "offset", "name_mode", "include_inactive"}
    return bool(keys)


def identifier_any_domain(combination: list[Alternative]) -> bool:
    return any("identifier" in a and a["identifier"][0] is None for a in combination)


def expand_identifier_domains(
    combinations: list[list[Alternative]], systems: list[str]
) -> list[list[Alternative]]:
    """``identifier=value`` (no system) becomes an OR over every known domain."""
    out = []
    for combo in combinations:
        choices = []
        for alternative in combo:
            if "identifier" in alternative and alternative["identifier"][0] is None:
                value = alternative["identifier"][1]
                choices.append([{**alternative, "identifier": (s, value)} for s in systems])
            else:
                choices.append([alternative])
        out.extend(list(c) for c in itertools.product(*choices))
    if len(out) > MAX_COMBINATIONS * 4:
        raise FhirError(400, "too-costly", "identifier without a system over too many domains")
    return out


def keep(record: SourceRecord, ids: set[int] | None, active: bool | None) -> bool:
    if record.status == "removed":
        return False
    if ids is not None and record.id not in ids:
        return False
    if active is False:
        return record.status == "merged"
    return active is None or record.status == "active"


def page_links(
    base: str, echo: list[tuple[str, str]], offset: int, count: int, total: int
) -> list[dict[str, str]]:
    def url(at: int) -> str:
        query = [*echo, ("_count", str(count)), ("_offset", str(at))]
        return f"{base}/Patient?{urlencode(query)}"

    links = [{"relation": "self", "url": url(offset)}]
    if count > 0:
        links.append({"relation": "first", "url": url(0)})
        if offset + count < total:
            links.append({"relation": "next", "url": url(offset + count)})
        if offset > 0:
            links.append({"relation": "previous", "url": url(max(0, offset - count))})
        last = max(0, ((total - 1) // count) * count) if total else 0
        links.append({"relation": "last", "url": url(last)})
    return links


__all__ = [
    "AuthorityRef",
    "ParsedSearch",
    "count_lowered",
    "criteria_of",
    "page_links",
    "parse_search",
]
