"""Plain FHIR REST on Patient, as generic clients (fhirpy's ``save()``, HAPI's client) use it:
create (``POST /Patient``, conditional with ``If-None-Exist``), update and delete by id
(``PUT``/``DELETE /Patient/{id}``), the history of one Patient (``GET /Patient/{id}/_history``,
and ``vread`` of its older versions) and ``batch``/``transaction`` Bundles of these at
``POST /fhir``. Each is one command or read of the core, the same ones ITI-104 uses
(``FhirDoor.update``, ``merge``, ``removal``): the door decides no identity.

A Patient id names one source record; the record's own identifier (its domain and value) is
what the commands address. See docs/fhir.md, *Plain REST*.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import ValidationError

from identity.audit.record import Action, Outcome
from identity.errors import MpiError, NotFound, StoreUnavailable, UnknownIdentifier
from identity.fhir import search as pdq
from identity.fhir.access import PIX_FEED, PMIR_FEED, principal_of
from identity.fhir.audit import date_bounds
from identity.fhir.auditing import entry_patients, record_cx, redacted_reason, request_audit
from identity.fhir.door import Caller, FhirDoor, _now
from identity.fhir.patient import (
    authority_of,
    body_identifiers,
    etag,
    fhir_instant,
    replaced_by,
    validate_patient,
)
from identity.fhir.pmir import _validate_bundle
from identity.fhir.wire import (
    FhirError,
    Json,
    check_format,
    error_for,
    fhir_response,
    operation_outcome,
    read_json,
    writing,
)
from identity.model import (
    AuthorityRef,
    Demographics,
    HistoryEvent,
    Identifier,
    IdentifierRef,
    RecordStatus,
    SourceRecord,
)
from identity.mpi import Remove

REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
           403: "Forbidden", 404: "Not Found", 409: "Conflict", 410: "Gone",
           412: "Precondition Failed", 422: "Unprocessable Entity"}  # fmt: skip


def own_ref(record: SourceRecord) -> IdentifierRef:
    """The record's own identifier, as the core's commands address it."""
    return IdentifierRef(value=record.identifier, authority=AuthorityRef(
        namespace=record.domain.namespace, oid=record.domain.oid))


def status_text(status: int) -> str:
    """A Bundle entry's ``response.status``: the code and its reason phrase."""
    reason = REASONS.get(status)
    return f"{status} {reason}" if reason else str(status)


@dataclass
class Written:
    """What an interaction answers: its status and the record to send (None: no body, a
    delete)."""

    status: int
    record: SourceRecord | None = None


# --- the interactions, shared by the HTTP handlers and the Bundle entries -------------------


async def create(door: FhirDoor, body: Json, who: Caller, *,
                 if_none_exist: str | None = None) -> Written:  # fmt: skip
    """``POST /Patient``: the record goes to the domain of the Patient's identifier the client
    may assign in (the core's choice, as for a PMIR create); 403 when it may assign in none.
    A Patient whose identifier is already a record's, or that ``If-None-Exist`` (a search
    query) finds once, is answered 200 with that record and nothing is changed; a query that
    finds several is 412."""
    validate_patient(body)
    if replaced_by(body) is not None or body.get("active") is False:
        raise FhirError(422, "business-rule", "a create cannot merge or deactivate a patient: "
                        "PUT the retired Patient with a replaced-by link instead",
                        expression="Patient.active")
    if if_none_exist is not None:
        found = await matching(door, if_none_exist)
        if len(found) > 1:
            raise FhirError(412, "multiple-matches", f"If-None-Exist matches {len(found)} "
                            "patients", expression="If-None-Exist")
        if found:
            door_noop(door, who, found[0], Action.CREATE, "exists: If-None-Exist matched")
            return Written(200, found[0])
    if not body.get("identifier"):
        raise FhirError(400, "required", "Patient.identifier is required (1..*): it names the "
                        "domain the record is created in", expression="Patient.identifier")
    primary = await door.mpi.own_identifier(body_identifiers(body), who.client)
    try:
        existing: SourceRecord | None = await door.mpi.find_record(primary)
    except (UnknownIdentifier, NotFound):
        existing = None
    if existing is not None and existing.status != RecordStatus.REMOVED:
        door_noop(door, who, existing, Action.CREATE, "exists: identifier already registered")
        return Written(200, existing)
    record, status = await door.update(primary, body, who)
    return Written(status, record)


