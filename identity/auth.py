"""Who is calling the HTTP door: OAuth2 bearer tokens (JWT) validated locally.

The service is an OAuth2 resource server in the sense of IHE IUA (ITI-72, JWT token option)
and SMART Backend Services: an access token is a JWT signed by the authorisation server
(RS256 or ES256) with a key of its JWKS (``[auth] jwks_file`` or ``jwks_url``); the service
checks the signature, ``iss``, ``aud``, ``exp`` and ``nbf`` (with ``leeway`` seconds of clock
skew) and reads the client (``client_id``, else ``sub``) and the scopes (``scope``, a
space-separated string, or ``scp``, a list). No call to the authorisation server per request.

Scopes (docs/security.md): ``system/Patient.read`` (ITI-78, ITI-83, ITI-119), and
``system/Patient.write`` (ITI-93, ITI-104); ``steward`` and ``audit`` for the steward API and
``AuditEvent``. SMART v2 forms (``system/Patient.rs``, ``system/Patient.cud``,
``system/*.read`` ...) and a scope naming the IHE transaction itself (``ITI-83``) are
accepted for the same access.

``[auth] mode = "none"`` (the demo's) takes the client from the ``[fhir] client_id_header``
header, as before; Settings refuses it on an HTTP listener that is not on loopback unless
``allow_insecure`` is set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    DecodeError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingKeyError,
)
from joserfc.jwk import KeySet

from identity.config import AuthSettings
from identity.errors import IdentityError

log = logging.getLogger("identity.auth")

READ = "system/Patient.read"
WRITE = "system/Patient.write"
STEWARD = "steward"
AUDIT = "audit"

ALGORITHMS = ["RS256", "ES256"]
MAX_TOKEN_BYTES = 16 << 10
JWKS_REFRESH_SECONDS = 3600.0
JWKS_RETRY_SECONDS = 30.0

# SMART v2 permissions (c r u d s) that make up each of our two Patient access levels
_SMART_V2 = {READ: set("rs"), WRITE: set("cud")}


class AuthConfigError(IdentityError):
    """The keys of ``[auth]`` cannot be loaded."""


class AuthError(IdentityError):
    """A request is refused: ``status`` 401 (no valid token) or 403 (a scope is missing)."""

    def __init__(self, status: int, error: str, text: str, scope: str | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.error = error  # RFC 6750 error code, or "" when no token was sent
        self.text = text
        self.scope = scope

    def www_authenticate(self, realm: str) -> str:
        """The RFC 6750 challenge; no error attributes when the request had no token."""
        parts = [f'realm="{realm}"']
        if self.error:
            parts.append(f'error="{self.error}"')
            parts.append(f'error_description="{_quoted(self.text)}"')
        if self.scope:
            parts.append(f'scope="{self.scope}"')
        return "Bearer " + ", ".join(parts)


def _quoted(text: str) -> str:
    return text.replace("\\", "").replace('"', "'")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: the client id it acts as and the scopes it was granted."""

    client: str | None
    scopes: frozenset[str]
    subject: str | None = None
    authenticated: bool = False
    person: str | None = None
    """The name of the person the token was issued to, when it names one (IUA's
    ``extensions.ihe_iua.subject_name``, else OpenID Connect's ``name``): the audit records
    name that person (``sub``) as the human requestor."""
    expires_at: float | None = None
    """The token's ``exp`` (seconds since the epoch): how long the console's sign-in lasts."""

    def grants(self, scope: str, transactions: tuple[str, ...] = ()) -> bool:
        """Whether the token allows ``scope`` (one of READ, WRITE, STEWARD, AUDIT), directly,
        in a SMART v2 or wildcard form, or as one of the IHE ``transactions`` it covers."""
        if not self.authenticated:
            return True
        if scope in self.scopes or any(t in self.scopes for t in transactions):
            return True
        wanted = _SMART_V2.get(scope)
        if wanted is None:
            return False
        level = scope.rsplit(".", 1)[1]  # "read" / "write"
        for granted in self.scopes:
            context, _, rest = granted.partition("/")
            resource, _, permissions = rest.partition(".")
            if context != "system" or resource not in ("Patient", "*"):
                continue
            if permissions in (level, "*") or (permissions and wanted <= set(permissions)):
                return True
        return False


ANONYMOUS = Principal(client=None, scopes=frozenset())


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        return frozenset(s for s in scp if isinstance(s, str))
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()


