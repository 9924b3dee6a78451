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
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from multidict import MultiDictProxy

from identity.fhir.audit import date_bounds
from identity.fhir.patient import GENDER_TO_SEX, authority_of, parse_token
from identity.fhir.wire import FhirError, Json, issue, operation_outcome
from identity.model import AuthorityRef, IdentifierRef, SearchCriteria, SourceRecord
from matching.normalize import normalize_family, normalize_given

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
DATE_PARAMS = {"birthdate", "_lastUpdated"}
MOTHER_CHAIN = "RelatedPerson.identifier"
"""``link:RelatedPerson.identifier=system|value``: FHIR R4 Patient's ``link`` parameter chained
(FHIR R4 search, *Chained parameters*) to the identifier of the RelatedPerson a Patient links
to, which is how an answer carries the mother of a newborn (identity/fhir/patient.py,
``mother_json``): the core's mother's identifier, PID-21 (issue 18 item 6)."""
SEARCH_PARAMS = set(STRING_FIELDS) | TOKEN_PARAMS | DATE_PARAMS | {"link"}
CONTROL_PARAMS = {"_count", "_offset", "_format", "_total", "_pretty", "_summary", "_sort",
                  "_elements"}
STRING_MODIFIERS = {None, "exact", "contains"}
CONTAINS_FIELDS = {"family": "family", "given": "given", "address-city": "city"}
"""The string parameters whose ``:contains`` matches inside the value (the others compare as
without the modifier)."""
SORT_PARAMS = {"family": "family", "given": "given", "birthdate": "birth_date",
               "_lastUpdated": "updated_at", "_id": "id"}
SUMMARY_VALUES = {"true", "false", "count", "data", "text"}
SUMMARY_ELEMENTS = frozenset({"identifier", "active", "name", "telecom", "gender", "birthDate",
                              "deceasedBoolean", "deceasedDateTime", "address",
                              "managingOrganization", "link"})
"""Patient's elements marked isSummary in FHIR R4 (what ``_summary=true`` returns)."""
ALWAYS = frozenset({"resourceType", "id", "implicitRules", "modifierExtension"})
"""What every subset keeps: the resource's type and id, and its modifier elements."""
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}

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
    sort: tuple[str, ...] = ()  # SearchCriteria.sort keys
    summary: str | None = None  # _summary
    elements: tuple[str, ...] | None = None  # _elements

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


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def _birthdate_alternatives(value: str) -> list[Alternative]:
    """One ``birthdate`` value (FHIR date search: the prefixes of R4 3.1.1.5.6; the period a
    partial date names is the day, month or year) as OR-alternatives: ``ne`` is two (before
    or after the period), every other prefix one. ``ap`` widens the period by a tenth of its
    distance from today (at least a day), as R4 recommends."""
    prefix = value[:2] if value[:2].isalpha() else "eq"
    rest = value[2:] if value[:2].isalpha() else value
    if prefix not in PREFIXES:
        raise FhirError(400, "invalid", f"birthdate: unknown prefix {prefix!r} (eq, ne, gt, "
                        "lt, ge, le, sa, eb, ap are)", expression="birthdate")
    first, last, text = _period(rest, "birthdate")
    try:
        if prefix == "eq":
            return [{"birth_date": text}]
        if prefix == "ge":
            return [{"birth_date_from": first.isoformat()}]
        if prefix == "le":
            return [{"birth_date_to": last.isoformat()}]
        if prefix in ("gt", "sa"):
            return [{"birth_date_from": (last + timedelta(days=1)).isoformat()}]
        if prefix in ("lt", "eb"):
            return [{"birth_date_to": (first - timedelta(days=1)).isoformat()}]
        if prefix == "ne":
            alternatives: list[Alternative] = []
            if first > date.min:
                alternatives.append({"birth_date_to": (first - timedelta(days=1)).isoformat()})
            if last < date.max:
                alternatives.append({"birth_date_from": (last + timedelta(days=1)).isoformat()})
            return alternatives or [{"_id": 0}]  # every date is in the period: none match
        gap = abs((date.today() - first).days)
        margin = timedelta(days=max(1, round(gap / 10)))
        low = first - margin if first - date.min > margin else date.min
        high = last + margin if date.max - last > margin else date.max
        return [{"birth_date_from": low.isoformat(), "birth_date_to": high.isoformat()}]
    except OverflowError:  # after 9999-12-31 or before 0001-01-01
        raise FhirError(400, "invalid", f"birthdate: {value!r} is out of range",
                        expression="birthdate") from None


