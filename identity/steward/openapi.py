"""The OpenAPI 3.1 document of the steward API, generated from its route table
(identity.steward.api.ROUTES) and the pydantic models the handlers validate and answer with:
a route cannot be served without being in the document, and the schemas are the models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from identity import __version__
from identity.steward.api import ROUTES, Route
from identity.steward.problems import PROBLEM_BASE, PROBLEM_JSON, TITLES

PREFIX = "/api"
REF = "#/components/schemas/{model}"
_PARAMETER = re.compile(r"\{([a-z_]+)\}")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details. `type` is `about:blank` or "
    f"`{PROBLEM_BASE}<kind>`; some kinds add members: `errors` (invalid-body, bad-query), "
    "`entity`, `id`, `expected_version`, `current_version` (stale-version), `field` "
    "(invalid-input).",
    "properties": {
        "type": {"type": "string", "format": "uri-reference"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "expected_version": {"type": "integer"},
        "current_version": {"type": "integer"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}


def _path_parameter(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = (
        {"type": "string", "format": "uuid"} if name == "command_id"
        else {"type": "integer", "minimum": 1}
    )
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[1]


def openapi_document(realm: str = "identity") -> dict[str, Any]:
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for route in ROUTES:
        if route.response is not None:
            models.append((route.response, "serialization"))
        for model in (route.body, route.query):
            if model is not None:
                models.append((model, "validation"))
    keys, top = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA
    query_models = {route.query for route in ROUTES if route.query is not None}
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(
            route, keys, schemas
        )
    for model in query_models:  # inlined as parameters
        schemas.pop(_name(keys[(model, "validation")]), None)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "identity steward API",
            "version": __version__,
            "description": "The data steward's work on the master patient index: the review "
            "queue, decisions, merges, unlinks and undo, persons, search, the decisions log "
            "and a dashboard (docs/steward.md). Every route needs a bearer token with the "
            "`steward` scope when `[auth] mode = \"jwt\"`; with mode `none` (loopback only) "
            "the steward is named by the `X-Steward` header.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": ["steward"]}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": f"OAuth2 access token (realm {realm}) granting `steward`",
                }
            },
        },
    }


def _operation(
    route: Route, keys: dict[Any, dict[str, Any]], schemas: dict[str, Any]
) -> dict[str, Any]:
    parameters = [_path_parameter(n) for n in _PARAMETER.findall(route.path)]
    if route.query is not None:
        schema = schemas[_name(keys[(route.query, "validation")])]
        required = set(schema.get("required", ()))
        for name, prop in schema["properties"].items():
            parameter: dict[str, Any] = {
                "name": name, "in": "query", "required": name in required, "schema": prop,
            }
            if "description" in prop:
                parameter["description"] = prop["description"]
            parameters.append(parameter)
    if route.response is None:
        content: dict[str, Any] = {"schema": {"type": "object"}}
    else:
        content = {"schema": keys[(route.response, "serialization")]}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json":
                                                                          content}}}
    for status in sorted({*route.errors, 401, 403}):
        responses[str(status)] = {
            "description": TITLES.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": REF.format(model="Problem")}}},
        }
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": list(route.tags),
        "responses": responses,
    }
    if route.description:
        operation["description"] = route.description
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": keys[(route.body, "validation")]}},
        }
    return operation
