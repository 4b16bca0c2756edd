"""The OpenAPI 3.1 document, built from the declarations the code runs on.

Each Resource method declares an `Operation` (in its class's `docs`): the reqparse parsers it
parses with, the output fields it marshals with, who may call it and which errors it can answer.
Field schemas come from the parsers' type functions (`.schema`), from the output fields and from
the models' columns (nullability, lengths); paths come from the route table. A route without an
`Operation` cannot be documented, and the document has no path without a route, but for the
health probes' blueprint, described here.

Written for code generators: one schema per distinct answer, enums for closed sets, integer
formats and string lengths, every header the API sends declared once in components/headers,
`security: []` on public operations, an example on every JSON body.
"""

import copy
import re
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from flask_restful import fields as fr_fields
from flask_restful.reqparse import RequestParser

from .errors import HTTP_ERRORS, APIError
from .extensions import api

DISTRIBUTION = "bookshelf-api-server"
INT32_MAX = 2**31 - 1
ID_SCHEMA = {"type": "integer", "format": "int32", "minimum": 1, "maximum": INT32_MAX}
TIMESTAMP_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
    "maxLength": 24,
    "description": "UTC, with milliseconds and a Z.",
}
TOKEN_MAX_LENGTH = 4096  # a JWT of ours is well under 1 KiB; logout takes up to 4096 characters
TAGS = {
    "auth": "Accounts, tokens and sessions: register, log in, refresh, log out, who am I.",
    "account_recovery": "Links mailed to an account's address: verify it, reset a forgotten "
    "password.",
    "api_keys": "API keys for services: scoped, expiring, shown once (log in to manage them).",
    "books": "The catalog: public search and reads; writes by the owner or an admin.",
    "changes": "The catalog's changes since a cursor, for apps that keep a local copy.",
    "users": "Accounts: read and change your own (or any, as an admin).",
    "health": "Liveness and readiness probes, outside the versioned API: no auth, no rate limit.",
    "docs": "This document.",
}
# Headers on every answer of the versioned API (the global rate limit's, while its storage
# answers; CORS's, to an allowed Origin only); the health probes send X-Request-ID and Vary.
API_HEADERS = (
    "X-Request-ID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Vary",
    "Access-Control-Allow-Origin",
    "Access-Control-Expose-Headers",
)
FORMAT_MAXIMUM = {"int32": INT32_MAX, "int64": 2**63 - 1}

ERROR_STATUSES = {
    400: "The body is not valid JSON, or not a JSON object.",
    401: "Missing, malformed, expired or revoked token; or wrong credentials.",
    403: "Authenticated, but not allowed (FORBIDDEN); or an API key whose scopes do not allow "
    "the request (INSUFFICIENT_SCOPE).",
    404: "No such resource.",
    409: "Conflict with the current state (duplicate, or Idempotency-Key reuse).",
    410: "The sync cursor has expired (SYNC_EXPIRED): sync again from the start.",
    412: "If-Match does not name the current ETag.",
    413: "The body is over the size limit.",
    415: "A body was sent without Content-Type: application/json.",
    422: "A field or parameter is missing, unknown, read-only, of the wrong type or out of range.",
    429: "Rate limited; see Retry-After.",
    500: "A bug; the details are in the server log.",
    503: "The database is unreachable.",
}
_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")


