"""``GET /fhir/AuditEvent``: the audit records (identity.store.audit) as FHIR AuditEvents
(identity.audit.fhir), for auditors (issue 16 item 4; docs/audit.md).

Search parameters (FHIR R4 AuditEvent search; an AND of the parameters given):

- ``patient`` (or ``patient:identifier``): ``system|value``, a patient identifier the event
  names (``urn:oid:1.2.3|HA1001``);
- ``date``: the event's time, ``[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|+hh:mm]]]]`` with
  ``eq`` (default), ``ge``, ``gt``, ``le``, ``lt`` (``sa``/``eb`` as ``gt``/``lt``); repeat it
  for a range (``date=ge2026-12-01&date=lt2026-12-02``); a time without a zone is UTC;
- ``type``: ``[system|]code`` of AuditEvent.type, comma-separated alternatives (``rest``,
  ``110110``, ``110112``, ...);
- ``subtype``: ``[system|]code`` of AuditEvent.subtype (``ITI-9``, ``search``, ``steward-link``);
- ``outcome``: ``0``, ``4``, ``8``, ``12``, comma-separated alternatives;
- ``agent``: a plain string or a ``[system|]value`` token: the user id of the system that
  acted (``ADT_A|HOSPA``, a client id) or of the person who asked; the value matches as a
  whole or, as a token, by the part after the first ``|``;
- ``_count`` (default ``[fhir] default_page_size``, at most ``max_page_size``).

Results are newest first; the Bundle's ``next`` link continues after the page's last id
(``_after``); no ``total`` is computed. Unknown parameters are ignored (and left out of the
``self`` link), or refused with 400 under ``Prefer: handling=strict``. ``GET /fhir/AuditEvent/
{id}`` reads one.

Access: ``add_audit_routes(..., authorize=...)`` takes the scope check of the auth work: an
async callable given the request that raises FhirError (401, 403) to refuse it and returns the
caller's id (the token's client id). Without it, the caller is the ``[fhir]
client_id_header`` value and nothing is checked. Every search and read is itself recorded as
"Audit Log Used" (DICOM 110101; ITI TF-2 3.20.4.1.1.1), with the outbox row that sends it when
``[audit.syslog]`` is configured.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from identity.audit.fhir import (
    AUDIT_EVENT_TYPE_SYSTEM,
    DCM_SYSTEM,
    IHE_EVENT_TYPE_SYSTEM,
    LOCAL_SYSTEM,
    RESTFUL_INTERACTION_SYSTEM,
    audit_event,
)
from identity.audit.record import TRANSACTIONS, Auditor, cx_of_system, fhir_client
from identity.config import Settings
from identity.fhir.wire import FhirError, Json, check_format, fhir_response
from identity.mpi.audit import AuditTrail
from identity.store.audit import StoredAudit

Authorize = Callable[[web.Request], Awaitable[str | None]]
"""The access check: raise FhirError (401/403) to refuse; return the caller's id."""

OUTCOME_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"
SEARCH_PARAMS = {"patient", "patient:identifier", "date", "type", "subtype", "outcome", "agent"}
CONTROL_PARAMS = {"_count", "_after", "_format", "_pretty", "_summary"}
PREFIXES = {"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"}
_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})"
    r"(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,6}))?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def _bad(message: str, expression: str | None = None) -> FhirError:
    return FhirError(400, "invalid", message, expression=expression)


def date_bounds(raw: str) -> tuple[datetime | None, datetime | None]:
    """(since, until) of one ``date`` value with its prefix: since inclusive, until
    exclusive."""
    prefix, value = "eq", raw
    if raw[:2] in PREFIXES:
        prefix, value = raw[:2], raw[2:]
    match = _DATE.match(value)
    if match is None:
        raise _bad(f"date: {raw!r} is not a FHIR date or dateTime", "date")
    parts = match.groupdict()
    try:
        tz = UTC
        if parts["tz"] and parts["tz"] != "Z":
            sign = 1 if parts["tz"][0] == "+" else -1
            hours, minutes = int(parts["tz"][1:3]), int(parts["tz"][4:6])
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        start = datetime(int(parts["y"]), int(parts["m"] or 1), int(parts["d"] or 1),
                         int(parts["H"] or 0), int(parts["M"] or 0), int(parts["S"] or 0),
                         int((parts["f"] or "0").ljust(6, "0")), tzinfo=tz)  # fmt: skip
    except ValueError as exc:
        raise _bad(f"date: {raw!r}: {exc}", "date") from None
    if parts["f"]:
        end = start + timedelta(microseconds=10 ** (6 - len(parts["f"])))
    elif parts["S"]:
        end = start + timedelta(seconds=1)
    elif parts["M"]:
        end = start + timedelta(minutes=1)
    elif parts["d"]:
        end = start + timedelta(days=1)
    elif parts["m"]:
        end = start.replace(year=start.year + (start.month == 12), month=start.month % 12 + 1)
    else:
        end = start.replace(year=start.year + 1)
    if prefix == "eq":
        return start, end
    if prefix == "ge":
        return start, None
    if prefix in ("gt", "sa"):
        return end, None
    if prefix == "le":
        return None, end
    if prefix in ("lt", "eb"):
        return None, start
    raise FhirError(400, "not-supported", f"date: prefix {prefix!r} is not supported",
                    expression="date")  # fmt: skip


