"""Errors of the steward API as problem JSON (RFC 9457, ``application/problem+json``): the
core's typed errors, refused tokens, malformed requests and the router's 404 and 405, each
with its status, a ``type`` URI, a ``title`` and a ``detail``; some carry extension members
(``errors`` for a request that does not validate, the versions of a stale decision)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from identity.auth import AuthError
from identity.errors import (
    AmbiguousDomain,
    IdentifierConflict,
    InvalidInput,
    InvalidState,
    MpiError,
    NotFound,
    StaleVersion,
    StoreUnavailable,
    UnknownDomain,
    UnknownIdentifier,
)

log = logging.getLogger("identity.steward")

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://identity.example.org/problems/"
"""Where the API's problem types are named (docs/steward.md, *Errors*, describes each)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(Exception):
    """A request refused: ``status``, ``kind`` (the last segment of the type URI; None:
    ``about:blank``, the status says all), ``detail`` and extension members."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        kind: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.kind = kind
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.kind if self.kind else "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body

    def response(self, instance: str | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            body=orjson.dumps(self.body(instance)),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """A pydantic error list as the ``errors`` member: where (a JSON pointer-ish dotted path)
    and what."""
    return [
        {"location": ".".join(str(part) for part in error["loc"]) or "(body)",
         "message": error["msg"]}
        for error in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def problem_for(exc: Exception, realm: str) -> Problem:
    """The problem a (core, auth, validation) error is answered with; raises what it does not
    know (a 500)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, AuthError):
        return Problem(
            exc.status, exc.text, kind="unauthorized" if exc.status == 401 else "forbidden",
            headers={"WWW-Authenticate": exc.www_authenticate(realm)},
        )  # fmt: skip
    if isinstance(exc, StaleVersion):
        return Problem(
            409, str(exc), kind="stale-version", title="Stale version",
            entity=exc.entity, id=exc.entity_id, expected_version=exc.expected,
            current_version=exc.current,
        )  # fmt: skip
    if isinstance(exc, InvalidState | IdentifierConflict):
        return Problem(409, str(exc), kind="conflict", title="Conflict with the current state")
    if isinstance(exc, NotFound | UnknownIdentifier):
        return Problem(404, str(exc), kind="not-found")
    if isinstance(exc, InvalidInput):
        extra = {"field": exc.field} if exc.field else {}
        return Problem(422, str(exc), kind="invalid-input", title="Invalid input", **extra)
    if isinstance(exc, UnknownDomain | AmbiguousDomain):
        return Problem(422, str(exc), kind="unknown-domain", title="Unknown domain")
    if isinstance(exc, MpiError):
        return Problem(422, str(exc), kind="refused", title="Refused by the MPI")
    if isinstance(exc, ValidationError):
        return Problem(
            422, "the request body does not validate", kind="invalid-body",
            title="Invalid request body", errors=validation_errors(exc),
        )  # fmt: skip
    if isinstance(exc, StoreUnavailable):
        return Problem(503, "the database is not available; nothing was changed, try again",
                       kind="unavailable", headers={"Retry-After": "5"})
    raise exc


def error_middleware(realm: str) -> Callable[[web.Request, Handler], Awaitable[Any]]:
    """Every error of the steward API leaves as problem JSON."""

    @web.middleware
    async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            detail = {404: f"no route {request.path}",
                      405: f"{request.method} is not allowed on {request.path}"}.get(
                          exc.status, exc.reason or str(exc))
            return Problem(exc.status, detail, headers=headers).response(request.path)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, or a 500
            try:
                problem = problem_for(exc, realm)
            except Exception:  # noqa: BLE001
                log.exception("event=steward_unhandled_error method=%s path=%s",
                              request.method, request.path)
                problem = Problem(500, "internal error; see the server log")
            if problem.status >= 500:
                log.warning("event=steward_error status=%d path=%s detail=%s",
                            problem.status, request.path, problem.detail)
            return problem.response(request.path)

    return problems