@dataclass(frozen=True)
class Operation:
    """What the document says of one method of one resource."""

    summary: str
    auth: str | None = None  # None, "access", "refresh" or "admin"
    body: RequestParser | None = None
    optional_body: bool = False  # the body may be left out altogether
    partial: bool = False  # PATCH: nothing required, at least one field
    read_only: frozenset = frozenset()
    query: RequestParser | None = None
    status: int = 200
    output: dict | str | None = None  # output fields, a component name, or None (no body)
    raw: bool = False  # the output is sent as it is, outside the envelope
    model: type | None = None  # whose columns tell which output fields may be null
    schema_name: str | None = None  # the output's component name, when not the model's
    many: bool = False  # a paginated list of `output`
    cursor: bool = False  # the list also pages by cursor, and may not count (CursorPageMeta)
    meta: str | None = None  # a list's own meta component, instead of PageMeta/CursorPageMeta
    etag: bool = False  # sends an ETag and honours If-None-Match
    sparse: bool = False  # honours `fields`: the output, or only some of its fields and its id
    if_match: bool = False
    idempotent: bool = False
    location: bool = False
    errors: tuple[int, ...] = field(default=())
    description: str = ""


def build_document() -> dict:
    components = {
        "schemas": dict(_base_schemas()),
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT or API key",
                "description": "An access token from the login or a refresh (a refresh token "
                "for /auth/refresh only). The tokens follow RFC8725 (JWT best current "
                "practices): the algorithm is pinned (HS256 by default; any other is refused), "
                "each token has a type and is refused where the other type belongs, and every "
                "token expires. Or an API key (`bks_...`, from POST /api/v1/auth/api-keys), in "
                "the Authorization header only (never in the URL): it acts for its owner within "
                "its scopes (`books:read`, `books:write`, `profile:read`), never as an admin, "
                "and is refused elsewhere with 403 INSUFFICIENT_SCOPE. A request that presents "
                "a key is judged by it on public operations too (401 for a bad key, 403 without "
                "the scope). A malformed, unknown, revoked or expired key is 401.",
            }
        },
        "headers": _headers(),
    }
    paths = {}
    for resource, urls, _kwargs in api.resources:
        operations = getattr(resource, "docs", {})
        for url in urls:
            path, parameters = _path(api.prefix + url)
            item = paths.setdefault(path, {})
            if parameters:
                item["parameters"] = parameters
            for method in sorted(resource.methods or ()):
                method = method.lower()
                if method not in operations:
                    raise LookupError(f"{resource.__name__}.{method} has no Operation in docs")
                item[method] = _operation(resource, method, operations[method], components)
    paths |= _health_paths(components)
    _bound_integers(paths)
    _bound_integers(components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bookshelf API",
            "version": package_version(),
            "description": "User accounts with JWT auth and a books catalog. Every response "
            "carries X-Request-ID; errors share one envelope. Timestamps are UTC with "
            "milliseconds and a Z; Location and Link carry absolute URLs.",
        },
        "servers": [{"url": "/", "x-internal": False}],
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": components,
    }


def _bound_integers(node) -> None:
    """Give every integer schema without a maximum its format's."""
    if isinstance(node, dict):
        kinds = node.get("type")
        if (kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds)) and (
            "maximum" not in node
        ):
            node["maximum"] = FORMAT_MAXIMUM[node.get("format", "int64")]
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)


