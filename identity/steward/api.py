"""The steward API under /api: request in -> one Mpi read or command -> JSON out.

Every route is in :data:`ROUTES`, which both the router and the OpenAPI document
(identity.steward.openapi) are made from. Reads answer the core's view types
(identity.model); commands answer a :class:`CommandOutcome` with the command's id, for undo.
Errors are problem JSON (identity.steward.problems).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from identity.config import Settings
from identity.model import (
    CommandResult,
    Dashboard,
    DecisionEntry,
    DecisionLog,
    PersonHits,
    PersonView,
    QueuePage,
    RecordView,
    ReviewDetail,
    StewardSearch,
)
from identity.mpi import (
    DecideReview,
    Envelope,
    MergePersons,
    Mpi,
    StewardDecision,
    Undo,
    UnlinkRecord,
)
from identity.steward.access import steward_of
from identity.steward.auditing import audit_view
from identity.steward.problems import Problem, validation_errors
from identity.steward.schemas import (
    CommandOutcome,
    DashboardQuery,
    DecisionBody,
    DecisionsQuery,
    MergeBody,
    QueueQuery,
    SearchQuery,
    UnlinkBody,
)

JSON = "application/json"
MAX_BODY = 64 << 10

Handler = Callable[["StewardApi", web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One route: how to call it and what it answers, for the router and the OpenAPI
    document. ``path`` is relative to /api; ``{id}`` parameters are integers, ``{command_id}``
    a UUID."""

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None  # None: a JSON document (the OpenAPI one)
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    description: str = ""
    tags: tuple[str, ...] = field(default=("steward",))

    @property
    def operation_id(self) -> str:
        return self.handler.__name__.strip("_")


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=model.model_dump_json().encode(), content_type=JSON
    )