async def update(door: FhirDoor, raw_id: str, body: Json, who: Caller, *,
                 if_match: str | None = None) -> Written:  # fmt: skip
    """``PUT /Patient/{id}``: replace the record the id names (its own identifier is kept);
    with ``active: false`` and a ``replaced-by`` link, merge it (as ITI-104)."""
    validate_patient(body)
    if body.get("id") != raw_id:
        raise FhirError(400, "invalid", "Patient.id must be the id in the URL",
                        expression="Patient.id")
    current = await door.record_or_404(raw_id)
    if who.state is not None:
        who.state.patients = [record_cx(current)]
    own_system = current.domain.system
    for ident in body.get("identifier") or ():
        if ident.get("system") in (own_system, current.domain.namespace) and (
            ident.get("value") != current.identifier
        ):
            raise FhirError(422, "business-rule", f"Patient/{raw_id} is {own_system}|"
                            f"{current.identifier}; its identifier cannot be changed by an "
                            "update", expression="Patient.identifier")
    ref = own_ref(current)
    link = replaced_by(body)
    if link is not None:
        record, status = await door.merge(ref, body, link, who)
        return Written(status, record)
    if current.status == RecordStatus.MERGED:
        raise FhirError(422, "business-rule", f"Patient/{raw_id} was merged; unmerge is not "
                        "supported", expression="Patient.active")
    record, _ = await door.update(ref, body, who, if_match=if_match)
    return Written(200, record)


async def delete(door: FhirDoor, raw_id: str, who: Caller) -> Written:
    """``DELETE /Patient/{id}``: remove the record (the core's Remove, as ITI-104's conditional
    delete). Deleting a removed record again is 204 (delete is idempotent); a merged record is
    422 (it is no longer a patient of its own)."""
    try:
        current = await door.record_or_404(raw_id)
    except FhirError as exc:
        if exc.status != 410:
            raise
        gone = await door.mpi.get_record(int(raw_id))
        door_noop(door, who, gone, Action.DELETE, "already removed")
        return Written(204)
    if who.state is not None:
        who.state.patients = [record_cx(current)]
    if current.status == RecordStatus.MERGED:
        raise FhirError(422, "business-rule", f"Patient/{raw_id} was merged into another "
                        "Patient and cannot be removed")
    ref = own_ref(current)
    writing()  # the deadline stops here: see wire.writing
    await door.mpi.handle(Remove(identifier=ref), door.removal(who, ref))
    return Written(204)


async def matching(door: FhirDoor, query: str) -> list[SourceRecord]:
    """The active Patients a search query (``If-None-Exist``) finds; at most two are read
    (one is all a conditional create needs to tell)."""
    params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if not params:
        raise FhirError(400, "invalid", "If-None-Exist holds no search parameter",
                        expression="If-None-Exist")
    fhir = door.settings.fhir
    parsed = pdq.parse_search(params, default_count=2, max_count=fhir.max_page_size,
                              strict=True)
    parsed.count, parsed.offset = 2, 0
    systems = await door.domains_to_return(parsed.systems)
    _, records = await door.run_search(parsed, systems)
    return records


def door_noop(door: FhirDoor, who: Caller, record: SourceRecord, action: Action,
              why: str) -> None:  # fmt: skip
    """The audit record of a create or delete that changed nothing (the patient existed, or
    was removed before): the interaction, its patient, success, and why nothing changed."""
    auditor = who.auditor
    if auditor is None:
        return
    door.mpi.audit.later([auditor.patient_feed(
        who.transaction, action=action, caller=who.participant, human=who.human,
        patient=record_cx(record), message_id=who.message_id, outcome=Outcome.SUCCESS,
        description=f"nothing changed: {why}", endpoint=who.endpoint,
        resource=f"Patient/{record.id}")])  # fmt: skip
    if who.state is not None:
        who.state.recorded = True


# --- HTTP handlers ------------------------------------------------------------------------


def _prefer_minimal(request: web.Request) -> bool:
    return "return=minimal" in request.headers.get("Prefer", "").replace(" ", "")


def _answer(door: FhirDoor, request: web.Request, written: Written, who: Caller,
            location: bool) -> web.StreamResponse:  # fmt: skip
    headers = {"X-Request-Id": who.message_id}
    if written.record is None:
        return fhir_response(None, written.status, headers)
    headers.update(door.record_headers(request, written.record))
    if not location:
        del headers["Location"]
    if _prefer_minimal(request):
        return fhir_response(None, written.status, headers)
    return fhir_response(door.patient(written.record), written.status, headers)


