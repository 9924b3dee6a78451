"""OAuth2 bearer JWTs on the FHIR door ([auth] mode = "jwt"): real keys, real signatures, a
real server; 401 and 403 as OperationOutcomes with RFC 6750 challenges."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from identity.auth import READ, WRITE, Principal
from identity.config import Settings, load_settings
from identity.errors import ConfigError
from identity.mpi import Mpi
from identity.store.db import Database
from tests.fhir.conftest import HOSPA, Fhir, patient, serve

ISSUER = "https://idp.test.example"
AUDIENCE = "https://mpi.test.example/fhir"

RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})
# same kid as RSA, another key: a forged signature
IMPOSTOR = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


def jwks(*keys: Any) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def token(
    key: Any = RSA,
    *,
    scope: str = f"{READ} {WRITE}",
    client: str | None = "ADT_A",
    expires_in: float = 300,
    **claims: Any,
) -> str:
    now = int(time.time())
    body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc-" + (client or "x"),
                            "iat": now, "exp": now + int(expires_in), "scope": scope}
    if client is not None:
        body["client_id"] = client
    body.update(claims)
    algorithm = "ES256" if isinstance(key, ECKey) else "RS256"
    return jwt.encode({"alg": algorithm, "kid": key.kid}, body, key)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(RSA, EC)))
    return path


@pytest.fixture
async def secured(
    db: Database, make_settings: Callable[..., Settings], jwks_file: Path
) -> AsyncIterator[Fhir]:
    settings = make_settings(auth={"mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                   "jwks_file": str(jwks_file), "leeway": 60})
    mpi = Mpi(db, settings)
    await mpi.start()
    async with serve(mpi) as door:
        yield door


def challenge(response: Any) -> str:
    return response.headers.get("WWW-Authenticate", "")


async def test_no_token_is_401_with_a_bearer_challenge(secured: Fhir) -> None:
    status, body, response = await secured.call("GET", "/Patient", params={"family": "Smith"})
    assert status == 401
    assert challenge(response) == 'Bearer realm="identity"'
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "login"


async def test_metadata_needs_no_token_and_says_how_to_authenticate(secured: Fhir) -> None:
    status, body, _ = await secured.call("GET", "/metadata")
    assert status == 200 and body["resourceType"] == "CapabilityStatement"
    security = body["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert ISSUER in security["description"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: token(expires_in=-3600), "expired"),
        (lambda: token(iss="https://other.example"), "iss"),
        (lambda: token(aud="https://other.example/fhir"), "aud"),
        (lambda: token(IMPOSTOR), "signature"),
        (lambda: token(RSAKey.generate_key(2048, parameters={"kid": "nobody"})), "key"),
        (lambda: "not.a.jwt", "JWT"),
        (lambda: token(client=None, sub=None), "client_id"),
    ],
)
async def test_invalid_tokens_are_401(
    secured: Fhir, make: Callable[[], str], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sent = make()
    status, body, response = await secured.call(
        "GET", "/Patient", params={"family": "Smith"}, headers=bearer(sent)
    )
    assert status == 401, body
    assert "event=fhir_access_refused status=401 error=invalid_token" in caplog.text
    assert sent not in caplog.text and sent[-20:] not in caplog.text  # never the token
    assert 'error="invalid_token"' in challenge(response)
    assert reason in body["issue"][0]["diagnostics"]
    assert body["issue"][0]["code"] == "login"


async def test_a_token_expired_within_the_leeway_is_accepted(secured: Fhir) -> None:
    status, body, _ = await secured.call(
        "GET", "/Patient", params={"family": "Smith"}, headers=bearer(token(expires_in=-20))
    )
    assert status == 200, body


async def test_a_write_with_a_read_token_is_403_and_changes_nothing(secured: Fhir) -> None:
    status, body, response = await secured.call(
        "PUT", "/Patient", patient(HOSPA, "A1"), params={"identifier": f"{HOSPA}|A1"},
        headers=bearer(token(scope=READ)),
    )
    assert status == 403, body
    assert 'error="insufficient_scope"' in challenge(response)
    assert f'scope="{WRITE}"' in challenge(response)
    assert body["issue"][0]["code"] == "forbidden"
    status, body, _ = await secured.call(
        "GET", "/Patient", params={"identifier": f"{HOSPA}|A1"}, headers=bearer(token())
    )
    assert status == 200 and body["total"] == 0


async def test_the_token_client_is_the_source_not_the_header(secured: Fhir) -> None:
    # LIS may not assign HOSPA identifiers; its token wins over a forged X-Client-Id
    status, body, _ = await secured.call(
        "PUT", "/Patient", patient(HOSPA, "A2"), params={"identifier": f"{HOSPA}|A2"},
        headers={**bearer(token(EC, client="LIS")), "X-Client-Id": "ADT_A"},
    )
    assert status == 403, body
    assert "LIS" in body["issue"][0]["diagnostics"]
    status, body, _ = await secured.call(
        "PUT", "/Patient", patient(HOSPA, "A2"), params={"identifier": f"{HOSPA}|A2"},
        headers=bearer(token(EC, client="ADT_A")),
    )
    assert status == 201, body


async def test_smart_v2_and_transaction_scopes(secured: Fhir) -> None:
    search = {"family": "Smith"}
    for scope, status in [("system/Patient.rs", 200), ("system/*.read", 200),
                          ("ITI-78", 200), ("ITI-83", 403), ("system/Patient.cud", 403),
                          ("user/Patient.read", 403)]:
        got, body, _ = await secured.call(
            "GET", "/Patient", params=search, headers=bearer(token(scope=scope))
        )
        assert got == status, (scope, body)


def test_scope_grants() -> None:
    def grants(scopes: str, wanted: str, transactions: tuple[str, ...] = ()) -> bool:
        principal = Principal("c", frozenset(scopes.split()), authenticated=True)
        return principal.grants(wanted, transactions)

    assert grants("system/Patient.read", READ)
    assert not grants("system/Patient.read", WRITE)
    assert grants("system/Patient.cruds", WRITE) and grants("system/Patient.cruds", READ)
    assert grants("system/Patient.*", WRITE)
    assert not grants("system/Patient.c", WRITE)  # create only: not update and delete
    assert not grants("system/Observation.read", READ)
    assert grants("ITI-104", WRITE, ("ITI-104",))
    assert not grants("steward", READ)
    assert grants("steward", "steward") and not grants("system/*.*", "steward")


async def test_keys_from_a_jwks_url_and_an_unknown_key_refetched(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    served = {"keys": jwks(RSA)}
    fetches = []

    async def keys(request: web.Request) -> web.Response:
        fetches.append(1)
        return web.json_response(served["keys"])

    idp = web.Application()
    idp.router.add_get("/jwks", keys)
    runner = web.AppRunner(idp)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks"
    try:
        settings = make_settings(auth={"mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                       "jwks_url": url})
        mpi = Mpi(db, settings)
        await mpi.start()
        async with serve(mpi) as door:
            status, _, _ = await door.call("GET", "/Patient", params={"family": "X"},
                                           headers=bearer(token()))
            assert status == 200 and len(fetches) == 1
            served["keys"] = jwks(RSA, EC)  # the authorisation server adds a key
            status, body, _ = await door.call("GET", "/Patient", params={"family": "X"},
                                              headers=bearer(token(EC)))
            assert status == 200, body
            assert len(fetches) == 2
            # a token naming an unknown key again soon after: no third fetch (no flood)
            stranger = RSAKey.generate_key(2048, parameters={"kid": "nobody"})
            status, _, _ = await door.call("GET", "/Patient", params={"family": "X"},
                                           headers=bearer(token(stranger)))
            assert status == 401 and len(fetches) == 2
    finally:
        await runner.cleanup()


def test_no_auth_on_a_network_address_is_refused(tmp_path: Path, jwks_file: Path) -> None:
    config = tmp_path / "identity.toml"
    config.write_text('[http]\nhost = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match="allow_insecure"):
        load_settings(config)
    config.write_text('[http]\nhost = "0.0.0.0"\n[auth]\nallow_insecure = true\n')
    assert load_settings(config).auth.mode == "none"
    config.write_text(f'[http]\nhost = "0.0.0.0"\n[auth]\nmode = "jwt"\nissuer = "{ISSUER}"\n'
                      f'audience = "{AUDIENCE}"\njwks_file = "{jwks_file}"\n')
    assert load_settings(config).auth.mode == "jwt"
    config.write_text('[auth]\nmode = "jwt"\nissuer = "x"\n')
    with pytest.raises(ConfigError, match="audience"):
        load_settings(config)
