"""Labelled CSV files in any layout: which file column holds which of our fields.

A :class:`ColumnMapping` maps our fields (those of :data:`matching.synth.CSV_COLUMNS`:
record_id, person_id (the truth), source_domain, mrn, family, given, middle, suffix,
birth_date, sex, address_line1, ..., ssn, ...) to the file's column names. It is parsed from a
string such as ``given=first_name,family=surname,birth_date=dob`` (what ``identity evaluate
--columns`` takes):

- items are ``FIELD=COLUMN`` separated by commas; a ``COLUMN`` may be several file columns
  joined by ``+`` (``address_line1=street_number+address_1``), whose values are joined by a
  space;
- an item without ``=`` names a preset: ``synth`` is the layout ``identity generate`` writes
  (every field in the column of its own name; the default when no mapping is given), and
  items after it override it (``synth,given=first_name``);
- fields that are not mapped are empty; ``record_id`` then is the row number;
- the truth (``person_id``) is required: mapped, or named by ``truth_column``. With a
  ``truth_pattern`` (a regular expression), the person is its first group (or its whole match)
  in that column: ``rec-(\\d+)`` makes ``rec-12-org`` and ``rec-12-dup-0`` one person, as in
  the Febrl data sets.

Values are stripped of surrounding whitespace (Febrl separates its columns with ``", "``).
Birth dates are accepted as ISO ``YYYY-MM-DD`` and as ``YYYYMMDD`` (Febrl, HL7) and passed on
as ISO; anything else is passed on as it is, for normalisation to judge. A local identifier
(MRN) is only added when the row has one; the SSN goes under :data:`matching.synth.SSN_DOMAIN`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matching.synth import CSV_COLUMNS, SSN_DOMAIN, SynthRecord

__all__ = [
    "FIELDS",
    "PRESETS",
    "ColumnMapping",
    "ColumnMappingError",
    "iso_date",
    "iter_records",
    "read_records",
    "record_from_row",
    "row_demographics",
]

#: Our fields, in the order of the generator's CSV layout.
FIELDS: tuple[str, ...] = CSV_COLUMNS


class ColumnMappingError(ValueError):
    """A column mapping that cannot be used: bad syntax, unknown field, missing column."""


def _synth_preset() -> dict[str, tuple[str, ...]]:
    return {name: (name,) for name in FIELDS}


#: Named layouts an item of a mapping string may start from.
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {"synth": _synth_preset()}


@dataclass(frozen=True)
class ColumnMapping:
    """Our field -> the file column(s) that hold it (several are joined by a space)."""

    columns: Mapping[str, tuple[str, ...]]
    truth_pattern: str | None = None
    #: Fields mapped by a preset, not by name: their columns may be missing from a file
    #: (then they are empty), as a generator file of an older layout lacks some.
    optional: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise ColumnMappingError(
                f"unknown field(s) {', '.join(unknown)}; the fields are: {', '.join(FIELDS)}"
            )
        if self.truth_pattern is not None:
            try:
                re.compile(self.truth_pattern)
            except re.error as exc:
                raise ColumnMappingError(
                    f"truth pattern {self.truth_pattern!r} is not a regular expression: {exc}"
                ) from exc

    @classmethod
    def parse(cls, text: str | None) -> ColumnMapping:
        """A mapping from ``FIELD=COLUMN[+COLUMN...]`` items and preset names, comma-separated
        (None or empty: the ``synth`` preset)."""
        if text is None or not text.strip():
            text = "synth"
        columns: dict[str, tuple[str, ...]] = {}
        optional: set[str] = set()
        seen: set[str] = set()
        for position, raw in enumerate(text.split(","), start=1):
            item = raw.strip()
            if not item:
                raise ColumnMappingError(f"item {position} of the column mapping is empty")
            if "=" not in item:
                preset = PRESETS.get(item)
                if preset is None:
                    raise ColumnMappingError(
                        f"{item!r} is neither FIELD=COLUMN nor a preset "
                        f"({', '.join(sorted(PRESETS))})"
                    )
                columns.update(preset)
                optional.update(set(preset) - seen - {"person_id"})
                continue
            name, _, value = (part.strip() for part in item.partition("="))
            if name not in FIELDS:
                raise ColumnMappingError(
                    f"unknown field {name!r} in {item!r}; the fields are: {', '.join(FIELDS)}"
                )
            if name in seen:
                raise ColumnMappingError(f"field {name!r} is mapped twice")
            sources = tuple(part.strip() for part in value.split("+"))
            if not value or any(not part for part in sources):
                raise ColumnMappingError(f"no column name for field {name!r} in {item!r}")
            seen.add(name)
            optional.discard(name)
            columns[name] = sources
        return cls(columns, None, frozenset(optional))

    def with_truth(
        self, column: str | None = None, pattern: str | None = None
    ) -> ColumnMapping:
        """The same mapping with the truth in ``column`` and/or read through ``pattern``."""
        columns = dict(self.columns)
        if column:
            columns["person_id"] = (column,)
        pattern = pattern if pattern is not None else self.truth_pattern
        return ColumnMapping(columns, pattern, self.optional - {"person_id"})

    def check(self, header: Sequence[str], *, source: str = "the file") -> None:
        """Raise :class:`ColumnMappingError` unless every mapped column is in ``header`` and
        the truth is mapped."""
        if "person_id" not in self.columns:
            raise ColumnMappingError(
                "no truth column: map person_id=COLUMN or name it with the truth column"
            )
        present = set(header)
        missing = [
            f"{column!r} (for {name})"
            for name, sources in self.columns.items()
            if name not in self.optional
            for column in sources
            if column not in present
        ]
        if missing:
            raise ColumnMappingError(
                f"column(s) {', '.join(missing)} not in {source}; its columns are: "
                f"{', '.join(header)}"
            )
        found = [
            name for name, sources in self.columns.items()
            if name != "person_id" and any(column in present for column in sources)
        ]
        if not found:
            raise ColumnMappingError(
                f"none of the mapped columns is in {source} (map them with --columns "
                f"FIELD=COLUMN,...); its columns are: {', '.join(header)}"
            )

    def row(self, raw: Mapping[str, str | None]) -> dict[str, str]:
        """One file row as our fields (unmapped ones empty; values stripped)."""
        out = dict.fromkeys(FIELDS, "")
        for name, sources in self.columns.items():
            values = [(raw.get(column) or "").strip() for column in sources]
            out[name] = " ".join(v for v in values if v)
        return out

    def truth(self, value: str) -> str | None:
        """The person a truth-column value names (None: no match of the truth pattern)."""
        if self.truth_pattern is None:
            return value or None
        match = re.search(self.truth_pattern, value)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)


_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_ISO = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$")


def iso_date(text: str | None) -> str:
    """``YYYYMMDD`` -> ``YYYY-MM-DD``; ISO dates as they are (zero-padded); "" for none.

    Other text is returned stripped but unchanged (normalisation decides what it is)."""
    value = (text or "").strip()
    compact = _COMPACT_DATE.match(value)
    if compact:
        return "-".join(compact.groups())
    if _ISO.match(value):
        year, month, day = value.split("-")
        return f"{year}-{int(month):02d}-{int(day):02d}"
    return value


def row_demographics(row: Mapping[str, str]) -> dict[str, Any]:
    """The demographics of one row of our fields, in the shape ``identity.model.Demographics``
    and the matching functions take (also the reader of `identity import`'s CSV)."""
    # no first given name but further ones: the first stays empty (not the middle promoted)
    given = [row.get("given") or "", *(row.get("middle") or "").split()]
    name: dict[str, Any] = {"family": row.get("family") or "",
                            "given": given if any(given) else [],
                            "use": "L"}
    if row.get("suffix"):
        name["suffix"] = row["suffix"]
    if row.get("prefix"):
        name["prefix"] = row["prefix"]
    names = [name] + [
        {"family": f, "given": name["given"], "use": "M"}
        for f in (row.get("previous_family") or "").split(";") if f
    ]
    demo: dict[str, Any] = {"names": names}
    birth_date = iso_date(row.get("birth_date"))
    if birth_date:
        demo["birth_date"] = birth_date
    if row.get("sex"):
        demo["sex"] = row["sex"]
    lines = [x for x in (row.get("address_line1"), row.get("address_line2")) if x]
    if lines or any(row.get(k) for k in ("city", "state", "postal_code")):
        demo["addresses"] = [{"lines": lines, "city": row.get("city") or "",
                              "state": row.get("state") or "",
                              "postal_code": row.get("postal_code") or "",
                              "country": row.get("country") or ""}]
    if row.get("phone"):
        demo["phones"] = [{"value": row["phone"]}]
    if row.get("mothers_maiden_name"):
        demo["mothers_maiden_name"] = row["mothers_maiden_name"]
    multiple = row.get("multiple_birth") or ""
    if multiple:
        demo["multiple_birth"] = int(multiple) if multiple.isdigit() else multiple
    return demo


def record_from_row(row: Mapping[str, str], *, row_number: int = 0) -> SynthRecord:
    """A record from one row of our fields (:meth:`ColumnMapping.row`)."""
    demo = row_demographics(row)
    source = row.get("source_domain") or ""
    identifiers: list[dict[str, Any]] = []
    if row.get("mrn"):
        identifiers.append({"domain": source, "value": row["mrn"], "type": "MR"})
    if row.get("ssn"):
        identifiers.append({"domain": SSN_DOMAIN, "value": row["ssn"], "type": "SS"})
    relations = dict(
        item.split("=", 1) for item in (row.get("relations") or "").split(";") if "=" in item
    )
    return SynthRecord(
        record_id=row.get("record_id") or str(row_number),
        person_id=row.get("person_id") or "",
        source_domain=source,
        demographics=demo,
        identifiers=identifiers,
        duplicate=row.get("duplicate") == "1",
        errors=[e for e in (row.get("errors") or "").split(";") if e],
        relations=relations,
    )


def iter_records(
    path: str | Path,
    mapping: ColumnMapping | str | None = None,
    *,
    truth_column: str | None = None,
    truth_pattern: str | None = None,
) -> Iterator[SynthRecord]:
    """The records of a labelled CSV, read through ``mapping`` (default: the ``synth``
    layout); ``truth_column`` / ``truth_pattern`` override the mapping's truth.

    Raises :class:`ColumnMappingError` for a mapping the file does not fit and for a row
    without a truth value (every row of a labelled file names its person)."""
    if not isinstance(mapping, ColumnMapping):
        mapping = ColumnMapping.parse(mapping)
    mapping = mapping.with_truth(truth_column, truth_pattern)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        mapping.check(header, source=str(path))
        for line, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue
            raw = dict(zip(header, values, strict=False))
            row = mapping.row(raw)
            person = mapping.truth(row["person_id"])
            if person is None:
                column = "+".join(mapping.columns["person_id"])
                problem = (
                    f"does not match the truth pattern {mapping.truth_pattern!r}"
                    if mapping.truth_pattern and row["person_id"] else "is empty"
                )
                raise ColumnMappingError(f"{path}, line {line}: the truth ({column}) {problem}")
            row["person_id"] = person
            yield record_from_row(row, row_number=line - 1)


def read_records(
    path: str | Path,
    mapping: ColumnMapping | str | None = None,
    *,
    truth_column: str | None = None,
    truth_pattern: str | None = None,
) -> list[SynthRecord]:
    """:func:`iter_records` as a list."""
    return list(iter_records(path, mapping, truth_column=truth_column,
                             truth_pattern=truth_pattern))