async def create_handler(door: FhirDoor, request: web.Request) -> web.StreamResponse:
    check_format(request)
    who = door.caller(request)
    body = await read_json(request)
    if who.state is not None:
        who.state.patients = [door.enterprise_cx(body)]
    written = await create(door, body, who, if_none_exist=request.headers.get("If-None-Exist"))
    return _answer(door, request, written, who, location=written.status == 201)


async def update_handler(door: FhirDoor, request: web.Request) -> web.StreamResponse:
    check_format(request)
    who = door.caller(request)
    body = await read_json(request)
    written = await update(door, request.match_info["id"], body, who,
                           if_match=request.headers.get("If-Match"))
    return _answer(door, request, written, who, location=False)


async def delete_handler(door: FhirDoor, request: web.Request) -> web.StreamResponse:
    check_format(request)
    who = door.caller(request)
    written = await delete(door, request.match_info["id"], who)
    return _answer(door, request, written, who, location=False)


# --- history ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One version of a record, from the core's history: its number, when it was written,
    the event, and the record as it was (None when the history does not hold its content)."""

    number: int
    event: HistoryEvent
    record: SourceRecord | None

    @property
    def removed(self) -> bool:
        return self.record is not None and self.record.status == RecordStatus.REMOVED


def _bumps(event: HistoryEvent) -> int:
    """How many versions an event of the record wrote (an undo may write two: its identifier
    and its status are set back one after the other)."""
    if event.event.startswith("undo:"):
        before, after = event.before or {}, event.after or {}
        return int(before.get("identifier") != after.get("identifier")) + int(
            before.get("status") != after.get("status"))
    return 1


def _as_it_was(current: SourceRecord, door: FhirDoor, event: HistoryEvent,
               number: int) -> SourceRecord | None:  # fmt: skip
    """The record as a history row's ``after`` snapshot shows it: its identifier, status,
    demographics and, in rows written since history kept them, its other identifiers (the
    enterprise identifier is not in history)."""
    snapshot = event.after or {}
    domains = door.mpi.domains.by_id
    domain = domains.get(snapshot.get("domain_id", current.domain.id))
    if domain is None or "demographics" not in snapshot:
        return None
    try:
        demographics = Demographics.model_validate(snapshot["demographics"] or {})
        status = RecordStatus(snapshot.get("status", current.status))
        others = tuple(
            Identifier(domain=domains[d].namespace, value=str(v), oid=domains[d].oid, type=t)
            for d, v, t in snapshot.get("others") or () if d in domains)
    except (ValidationError, ValueError, TypeError):
        return None
    return SourceRecord(
        id=current.id, domain=domain, identifier=str(snapshot.get("identifier",
                                                                   current.identifier)),
        status=status, demographics=demographics, version=number, other_identifiers=others,
        merged_into=snapshot.get("merged_into"), created_at=current.created_at,
        updated_at=event.at,
    )  # fmt: skip


async def versions(door: FhirDoor, current: SourceRecord) -> list[Version]:
    """Every version of a record, oldest first, from the core's history of it; the last is
    the current record itself. Numbered as the core numbers them (``SourceRecord.version``)."""
    events = [e for e in await door.mpi.history(record_id=current.id)
              if e.entity == "source_record" and e.entity_id == current.id]  # fmt: skip
    numbered: list[tuple[int, HistoryEvent]] = []
    number = 0
    for event in events:
        if event.event in ("record_created", "record_imported"):
            number = 1
        else:
            step = _bumps(event)
            if step == 0:
                continue
            number += step
        numbered.append((number, event))
    if not numbered:
        return []
    shift = current.version - numbered[-1][0]  # a change history does not explain: align
    out = []
    for index, (n, event) in enumerate(numbered):
        last = index == len(numbered) - 1
        record = current if last else _as_it_was(current, door, event, n + shift)
        out.append(Version(n + shift, event, record))
    return out


async def history_handler(door: FhirDoor, request: web.Request) -> web.StreamResponse:
    """``GET /Patient/{id}/_history``: a ``history`` Bundle, newest version first. ``_count``
    keeps the newest n; ``_since`` the versions written at or after an instant."""
    check_format(request)
    raw_id = request.match_info["id"]
    current = await _any_record(door, raw_id)
    request_audit(request).patients = [record_cx(current)]
    found = list(reversed(await versions(door, current)))
    since = request.query.get("_since")
    if since:
        low, _ = date_bounds(since.replace(" ", "+"))
        if low is not None:
            found = [v for v in found if v.event.at >= low]
    count_text = request.query.get("_count")
    if count_text:
        if not count_text.isdigit():
            raise FhirError(400, "invalid", "_count: not an integer", expression="_count")
        found = found[: int(count_text)]
    base = door.base(request)
    entries = [_history_entry(door, base, v) for v in found]
    bundle: Json = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": fhir_instant(_now())},
        "type": "history",
        "total": len(entries),
        "link": [{"relation": "self", "url": f"{base}/Patient/{raw_id}/_history"}],
    }
    if entries:
        bundle["entry"] = entries
    response = fhir_response(bundle)
    door.read_audited(request, current, "history-instance")
    return response


def _history_entry(door: FhirDoor, base: str, version: Version) -> Json:
    record = version.record
    rid = version.event.entity_id
    if version.removed:
        method, status, url = "DELETE", 204, f"Patient/{rid}"
    elif version.number == 1:
        method, status, url = "POST", 201, "Patient"
    else:
        method, status, url = "PUT", 200, f"Patient/{rid}"
    entry: Json = {"fullUrl": f"{base}/Patient/{rid}"}
    if record is not None and not version.removed:
        entry["resource"] = door.patient(record)
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {"status": status_text(status), "etag": f'W/"{version.number}"',
                         "lastModified": fhir_instant(version.event.at)}
    return entry


async def _any_record(door: FhirDoor, raw_id: str) -> SourceRecord:
    """The record an id names, removed ones included (their history stays readable)."""
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
        raise FhirError(404, "not-found", f"Patient/{raw_id} is not known")
    try:
        return await door.mpi.get_record(int(raw_id))
    except NotFound as exc:
        raise FhirError(404, "not-found", f"Patient/{raw_id} is not known") from exc


async def older_version(door: FhirDoor, current: SourceRecord, vid: str) -> SourceRecord:
    """A version of a record other than the current one, from its history (vread)."""
    for version in await versions(door, current):
        if str(version.number) == vid:
            if version.removed:
                raise FhirError(410, "deleted", f"Patient/{current.id} version {vid} is a "
                                "removal")
            if version.record is None:
                break
            return version.record
    raise FhirError(404, "not-found", f"Patient/{current.id} has no version {vid!r} whose "
                    "content is kept")


# --- batch and transaction ----------------------------------------------------------------

Handler = Callable[[], Awaitable[web.StreamResponse]]


async def bundle_handler(door: FhirDoor, request: web.Request,
                         message: Handler) -> web.StreamResponse:  # fmt: skip
    """``POST /fhir``: a ``batch`` or ``transaction`` Bundle of Patient interactions; a
    ``message`` Bundle goes to PMIR (``message``)."""
    check_format(request)
    body = await read_json(request)
    kind = body.get("type") if body.get("resourceType") == "Bundle" else None
    if kind == "message" or kind is None:
        _require(request, PMIR_FEED.scope, PMIR_FEED.transactions)
        return await message()
    if kind not in ("batch", "transaction"):
        raise FhirError(400, "not-supported", f"POST [base] takes a batch, transaction or "
                        f"message Bundle, not {kind!r}", expression="Bundle.type")
    _require(request, PIX_FEED.scope, PIX_FEED.transactions)
    request_audit(request).transaction = "ITI-104"
    _validate_bundle(body)
    entries = body.get("entry") or []
    who = door.caller(request)
    base = door.base(request)
    if kind == "batch":
        results = []
        for index, entry in enumerate(entries):
            who.entry = index
            try:
                results.append(await _entry(door, request, base, entry, who))
            except StoreUnavailable:
                raise
            except (FhirError, MpiError) as exc:
                error = error_for(exc, door.system_of)
                _entry_refused(door, who, entry, index, error)
                results.append({"response": {
                    "status": status_text(error.status),
                    "outcome": operation_outcome([{**i, "diagnostics": f"entry[{index}]: "
                                                   f"{i.get('diagnostics')}"}
                                                  for i in error.issues])}})  # fmt: skip
    else:
        placed: dict[int, Json] = {}
        resolved: dict[str, str] = {}
        writing()  # the deadline stops here: see wire.writing
        async with door.mpi.atomic():
            for index in _transaction_order(entries):
                entry = entries[index]
                who.entry = index
                try:
                    entry = _resolved(entry, index, resolved, _local_urls(entries))
                    placed[index] = await _entry(door, request, base, entry, who)
                    full_url = entry.get("fullUrl")
                    location = placed[index].get("response", {}).get("location")
                    if isinstance(full_url, str) and full_url.startswith(LOCAL) and location:
                        resolved[full_url] = "/".join(location.split("/")[:2])
                except StoreUnavailable:
                    raise
                except (FhirError, MpiError) as exc:
                    error = error_for(exc, door.system_of)
                    _entry_refused(door, who, entry, index, error)
                    raise FhirError(error.status, error.issues[0]["code"], "", issues=[
                        {**i, "diagnostics": f"entry[{index}]: {i.get('diagnostics')}; nothing "
                         "in this transaction was applied"} for i in error.issues],
                        headers=error.headers) from exc  # fmt: skip
        results = [placed[index] for index in range(len(entries))]
    response: Json = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": f"{kind}-response",
        "link": [{"relation": "self", "url": base}],
    }
    if results:
        response["entry"] = results
    return fhir_response(response)


LOCAL = ("urn:uuid:", "urn:oid:")
"""fullUrls that name an entry of the Bundle only (FHIR R4 3.1.0.11.2, transaction)."""
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def _transaction_order(entries: list[Any]) -> list[int]:
    """The entries' indices in the order FHIR R4 processes a transaction (3.1.0.11.2):
    DELETE, POST, PUT/PATCH, then GET/HEAD, each in the Bundle's order."""
    def method(index: int) -> int:
        entry = entries[index]
        req = entry.get("request") if isinstance(entry, dict) else None
        name = str(req.get("method") or "").upper() if isinstance(req, dict) else ""
        return _ORDER.get(name, 3)
    return sorted(range(len(entries)), key=method)