def _last_updated_alternatives(value: str) -> list[Alternative]:
    """One ``_lastUpdated`` value (an instant, or a partial date/time naming a period; a time
    without a zone is UTC) as OR-alternatives, with the prefixes of FHIR date search."""
    prefix = value[:2] if value[:2].isalpha() else "eq"
    rest = value[2:] if value[:2].isalpha() else value
    if prefix not in PREFIXES:
        raise FhirError(400, "invalid", f"_lastUpdated: unknown prefix {prefix!r}",
                        expression="_lastUpdated")
    try:
        start, end = date_bounds(rest.replace(" ", "+"))  # a '+' unescaped in a query
    except FhirError as exc:
        raise FhirError(400, "invalid", f"_lastUpdated: not a date or instant: {value!r}",
                        expression="_lastUpdated") from exc
    assert start is not None and end is not None
    if prefix == "eq":
        return [{"updated_from": start, "updated_before": end}]
    if prefix == "ge":
        return [{"updated_from": start}]
    if prefix in ("gt", "sa"):
        return [{"updated_from": end}]
    if prefix == "le":
        return [{"updated_before": end}]
    if prefix in ("lt", "eb"):
        return [{"updated_before": start}]
    if prefix == "ne":
        return [{"updated_before": start}, {"updated_from": end}]
    margin = max(abs(datetime.now(UTC) - start) / 10, timedelta(seconds=1))
    return [{"updated_from": start - margin, "updated_before": end + margin}]


def _sort_keys(raw: str) -> tuple[str, ...]:
    keys = []
    for part in raw.split(","):
        name = part.strip()
        descending = name.startswith("-")
        key = SORT_PARAMS.get(name.removeprefix("-"))
        if key is None:
            raise FhirError(400, "not-supported", f"_sort: cannot sort by {name!r} (family, "
                            "given, birthdate, _lastUpdated, _id can, '-' first: descending)",
                            expression="_sort")
        keys.append(("-" if descending else "") + key)
    return tuple(keys)


def sort_records(records: list[SourceRecord], keys: tuple[str, ...]) -> list[SourceRecord]:
    """``records`` in the order of ``keys`` (as the core's search orders them: normalised
    names, missing values last), then by id: for the searches the door unites itself."""
    out = sorted(records, key=lambda r: r.id)
    for key in reversed(keys):
        name, descending = key.removeprefix("-"), key.startswith("-")

        def value(record: SourceRecord, name: str = name) -> Any:
            demo, names = record.demographics, record.demographics.names or ()
            if name == "family":
                return normalize_family(names[0].family or "") if names else None
            if name == "given":
                given = names[0].given if names else ()
                return normalize_given(given[0]) if given else None
            if name == "birth_date":
                return demo.birth_date
            if name == "updated_at":
                return record.updated_at
            return record.id

        present = [r for r in out if value(r) not in (None, "")]
        missing = [r for r in out if value(r) in (None, "")]
        out = sorted(present, key=value, reverse=descending) + missing
    return out


def subset(resource: Json, summary: str | None, elements: tuple[str, ...] | None) -> Json:
    """A Patient cut to ``_summary`` (true: its summary elements; text: id and meta) or
    ``_elements`` (the elements named, with id and meta), tagged SUBSETTED (FHIR R4
    3.1.1.5.9, 3.1.1.5.10); unchanged for no subset, ``false`` and ``data`` (it has no
    narrative, which ``data`` leaves out). A subset keeps the modifier elements a client sent
    (``implicitRules``, ``modifierExtension``) and the extensions of the primitives it keeps
    (``_birthDate``)."""
    if summary == "true":
        keep = SUMMARY_ELEMENTS
    elif summary == "text":
        keep = frozenset({"text"})
    elif summary == "data":
        if "text" not in resource:
            return resource
        keep = frozenset(resource) - {"text"}
    elif elements is not None and summary != "false":
        keep = frozenset(elements)
    else:
        return resource
    keep = keep | ALWAYS
    out = {k: v for k, v in resource.items() if k.removeprefix("_") in keep}
    if "contained" not in out and "link" in out:
        # a link to a contained resource (a newborn's mother) would point at nothing
        links = [link for link in out["link"] if not str(
            (link.get("other") or {}).get("reference") or "").startswith("#")]
        if links:
            out["link"] = links
        else:
            del out["link"]
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    out["meta"] = meta
    return out


