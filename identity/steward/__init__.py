"""The steward's door: a JSON API under /api (docs/steward.md) over the MPI core's steward reads
and commands. A thin door: request in -> one Mpi read or command -> JSON out; errors as
problem JSON; every route needs the ``steward`` scope (identity.steward.access).
"""

from __future__ import annotations

import functools

from aiohttp import web

from identity.config import Settings
from identity.mpi import Mpi
from identity.steward.access import StewardAccess
from identity.steward.api import ROUTES, StewardApi
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
    """Mount the steward API under /api on ``app``."""
    app.add_subapp("/api", build_steward_app(mpi, settings))


__all__ = ["STEWARD_API_KEY", "add_routes", "build_steward_app"]