def _local_urls(entries: list[Any]) -> set[str]:
    return {e["fullUrl"] for e in entries if isinstance(e, dict)
            and isinstance(e.get("fullUrl"), str) and e["fullUrl"].startswith(LOCAL)}


def _resolved(entry: Any, index: int, resolved: dict[str, str], local: set[str]) -> Any:
    """``entry`` with each reference to another entry's ``urn:uuid:`` fullUrl replaced by the
    ``Patient/<id>`` that entry was given (a transaction's references must be resolved,
    FHIR R4 3.1.0.11.2); a reference to no entry of the Bundle, or to one not applied yet (a
    GET's or a later POST's), is refused."""
    if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
        return entry

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: walk(v) for k, v in value.items()}
            target = value.get("reference")
            if isinstance(target, str) and target.startswith(LOCAL):
                if target in resolved:
                    out["reference"] = resolved[target]
                elif target in local:
                    raise FhirError(400, "not-supported", f"entry[{index}] refers to "
                                    f"{target}, an entry not created before it (a POST "
                                    "earlier in the Bundle can be referred to)",
                                    expression="Bundle.entry.resource")
                else:
                    raise FhirError(400, "not-found", f"entry[{index}] refers to {target}, "
                                    "which is no entry of this transaction",
                                    expression="Bundle.entry.resource")
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return {**entry, "resource": walk(entry["resource"])}