class TokenVerifier:
    """Validates bearer tokens against ``[auth]``; keys from the JWKS file (read at start-up)
    or URL (fetched at start-up, then hourly, and again when a token names an unknown key,
    at most every 30 seconds)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._keys: KeySet | None = None
        self._fetched_at = 0.0
        self._unknown_key_fetched_at = float("-inf")
        self._lock = asyncio.Lock()
        if settings.jwks_file is not None:
            try:
                self._keys = load_key_set(settings.jwks_file.read_bytes(),
                                          str(settings.jwks_file))
            except (OSError, ValueError) as exc:
                raise AuthConfigError(f"[auth] jwks_file: {exc}") from None

    async def start(self) -> None:
        """Fetch the JWKS of ``jwks_url`` (a failure stops the start-up: every request would
        be refused)."""
        if self.settings.jwks_url is not None:
            await self._refresh(initial=True)

    async def _refresh(self, *, unknown_key: bool = False, initial: bool = False) -> None:
        url = self.settings.jwks_url
        if url is None:
            return
        async with self._lock:
            now = time.monotonic()
            if unknown_key:
                if now - self._unknown_key_fetched_at < JWKS_RETRY_SECONDS:
                    return
                self._unknown_key_fetched_at = now
            elif not initial and now - self._fetched_at < JWKS_REFRESH_SECONDS:
                return
            self._fetched_at = now
            try:
                timeout = aiohttp.ClientTimeout(total=10)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.get(url) as response:
                        response.raise_for_status()
                        body = await response.read()
                self._keys = load_key_set(body, url)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("event=jwks_unavailable url=%s error=%s", url, exc)
                if initial:
                    raise AuthConfigError(f"[auth] jwks_url {url}: {exc}") from None
                return
            log.info("event=jwks_loaded url=%s keys=%d", url, len(self._keys.keys))

    async def verify(self, authorization: str | None) -> Principal:
        """The principal of an ``Authorization`` header value; AuthError(401) otherwise."""
        if not authorization:
            raise AuthError(401, "", "a bearer token is required")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "invalid_request", "the Authorization header is not Bearer")
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(401, "invalid_token", "the token is too large")
        await self._refresh()
        try:
            decoded = self._decode(token)
        except (MissingKeyError, InvalidKeyIdError):
            await self._refresh(unknown_key=True)
            try:
                decoded = self._decode(token)
            except JoseError as exc:
                raise _invalid(exc) from None
        except (JoseError, ValueError) as exc:
            raise _invalid(exc) from None
        claims = decoded.claims
        registry = jwt.JWTClaimsRegistry(
            leeway=int(self.settings.leeway),
            iss={"essential": True, "value": self.settings.issuer},
            aud={"essential": True, "value": self.settings.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise AuthError(401, "invalid_token", "the token has expired") from None
        except ClaimError as exc:
            raise AuthError(401, "invalid_token", f"the token is not valid here: {exc}") from None
        client = claims.get("client_id") or claims.get("sub")
        if not isinstance(client, str) or not client:
            raise AuthError(401, "invalid_token", "the token names no client_id or sub")
        subject = claims.get("sub") if isinstance(claims.get("sub"), str) else None
        exp = claims.get("exp")
        return Principal(client=client, scopes=_scopes(claims), subject=subject,
                         authenticated=True, person=_person(claims),
                         expires_at=float(exp) if isinstance(exp, int | float) else None)

    def _decode(self, token: str) -> Any:
        if self._keys is None:
            raise MissingKeyError()
        return jwt.decode(token, self._keys, algorithms=ALGORITHMS)


def _person(claims: dict[str, Any]) -> str | None:
    """The person's name a token carries: IHE IUA's JWT extension ``ihe_iua.subject_name``
    (ITI-71), else the OpenID Connect ``name`` claim; None for a token of a system."""
    extensions = claims.get("extensions")
    iua = extensions.get("ihe_iua") if isinstance(extensions, dict) else None
    name = iua.get("subject_name") if isinstance(iua, dict) else None
    if not isinstance(name, str) or not name.strip():
        name = claims.get("name")
    return name.strip()[:200] if isinstance(name, str) and name.strip() else None


def _invalid(exc: Exception) -> AuthError:
    if isinstance(exc, BadSignatureError):
        text = "the token's signature does not verify"
    elif isinstance(exc, MissingKeyError | InvalidKeyIdError):
        text = "the token is signed with a key the service does not know"
    elif isinstance(exc, DecodeError | ValueError):
        text = "the token is not a JWT"
    else:
        text = f"the token is not valid: {type(exc).__name__}"
    return AuthError(401, "invalid_token", text)


def load_key_set(data: bytes, where: str) -> KeySet:
    """The public keys of a JWKS document; ValueError naming ``where`` when it is not one."""
    try:
        document = json.loads(data)
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("no 'keys' list")
        public = [
            {k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
            for key in document["keys"]
            if isinstance(key, dict) and key.get("use", "sig") == "sig"
        ]
        return KeySet.import_key_set({"keys": public})
    except (ValueError, JoseError) as exc:
        raise ValueError(f"{where}: not a JWKS document: {exc}") from None