def parse_subset(params: Any) -> tuple[str | None, tuple[str, ...] | None]:
    """``_summary`` and ``_elements`` of a read (search takes them in ``parse_search``)."""
    summary = params.get("_summary")
    if summary is not None and summary not in SUMMARY_VALUES - {"count"}:
        raise FhirError(400, "invalid", f"_summary: {summary!r} is not supported here (true, "
                        "false, data, text are)", expression="_summary")
    raw = params.get("_elements")
    elements = tuple(e.strip() for e in raw.split(",") if e.strip()) if raw else None
    return summary, elements


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
            elif name == "_sort" and raw:
                parsed.sort = _sort_keys(raw)
                parsed.echo.append((key, raw))
            elif name == "_summary":
                if raw not in SUMMARY_VALUES:
                    raise FhirError(400, "invalid", f"_summary: {raw!r} is not one of "
                                    f"{sorted(SUMMARY_VALUES)}", expression="_summary")
                parsed.summary = raw
                parsed.echo.append((key, raw))
            elif name == "_elements":
                parsed.elements = tuple(e.strip() for e in raw.split(",") if e.strip())
                parsed.echo.append((key, raw))
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
        if name == "link":
            parsed.groups.append([_mother_alternative(key, modifier, v) for v in values])
            continue
        if modifier is not None:
            raise FhirError(400, "not-supported", f"{key}: modifier not supported", expression=key)
        if name == "birthdate":
            parsed.groups.append([a for v in values for a in _birthdate_alternatives(v)])
        elif name == "_lastUpdated":
            parsed.groups.append([a for v in values for a in _last_updated_alternatives(v)])
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
    if parsed.summary == "count":
        parsed.count = 0
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
    if modifier == "contains" and name in CONTAINS_FIELDS:
        # FHIR :contains: anywhere in the value (R4 3.1.1.5.7), here of the normalised value
        # (case- and accent-folded, punctuation as spaces)
        return {target: value, "_contains": CONTAINS_FIELDS[name]}
    if name in NAME_FIELDS:
        text = value.rstrip("*")
        # A FHIR string search is a case-insensitive prefix match; :exact is the core's exact
        # match on normalised (case- and accent-folded) values.
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


def _mother_alternative(key: str, modifier: str | None, value: str) -> Alternative:
    """``link:RelatedPerson.identifier=system|value``: a newborn by her mother's identifier.
    ``link`` itself (the Patients linked to a given one) and other chains are not served."""
    if modifier != MOTHER_CHAIN:
        raise FhirError(400, "not-supported", f"{key}: only the chain link:{MOTHER_CHAIN}="
                        "system|value (a newborn by her mother's identifier) is supported",
                        expression=key)
    system, ident = parse_token(value, key)
    if not system or not ident:
        raise FhirError(400, "invalid", f"{key}: give system|value (the mother's identifier "
                        "and its system)", expression=key)
    return {"mothers_identifier": (system, ident)}


def criteria_of(
    combination: list[Alternative], limit: int, offset: int, sort: tuple[str, ...] = ()
) -> tuple[list[SearchCriteria], set[int] | None, bool | None]:
    """One conjunction -> SearchCriteria to intersect, the _id restriction and ``active``."""
    fields: dict[str, list[Any]] = {}
    ids: set[int] | None = None
    active: bool | None = None
    low: str | None = None
    high: str | None = None
    since: datetime | None = None
    before: datetime | None = None
    contains: set[str] = set()
    for alternative in combination:
        for key, value in alternative.items():
            if key == "_contains":
                contains.add(value)
            elif key == "updated_from":
                since = max(since, value) if since else value
            elif key == "updated_before":
                before = min(before, value) if before else value
            elif key == "_id":
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
    if since:
        base["updated_from"] = since
    if before:
        base["updated_before"] = before
    if sort:
        base["sort"] = sort
    criteria = []
    for index in range(width):
        values = {k: v[min(index, len(v) - 1)] for k, v in fields.items()}
        criteria.append(values)
    out = []
    for values in criteria:
        these = tuple(sorted(c for c in contains if c in values))
        out.append(_criteria({**base, "contains": these} if these else base, values))
    return out, ids, active


def _criteria(base: dict[str, Any], values: dict[str, Any]) -> SearchCriteria:
    data = dict(base)
    for key, value in values.items():
        if key in ("identifier", "mothers_identifier"):
            system, ident = value
            data[key] = IdentifierRef(value=ident, authority=authority_of(system))
        else:
            data[key] = value
    return SearchCriteria(**data)


def has_filters(criteria: SearchCriteria) -> bool:
    keys = set(criteria.model_dump(exclude_defaults=True)) - {
        "limit", "offset", "name_mode", "include_inactive", "sort", "contains"}
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
