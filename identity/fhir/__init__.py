"""The FHIR R4 front door under /fhir: PIXm (ITI-83, ITI-104), PDQm (ITI-78, ITI-119),
PMIR (ITI-93) and the CapabilityStatement. A thin door: FHIR in -> one Mpi command or query ->
FHIR out. See docs/fhir.md.
"""

from __future__ import annotations

from aiohttp import web

from identity.config import Settings
from identity.fhir.door import FhirDoor
from identity.fhir.pmir import process_message
from identity.fhir.wire import deadline_middleware, error_middleware
from identity.mpi import Mpi

FHIR_DOOR_KEY = web.AppKey("fhir_door", FhirDoor)


def build_fhir_app(mpi: Mpi, settings: Settings) -> web.Application:
    """The FHIR sub-application (mounted at /fhir); its middleware maps every error to an
    OperationOutcome without touching the parent's other routes."""
    # the body limit that applies is the serving application's (identity.app: http.max_body_bytes)
    app = web.Application(
        middlewares=[error_middleware, deadline_middleware(settings.http.request_timeout)]
    )
    door = FhirDoor(mpi, settings)
    app[FHIR_DOOR_KEY] = door

    async def pmir(request: web.Request) -> web.StreamResponse:
        return await process_message(door, request)

    app.router.add_get("/metadata", door.metadata)
    app.router.add_get("/Patient/$ihe-pix", door.ihe_pix)
    app.router.add_post("/Patient/$ihe-pix", door.ihe_pix)
    app.router.add_post("/Patient/$match", door.match)
    app.router.add_post("/Patient/_search", door.search_post)
    app.router.add_get("/Patient", door.search_get)
    app.router.add_put("/Patient", door.conditional_update)
    app.router.add_delete("/Patient", door.conditional_delete)
    app.router.add_get("/Patient/{id}", door.read)
    app.router.add_get("/Patient/{id}/_history/{vid}", door.vread)
    app.router.add_post("/$process-message", pmir)
    app.router.add_post("/Bundle", pmir)
    app.router.add_post("/", pmir)
    return app


def add_routes(app: web.Application, mpi: Mpi, settings: Settings) -> None:
    """Mount the FHIR door under /fhir on ``app``."""
    app.add_subapp("/fhir", build_fhir_app(mpi, settings))


__all__ = ["FHIR_DOOR_KEY", "add_routes", "build_fhir_app"]