def package_version() -> str:
    """The installed distribution's version; from a source tree that is not installed, the
    version in its pyproject.toml; else 0.0.0."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        if project.get("name") == DISTRIBUTION:
            return str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    return "0.0.0"


def error_codes() -> list[str]:
    """Every `error.code` the application can answer: its exceptions' and werkzeug's."""
    codes = {code for code, _ in HTTP_ERRORS.values()}
    classes = [APIError]
    while classes:
        cls = classes.pop()
        codes.add(cls.code)
        classes.extend(cls.__subclasses__())
    return sorted(codes)


def _path(rule: str) -> tuple[str, list]:
    parameters = []

    def replace(match):
        converter, name = match.groups()
        schema = dict(ID_SCHEMA)
        if converter not in ("id", "int"):
            schema = {"type": "string", "maxLength": 64}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        return "{" + name + "}"

    return _CONVERTER.sub(replace, rule), parameters


def _operation(resource, method: str, op: Operation, components) -> dict:
    name = f"{resource.__name__}{method.capitalize()}"
    doc = {"operationId": name[0].lower() + name[1:], "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    doc["tags"] = [resource.__module__.rsplit(".", 1)[-1]]
    doc["security"] = [{"bearerAuth": []}] if op.auth else []
    parameters = [_request_id_parameter()]
    if op.query is not None:
        parameters += [_query_parameter(arg) for arg in op.query.args]
    if op.etag:
        parameters.append(_header_parameter("If-None-Match", "An ETag you hold: 304 if current."))
    if op.if_match:
        parameters.append(
            _header_parameter("If-Match", "The ETag you last read; 412 if it is no longer current.")
        )
    if op.idempotent:
        parameters.append(
            _header_parameter(
                "Idempotency-Key",
                "A unique key per request; a retry with the same key and body replays the "
                "first response and creates nothing, with another body it is 409.",
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
            )
        )
    doc["parameters"] = parameters
    if op.body is not None:
        schema_name = f"{name}Body"
        components["schemas"][schema_name] = _body_schema(op)
        doc["requestBody"] = {
            "required": not op.optional_body,
            "content": {
                "application/json": {
                    "schema": _ref(schema_name),
                    "example": _example(_ref(schema_name), components["schemas"], body=True),
                }
            },
        }
    doc["responses"] = _responses(op, components)
    return doc


def _request_id_parameter() -> dict:
    return _header_parameter(
        "X-Request-ID",
        "Your id for this request (1-128 of A-Z a-z 0-9 . _ : -), echoed back; else one is made.",
        {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    )


def _header_parameter(name, description, schema=None) -> dict:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string", "maxLength": 1024},
    }


def _type_schema(type_function) -> dict:
    schema = getattr(type_function, "schema", None)
    if schema is None:
        raise LookupError(f"the type {type_function!r} declares no schema")
    schema = dict(schema() if callable(schema) else schema)
    if schema.get("type") == "integer" and "format" not in schema:
        schema["format"] = "int32" if schema.get("maximum", INT32_MAX + 1) <= INT32_MAX else "int64"
    return schema


def _query_parameter(arg) -> dict:
    schema = _type_schema(arg.type)
    default = arg.default
    if default is not None and not isinstance(default, list):
        schema["default"] = default
    return {"name": arg.name, "in": "query", "required": False, "schema": schema}


def _body_schema(op: Operation) -> dict:
    properties = {}
    for arg in op.body.args:
        schema = _type_schema(arg.type)
        if arg.nullable:
            schema["type"] = [schema["type"], "null"]
            schema["description"] = "null restores the default"
        properties[arg.name] = schema
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if op.partial:
        schema["minProperties"] = 1
    else:
        required = sorted(op.body.required_fields)
        if required:
            schema["required"] = required
    if op.read_only:
        schema["description"] = "Read-only fields (422 if sent): " + ", ".join(sorted(op.read_only))
    return schema


def _header_refs(*names: str) -> dict:
    return {name: {"$ref": f"#/components/headers/{name}"} for name in names}


def _responses(op: Operation, components) -> dict:
    schemas = components["schemas"]
    responses = {}
    headers = _header_refs(*API_HEADERS)
    success = {"description": op.summary, "headers": dict(headers)}
    if op.raw:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif op.output is not None:
        meta = op.meta or ("CursorPageMeta" if op.cursor else "PageMeta")
        name = _output_schema(op, components)
        if op.sparse:
            name = _sparse_schema(name, components)
        envelope = _envelope(name, op.many, components, meta)
        success["content"] = {
            "application/json": {"schema": envelope, "example": _example(envelope, schemas)}
        }
    if op.etag or op.if_match or op.status == 201:
        success["headers"] |= _header_refs("ETag")
    if op.many:
        success["headers"] |= _header_refs("Link")
    if op.location:
        success["headers"] |= _header_refs("Location")
    if op.idempotent:
        success["headers"] |= _header_refs("Idempotent-Replayed")
    responses[str(op.status)] = success
    if op.etag:
        responses["304"] = {
            "description": "Not modified: your ETag is current.",
            "headers": headers | _header_refs("ETag"),
        }
    statuses = set(op.errors) | {429, 500, 503}
    if op.body is not None or op.idempotent:
        statuses |= {400, 413, 415, 422}
    if op.query is not None:
        statuses.add(422)
    if op.auth:  # 403: also INSUFFICIENT_SCOPE, for an API key without the scope
        statuses |= {401, 403}
    if op.if_match:
        statuses |= {412}
    if op.idempotent:
        statuses |= {409, 422}
    for status in sorted(statuses):
        responses[str(status)] = _error_response(status, headers, schemas)
    return responses


def _error_response(status: int, headers: dict, schemas: dict) -> dict:
    headers = dict(headers)
    if status == 401:
        headers |= _header_refs("WWW-Authenticate")
    if status == 429:
        headers |= _header_refs("Retry-After")
    if status == 503:
        headers |= {"Retry-After": {"$ref": "#/components/headers/Retry-After-Optional"}}
    code, message = HTTP_ERRORS[status]
    details = {"title": "must be 1 to 200 characters long"} if status == 422 else {}
    example = {
        "error": {"code": code, "message": message, "details": details},
        "meta": {"request_id": _REQUEST_ID_EXAMPLE},
    }
    return {
        "description": ERROR_STATUSES[status],
        "headers": headers,
        "content": {"application/json": {"schema": _ref("Error"), "example": example}},
    }


def _health_paths(components) -> dict:
    """/health and /health/ready: a blueprint's views, outside the versioned API."""
    schemas = components["schemas"]
    headers = _header_refs("X-Request-ID", "Vary")

    def probe(operation_id, summary, schema, description, errors):
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "description": description,
                "tags": ["health"],
                "security": [],
                "parameters": [_request_id_parameter()],
                "responses": {
                    "200": {
                        "description": summary,
                        "headers": dict(headers),
                        "content": {
                            "application/json": {
                                "schema": _ref(schema),
                                "example": _example(_ref(schema), schemas),
                            }
                        },
                    },
                }
                | {str(s): _error_response(s, headers, schemas) for s in errors},
            }
        }

    return {
        "/health": probe(
            "healthLive",
            "Liveness: the process answers",
            "Health",
            "Says nothing about the database; for a container's or orchestrator's liveness probe.",
            (500,),
        ),
        "/health/ready": probe(
            "healthReady",
            "Readiness: the database answers and its schema is at the latest migration",
            "Readiness",
            "503 while the database cannot be reached or its schema is behind this code.",
            (500, 503),
        ),
    }


