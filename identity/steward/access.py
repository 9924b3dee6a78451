"""Who calls the steward API. ``[auth] mode = "jwt"``: every route needs a bearer token
(identity.auth) that grants the ``steward`` scope (401 without a valid token, 403 without the
scope, both with an RFC 6750 challenge), and the steward is the token's ``sub`` (else its
client). ``mode = "none"`` (loopback only, the demo): the steward is the ``X-Steward`` header,
or ``anonymous``. Every command the API makes is the steward's: ``steward:<name>`` in history
and audit."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from identity.auth import STEWARD, AuthError, TokenVerifier
from identity.config import Settings
from identity.steward.problems import Handler, Problem

log = logging.getLogger("identity.steward.access")

STEWARD_HEADER = "X-Steward"
MAX_NAME = 128


@dataclass(frozen=True, slots=True)
class Steward:
    """The caller of one request."""

    name: str
    authenticated: bool

    @property
    def actor(self) -> str:
        return f"steward:{self.name}"


STEWARD_KEY = web.RequestKey("steward", Steward)


def steward_of(request: web.Request) -> Steward:
    return request.get(STEWARD_KEY, Steward("anonymous", False))


def steward_name(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_NAME or not value.isprintable():
        raise Problem(400, f"the steward's name must be printable and at most {MAX_NAME} "
                      "characters", kind="bad-request")
    return value


class StewardAccess:
    """The token verifier (mode jwt) and the middleware that names the steward."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.verifier = TokenVerifier(settings.auth) if settings.auth.mode == "jwt" else None

    async def on_startup(self, app: web.Application) -> None:
        if self.verifier is not None:
            await self.verifier.start()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return await handler(request)  # 404, 405: no route, nothing to protect
        if self.verifier is None:
            request[STEWARD_KEY] = Steward(
                steward_name(request.headers.get(STEWARD_HEADER)) or "anonymous", False
            )
            return await handler(request)
        try:
            principal = await self.verifier.verify(request.headers.get("Authorization"))
            if not principal.grants(STEWARD):
                raise AuthError(403, "insufficient_scope",
                                f"the token does not grant {STEWARD}", scope=STEWARD)
        except AuthError as exc:
            log.info("event=steward_access_refused status=%d error=%s method=%s path=%s",
                     exc.status, exc.error or "no_token", request.method, request.path)
            raise
        name = steward_name(principal.subject) or steward_name(principal.client) or "anonymous"
        request[STEWARD_KEY] = Steward(name, True)
        return await handler(request)
