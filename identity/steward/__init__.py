"""The steward's door: a JSON API under /api (docs/steward.md) and a browser console under
/steward (identity.steward.console) over the MPI core's steward reads and commands. A thin
door: request in -> one Mpi read or command -> JSON or a page out; errors as problem JSON (or
as pages); every route needs the ``steward`` scope (identity.steward.access).
"""

from __future__ import annotations

import functools

from aiohttp import web

from identity.config import Settings
from identity.mpi import Mpi
from identity.steward.access import StewardAccess
from identity.steward.api import ROUTES, StewardApi
from identity.steward.console import build_console_app
from identity.steward.openapi import openapi_document
from identity.steward.problems import error_middleware

STEWARD_API_KEY = web.AppKey("steward_api", StewardApi)


def build_steward_app(mpi: Mpi, settings: Settings) -> web.Application:
    """The steward sub-application (mounted at /api)."""
    access = StewardAccess(settings)
    app = web.Application(middlewares=[error_middleware(settings.auth.realm), access.middleware])
    app.on_startup.append(access.on_startup)
    api = StewardApi(mpi, settings)
    api.openapi = openapi_document(settings.auth.realm)
    app[STEWARD_API_KEY] = api
    for route in ROUTES:
        handler = functools.partial(route.handler, api)
        functools.update_wrapper(handler, route.handler)
        if route.method == "GET":
            app.router.add_get(route.path, handler, name=route.operation_id)
        else:
            app.router.add_route(route.method, route.path, handler, name=route.operation_id)
    return app


def add_routes(app: web.Application, mpi: Mpi, settings: Settings) -> None:
    """Mount the steward API under /api and the console under /steward on ``app``."""
    api_app = build_steward_app(mpi, settings)
    app.add_subapp("/api", api_app)
    app.router.add_get("/steward", _to_console)  # before the sub-application, which takes it
    app.add_subapp("/steward", build_console_app(mpi, settings, api_app[STEWARD_API_KEY]))


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect("/steward/")


__all__ = ["STEWARD_API_KEY", "add_routes", "build_steward_app"]
