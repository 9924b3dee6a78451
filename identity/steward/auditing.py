"""The audit records of what a steward looks at (ATNA, docs/audit.md): each view of patients'
records through the steward API or the console (a queue page, a review item, a person, a
record, a search) is recorded with the steward as the human requestor, one record per patient
shown, patients by identifier only, the request redacted like a PDQ query. Decisions are
recorded by the core, in their own transaction (identity.mpi.handlers). Reads are queued and
written in the background (``AuditTrail.defer``), off the request's path."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from aiohttp import web
from pydantic import BaseModel

from identity.audit.record import cx, human_requestor
from identity.fhir.auditing import redacted_query
from identity.model import (
    Person,
    PersonHits,
    PersonView,
    QueuePage,
    RecordSummary,
    RecordView,
    ReviewDetail,
    SourceRecord,
)
from identity.mpi import Mpi
from identity.steward.access import steward_of


def _record_cx(mpi: Mpi, record: SourceRecord | RecordSummary) -> list[str]:
    enterprise = mpi.domains.enterprise
    patient = []
    if record.enterprise_id:
        patient.append(cx(record.enterprise_id, oid=enterprise.oid,
                          namespace=enterprise.namespace))
    if isinstance(record, SourceRecord):
        patient.append(cx(record.identifier, oid=record.domain.oid,
                          namespace=record.domain.namespace))
    else:
        oid = next((d.oid for d in mpi.domains.all() if d.namespace == record.domain), None)
        patient.append(cx(record.identifier, oid=oid, namespace=record.domain))
    return patient


def _person_cx(mpi: Mpi, person: Person) -> list[str]:
    enterprise = mpi.domains.enterprise
    patient = [cx(person.enterprise_id, oid=enterprise.oid, namespace=enterprise.namespace)]
    patient += [cx(r.identifier, oid=r.domain.oid, namespace=r.domain.namespace)
                for r in person.records]
    return patient


def patients_of(mpi: Mpi, view: BaseModel) -> tuple[str, bool, list[list[str]]]:
    """What a view shows: its name, whether it is a search, and its patients (each a list of
    CX). A review item shows two records (two patients unless they are one person's)."""
    if isinstance(view, ReviewDetail):
        shown: Iterable[SourceRecord] = [view.record.record] + (
            [view.other.record] if view.other else [])
        return "review-item", False, _distinct(_record_cx(mpi, r) for r in shown)
    if isinstance(view, PersonView):
        return "person", False, [_person_cx(mpi, view.person)]
    if isinstance(view, RecordView):
        return "record", False, [_record_cx(mpi, view.record)]
    if isinstance(view, PersonHits):
        return "persons", True, [_person_cx(mpi, p) for p in view.persons]
    if isinstance(view, QueuePage):
        summaries = [s for i in view.items for s in (i.record, i.other) if s is not None]
        return "review-queue", True, _distinct(_record_cx(mpi, s) for s in summaries)
    raise TypeError(f"not a view of patients: {type(view).__name__}")


def _distinct(groups: Iterable[list[str]]) -> list[list[str]]:
    """One group per patient: records of one person (same enterprise CX) are merged."""
    out: dict[str, list[str]] = {}
    for group in groups:
        key = group[0]
        if key in out:
            out[key] += [c for c in group if c not in out[key]]
        else:
            out[key] = list(group)
    return list(out.values())


def audit_view(request: web.Request, mpi: Mpi, view: BaseModel) -> None:
    """Queue the audit records of ``view`` shown to the request's steward."""
    what, search, patients = patients_of(mpi, view)
    record_view(request, mpi, what, patients, search=search)


def record_view(request: web.Request, mpi: Mpi, what: str, patients: Sequence[Sequence[str]],
                *, search: bool) -> None:  # fmt: skip
    steward = human_requestor(steward_of(request).name)
    query = redacted_query(request.method, request.path, request.query.items())
    message_id = request.headers.get("X-Request-Id")
    auditor, at = mpi.audit.auditor, datetime.now(UTC)
    mpi.audit.defer(lambda: auditor.steward_read(
        what, steward=steward, patients=patients, query=query, search=search,
        message_id=message_id, at=at,
    ))  # fmt: skip
