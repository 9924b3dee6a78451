"""Access control of the FHIR door: each route's scope, and the middleware that checks the
caller's bearer token for it (identity.auth). 401 and 403 leave as OperationOutcomes with an
RFC 6750 ``WWW-Authenticate`` challenge."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from identity.auth import ANONYMOUS, AUDIT, READ, WRITE, AuthError, Principal, TokenVerifier
from identity.config import Settings
from identity.fhir.wire import FhirError

log = logging.getLogger("identity.fhir.access")

PRINCIPAL_KEY = web.RequestKey("principal", Principal)
REFUSAL_KEY = web.RequestKey("auth_refusal", AuthError)
"""The 401 or 403 the middleware answered a request with (for its audit record)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Access:
    """What a route needs: a scope (None: public) and the IHE transactions it serves, whose
    names are accepted as scopes too (IUA)."""

    scope: str | None
    transactions: tuple[str, ...] = ()


PUBLIC = Access(None)
PIX_QUERY = Access(READ, ("ITI-83",))
PDQ_QUERY = Access(READ, ("ITI-78",))
MATCH = Access(READ, ("ITI-119",))
PIX_FEED = Access(WRITE, ("ITI-104",))
PMIR_FEED = Access(WRITE, ("ITI-93",))
AUDIT_READ = Access(AUDIT)
UNDECLARED = Access("(undeclared route)")


def principal_of(request: web.Request) -> Principal:
    return request.get(PRINCIPAL_KEY, ANONYMOUS)


class AccessControl:
    """Holds the token verifier (``[auth] mode = "jwt"``) and each route's Access."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings.auth) if settings.auth.mode == "jwt" else None
        self._handlers: dict[Handler, Access] = {}

    def register(self, handler: Handler, access: Access) -> None:
        """Say what a handler routed elsewhere needs (a handler serves one kind of access)."""
        if self._handlers.setdefault(handler, access) != access:
            raise ValueError(f"{handler!r}: one handler, two kinds of access")

    def route(self, app: web.Application, method: str, path: str, handler: Handler,
              access: Access) -> None:
        """Add a route whose handler needs ``access``."""
        self.register(handler, access)
        if method == "GET":
            app.router.add_get(path, handler)  # HEAD too
        else:
            app.router.add_route(method, path, handler)

    async def on_startup(self, app: web.Application) -> None:
        if self.verifier is not None:
            await self.verifier.start()

    def access(self, request: web.Request) -> Access | None:
        """None when no route matched (the 404/405 needs no token). A route nobody said the
        access of needs a scope no token has: closed, not open, by mistake."""
        if request.match_info.http_exception is not None:
            return None
        return self._handlers.get(request.match_info.handler, UNDECLARED)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        access = self.access(request)
        if self.verifier is None or access is None or access.scope is None:
            return await handler(request)
        try:
            principal = await self.verifier.verify(request.headers.get("Authorization"))
            request[PRINCIPAL_KEY] = principal  # who was refused, for a 403's audit record
            if not principal.grants(access.scope, access.transactions):
                raise AuthError(403, "insufficient_scope",
                                f"the token does not grant {access.scope}", scope=access.scope)
        except AuthError as exc:
            log.info("event=fhir_access_refused status=%d error=%s method=%s path=%s",
                     exc.status, exc.error or "no_token", request.method, request.path)
            request[REFUSAL_KEY] = exc
            raise FhirError(
                exc.status,
                "login" if exc.status == 401 else "forbidden",
                exc.text,
                headers={"WWW-Authenticate": exc.www_authenticate(self.settings.auth.realm)},
            ) from None
        return await handler(request)