def _entry_refused(door: FhirDoor, who: Caller, entry: Any, index: int,
                   error: FhirError) -> None:  # fmt: skip
    """The audit record of a Bundle entry refused before the core recorded it (by the door,
    or by a check before its command): its interaction, its patient, the failure."""
    state, auditor = who.state, who.auditor
    if auditor is None or (state is not None and index in state.failed_entries):
        return
    request = entry.get("request") if isinstance(entry, dict) else None
    method = str((request or {}).get("method") or "").upper()
    action = {"POST": Action.CREATE, "DELETE": Action.DELETE, "GET": Action.READ}.get(
        method, Action.UPDATE)
    patients = entry_patients(entry, skip=door.enterprise_system) if isinstance(
        entry, dict) else [()]  # fmt: skip
    reason = redacted_reason(f"entry[{index}]: HTTP {error.status}: " + "; ".join(
        str(i.get("diagnostics")) for i in error.issues))
    outcome = Outcome.MINOR_FAILURE if error.status < 500 else Outcome.SERIOUS_FAILURE
    if action == Action.READ:
        records = [auditor.read(caller=who.participant, human=who.human, patient=patients[0],
                                resource="Patient/*", message_id=who.message_id,
                                outcome=outcome, description=reason, endpoint=who.endpoint)]
    else:
        records = [auditor.patient_feed(
            who.transaction, action=action, caller=who.participant, human=who.human,
            patient=patient, message_id=who.message_id, outcome=outcome, description=reason,
            endpoint=who.endpoint) for patient in patients[:1]]  # fmt: skip
    door.mpi.audit.later(records)
    if state is not None:
        state.recorded = True