def _output_schema(op: Operation, components) -> str:
    """The component name of the output, created from the fields and model if new."""
    if isinstance(op.output, str):
        return op.output
    name = op.schema_name or op.model.__name__
    if name not in components["schemas"]:
        components["schemas"][name] = _fields_schema(op.output, op.model)
    return name


def _sparse_schema(name: str, components) -> str:
    """`{name}Read`, what a read that honours `fields` answers: the whole `{name}`, or
    `{name}Fields`, the same properties with only `id` required. (One schema cannot say which:
    that depends on the query. `anyOf`, as a whole one is also a valid sparse one.)"""
    schemas = components["schemas"]
    full = schemas[name]
    schemas.setdefault(
        f"{name}Fields",
        {
            "type": "object",
            "description": f"Some fields of a {name}: those `fields` names, and `id`.",
            "properties": copy.deepcopy(full["properties"]),
            "required": ["id"],
            "additionalProperties": False,
        },
    )
    schemas.setdefault(
        f"{name}Read",
        {
            "description": f"A {name}; with `fields`, a {name}Fields.",
            "anyOf": [_ref(name), _ref(f"{name}Fields")],
        },
    )
    return f"{name}Read"


def _envelope(name: str, many: bool, components, page_meta: str = "PageMeta") -> dict:
    """A named envelope per output (BookItem, BookPage, ...): plain objects that client
    generators read without merging `allOf`s."""
    envelope = f"{name}{'Page' if many else 'Item'}"
    data = {"type": "array", "items": _ref(name), "maxItems": 100} if many else _ref(name)
    components["schemas"].setdefault(
        envelope,
        {
            "type": "object",
            "required": ["data", "meta"],
            "properties": {"data": data, "meta": _ref(page_meta if many else "Meta")},
        },
    )
    return _ref(envelope)


