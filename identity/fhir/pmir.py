"""PMIR ITI-93 Mobile Patient Identity Feed: a message Bundle whose MessageHeader (event
urn:ihe:iti:pmir:2019:patient-feed) focuses a history Bundle of Patient create (POST), update or
merge (PUT) and delete (DELETE) entries.

Each entry is one core command, applied in order, and the message is atomic: all entries run in
one transaction (``Mpi.atomic``), so either every entry is applied or none is. The response
message Bundle reports each entry's status; when an entry fails, nothing is applied, the response
code is ``fatal-error`` with an OperationOutcome, the failed entry carries its own error status
and outcome and every other entry status 409 ("not applied").
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from identity.audit.record import Action, Outcome
from identity.errors import MpiError, StoreUnavailable
from identity.fhir.auditing import entry_patients, redacted_reason
from identity.fhir.door import Caller, FhirDoor, _now
from identity.fhir.patient import (
    body_identifiers,
    fhir_instant,
    identifier_ref,
    is_mother,
    parse_token,
    related_identifier,
    replaced_by,
    validate_patient,
)
from identity.fhir.wire import (
    FhirError,
    Json,
    check_format,
    error_for,
    fhir_response,
    issue,
    operation_outcome,
    read_json,
    validation_issues,
    writing,
)
from identity.model import IdentifierRef, RecordStatus
from identity.mpi import Remove

FEED_EVENT = "urn:ihe:iti:pmir:2019:patient-feed"
RESPONSE_EVENT = "urn:ihe:iti:pmir:2019:patient-feed-response"
RESPONSE_DEFINITION = (
    "https://profiles.ihe.net/ITI/PMIR/MessageDefinition/IHE.PMIR.MessageDefinition.Response"
)


def _validate_bundle(body: Json) -> None:
    from fhir.resources.R4B.bundle import Bundle

    try:
        Bundle.model_validate(body)
    except ValidationError as exc:
        raise FhirError(400, "structure", "invalid Bundle",
                        issues=validation_issues(exc, "Bundle")) from exc
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as exc:
        # fhir.resources fails this way on some malformed input (an entry's resource whose
        # resourceType is empty or not a string, for one)
        raise FhirError(400, "structure", f"invalid Bundle: not a valid resource ({exc!r})",
                        expression="Bundle") from exc


def _history(body: Json) -> tuple[Json, Json]:
    if body.get("resourceType") != "Bundle" or body.get("type") != "message":
        raise FhirError(400, "invalid", "ITI-93 takes a Bundle of type message")
    entries = body.get("entry") or []
    if len(entries) < 2:
        raise FhirError(400, "invalid", "the message needs a MessageHeader and a history Bundle")
    header = entries[0].get("resource") or {}
    if header.get("resourceType") != "MessageHeader":
        raise FhirError(400, "invalid", "entry[0] must be a MessageHeader")
    if header.get("eventUri") != FEED_EVENT:
        raise FhirError(400, "not-supported", f"unsupported event {header.get('eventUri')!r}; "
                        f"expected {FEED_EVENT}", expression="MessageHeader.eventUri")
    focus = [f.get("reference") for f in header.get("focus") or ()]
    history = None
    for entry in entries[1:]:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Bundle" and resource.get("type") == "history":
            full_url = entry.get("fullUrl") or ""
            rid = resource.get("id")
            if not focus or any(
                ref and (ref == full_url or full_url.endswith("/" + ref)
                         or (rid and ref.endswith(f"Bundle/{rid}")))
                for ref in focus
            ):
                history = resource
                break
    if history is None:
        raise FhirError(400, "invalid", "no history Bundle focused by the MessageHeader")
    return header, history


async def process_message(door: FhirDoor, request: web.Request) -> web.StreamResponse:
    check_format(request)
    body = await read_json(request)
    _validate_bundle(body)
    header, history = _history(body)
    who = door.caller(request)
    who.transaction = "ITI-93"
    entries_in = list(history.get("entry") or ())
    mothers = _mothers(entries_in)
    results: list[Json] = []
    failed: list[Json] = []
    writing()  # the deadline stops here: see wire.writing
    try:
        async with door.mpi.atomic():
            for index, entry in enumerate(entries_in):
                who.entry = index
                try:
                    results.append(await _apply(door, request, entry, who, index, mothers))
                except StoreUnavailable:
                    raise
                except (FhirError, MpiError) as exc:
                    raise _EntryFailed(index, error_for(exc, door.system_of)) from exc
    except _EntryFailed as failure:
        error = failure.error
        _not_applied_audit(door, who, entries_in, failure.index, error.status,
                           "; ".join(str(i.get("diagnostics")) for i in error.issues))
        failed = [{**i, "diagnostics": f"entry[{failure.index}]: {i['diagnostics']}; "
                   "nothing in this message was applied"} for i in error.issues]
        results = [_not_applied(entry, failure.index) for entry in entries_in]
        results[failure.index]["response"] = {
            "status": str(error.status), "outcome": operation_outcome(error.issues)}
    except Exception as exc:  # the block itself failed (the database, its commit): no change
        _not_applied_audit(door, who, entries_in, None, 500, f"{type(exc).__name__}: {exc}")
        raise
    base = door.base(request)
    response_history: Json = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "entry": results,
    }
    response_header: Json = {
        "resourceType": "MessageHeader",
        "id": str(uuid.uuid4()),
        "eventUri": RESPONSE_EVENT,
        "source": {"endpoint": base},
        "response": {"identifier": header.get("id") or "unknown",
                     "code": "fatal-error" if failed else "ok"},
        "focus": [{"reference": f"urn:uuid:{response_history['id']}"}],
        "definition": RESPONSE_DEFINITION,
    }
    entries: list[Json] = [
        {"fullUrl": f"urn:uuid:{response_header['id']}", "resource": response_header},
        {"fullUrl": f"urn:uuid:{response_history['id']}", "resource": response_history},
    ]
    if failed:
        outcome_id = str(uuid.uuid4())
        response_header["response"]["details"] = {"reference": f"urn:uuid:{outcome_id}"}
        entries.append({"fullUrl": f"urn:uuid:{outcome_id}",
                        "resource": {**operation_outcome(failed), "id": outcome_id}})
    message: Json = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "message",
        "timestamp": fhir_instant(_now()),
        "entry": entries,
    }
    return fhir_response(message)


class _EntryFailed(Exception):
    """An entry of an atomic PMIR message failed: the message's transaction rolls back."""

    def __init__(self, index: int, error: FhirError) -> None:
        super().__init__(f"entry[{index}] failed")
        self.index = index
        self.error = error