def _require(request: web.Request, scope: str | None, transactions: tuple[str, ...]) -> None:
    """The route of ``POST /fhir`` is open to either kind of feed; the Bundle's kind needs its
    own scope (a token for PMIR does not make batches of plain REST, nor the reverse)."""
    principal = principal_of(request)
    if scope is not None and not principal.grants(scope, transactions):
        raise FhirError(403, "forbidden", f"the token does not grant {scope} for "
                        f"{'/'.join(transactions)}")


async def _entry(door: FhirDoor, request: web.Request, base: str, entry: Any,
                 who: Caller) -> Json:  # fmt: skip
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise FhirError(400, "required", "each entry needs a request", expression="Bundle.entry")
    req = entry["request"]
    method = str(req.get("method") or "").upper()
    url = str(req.get("url") or "")
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    resource = entry.get("resource")
    if not parts or parts[0] != "Patient":
        raise FhirError(400, "not-supported", f"{method} {url}: only Patient entries are "
                        "supported", expression="Bundle.entry.request.url")
    written: Written
    if method == "POST" and len(parts) == 1:
        written = await create(door, _resource(resource), who,
                               if_none_exist=req.get("ifNoneExist"))
    elif method == "PUT" and len(parts) == 2:
        written = await update(door, parts[1], _resource(resource), who,
                               if_match=req.get("ifMatch"))
    elif method == "PUT" and len(parts) == 1 and query:
        ref = _conditional(query)
        body = _resource(resource)
        validate_patient(body)
        link = replaced_by(body)
        if link is not None:
            record, status = await door.merge(ref, body, link, who)
        else:
            record, status = await door.update(ref, body, who, if_match=req.get("ifMatch"))
        written = Written(status, record)
    elif method == "DELETE" and len(parts) == 2:
        written = await delete(door, parts[1], who)
    elif method == "DELETE" and len(parts) == 1 and query:
        ref = _conditional(query)
        writing()
        await door.mpi.handle(Remove(identifier=ref), door.removal(who, ref))
        written = Written(204)
    elif method == "GET" and len(parts) == 2:
        record = await door.record_or_404(parts[1])
        door.read_audited(request, record)
        written = Written(200, record)
    else:
        raise FhirError(400, "not-supported", f"{method} {url} is not supported in a Bundle "
                        "(POST Patient, PUT and DELETE Patient/<id> or Patient?identifier=, "
                        "GET Patient/<id> are)", expression="Bundle.entry.request")
    out: Json = {}
    if written.record is not None:
        record = written.record
        out["fullUrl"] = f"{base}/Patient/{record.id}"
        out["resource"] = door.patient(record)
        out["response"] = {"status": status_text(written.status),
                           "location": f"Patient/{record.id}/_history/{record.version}",
                           "etag": etag(record),
                           "lastModified": fhir_instant(record.updated_at)}
    else:
        out["response"] = {"status": status_text(written.status)}
    return out


def _resource(resource: Any) -> Json:
    if not isinstance(resource, dict):
        raise FhirError(400, "required", "a POST or PUT entry needs a Patient",
                        expression="Bundle.entry.resource")
    return resource


def _conditional(query: str) -> IdentifierRef:
    """The one ``identifier=system|value`` of a conditional entry's URL."""
    params = parse_qsl(query, keep_blank_values=True)
    tokens = [v for k, v in params if k == "identifier"]
    if len(tokens) != 1 or len(params) != 1:
        raise FhirError(400, "invalid", "a conditional entry takes one identifier=system|value",
                        expression="Bundle.entry.request.url")
    system, _, value = tokens[0].partition("|")
    if not system or not value:
        raise FhirError(400, "required", "identifier needs both system and value",
                        expression="Bundle.entry.request.url")
    return IdentifierRef(value=value, authority=authority_of(system))


__all__ = [
    "Written",
    "bundle_handler",
    "create",
    "create_handler",
    "delete",
    "delete_handler",
    "history_handler",
    "older_version",
    "update",
    "update_handler",
    "versions",
]