def _fields_schema(output: dict, model) -> dict:
    from .resources.fields import UTCDateTime  # the resources import this module

    columns = model.__table__.columns
    properties = {}
    for name, value in output.items():
        kind = value if isinstance(value, type) else type(value)
        column = columns.get(name)
        if issubclass(kind, UTCDateTime):
            schema = dict(TIMESTAMP_SCHEMA)
        elif issubclass(kind, fr_fields.Integer):
            keyed = column is not None and (column.primary_key or column.foreign_keys)
            schema = (
                dict(ID_SCHEMA) if keyed else {"type": "integer", "format": "int32", "minimum": 0}
            )
        elif issubclass(kind, fr_fields.Boolean):
            schema = {"type": "boolean"}
        else:
            schema = {"type": "string"}
            length = getattr(column.type, "length", None) if column is not None else None
            if length:
                schema["maxLength"] = length
        schema |= getattr(value, "schema", {})
        if column is not None and column.nullable:  # a field of no column is never null
            schema["type"] = [schema["type"], "null"]
        properties[name] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": list(output),
        "additionalProperties": False,
    }


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _headers() -> dict:
    def header(description, schema=None, required=False):
        return {
            "description": description,
            "required": required,
            "schema": schema or {"type": "string", "maxLength": 1024},
        }

    counter = {"type": "integer", "format": "int64", "minimum": 0}
    return {
        "X-Request-ID": header(
            "The request's id, also in meta.request_id and the log.",
            {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
            required=True,
        ),
        "X-RateLimit-Limit": header("Requests allowed per window from this address.", counter),
        "X-RateLimit-Remaining": header("Requests left in the current window.", counter),
        "X-RateLimit-Reset": header("When the current window ends (Unix time, seconds).", counter),
        "ETag": header(
            "The representation's entity tag (strong for items, weak for lists).",
            {"type": "string", "maxLength": 128, "pattern": '^(W/)?".*"$'},
        ),
        "Link": header(
            "RFC 8288 links, absolute URLs: first, prev, next, last where they exist (no last "
            "when the count is not exact or not made); a cursor page links only next.",
            {"type": "string", "maxLength": 16384},
        ),
        "Location": header(
            "The absolute URL of the created resource.",
            {"type": "string", "format": "uri", "maxLength": 2048},
            required=True,
        ),
        "Retry-After": header(
            "Seconds to wait before retrying.",
            {"type": "integer", "format": "int32", "minimum": 1},
            required=True,
        ),
        "Retry-After-Optional": header(
            "Seconds to wait before retrying, when the server can tell.",
            {"type": "integer", "format": "int32", "minimum": 1},
        ),
        "Idempotent-Replayed": header(
            "true when the response is a replay.", {"type": "string", "const": "true"}
        ),
        "WWW-Authenticate": header("The scheme to authenticate with: Bearer.", required=True),
        "Vary": header(
            "Accept-Encoding (answers may be compressed); Origin too on /api/ when CORS_ORIGINS "
            "is set."
        ),
        "Access-Control-Allow-Origin": header(
            "CORS: the request's Origin, when it is one of CORS_ORIGINS; else not sent."
        ),
        "Access-Control-Expose-Headers": header(
            "CORS: the response headers a browser's script may read (ETag, Link, Location, "
            "Retry-After, X-Request-ID, ...), with Access-Control-Allow-Origin."
        ),
    }


_REQUEST_ID_EXAMPLE = "3f2a9c0d5b7e4e6f8a1b2c3d4e5f6a7b"
# Example values by property name, where a made-up one would not look like the real thing.
_EXAMPLES = {
    "id": 42,
    "owner_id": 7,
    "title": "Dune",
    "author": "Frank Herbert",
    "genre": "Science fiction",
    "published_year": 1965,
    "isbn": "9780441013593",
    "name": "Ann",
    "email": "ann@example.com",
    "password": "correct horse battery staple",
    "current_password": "correct horse battery staple",
    "device_name": "Ann's phone",
    "last_ip": "203.0.113.7",
    "last_used_ip": "203.0.113.7",
    "key": "bks_Q2hvb3NlQVN0cm9uZ1NlY3JldEtleUhlcmUx4UhYNz",
    "prefix": "bks_Q2hvb3Nl",
    "expires_in_days": 90,
    "request_id": _REQUEST_ID_EXAMPLE,
    "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3In0.c2lnbmF0dXJl",
    "refresh_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3IiwidHlwZSI6InJlZnJlc2gifQ.c2ln",
    "device_token": "ImFubkBleGFtcGxlLmNvbSI.ZxQ2dA.c2lnbmF0dXJl",
    "expires_in": 900,
    "per_page": 20,
    "page": 1,
    "total": 1,
    "pages": 1,
    "next_cursor": None,
    "total_exact": True,
}


def _example(schema: dict, schemas: dict, *, body: bool = False, name: str | None = None):
    """An example value of `schema`; of a request body, its required fields only (or, when none
    is required, the first)."""
    if "$ref" in schema:
        return _example(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas, body=body, name=name)
    if name in _EXAMPLES and _fits(_EXAMPLES[name], schema):
        return _EXAMPLES[name]
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if "examples" in schema:
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        return _example(schema["anyOf"][0], schemas, body=body, name=name)
    if "oneOf" in schema:
        return _example(schema["oneOf"][0], schemas, body=body, name=name)
    kind = schema.get("type", "object")
    kind = [k for k in kind if k != "null"][0] if isinstance(kind, list) else kind
    if kind == "object":
        names = list(schema.get("properties", {}))
        if body:
            names = schema.get("required") or names[:1]
        return {n: _example(schema["properties"][n], schemas, name=n) for n in names}
    if kind == "array":
        return [_example(schema["items"], schemas)]
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "boolean":
        return True
    if schema.get("format") == "date-time":
        return "2026-01-31T12:34:56.789Z"
    return "x" * max(schema.get("minLength", 1), 1)


def _fits(value, schema: dict) -> bool:
    kinds = schema.get("type", [])
    kinds = kinds if isinstance(kinds, list) else [kinds]
    python = {"string": str, "integer": int, "boolean": bool, "null": type(None)}
    return any(isinstance(value, python.get(kind, ())) for kind in kinds)


def _cursor_page_meta(request_id: dict) -> dict:
    def nullable(kind: str, description: str, **schema) -> dict:
        return {"type": [kind, "null"], "description": description, **schema}

    return {
        "type": "object",
        "required": [
            "request_id",
            "page",
            "per_page",
            "total",
            "pages",
            "total_exact",
            "next_cursor",
        ],
        "properties": {
            "request_id": request_id,
            "page": nullable("integer", "null on a cursor page", format="int32", minimum=1),
            "per_page": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 100},
            "total": nullable(
                "integer",
                "Matching books; a lower bound when total_exact is false; null when not "
                "counted (count=false, or a cursor page)",
                format="int64",
                minimum=0,
            ),
            "pages": nullable(
                "integer",
                "ceil(total / per_page); a lower bound, or null, as total",
                format="int64",
                minimum=0,
            ),
            "total_exact": nullable(
                "boolean",
                "false when more books match than are counted (10,000); null when not counted",
            ),
            "next_cursor": nullable(
                "string",
                "Send as `cursor` for the page after this one; null on the last page",
                maxLength=2048,
            ),
        },
    }


