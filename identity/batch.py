"""Files in, records out: the readers behind `identity import` (a front door for files).

The population CSV is the layout `identity generate` writes (matching.synth.write_csv): one
source record per row, its own identifier in ``mrn`` under the ``source_domain`` namespace,
a national ID in ``ssn`` (assigning authority: the SSN OID), demographics in named columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from identity.model import AuthorityRef, Demographics, IdentifierRef, RecordInput
from matching.synth import SSN_DOMAIN, SynthRecord, iter_csv


def record_input(record: SynthRecord) -> RecordInput:
    refs = []
    for identifier in record.identifiers:
        domain = identifier["domain"]
        authority = (
            AuthorityRef(oid=domain) if domain == SSN_DOMAIN else AuthorityRef(namespace=domain)
        )
        refs.append(
            IdentifierRef(
                value=identifier["value"], authority=authority, type=identifier.get("type")
            )
        )
    primary = next(r for r in refs if r.authority.namespace == record.source_domain)
    return RecordInput(
        identifier=primary,
        demographics=Demographics.model_validate(record.demographics),
        other_identifiers=tuple(r for r in refs if r is not primary),
    )


def read_population_csv(path: str | Path) -> Iterator[RecordInput]:
    """One record at a time: a million-row file is never held twice."""
    return (record_input(r) for r in iter_csv(path))
