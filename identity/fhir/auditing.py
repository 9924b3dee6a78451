"""The audit records of the FHIR door (ATNA, IHE ITI-20; docs/audit.md).

- **Changes** (ITI-104, ITI-93): each command's envelope carries its records
  (``Caller.feed`` in identity.fhir.door); the core writes them in the command's transaction,
  or queues them with the failure outcome when the command is refused or fails.
- **Reads** (ITI-83, ITI-78, ITI-119): the handler builds the records once its response is
  built and queues them (``AuditTrail.later``): written in the background, in batches.
- **Everything else that fails** (a 4xx or 5xx that neither of the above recorded: a request
  refused by the door before any command, a 401 or 403 of the access control) is recorded here,
  once, by :class:`DoorAudit`'s middleware, the outermost of the FHIR sub-application.

The query a record holds is **redacted** (:func:`redacted_query`): IHE and BALP put the query
as received in the record, but issue 16 allows patient data in an audit record only as
identifiers, so a search parameter's value is replaced by ``*`` unless it is an identifier
(``identifier``, ``sourceIdentifier``, ``targetSystem``, ``_id``) or a control parameter
(``_count``, ...). The parameter names stay: what was searched by, not for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from aiohttp import web

from identity.audit.record import (
    TRANSACTIONS,
    Action,
    AuditRecord,
    Outcome,
    cx,
    cx_of_system,
    fhir_client,
)
from identity.fhir.access import REFUSAL_KEY, AccessControl
from identity.fhir.wire import FhirResponse, Handler, Json

if TYPE_CHECKING:
    from identity.fhir.door import FhirDoor
    from identity.model import IdentifierRef, SourceRecord

log = logging.getLogger("identity.fhir.audit")

REDACTED = "*"

IDENTIFIER_PARAMS = frozenset({"identifier", "sourceIdentifier", "targetSystem", "_id",
                               "resource.identifier"})  # fmt: skip
"""Parameters whose values are identifiers: kept in the recorded query."""
CONTROL_PARAMS = frozenset({"_count", "_offset", "_format", "_total", "_pretty", "_summary",
                            "_elements", "_sort", "_after", "count",
                            "onlyCertainMatches"})  # fmt: skip
"""Parameters that steer the answer and say nothing of a patient: kept."""
KEPT_PARAMS = IDENTIFIER_PARAMS | CONTROL_PARAMS

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
_SAFE = ":|/,.-_~@"
_PLAIN = re.compile(r"^[A-Za-z0-9:|/,.\-_~@]*$")


def _quote(text: str) -> str:
    return text if _PLAIN.match(text) else quote(text, _SAFE)


def _kept(name: str) -> bool:
    return name.split(":", 1)[0] in KEPT_PARAMS


def _pairs(params: Iterable[tuple[str, str]]) -> str:
    out = []
    for name, value in params:
        if not _NAME.match(name):  # not a parameter's name: it may be data, so it goes too
            out.append(f"{REDACTED}={REDACTED}")
        elif _kept(name):
            out.append(f"{_quote(name)}={_quote(value)}")
        else:
            out.append(f"{_quote(name)}={REDACTED}")
    return "&".join(out)


def redacted_query(
    method: str,
    path: str,
    params: Iterable[tuple[str, str]] = (),
    body: Iterable[tuple[str, str]] | None = None,
) -> str:
    """The query to record: the request line with each parameter's value replaced by ``*``,
    except identifiers and control parameters (``KEPT_PARAMS``); then, for a POST, a blank line
    and the body's parameters the same way (``body``: the form of a ``_search``, the flattened
    Parameters of ``$match`` (:func:`match_params`) or ``$ihe-pix`` (:func:`pix_params``)).

    ``GET /fhir/Patient?family=*&birthdate=*&identifier=urn:oid:1.2|A1``
    """
    line = f"{method} {path}"
    query = _pairs(params)
    if query:
        line += "?" + query
    if body is not None:
        line += "\n\n" + _pairs(body)
    return line


_QUOTED = re.compile("'[^']*'|\"[^\"]*\"")


def redacted_reason(text: str | None) -> str | None:
    """A failure's reason for a record: the values an error message quotes (``not a date:
    '1980-13-45'``, ``unknown search parameter 'Smith'``; the door and the core quote what
    they echo) replaced by ``'*'``, at most 500 characters."""
    if text is None:
        return None
    return _QUOTED.sub("'*'", text)[:500]


def _value(param: Json) -> str:
    for key, value in param.items():
        if key.startswith("value"):
            if isinstance(value, dict):  # valueIdentifier
                return "|".join(str(value.get(k) or "") for k in ("system", "value"))
            return str(value).lower() if isinstance(value, bool) else str(value)
    return ""


def _identifier_token(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    system, value = item.get("system"), item.get("value")
    return f"{system}|{value}" if system else str(value or "")


def match_params(body: Json) -> list[tuple[str, str]]:
    """A ``$match`` body (Parameters, or a bare Patient) as (name, value) pairs: each element of
    the Patient as ``resource.<element>`` (its identifiers as ``system|value``), the other
    parameters by name."""
    if body.get("resourceType") == "Patient":
        return _patient_params(body)
    pairs: list[tuple[str, str]] = []
    for param in body.get("parameter") or ():
        if not isinstance(param, dict):
            continue
        name = str(param.get("name") or "")
        if name == "resource" and isinstance(param.get("resource"), dict):
            pairs.extend(_patient_params(param["resource"]))
        else:
            pairs.append((name, _value(param)))
    return pairs


def _patient_params(patient: Json) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in patient.items():
        if key == "resourceType":
            continue
        if key == "identifier" and isinstance(value, list):
            pairs.extend(("resource.identifier", _identifier_token(i)) for i in value)
        else:
            pairs.append((f"resource.{key}", ""))
    return pairs


def pix_params(body: Json) -> list[tuple[str, str]]:
    """A POST ``$ihe-pix`` Parameters body as (name, value) pairs."""
    return [(str(p.get("name") or ""), _value(p))
            for p in body.get("parameter") or () if isinstance(p, dict)]  # fmt: skip


# --- patients as identifiers ------------------------------------------------------------------


def identifier_cx(system: str | None, value: str | None) -> str | None:
    """The CX of a FHIR identifier; None without a system or a value (not fully qualified)."""
    if not system or not value:
        return None
    try:
        return cx_of_system(system, value)
    except ValueError:
        return None


def ref_cx(ref: IdentifierRef) -> str | None:
    authority = ref.authority
    if authority.oid:
        return identifier_cx(f"urn:oid:{authority.oid}", ref.value)
    return identifier_cx(authority.namespace, ref.value)


def identifiers_cx(items: Iterable[Any], *, skip: str | None = None,
                   first: str | None = None) -> tuple[str, ...]:  # fmt: skip
    """The CX of the FHIR identifiers ``items`` (``skip``: a system left out, the enterprise
    identifier's), after ``first``, each once."""
    out = [first] if first else []
    for item in items:
        if isinstance(item, dict) and item.get("system") != skip:
            found = identifier_cx(item.get("system"), item.get("value"))
            if found is not None and found not in out:
                out.append(found)
    return tuple(out)


def record_cx(record: SourceRecord) -> tuple[str, ...]:
    """A source record's identifiers (its own and the others it carries; not the enterprise
    identifier) as CX."""
    own = cx(record.identifier, oid=record.domain.oid, namespace=record.domain.namespace)
    out = [own]
    for other in record.other_identifiers:
        try:
            out.append(cx(other.value, oid=other.oid, namespace=other.domain))
        except ValueError:
            continue
    return tuple(out)


# --- one request ------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestAudit:
    """What one request's audit knows so far: the transaction of its route, whether its records
    are made (``recorded``: by a handler, an envelope or here), and, for a failure, the query
    and the patients the handler had understood before it failed."""

    transaction: str | None
    recorded: bool = False
    query: str | None = None
    patients: list[tuple[str, ...]] = field(default_factory=list)
    failed_entries: set[int] = field(default_factory=set)
    """PMIR: the entries whose command the core recorded as failed."""


AUDIT_KEY = web.RequestKey("fhir_audit", RequestAudit)


def request_audit(request: web.Request) -> RequestAudit:
    """The request's audit state (a fresh one when the door runs without DoorAudit)."""
    state = request.get(AUDIT_KEY)
    if state is None:
        state = RequestAudit(None)
        request[AUDIT_KEY] = state
    return state


def _outcome(status: int) -> Outcome:
    return Outcome.MINOR_FAILURE if status < 500 else Outcome.SERIOUS_FAILURE


def _reason(response: web.StreamResponse) -> str:
    resource = response.resource if isinstance(response, FhirResponse) else None
    if isinstance(resource, dict):
        issues = resource.get("issue") or ()
        text = "; ".join(str(i.get("diagnostics") or i.get("code") or "") for i in issues[:3])
        if text:
            return f"HTTP {response.status}: {text}"[:500]
    return f"HTTP {response.status}: {response.reason}"


def _conditional_cx(request: web.Request) -> tuple[str, ...]:
    """The identifier a conditional PUT or DELETE names, when it is one ``system|value``."""
    tokens = request.query.getall("identifier", [])
    if len(tokens) != 1:
        return ()
    system, _, value = tokens[0].partition("|")
    found = identifier_cx(system, value)
    return (found,) if found else ()


class DoorAudit:
    """The middleware that records what failed without a record of its own."""

    def __init__(self, door: FhirDoor, control: AccessControl) -> None:
        self.door = door
        self.control = control

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        access = self.control.access(request)
        if access is None or access.scope is None:  # no route, or a public one
            return await handler(request)
        state = RequestAudit(access.transactions[0] if access.transactions else None)
        request[AUDIT_KEY] = state
        response = await handler(request)
        if response.status >= 400 and not state.recorded:
            try:
                self.failed(request, state, response)
            except Exception:  # noqa: BLE001 - the audit of a failure must not replace it
                log.exception("event=fhir_audit_error path=%s", request.path)
        if state.transaction is not None and "X-Request-Id" not in response.headers:
            # what the records name as the X-Request-Id (BALP): the client's, else ours
            response.headers["X-Request-Id"] = self.door.caller(request).message_id
        return response

    def failed(self, request: web.Request, state: RequestAudit,
               response: web.StreamResponse) -> None:  # fmt: skip
        door = self.door
        auditor = door.mpi.audit.auditor
        who = door.caller(request)
        refusal = request.get(REFUSAL_KEY)
        name = state.transaction
        reason = redacted_reason(refusal.text if refusal is not None else _reason(response))
        assert reason is not None
        outcome = _outcome(response.status)
        common: dict[str, Any] = {"message_id": who.message_id, "endpoint": who.endpoint}
        records: list[AuditRecord] = []
        if refusal is not None and refusal.status == 401:
            # not authenticated: no client to name (a header would be self-asserted)
            records.append(auditor.authentication_failure(
                caller=fhir_client(None, who.address), reason=reason, door="fhir",
                attempted=name, **common))  # fmt: skip
        elif name is None:  # the audit log's own routes
            if refusal is not None:
                records.append(auditor.audit_log_used(
                    caller=who.participant, human=who.human, query=self.query(request, state),
                    log_uri=f"{who.endpoint}/AuditEvent", outcome=outcome, description=reason,
                    **common))  # fmt: skip
        elif name == "ITI-78" and "id" in request.match_info:  # a read or vread
            patient = state.patients[0] if state.patients else ()
            raw = request.match_info["id"]  # not a record id: it may be anything, even data
            resource = f"Patient/{raw if raw.isdigit() and len(raw) <= 18 else REDACTED}"
            records.append(auditor.read(
                caller=who.participant, human=who.human, patient=patient, resource=resource,
                outcome=outcome, description=reason, **common))  # fmt: skip
        elif refusal is not None:
            patient = state.patients[0] if state.patients else _conditional_cx(request)
            records.append(auditor.refused(
                name, caller=who.participant, human=who.human, reason=reason,
                action=self.action(request, name), outcome=outcome, patient=patient,
                query=self.query(request, state) if name in QUERIES else None,
                **common))  # fmt: skip
        elif name in QUERIES:
            records.extend(auditor.query(
                name, caller=who.participant, human=who.human, query=self.query(request, state),
                patients=state.patients, outcome=outcome, description=reason,
                **common))  # fmt: skip
        elif name in TRANSACTIONS:  # a change refused by the door before any command
            patient = state.patients[0] if state.patients else (
                _conditional_cx(request) if name == "ITI-104" else ())
            records.append(auditor.patient_feed(
                name, action=self.action(request, name), caller=who.participant,
                human=who.human, patient=patient, outcome=outcome, description=reason,
                **common))  # fmt: skip
        if records:
            door.mpi.audit.later(records)
        state.recorded = True

    @staticmethod
    def action(request: web.Request, name: str) -> Action:
        if name in QUERIES:
            return Action.EXECUTE
        if name == "ITI-93":
            return Action.EXECUTE
        if request.method == "DELETE":
            return Action.DELETE
        if request.method == "POST" and request.path.endswith("/Patient"):
            return Action.CREATE  # plain REST create
        return Action.UPDATE

    @staticmethod
    def query(request: web.Request, state: RequestAudit) -> str:
        if state.query is not None:
            return state.query
        return redacted_query(request.method, request.path, request.query.items())


QUERIES = frozenset({"ITI-83", "ITI-78", "ITI-119"})


def unquoted_identifier(url_query: str) -> tuple[str, ...]:
    """The CX of the ``identifier=system|value`` of a PMIR entry's ``request.url`` query."""
    for part in url_query.split("&"):
        key, _, value = part.partition("=")
        if key == "identifier":
            system, _, ident = unquote(value).partition("|")
            found = identifier_cx(system, ident)
            return (found,) if found else ()
    return ()


def entry_patients(entry: Json, *, skip: str | None = None) -> list[tuple[str, ...]]:
    """The patients a PMIR history entry names, as far as the entry itself tells (its
    Patient's identifiers or its URL's ``identifier``; and a merge's surviving patient)."""
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    resource = entry.get("resource") if isinstance(entry.get("resource"), dict) else None
    url = str(request.get("url") or "")
    patients: list[tuple[str, ...]] = []
    own = identifiers_cx(resource.get("identifier") or (), skip=skip) if resource else ()
    if not own and "?" in url:
        own = unquoted_identifier(url.partition("?")[2])
    patients.append(own)
    for link in (resource or {}).get("link") or ():
        if isinstance(link, dict) and link.get("type") == "replaced-by":
            other = link.get("other") if isinstance(link.get("other"), dict) else {}
            ident = other.get("identifier") if isinstance(other.get("identifier"), dict) else {}
            survivor = identifier_cx(ident.get("system"), ident.get("value"))
            if survivor:
                patients.append((survivor,))
    return patients


__all__ = [
    "AUDIT_KEY",
    "DoorAudit",
    "KEPT_PARAMS",
    "RequestAudit",
    "entry_patients",
    "identifier_cx",
    "identifiers_cx",
    "match_params",
    "pix_params",
    "record_cx",
    "redacted_query",
    "redacted_reason",
    "ref_cx",
    "request_audit",
]
