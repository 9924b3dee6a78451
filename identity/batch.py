"""Files in, records out: the readers behind `identity import` (a front door for files).

The population CSV is this door's own layout (documented in docs/operations.md, *Bulk
import*): UTF-8, comma-separated, one header row, one source record per row, columns found by
their header name (order free, unknown columns ignored). ``identity generate`` writes it.

=====================  ==========================================================================
column                 meaning
=====================  ==========================================================================
``source_domain``      required: namespace of the assigning authority of ``mrn``
``mrn``                required: the record's own identifier in that domain
``family``             family name
``given``              first given name
``middle``             further given names, separated by spaces
``prefix``, ``suffix`` name prefix (DR) and suffix (JR, III)
``previous_family``    earlier family names, separated by ``;`` (kept as maiden names, use M)
``birth_date``         ``YYYY-MM-DD`` or ``YYYYMMDD`` (or ``YYYY``, ``YYYY-MM``)
``sex``                HL7 table 0001 (``M``, ``F``, ``O``, ``U``) or FHIR gender
``address_line1``,     street lines, then ``city``, ``state``, ``postal_code``, ``country``
``address_line2``
``phone``              a phone number
``ssn``                a US Social Security Number: another identifier of the record, assigning
                       authority the OID ``2.16.840.1.113883.4.1`` (:data:`NATIONAL_ID_OID`)
``mothers_maiden_name`` mother's maiden name
``multiple_birth``     birth order (``1``, ``2``) for a multiple birth, else empty
=====================  ==========================================================================

An empty cell is a value not given. The generator's other columns (``record_id``,
``person_id``, the ground truth, ``duplicate``, ``errors``, ``relations``) are not read.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from identity.errors import InvalidInput
from identity.model import AuthorityRef, Demographics, IdentifierRef, RecordInput
from matching.columns import row_demographics
from matching.normalize import SSN_OID

#: Assigning authority of the ``ssn`` column: the US Social Security Administration.
NATIONAL_ID_OID = SSN_OID

#: The columns a population CSV must have.
REQUIRED_COLUMNS = ("source_domain", "mrn")

#: Every column this reader uses.
COLUMNS = (
    "source_domain", "mrn", "family", "given", "middle", "prefix", "suffix", "previous_family",
    "birth_date", "sex", "address_line1", "address_line2", "city", "state", "postal_code",
    "country", "phone", "ssn", "mothers_maiden_name", "multiple_birth",
)

_OID = re.compile(r"[0-2](\.\d+)+")


def row_input(row: Mapping[str, str]) -> RecordInput:
    """One CSV row as the record the core registers."""
    if not row.get("source_domain") or not row.get("mrn"):
        raise InvalidInput("source_domain and mrn are required")
    others = []
    if row.get("ssn"):
        others.append(IdentifierRef(
            value=row["ssn"], authority=AuthorityRef(oid=NATIONAL_ID_OID), type="SS"
        ))
    return RecordInput(
        identifier=IdentifierRef(
            value=row["mrn"], authority=AuthorityRef(namespace=row["source_domain"]), type="MR"
        ),
        demographics=Demographics.model_validate(row_demographics(row)),
        other_identifiers=tuple(others),
    )


def read_population_csv(path: str | Path) -> Iterator[RecordInput]:
    """The records of a population CSV, one row at a time: a million-row file is never held
    twice. A missing required column or a bad row stops the read with InvalidInput naming
    the line."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise InvalidInput(f"{path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            try:
                yield row_input(row)
            except (InvalidInput, ValueError) as exc:
                raise InvalidInput(f"{path}, line {reader.line_num}: {exc}") from exc


class GeneratedRecord(Protocol):
    """A record in the synthetic generator's in-memory shape (matching.synth.SynthRecord)."""

    source_domain: str
    demographics: dict[str, Any]
    identifiers: list[dict[str, Any]]


def record_input(record: GeneratedRecord) -> RecordInput:
    """A generated record (tests and benchmarks feed these without a file) as the record the
    core registers: its identifier in ``source_domain`` is its own, the others (a national ID,
    whose domain is an OID) are other identifiers."""
    refs = [
        IdentifierRef(
            value=identifier["value"],
            authority=_authority(identifier["domain"]),
            type=identifier.get("type"),
        )
        for identifier in record.identifiers
    ]
    primary = next(r for r in refs if r.authority.namespace == record.source_domain)
    return RecordInput(
        identifier=primary,
        demographics=Demographics.model_validate(record.demographics),
        other_identifiers=tuple(r for r in refs if r is not primary),
    )


def _authority(domain: str) -> AuthorityRef:
    return AuthorityRef(oid=domain) if _OID.fullmatch(domain) else AuthorityRef(namespace=domain)