def _changes_schemas(request_id: dict) -> dict:
    """What the changes feed (/books/changes) answers: books and tombstones, and a cursor."""
    return {
        "BookTombstone": {
            "type": "object",
            "description": "A deleted book: remove it from your copy.",
            "required": ["id", "deleted_at"],
            "properties": {
                "id": ID_SCHEMA,
                "deleted_at": TIMESTAMP_SCHEMA,
            },
            "additionalProperties": False,
        },
        "BookChange": {
            "description": "A book as it is now, or the tombstone of a deleted one.",
            "oneOf": [_ref("Book"), _ref("BookTombstone")],
        },
        "ChangesMeta": {
            "type": "object",
            "required": ["request_id", "next_cursor", "has_more"],
            "properties": {
                "request_id": request_id,
                "next_cursor": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 2048,
                    "description": "Send it as `since` next time (also when `data` is empty).",
                },
                "has_more": {
                    "type": "boolean",
                    "description": "More changes follow now: ask again at once.",
                },
            },
        },
    }


def _base_schemas() -> dict:
    request_id = {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
    token = {"type": "string", "minLength": 1, "maxLength": TOKEN_MAX_LENGTH}
    tokens = {
        "type": "object",
        "required": ["access_token", "refresh_token", "token_type", "expires_in"],
        "properties": {
            "access_token": token,
            "refresh_token": token,
            "token_type": {"type": "string", "const": "Bearer"},
            "expires_in": {
                "type": "integer",
                "format": "int32",
                "minimum": 1,
                "description": "The access token's lifetime, in seconds",
            },
        },
        "additionalProperties": False,
    }
    return {
        "Meta": {
            "type": "object",
            "required": ["request_id"],
            "properties": {"request_id": request_id},
        },
        "PageMeta": {
            "type": "object",
            "required": ["request_id", "page", "per_page", "total", "pages"],
            "properties": {
                "request_id": request_id,
                "page": {"type": "integer", "format": "int32", "minimum": 1},
                "per_page": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 100},
                "total": {"type": "integer", "format": "int64", "minimum": 0},
                "pages": {"type": "integer", "format": "int64", "minimum": 0},
            },
        },
        "CursorPageMeta": _cursor_page_meta(request_id),
        **_changes_schemas(request_id),
        "Error": {
            "type": "object",
            "required": ["error", "meta"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "enum": error_codes()},
                        "message": {"type": "string", "maxLength": 1024},
                        "details": {
                            "type": "object",
                            "description": "For 422, each field or parameter named with its "
                            "problem; for some 401s, `reason`; else empty.",
                            "additionalProperties": {"type": "string", "maxLength": 1024},
                        },
                    },
                },
                "meta": _ref("Meta"),
            },
        },
        "Tokens": tokens,
        "LoginTokens": {
            "type": "object",
            "required": [*tokens["required"], "user", "device_token"],
            "properties": tokens["properties"]
            | {
                "user": _ref("User"),
                "device_token": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": TOKEN_MAX_LENGTH,
                    "description": "Opaque. Keep it for this account on this device (with the "
                    "refresh token, also after logging out) and send it with the next login; "
                    "each login answers a new one.",
                },
            },
            "additionalProperties": False,
        },
        "Accepted": {
            "type": "object",
            "required": ["message"],
            "properties": {"message": {"type": "string", "maxLength": 200}},
            "additionalProperties": False,
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "const": "ok"}},
            "additionalProperties": False,
        },
        "Readiness": {
            "type": "object",
            "required": ["status", "database"],
            "properties": {
                "status": {"type": "string", "const": "ok"},
                "database": {"type": "string", "const": "ok"},
            },
            "additionalProperties": False,
        },
    }
