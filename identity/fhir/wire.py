"""The FHIR wire: content negotiation, JSON and XML bodies, OperationOutcome and the mapping of the
core's typed errors to HTTP status codes.

The door's handlers build and read FHIR JSON (plain dicts) only; XML is handled here, in one
place, with fhir.resources (package ``fhir.resources.R4B``, XML through ``lxml``):

- ``negotiate`` picks the response format: ``_format`` wins over ``Accept``; JSON is the
  default and wins ties of quality; a request for neither JSON nor XML is 406
  (``check_format``), answered in JSON;
- ``fhir_response`` always builds the JSON response and keeps its dict; when XML was negotiated,
  ``error_middleware`` converts that dict (success or OperationOutcome) to FHIR XML through the
  R4B model of its ``resourceType``;
- ``read_json`` reads an XML body (``application/fhir+xml``, ``application/xml``, ``text/xml``)
  into the R4B model and dumps it as the dict the same resource in JSON would give
  (``xml_to_json``: no DTD, no entities, FHIR namespace only); a malformed or invalid XML body
  is 400, a body of any other media type 415.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import orjson
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
FHIR_XML = "application/fhir+xml"
FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
XML_TYPES = frozenset({FHIR_XML, "application/xml", "text/xml", "application/xml+fhir"})
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


class FhirResponse(web.Response):
    """A FHIR response built as JSON; ``resource`` keeps the dict so that the middleware can
    serialise it as XML instead when the client asked for XML."""

    resource: Json | None = None


def fhir_response(
    body: Json | None, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = None if body is None else orjson.dumps(body)  # UTF-8, compact
    response = FhirResponse(
        status=status,
        body=data,
        content_type=FHIR_JSON if data is not None else None,
        charset="utf-8" if data is not None else None,
        headers=headers,
    )
    response.resource = body
    return response


def outcome_response(error: FhirError) -> web.Response:
    return fhir_response(operation_outcome(error.issues), error.status, error.headers)


def _accept_ranges(header: str) -> list[tuple[str, float]]:
    """``(media range, q)`` of an Accept header, parameters other than ``q`` dropped."""
    ranges = []
    for part in header.split(","):
        fields = part.split(";")
        media = fields[0].strip().lower()
        if not media:
            continue
        quality = 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value.strip())
                except ValueError:
                    quality = 0.0
        ranges.append((media, quality))
    return ranges


def _quality(ranges: list[tuple[str, float]], types: frozenset[str]) -> float:
    """The best q any of ``types`` gets, each from its most specific matching range."""
    best = 0.0
    for media in types:
        wildcard = media.split("/")[0] + "/*"
        for candidate in (media, wildcard, "*/*"):
            found = [q for m, q in ranges if m == candidate]
            if found:
                best = max(best, max(found))
                break
    return best


def negotiate(request: web.Request) -> str | None:
    """The response format, ``"json"`` or ``"xml"``; None when neither is acceptable.

    ``_format`` wins over ``Accept``. With ``Accept``, XML is chosen only when it gets a higher
    quality than JSON (so ``*/*``, a tie or no header give JSON).
    """
    chosen: str | None
    fmt = request.query.get("_format")
    if fmt is not None:
        # A '+' unescaped in a query is a space.
        value = fmt.strip().lower().replace(" ", "+").split(";")[0].strip()
        chosen = "json" if value in JSON_FORMATS else "xml" if value in XML_FORMATS else None
    else:
        accept = request.headers.get("Accept", "").strip()
        if not accept:
            chosen = "json"
        else:
            ranges = _accept_ranges(accept)
            json_q, xml_q = _quality(ranges, JSON_TYPES), _quality(ranges, XML_TYPES)
            chosen = "xml" if xml_q > json_q else "json" if json_q > 0 else None
    return chosen


def check_format(request: web.Request) -> None:
    """Raise 406 unless the response may be JSON or XML (``_format`` wins over ``Accept``)."""
    if negotiate(request) is not None:
        return
    fmt = request.query.get("_format")
    if fmt is not None:
        raise FhirError(406, "not-supported", f"unsupported _format {fmt!r}; this server speaks "
                        "json and xml")
    accept = request.headers.get("Accept", "")
    raise FhirError(406, "not-supported", f"cannot produce any of {accept!r}; this server speaks "
                    f"{FHIR_JSON} and {FHIR_XML}")


def _model_class(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
"""Characters XML 1.0 cannot carry (control characters a record may hold as received)."""


def _xml_safe(value: Any) -> Any:
    """``value`` with every character XML cannot carry replaced by U+FFFD."""
    if isinstance(value, str):
        return _NOT_IN_XML.sub("\ufffd", value) if _NOT_IN_XML.search(value) else value
    if isinstance(value, dict):
        return {key: _xml_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_xml_safe(item) for item in value]
    return value


def to_xml(resource: Json) -> bytes:
    """FHIR XML of a JSON resource, through its fhir.resources R4B model; a character XML cannot
    carry (a control character held as received) is written as U+FFFD."""
    model = _model_class(resource["resourceType"]).model_validate(_xml_safe(resource))
    xml: bytes = model.model_dump_xml()
    return xml


async def _as_xml(response: web.StreamResponse) -> web.StreamResponse:
    """``response`` with its FHIR JSON body re-serialised as FHIR XML. fhir.resources takes
    milliseconds a Patient (far more for a Bundle), so it runs off the event loop."""
    if not isinstance(response, FhirResponse) or response.resource is None:
        return response
    response.body = await asyncio.to_thread(to_xml, response.resource)
    response.content_type = FHIR_XML
    response.charset = "utf-8"
    return response


def _xml_parser() -> Any:
    from lxml import etree

    # No DTD, no entity expansion, no network: an XML body is data, never instructions.
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False, remove_pis=True)


def _check_elements(root: Any) -> None:
    """What fhir.resources' XML reader lets through: elements of another namespace (it drops the
    namespace) and text content (it drops the text; FHIR XML puts values in ``value``). The
    narrative's XHTML ``div`` is left to it."""
    from lxml import etree

    stack = [root]
    while stack:
        element = stack.pop()
        where = etree.QName(element).localname
        if element.text and element.text.strip():
            raise FhirError(400, "structure", f"element {where!r} has text content; FHIR XML "
                            "carries values in the value attribute")
        for child in element:
            if child.tail and child.tail.strip():
                raise FhirError(400, "structure", f"element {where!r} has text content; FHIR "
                                "XML carries values in the value attribute")
            if not isinstance(child.tag, str):  # a comment or processing instruction
                continue
            namespace = etree.QName(child).namespace
            if namespace == XHTML_NS:
                continue
            if namespace != FHIR_NS:
                raise FhirError(400, "structure", f"element {child.tag!r} (in {where!r}) is "
                                f"not in the {FHIR_NS} namespace")
            stack.append(child)


def xml_to_json(raw: bytes) -> Json:
    """An XML resource as the dict its JSON form would give; 400 when it is not valid FHIR."""
    from lxml import etree

    try:
        root = etree.fromstring(raw, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        raise FhirError(400, "structure", f"body is not well-formed XML: {exc}") from exc
    if root.getroottree().docinfo.doctype:
        raise FhirError(400, "structure", "a DOCTYPE is not allowed in a FHIR XML body")
    name = etree.QName(root)
    if name.namespace != FHIR_NS:
        raise FhirError(400, "structure", f"body is not a FHIR resource (the root element is "
                        f"not in the {FHIR_NS} namespace)")
    if root.nsmap.get(None) != FHIR_NS:
        raise FhirError(400, "structure", f"declare {FHIR_NS} as the default namespace "
                        "(xmlns=...); prefixed FHIR elements are not read")
    try:
        model_class = _model_class(name.localname)
    except (ValueError, KeyError) as exc:
        raise FhirError(400, "structure", f"unknown resource type {name.localname!r}") from exc
    if not model_class.has_resource_base():
        raise FhirError(400, "structure", f"{name.localname!r} is not a resource")
    resource_type = name.localname
    _check_elements(root)
    try:
        model = model_class.model_validate_xml(raw, xmlparser=_xml_parser())
    except ValidationError as exc:
        raise FhirError(400, "structure", f"invalid {resource_type}",
                        issues=validation_issues(exc, resource_type)) from exc
    except (etree.LxmlError, KeyError, ValueError, TypeError, AttributeError, IndexError,
            NotImplementedError) as exc:
        detail = f"unknown or misplaced element {exc.args[0]!r}" if isinstance(
            exc, KeyError) and exc.args and exc.args[0] else f"{type(exc).__name__}: {exc}"
        raise FhirError(400, "structure",
                        f"body is not a valid FHIR XML {resource_type}: {detail}") from exc
    body: Json = model.model_dump(mode="json", exclude_none=True, exclude_comments=True)
    return body


async def read_json(request: web.Request) -> Json:
    """The request body as a FHIR JSON dict: a JSON body as sent, an XML body converted (see
    ``xml_to_json``); 415 for other media types, 400 for a malformed body."""
    ctype = request.content_type.lower()
    if ctype in XML_TYPES:
        raw = await request.read()
        return await asyncio.to_thread(xml_to_json, raw)  # milliseconds: off the event loop
    if ctype not in JSON_TYPES and ctype != "application/octet-stream":
        raise FhirError(415, "not-supported", f"unsupported Content-Type {ctype!r}; send "
                        f"{FHIR_JSON} or {FHIR_XML}")
    return json_body(await request.read())


def json_body(raw: bytes) -> Json:
    """A JSON request body as a FHIR resource dict; 400 when it is not JSON or no resource."""
    try:
        body = orjson.loads(raw)
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


SystemOf = Callable[[str], str]
"""A domain's namespace -> the FHIR system that names it (``urn:oid:<oid>`` or the namespace)."""

SYSTEM_OF_KEY = web.AppKey("fhir_system_of", SystemOf)
"""The door's SystemOf, on the FHIR sub-application (for ``error_middleware``)."""


def system_of_authority(text: str) -> str:
    """The FHIR system of an authority the core names in the HL7 v2 form of an assigning
    authority (``namespace&oid&ISO``, as ``UnknownDomain`` carries it)."""
    namespace, _, rest = text.partition("&")
    oid = rest.partition("&")[0]
    return f"urn:oid:{oid}" if oid else namespace


def error_for(exc: Exception, system_of: SystemOf | None = None) -> FhirError:
    """The HTTP form of an error raised by the core (outside $ihe-pix, which has its own),
    said in FHIR's words: identifier systems, not the core's domain names or HL7 v2 forms
    (``system_of`` gives a domain's system; without it, its namespace is named)."""
    system = system_of or (lambda namespace: namespace)
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
        return FhirError(403, "forbidden", f"client {exc.source!r} may not assign identifiers "
                         f"of the system {system(exc.domain)}",
                         expression="Patient.identifier.system")
    if isinstance(exc, UnknownIdentifier):
        return FhirError(404, "not-found", f"no active Patient has the identifier "
                         f"{exc.value!r} of the system {system(exc.domain)}")
    if isinstance(exc, NotFound):
        return FhirError(404, "not-found", str(exc))
    if isinstance(exc, UnknownDomain):
        return FhirError(400, "code-invalid", f"unknown identifier system "
                         f"{system_of_authority(exc.authority)}: no domain of this server "
                         "has it", expression="Patient.identifier.system")
    if isinstance(exc, AmbiguousDomain):
        return FhirError(400, "code-invalid", str(exc), expression="Patient.identifier.system")
    if isinstance(exc, InvalidInput):
        if exc.field == "authority":
            return FhirError(400, "required", "an identifier has no system, and this client "
                             "does not own exactly one domain to take it as",
                             expression="Patient.identifier.system")
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
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]

_DEADLINE: ContextVar[asyncio.Timeout | None] = ContextVar("fhir_deadline", default=None)


def writing() -> None:
    """The request is about to hand a change to the core: from here on its deadline
    ([http] request_timeout) no longer applies, so that a change that commits is answered as
    committed, never as timed out (the core's statements have their own bound,
    [database] command_timeout). Call it before Mpi.handle, or before opening Mpi.atomic."""
    deadline = _DEADLINE.get()
    if deadline is not None and not deadline.expired():
        deadline.reschedule(None)


def deadline_middleware(seconds: float) -> Middleware:
    """Bound a request's handling, reading of its body included, to ``seconds`` until it calls
    :func:`writing`; past it, 503 OperationOutcome with code ``timeout`` (nothing was changed).
    Placed inside ``error_middleware``, which renders the error."""

    @web.middleware
    async def deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
        timeout = asyncio.timeout(seconds)
        try:
            async with timeout:
                token = _DEADLINE.set(timeout)
                try:
                    return await handler(request)
                finally:
                    _DEADLINE.reset(token)
        except TimeoutError:
            if not timeout.expired():
                raise  # the handler's own, not the deadline
            log.warning("event=http_request_timeout method=%s path=%s limit=%g",
                        request.method, request.path, seconds)
            raise FhirError(503, "timeout", f"the request was not handled within {seconds:g} s "
                            "([http] request_timeout); nothing was changed") from None

    return deadline


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as an OperationOutcome; a 2xx is only sent after the core committed.
    Every FHIR response, errors included, leaves in the negotiated format (JSON when the client
    asked for neither JSON nor XML: the 406 itself)."""
    response = await _handle(request, handler)
    if negotiate(request) != "xml":
        return response
    try:
        return await _as_xml(response)
    except Exception:  # noqa: BLE001 - a response the R4B model refuses is our bug: a 500
        log.exception("event=fhir_xml_error path=%s", request.path)
        # In JSON: the XML serialisation is what failed.
        return outcome_response(FhirError(500, "exception", "the response could not be "
                                          "serialised as XML; see the server log"))


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
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
            error = error_for(exc, request.app.get(SYSTEM_OF_KEY))
        except Exception:
            log.exception("event=fhir_unhandled_error path=%s", request.path)
            error = FhirError(500, "exception", "internal error; see the server log")
        if error.status >= 500:
            log.warning("event=fhir_error status=%d path=%s detail=%s", error.status,
                        request.path, exc)
        return outcome_response(error)