def _token(raw: str) -> tuple[str | None, str]:
    if "|" in raw:
        system, _, code = raw.partition("|")
        return system or None, code
    return None, raw


def _codes(raw: str, name: str, systems: Callable[[str], set[str]]) -> list[str]:
    """The codes of a comma-separated token list whose system (when given) fits the code."""
    codes = []
    for item in raw.split(","):
        system, code = _token(item)
        if not code:
            raise _bad(f"{name}: empty code in {raw!r}", name)
        if system is None or system in systems(code):
            codes.append(code)
    return codes


def _type_systems(code: str) -> set[str]:
    return {AUDIT_EVENT_TYPE_SYSTEM} if code == "rest" else {DCM_SYSTEM}


def _subtype_systems(code: str) -> set[str]:
    if code in TRANSACTIONS:
        return {IHE_EVENT_TYPE_SYSTEM}
    return {RESTFUL_INTERACTION_SYSTEM, LOCAL_SYSTEM, DCM_SYSTEM}


class AuditEventSearch:
    def __init__(
        self,
        trail: AuditTrail,
        settings: Settings,
        *,
        authorize: Authorize | None = None,
        auditor: Auditor | None = None,
        record_access: bool = True,
    ) -> None:
        self.trail = trail
        self.settings = settings
        self.authorize = authorize
        self.auditor = auditor or trail.auditor
        self.record_access = record_access

    def base(self, request: web.Request) -> str:
        if self.settings.fhir.base_url:
            return self.settings.fhir.base_url.rstrip("/")
        return f"{request.scheme}://{request.host}/fhir"

    async def caller(self, request: web.Request) -> str | None:
        if self.authorize is not None:
            return await self.authorize(request)
        return request.headers.get(self.settings.fhir.client_id_header) or None

    # --- handlers ---------------------------------------------------------------------------

    async def search(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        who = await self.caller(request)
        strict = "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")
        criteria, echo, count, after = self.parse(request, strict=strict)
        found = await self.trail.search(limit=count, after_id=after, **criteria)
        await self.log_access(request, who)
        return fhir_response(self.bundle(request, found, echo, count, after))

    async def read(self, request: web.Request) -> web.StreamResponse:
        check_format(request)
        who = await self.caller(request)
        raw = request.match_info["id"]
        stored = None
        if raw.isdigit() and len(raw) <= 18:
            stored = await self.trail.get(int(raw))
        await self.log_access(request, who)
        if stored is None:
            raise FhirError(404, "not-found", f"AuditEvent/{raw} is not known")
        return fhir_response(audit_event(stored.record, id=str(stored.id)))

    # --- parameters -------------------------------------------------------------------------

    def parse(
        self, request: web.Request, *, strict: bool
    ) -> tuple[dict[str, Any], list[tuple[str, str]], int, int | None]:
        query = request.query
        criteria: dict[str, Any] = {}
        echo: list[tuple[str, str]] = []
        unknown = [k for k in query if k not in SEARCH_PARAMS | CONTROL_PARAMS]
        if unknown and strict:
            raise FhirError(400, "not-supported", f"unknown search parameters: {unknown}")
        for name in ("patient", "patient:identifier", "type", "subtype", "outcome", "agent"):
            if len(query.getall(name, [])) > 1:
                raise _bad(f"{name} may be given once (use a comma for alternatives)", name)
        patients = query.getall("patient", []) + query.getall("patient:identifier", [])
        if len(patients) > 1:
            raise _bad("patient may be given once", "patient")
        if patients:
            raw = patients[0]
            system, value = _token(raw)
            if "," in raw or not system or not value:
                raise _bad("patient: give one identifier as system|value", "patient")
            criteria["patient"] = cx_of_system(system, value)
            echo.append(("patient", raw))
        since: datetime | None = None
        until: datetime | None = None
        for raw in query.getall("date", []):
            low, high = date_bounds(raw)
            if low is not None:
                since = low if since is None else max(since, low)
            if high is not None:
                until = high if until is None else min(until, high)
            echo.append(("date", raw))
        if since is not None:
            criteria["since"] = since
        if until is not None:
            criteria["until"] = until
        if "type" in query:
            criteria["types"] = _codes(query["type"], "type", _type_systems)
            echo.append(("type", query["type"]))
        if "subtype" in query:
            criteria["subtypes"] = _codes(query["subtype"], "subtype", _subtype_systems)
            echo.append(("subtype", query["subtype"]))
        if "outcome" in query:
            outcomes = _codes(query["outcome"], "outcome", lambda _: {OUTCOME_SYSTEM})
            if any(o not in ("0", "4", "8", "12") for o in outcomes):
                raise _bad("outcome is one of 0, 4, 8, 12", "outcome")
            criteria["outcomes"] = [int(o) for o in outcomes]
            echo.append(("outcome", query["outcome"]))
        if "agent" in query:
            raw = query["agent"]
            _, value = _token(raw)
            if not raw or not value:
                raise _bad("agent: empty", "agent")
            # The whole value, or the token's value: an HL7 source is APP|FACILITY itself.
            criteria["agent"] = list(dict.fromkeys([raw, value]))
            echo.append(("agent", raw))
        fhir = self.settings.fhir
        count = fhir.default_page_size
        if "_count" in query:
            try:
                count = int(query["_count"])
            except ValueError:
                raise _bad("_count must be a whole number", "_count") from None
            if count < 0:
                raise _bad("_count must not be negative", "_count")
        count = min(count, fhir.max_page_size)
        after = None
        if "_after" in query:
            if not query["_after"].isdigit() or len(query["_after"]) > 18:
                raise _bad("_after: not a page of this server", "_after")
            after = int(query["_after"])
        return criteria, echo, count, after

    # --- the response -----------------------------------------------------------------------

    def bundle(self, request: web.Request, found: list[StoredAudit],
               echo: list[tuple[str, str]], count: int, after: int | None) -> Json:  # fmt: skip
        base = self.base(request)
        fmt = request.query.get("_format")

        def url(after_id: int | None) -> str:
            params = [*echo, ("_count", str(count))]
            if after_id is not None:
                params.append(("_after", str(after_id)))
            if fmt:
                params.append(("_format", fmt))
            return f"{base}/AuditEvent?{urlencode(params)}"

        links = [{"relation": "self", "url": url(after)}]
        if count and len(found) == count:
            links.append({"relation": "next", "url": url(found[-1].id)})
        bundle: Json = {
            "resourceType": "Bundle",
            "id": str(uuid.uuid4()),
            "meta": {"lastUpdated": datetime.now(UTC).isoformat().replace("+00:00", "Z")},
            "type": "searchset",
            "link": links,
        }
        if found:
            bundle["entry"] = [
                {
                    "fullUrl": f"{base}/AuditEvent/{stored.id}",
                    "resource": audit_event(stored.record, id=str(stored.id)),
                    "search": {"mode": "match"},
                }
                for stored in found
            ]
        return bundle

    async def log_access(self, request: web.Request, who: str | None) -> None:
        """Record this use of the audit log (Audit Log Used), with its outbox row when the
        records are sent to a collector."""
        if not self.record_access:
            return
        record = self.auditor.audit_log_used(
            caller=fhir_client(who, request.remote),
            query=f"{request.method} {request.path_qs}",
            log_uri=f"{self.base(request)}/AuditEvent",
            message_id=request.headers.get("X-Request-Id"),
            endpoint=self.base(request),
        )
        await self.trail.record([record])


AUDIT_SEARCH_KEY = web.AppKey("audit_event_search", AuditEventSearch)


def add_audit_routes(
    app: web.Application,
    trail: AuditTrail,
    settings: Settings,
    *,
    authorize: Authorize | None = None,
    auditor: Auditor | None = None,
    record_access: bool = True,
) -> AuditEventSearch:
    """``GET /AuditEvent`` and ``GET /AuditEvent/{id}`` on ``app``, the FHIR sub-application
    mounted at /fhir (identity.fhir.build_fhir_app: its error middleware turns FhirError into
    an OperationOutcome). ``authorize``: the ``audit`` scope check (see the module's
    docstring); ``record_access``: record each search and read as Audit Log Used."""
    search = AuditEventSearch(trail, settings, authorize=authorize, auditor=auditor,
                              record_access=record_access)  # fmt: skip
    app[AUDIT_SEARCH_KEY] = search
    app.router.add_get("/AuditEvent", search.search)
    app.router.add_get("/AuditEvent/{id}", search.read)
    return search


__all__ = ["AUDIT_SEARCH_KEY", "AuditEventSearch", "Authorize", "add_audit_routes",
           "date_bounds"]  # fmt: skip
