"""The FHIR R4 front door under /fhir: PIXm (ITI-83, ITI-104), PDQm (ITI-78, ITI-119),
PMIR (ITI-93) and the CapabilityStatement. A thin door: FHIR in -> one Mpi command or query ->
FHIR out. See docs/fhir.md.
"""

from __future__ import annotations

import functools

from aiohttp import web

from identity.config import Settings
from identity.fhir.access import (
    AUDIT_READ,
    MATCH,
    PDQ_QUERY,
    PIX_FEED,
    PIX_QUERY,
    PMIR_FEED,
    PUBLIC,
    Access,
    AccessControl,
    principal_of,
)
from identity.fhir.audit import add_audit_routes
from identity.fhir.auditing import DoorAudit
from identity.fhir.door import FhirDoor
from identity.fhir.pmir import process_message
from identity.fhir.rest import (
    bundle_handler,
    create_handler,
    delete_handler,
    history_handler,
    update_handler,
)
from identity.fhir.wire import SYSTEM_OF_KEY, deadline_middleware, error_middleware
from identity.mpi import Mpi

FHIR_DOOR_KEY = web.AppKey("fhir_door", FhirDoor)


def build_fhir_app(mpi: Mpi, settings: Settings) -> web.Application:
    """The FHIR sub-application (mounted at /fhir); its middleware maps every error to an
    OperationOutcome without touching the parent's other routes, checks each route's
    scope (identity.fhir.access) and records what failed (identity.fhir.auditing)."""
    # the body limit that applies is the serving application's (identity.app: http.max_body_bytes)
    control = AccessControl(settings)
    door = FhirDoor(mpi, settings)
    audit = DoorAudit(door, control)  # outermost: it sees the status every request ends with
    app = web.Application(middlewares=[
        audit.middleware, error_middleware, deadline_middleware(settings.http.request_timeout),
        control.middleware,
    ])
    app.on_startup.append(control.on_startup)
    app[FHIR_DOOR_KEY] = door
    app[SYSTEM_OF_KEY] = door.system_of

    async def pmir(request: web.Request) -> web.StreamResponse:
        return await process_message(door, request)

    async def create(request: web.Request) -> web.StreamResponse:
        return await create_handler(door, request)

    async def update(request: web.Request) -> web.StreamResponse:
        return await update_handler(door, request)

    async def delete(request: web.Request) -> web.StreamResponse:
        return await delete_handler(door, request)

    async def history(request: web.Request) -> web.StreamResponse:
        return await history_handler(door, request)

    async def bundle(request: web.Request) -> web.StreamResponse:
        return await bundle_handler(door, request, lambda: process_message(door, request))

    route = functools.partial(control.route, app)
    route("GET", "/metadata", door.metadata, PUBLIC)
    route("GET", "/Patient/$ihe-pix", door.ihe_pix, PIX_QUERY)
    route("POST", "/Patient/$ihe-pix", door.ihe_pix, PIX_QUERY)
    route("POST", "/Patient/$match", door.match, MATCH)
    route("POST", "/Patient/_search", door.search_post, PDQ_QUERY)
    route("GET", "/Patient", door.search_get, PDQ_QUERY)
    route("PUT", "/Patient", door.conditional_update, PIX_FEED)
    route("DELETE", "/Patient", door.conditional_delete, PIX_FEED)
    route("POST", "/Patient", create, PIX_FEED)
    route("GET", "/Patient/{id}", door.read, PDQ_QUERY)
    route("PUT", "/Patient/{id}", update, PIX_FEED)
    route("DELETE", "/Patient/{id}", delete, PIX_FEED)
    route("GET", "/Patient/{id}/_history", history, PDQ_QUERY)
    route("GET", "/Patient/{id}/_history/{vid}", door.vread, PDQ_QUERY)
    route("POST", "/$process-message", pmir, PMIR_FEED)
    route("POST", "/Bundle", pmir, PMIR_FEED)
    # a message (PMIR) or a batch/transaction (plain REST): each kind checks its own scope
    base_feed = Access(PMIR_FEED.scope, ("ITI-93", "ITI-104"))
    route("POST", "/", bundle, base_feed)
    route("POST", "", bundle, base_feed)  # [base] itself, as clients write it: /fhir
    search = add_audit_routes(app, mpi.audit, settings,
                              authorize=_client_of)
    control.register(search.search, AUDIT_READ)
    control.register(search.read, AUDIT_READ)
    return app


async def _client_of(request: web.Request) -> str | None:
    """Who reads the audit records: the token's client (the middleware checked the scope),
    else the client id header of mode none."""
    principal = principal_of(request)
    if principal.authenticated:
        return principal.client
    return request.headers.get(request.app[FHIR_DOOR_KEY].settings.fhir.client_id_header)


def add_routes(app: web.Application, mpi: Mpi, settings: Settings) -> None:
    """Mount the FHIR door under /fhir on ``app``."""
    app.add_subapp("/fhir", build_fhir_app(mpi, settings))


__all__ = ["FHIR_DOOR_KEY", "add_routes", "build_fhir_app"]