def _not_applied_audit(door: FhirDoor, who: Caller, entries: list[Json], failed_index: int | None,
                       status: int, reason: str) -> None:  # fmt: skip
    """The records of a message that was not applied: one per patient of each entry, with the
    failure outcome, except the entries whose command the core recorded as refused or failed
    (queued, so kept by the rollback); the records of the entries applied before the failure
    were written in the rolled-back transaction and are gone with it."""
    state, auditor = who.state, who.auditor
    if auditor is None:
        return
    outcome = Outcome.MINOR_FAILURE if status < 500 else Outcome.SERIOUS_FAILURE
    done = state.failed_entries if state is not None else set()
    records = []
    for index, entry in enumerate(entries):
        if index in done:
            continue
        if index == failed_index:
            why = f"entry[{index}]: {reason}"
        elif failed_index is not None:
            why = (f"not applied: entry[{failed_index}] failed and the message is applied as "
                   "a whole or not at all")
        else:
            why = f"not applied: {reason}"
        url = str((entry.get("request") or {}).get("url") or "") if isinstance(
            entry, dict) else ""  # fmt: skip
        rid = url[len("Patient/"):] if url.startswith("Patient/") else ""
        resource = url if rid.isdigit() and len(rid) <= 18 else None  # else it may be data
        for patient in entry_patients(entry, skip=door.enterprise_system) if isinstance(
                entry, dict) else [()]:  # fmt: skip
            records.append(auditor.patient_feed(
                "ITI-93", action=Action.EXECUTE, caller=who.participant, human=who.human,
                patient=patient, message_id=who.message_id, outcome=outcome,
                description=redacted_reason(why), endpoint=who.endpoint,
                resource=resource))  # fmt: skip
    if not entries:
        records.append(auditor.patient_feed(
            "ITI-93", action=Action.EXECUTE, caller=who.participant, human=who.human,
            patient=(), message_id=who.message_id, outcome=outcome,
            description=redacted_reason(f"not applied: {reason}"),
            endpoint=who.endpoint))  # fmt: skip
    if records:
        door.mpi.audit.later(records)
    if state is not None:
        state.recorded = True