def _query(request: web.Request, model: type[BaseModel]) -> Any:
    values: dict[str, str] = {}
    for key in request.query:
        got = request.query.getall(key)
        if len(got) > 1:
            raise Problem(400, f"query parameter {key!r} is given {len(got)} times",
                          kind="bad-request")
        values[key] = got[0]
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise Problem(400, "the query parameters do not validate", kind="bad-query",
                      title="Invalid query parameters", errors=validation_errors(exc)) from None


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY} bytes")
    if request.content_type != JSON:
        raise Problem(415, f"send the body as {JSON}", kind="unsupported-media-type")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise Problem(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        data = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        raise Problem(400, "the body is not JSON", kind="bad-request") from None
    return model.model_validate(data)  # ValidationError: 422, problem_for


def _int(request: web.Request, name: str = "id") -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18:
        raise Problem(400, f"{name} must be a positive integer, not {raw!r}", kind="bad-request")
    return int(raw)


def _command_id(request: web.Request) -> str:
    raw = request.match_info["command_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise Problem(400, f"not a command id: {raw!r}", kind="bad-request") from None


class StewardApi:
    def __init__(self, mpi: Mpi, settings: Settings) -> None:
        self.mpi = mpi
        self.settings = settings
        self.openapi: dict[str, Any] = {}  # set by build_steward_app

    def envelope(self, request: web.Request) -> Envelope:
        return Envelope(
            actor=steward_of(request).actor,
            message_id=request.headers.get("X-Request-Id") or str(uuid.uuid4()),
        )

    async def read(
        self, call: Awaitable[BaseModel], request: web.Request | None = None
    ) -> web.Response:
        """A read, bounded by ``[http] request_timeout`` (commands are not cut short: a
        command that started is answered with what it did). With ``request``, the view of
        patients it answers is audited (identity.steward.auditing)."""
        limit = self.settings.http.request_timeout
        try:
            async with asyncio.timeout(limit):
                view = await call
        except TimeoutError:
            raise Problem(503, f"the request was not answered within {limit:g} s",
                          kind="timeout") from None
        if request is not None:
            audit_view(request, self.mpi, view)
        return _json(view)

    def outcome(self, result: CommandResult, **extra: Any) -> web.Response:
        return _json(
            CommandOutcome(
                command_id=result.command_id,
                applied=result.applied,
                note=result.note,
                persons=result.persons,
                records=result.records,
                undo=f"/api/commands/{result.command_id}/undo",
                **extra,
            )
        )

    # --- routes -----------------------------------------------------------------------------

    async def openapi_document(self, request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(self.openapi), content_type=JSON)

    async def review_queue(self, request: web.Request) -> web.Response:
        q: QueueQuery = _query(request, QueueQuery)
        return await self.read(
            self.mpi.review_queue(q.filter(), q.sort, q.limit, q.offset, q.counts,
                                  after=q.after),
            request,
        )

    async def review_item(self, request: web.Request) -> web.Response:
        _query(request, _NoQuery)
        return await self.read(self.mpi.review_detail(_int(request)), request)

    async def decide(self, request: web.Request) -> web.Response:
        item_id = _int(request)
        body: DecisionBody = await _body(request, DecisionBody)
        result = await self.mpi.handle(
            DecideReview(item_id=item_id, decision=StewardDecision(body.decision),
                         reason=body.reason, version=body.version),
            self.envelope(request),
        )  # fmt: skip
        item = await self.mpi.review_item(item_id)
        return self.outcome(result, review_item=item.model_copy(update={"explanation": None}))

    async def merge_persons(self, request: web.Request) -> web.Response:
        survivor = _int(request)
        body: MergeBody = await _body(request, MergeBody)
        result = await self.mpi.handle(
            MergePersons(survivor=survivor, merged=body.merged, survivor_version=body.version,
                         merged_version=body.merged_version, reason=body.reason),
            self.envelope(request),
        )  # fmt: skip
        return self.outcome(result)

    async def unlink_record(self, request: web.Request) -> web.Response:
        record_id = _int(request)
        body: UnlinkBody = await _body(request, UnlinkBody)
        result = await self.mpi.handle(
            UnlinkRecord(record_id=record_id, version=body.version, reason=body.reason),
            self.envelope(request),
        )
        return self.outcome(result)

    async def undo(self, request: web.Request) -> web.Response:
        command_id = _command_id(request)
        result = await self.mpi.handle(Undo(command_id=command_id), self.envelope(request))
        return self.outcome(result)

    async def command(self, request: web.Request) -> web.Response:
        command_id = _command_id(request)
        return await self.read(self.mpi.steward_command(command_id))

    async def person(self, request: web.Request) -> web.Response:
        _query(request, _NoQuery)
        return await self.read(self.mpi.person_view(_int(request)), request)

    async def record(self, request: web.Request) -> web.Response:
        _query(request, _NoQuery)
        return await self.read(self.mpi.record_view(_int(request)), request)

    async def search(self, request: web.Request) -> web.Response:
        q: SearchQuery = _query(request, SearchQuery)
        return await self.read(self.mpi.find_persons(StewardSearch(**q.model_dump())), request)

    async def decisions(self, request: web.Request) -> web.Response:
        q: DecisionsQuery = _query(request, DecisionsQuery)
        return await self.read(self.mpi.decisions(
            actor=f"steward:{q.steward}" if q.steward else None, kind=q.kind, since=q.since,
            review_item_id=q.review_item, limit=q.limit, offset=q.offset,
        ))  # fmt: skip

    async def dashboard(self, request: web.Request) -> web.Response:
        q: DashboardQuery = _query(request, DashboardQuery)
        return await self.read(self.mpi.steward_dashboard(q.days))


class _NoQuery(BaseModel):
    model_config = {"extra": "forbid"}


def _r(method: str, path: str, handler: Callable[..., Any], summary: str,
       response: type[BaseModel] | None, **kw: Any) -> Route:
    return Route(method, path, handler, summary, response, **kw)


A = StewardApi
ROUTES: tuple[Route, ...] = (
    _r("GET", "/openapi.json", A.openapi_document, "This API's OpenAPI 3.1 document", None),
    _r("GET", "/review", A.review_queue, "A page of the review queue, with counts", QueuePage,
       query=QueueQuery, errors=(400, 422),
       description="Filters combine (AND); `total` counts the items under them. `counts` "
       "describes the whole open queue (size, by hard rule, by domain, oldest item) and, with "
       "`counts=all`, the items per status under the filters but `status`. `next` is the "
       "cursor of the page after this one (null on the last page): pass it as `after`, with "
       "the same sort and filters; a cursor that is not one, or of another sort, is 400 "
       "(bad-query), as is `after` with a non-zero `offset`."),
    _r("GET", "/review/{id}", A.review_item,
       "A review item with both records, the explanation, other candidates and history",
       ReviewDetail, errors=(400, 404)),
    _r("POST", "/review/{id}/decision", A.decide, "Decide a review item", CommandOutcome,
       body=DecisionBody, errors=(400, 404, 409, 415, 422),
       description="`same_person` links the item's record to the other record's person "
       "(a manual link) and closes the items it settles; `different_persons` records a "
       "no-match assertion (never proposed again automatically); `dismiss` closes it. A "
       "`version` other than the item's current one is 409 (stale-version)."),
    _r("POST", "/persons/{id}/merge", A.merge_persons,
       "Merge another person into this one", CommandOutcome, body=MergeBody,
       errors=(400, 404, 409, 415, 422)),
    _r("POST", "/records/{id}/unlink", A.unlink_record,
       "Unlink a record from its person: it becomes a person of its own", CommandOutcome,
       body=UnlinkBody, errors=(400, 404, 409, 415, 422)),
    _r("POST", "/commands/{command_id}/undo", A.undo,
       "Undo a command (a steward's, or a feed's merge, change of identifier or removal)",
       CommandOutcome, errors=(400, 404, 409),
       description="Refused (409) when an entity the command changed has changed since, or "
       "when the command made a change that cannot be undone (a registration)."),
    _r("GET", "/commands/{command_id}", A.command, "A steward command from the decisions log",
       DecisionEntry, errors=(400, 404)),
    _r("GET", "/persons/{id}", A.person,
       "A person: records, identifiers, golden view, open review items, history", PersonView,
       errors=(400, 404)),
    _r("GET", "/records/{id}", A.record,
       "A record as received and normalised, its review items and history", RecordView,
       errors=(400, 404)),
    _r("GET", "/search", A.search, "Persons by identifier or by demographics", PersonHits,
       query=SearchQuery, errors=(400, 422)),
    _r("GET", "/decisions", A.decisions, "The steward commands, newest first", DecisionLog,
       query=DecisionsQuery, errors=(400,)),
    _r("GET", "/dashboard", A.dashboard, "Queue size and age, decisions per day, automatic "
       "links, undos", Dashboard, query=DashboardQuery, errors=(400,)),
)
