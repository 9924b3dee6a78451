"""The FHIR wire: content negotiation, JSON bodies, OperationOutcome and the mapping of the core's
typed errors to HTTP status codes.

Only JSON is spoken. fhir.resources serialises XML only when ``lxml`` is installed, which is not
a dependency of this project; requests for XML (``_format=xml``, ``Accept: application/fhir+xml``)
get 406 and XML bodies get 415, each with a JSON OperationOutcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from identity.errors import (
    AmbiguousDomain,
    IdentifierConflict,
    InvalidInput,
    InvalidState,
    MpiError,
    NotFound,
    SourceNotAuthorized,
    StoreConflict,
    StoreUnavailable,
    UnknownDomain,
    UnknownIdentifier,
)

log = logging.getLogger("identity.fhir")

FHIR_JSON = "application/fhir+json"
JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
XML_TYPES = frozenset(
    {"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}
)
JSON_FORMATS = JSON_TYPES | {"json"}
XML_FORMATS = XML_TYPES | {"xml"}

Json = dict[str, Any]


class FhirError(Exception):
    """A request refused with an HTTP status and one or more OperationOutcome issues."""

    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        *,
        expression: str | None = None,
        issues: list[Json] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issues = issues or [issue(code, diagnostics, expression=expression)]
        self.headers = headers or {}


def issue(
    code: str, diagnostics: str, *, severity: str = "error", expression: str | None = None
) -> Json:
    item: Json = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        item["expression"] = [expression]
    return item


def operation_outcome(issues: list[Json]) -> Json:
    return {"resourceType": "OperationOutcome", "issue": issues}


def fhir_response(
    body: Json | None, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    text = None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return web.Response(
        status=status,
        text=text,
        content_type=FHIR_JSON if text is not None else None,
        charset="utf-8" if text is not None else None,
        headers=headers,
    )


def outcome_response(error: FhirError) -> web.Response:
    return fhir_response(operation_outcome(error.issues), error.status, error.headers)


def _media_types(header: str) -> list[str]:
    return [part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()]


def check_format(request: web.Request) -> None:
    """Raise 406 unless the response may be JSON (``_format`` wins over ``Accept``)."""
    fmt = request.query.get("_format")
    if fmt is not None:
        value = fmt.strip().lower().replace(" ", "+")  # a '+' unescaped in a query is a space
        if value.split(";")[0] in JSON_FORMATS:
            return
        if value.split(";")[0] in XML_FORMATS:
            raise FhirError(406, "not-supported", "XML is not supported by this server; use JSON")
        raise FhirError(406, "not-supported", f"unsupported _format {fmt!r}")
    accept = request.headers.get("Accept")
    if not accept:
        return
    types = _media_types(accept)
    if any(t in JSON_TYPES or t in ("*/*", "application/*") for t in types):
        return
    raise FhirError(406, "not-supported", f"cannot produce any of {accept!r}; this server speaks "
                    f"{FHIR_JSON}")


async def read_json(request: web.Request) -> Json:
    """The JSON body of a request; 415 for other media types, 400 for malformed JSON."""
    ctype = request.content_type.lower()
    if ctype in XML_TYPES:
        raise FhirError(415, "not-supported", "XML bodies are not supported; send JSON")
    if ctype not in JSON_TYPES and ctype != "application/octet-stream":
        raise FhirError(415, "not-supported", f"unsupported Content-Type {ctype!r}")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirError(400, "structure", f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise FhirError(400, "structure", "body is not a FHIR resource (no resourceType)")
    return body


def validation_issues(exc: ValidationError, resource_type: str) -> list[Json]:
    """One OperationOutcome issue per problem fhir.resources found."""
    issues = []
    for err in exc.errors()[:50]:
        path = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        where = f"{resource_type}.{path}" if path else resource_type
        issues.append(issue("structure", f"{where}: {err.get('msg')}", expression=where))
    return issues or [issue("structure", str(exc))]


def error_for(exc: Exception) -> FhirError:
    """The HTTP form of an error raised by the core (outside $ihe-pix, which has its own)."""
    if isinstance(exc, FhirError):
        return exc
    if isinstance(exc, StoreConflict):
        # A deadlock or serialisation failure rolled the core's transaction back.
        return FhirError(503, "transient", "the change collided with a concurrent one and was "
                         "rolled back; retry", headers={"Retry-After": "1"})
    if isinstance(exc, StoreUnavailable):
        return FhirError(503, "transient", "the database is unavailable; nothing was applied",
                         headers={"Retry-After": "1"})
    if isinstance(exc, SourceNotAuthorized):
        return FhirError(403, "forbidden", str(exc))
    if isinstance(exc, UnknownIdentifier):
        return FhirError(404, "not-found", str(exc))
    if isinstance(exc, NotFound):
        return FhirError(404, "not-found", str(exc))
    if isinstance(exc, UnknownDomain | AmbiguousDomain):
        return FhirError(400, "code-invalid", str(exc), expression="identifier.system")
    if isinstance(exc, InvalidInput):
        expression = f"Patient.{exc.field}" if exc.field else None
        return FhirError(400, "invalid", str(exc), expression=expression)
    if isinstance(exc, IdentifierConflict):
        return FhirError(409, "conflict", str(exc))
    if isinstance(exc, InvalidState):
        return FhirError(422, "business-rule", str(exc))
    if isinstance(exc, MpiError):
        return FhirError(422, "processing", str(exc))
    raise exc


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as an OperationOutcome; a 2xx is only sent after the core committed."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not-found", 405: "not-supported", 413: "too-long"}.get(
            exc.status, "processing"
        )
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return fhir_response(
            operation_outcome([issue(code, exc.reason or str(exc))]), exc.status, headers
        )
    except Exception as exc:  # noqa: BLE001 - mapped below; unknown errors become a 500
        try:
            error = error_for(exc)
        except Exception:
            log.exception("event=fhir_unhandled_error path=%s", request.path)
            error = FhirError(500, "exception", "internal error; see the server log")
        if error.status >= 500:
            log.warning("event=fhir_error status=%d path=%s detail=%s", error.status,
                        request.path, exc)
        return outcome_response(error)