def _not_applied(entry: Json, failed_index: int) -> Json:
    return {
        "request": entry.get("request") or {"method": "POST", "url": "Patient"},
        "response": {"status": "409", "outcome": operation_outcome([issue(
            "processing",
            f"not applied: entry[{failed_index}] failed and the message is applied as a whole "
            "or not at all")])},
    }


async def _target(door: FhirDoor, url: str, resource: Json | None, who: Caller) -> IdentifierRef:
    """The identifier an entry's request.url names: ``Patient?identifier=s|v``, or
    ``Patient/<id>`` of this server; failing that the Patient's own identifier."""
    ref = _identifier_in_url(url)
    if ref is not None:
        return ref
    rid = url.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if rid.isascii() and rid.isdigit():
        try:
            record = await door.mpi.get_record(int(rid))
        except MpiError:
            record = None
        if record is not None and record.status != RecordStatus.REMOVED:
            return IdentifierRef(value=record.identifier,
                                 authority=_authority(record.domain.namespace))
    if resource is not None:
        return await door.mpi.own_identifier(body_identifiers(resource), who.client)
    raise FhirError(404, "not-found", f"{url!r} names no Patient of this server")


def _identifier_in_url(url: str) -> IdentifierRef | None:
    """The identifier of ``Patient?identifier=system|value``; None for a URL without a query."""
    _, _, query = url.partition("?")
    if not query:
        return None
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == "identifier":
            from urllib.parse import unquote

            system, ident = parse_token(unquote(value))
            if system and ident:
                return identifier_ref(system, ident)
    raise FhirError(400, "invalid", f"request.url {url!r}: need identifier=system|value")


def _authority(namespace: str) -> Any:
    from identity.model import AuthorityRef

    return AuthorityRef(namespace=namespace)


def _entry_request(entry: Json) -> tuple[str, str, Json | None]:
    """(method, url, resource) of a history entry; the Patient of a POST or PUT validated."""
    req = entry.get("request") or {}
    method = (req.get("method") or "").upper()
    url = req.get("url") or "Patient"
    resource = entry.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise FhirError(400, "required", "a POST or PUT entry needs a Patient")
        validate_patient(resource)
    return method, url, resource


async def _apply(
    door: FhirDoor, request: web.Request, entry: Json, who: Caller, index: int,
    mothers: _Mothers,
) -> Json:
    resource = entry.get("resource")
    if isinstance(resource, dict) and resource.get("resourceType") == "RelatedPerson":
        return _related_entry(entry, index, mothers)
    method, url, resource = _entry_request(entry)
    base = door.base(request)
    mother = mothers.of_patient.get(index)
    if method == "POST":
        primary = await door.mpi.own_identifier(body_identifiers(resource or {}), who.client)
        record, status = await door.update(primary, resource or {}, who, mother=mother)
    elif method == "PUT":
        target = await _target(door, url, resource, who)
        link = replaced_by(resource or {})
        if link is not None:
            record, status = await door.merge(target, resource or {}, link, who)
        else:
            current = await _current(door, target)
            if current is not None and current.status == RecordStatus.MERGED:
                raise FhirError(422, "business-rule", "unmerge is not supported: the patient "
                                "was merged (PMIR); feed a new identifier instead")
            record, status = await door.update(target, resource or {}, who, mother=mother)
    elif method == "DELETE":
        target = await _target(door, url, None, who)
        await door.mpi.handle(Remove(identifier=target), door.removal(who, target))
        return {"request": {"method": "DELETE", "url": url}, "response": {"status": "204"}}
    else:
        raise FhirError(400, "not-supported", f"entry[{index}]: method {method!r} not supported")
    return {
        "fullUrl": f"{base}/Patient/{record.id}",
        "resource": door.patient(record),
        "request": {"method": method, "url": url},
        "response": {
            "status": str(status),
            "location": f"Patient/{record.id}/_history/{record.version}",
            "etag": f'W/"{record.version}"',
            "lastModified": fhir_instant(record.updated_at),
        },
    }


# --- a newborn's mother as a RelatedPerson entry (issue 18 item 6) ---------------------------


class _Mothers:
    """The mothers a history Bundle names: per Patient entry (its index) her identifier, and
    per RelatedPerson entry used the index of the Patient entry it is the mother of."""

    def __init__(self) -> None:
        self.of_patient: dict[int, IdentifierRef] = {}
        self.used: dict[int, int] = {}


def _refers(reference: Any, entry: Any, kind: str) -> bool:
    """Whether a Reference names the resource of a history entry: its ``fullUrl`` (or that
    URL's ``<kind>/<id>`` tail), ``<kind>/<id>`` of the resource's id, the entry's
    ``request.url``, or (a logical reference) one of the resource's identifiers."""
    if not isinstance(reference, dict) or not isinstance(entry, dict):
        return False
    resource = entry.get("resource") if isinstance(entry.get("resource"), dict) else {}
    target = reference.get("reference")
    if isinstance(target, str) and target:
        full = str(entry.get("fullUrl") or "")
        url = str((entry.get("request") or {}).get("url") or "")
        rid = resource.get("id")
        return (target in (full, url) or (bool(full) and full.endswith("/" + target))
                or (bool(rid) and target == f"{kind}/{rid}"))
    ident = reference.get("identifier")
    if isinstance(ident, dict) and ident.get("value"):
        return any(isinstance(i, dict) and i.get("system") == ident.get("system")
                   and i.get("value") == ident["value"] for i in resource.get("identifier") or ())
    return False


def _mothers(entries: list[Any]) -> _Mothers:
    """Each RelatedPerson entry that is a mother (:func:`is_mother`) whose ``patient`` names a
    Patient entry of the message gives that Patient its mother's identifier: the
    RelatedPerson's own first identifier, else (PMIR's example of a mother and her newborn,
    after FHIR R4 Patient *Mother and newborn relationships*) the first identifier of the
    mother's own Patient entry, the one whose ``link`` of type seealso references the
    RelatedPerson. The first such RelatedPerson of a Patient is hers."""
    found = _Mothers()
    patients = {i: e for i, e in enumerate(entries) if isinstance(e, dict)
                and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == "Patient"}
    for index, entry in enumerate(entries):
        related = entry.get("resource") if isinstance(entry, dict) else None
        if not is_mother(related):
            continue
        assert isinstance(related, dict)
        child = next((i for i, e in patients.items()
                      if _refers(related.get("patient"), e, "Patient")), None)
        if child is None:
            continue
        ref = related_identifier(related)
        if ref is None:
            for i, e in patients.items():
                own = body_identifiers(e["resource"])
                if i != child and own and any(
                        isinstance(link, dict) and link.get("type") == "seealso"
                        and _refers(link.get("other"), entry, "RelatedPerson")
                        for link in e["resource"].get("link") or ()):
                    ref = own[0]
                    break
        if ref is not None:
            found.of_patient.setdefault(child, ref)
            found.used[index] = child
    return found


def _related_entry(entry: Json, index: int, mothers: _Mothers) -> Json:
    """The answer to a RelatedPerson entry: the registry keeps a mother as her newborn's
    mother's identifier (PID-21), not as a resource of its own."""
    child = mothers.used.get(index)
    if child is None:
        raise FhirError(422, "business-rule", "a RelatedPerson entry is kept only as the "
                        "mother's identifier of a Patient of the same message: relationship "
                        "MTH, NMTH or GESTM (v3-RoleCode), an identifier (or a Patient entry of "
                        "hers whose link of type seealso references it), and a patient that "
                        "references a Patient entry of this message",
                        expression="RelatedPerson")
    return {
        "request": entry.get("request") or {"method": "POST", "url": "RelatedPerson"},
        "response": {"status": "200", "outcome": operation_outcome([issue(
            "informational", f"kept as the mother's identifier of the Patient of entry[{child}]",
            severity="information")])},
    }


async def _current(door: FhirDoor, ref: IdentifierRef) -> Any:
    try:
        return await door.mpi.find_record(ref)
    except MpiError:
        return None


__all__ = ["issue", "process_message"]
