"""The OpenAPI 3.1 document, built from the declarations the code runs on.

Each Resource method declares an `Operation` (in its class's `docs`): the reqparse parsers it
parses with, the output fields it marshals with, who may call it and which errors it can answer.
Field schemas come from the parsers' type functions (`.schema`), from the output fields and from
the models' columns (nullability); paths come from the route table. A route without an
`Operation` cannot be documented, and the document has no path without a route.
"""

import re
from dataclasses import dataclass, field

from flask_restful import fields as fr_fields
from flask_restful.reqparse import RequestParser

from .extensions import api
from .resources.fields import UTCDateTime

ERROR_STATUSES = {
    400: "The body is not valid JSON, or not a JSON object.",
    401: "Missing, malformed, expired or revoked token; or wrong credentials.",
    403: "Authenticated, but not allowed.",
    404: "No such resource.",
    409: "Conflict with the current state (duplicate, or Idempotency-Key reuse).",
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
    partial: bool = False  # PATCH: nothing required, at least one field
    read_only: frozenset = frozenset()
    query: RequestParser | None = None
    status: int = 200
    output: dict | str | None = None  # output fields, a component name, or None (no body)
    raw: bool = False  # the output is sent as it is, outside the envelope
    model: type | None = None  # whose columns tell which output fields may be null
    many: bool = False  # a paginated list of `output`
    cursor: bool = False  # the list also pages by cursor, and may not count (CursorPageMeta)
    etag: bool = False  # sends an ETag and honours If-None-Match
    if_match: bool = False
    idempotent: bool = False
    location: bool = False
    errors: tuple[int, ...] = field(default=())
    description: str = ""


def build_document() -> dict:
    components = {
        "schemas": dict(_base_schemas()),
        "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bookshelf API",
            "version": "1.0.0",
            "description": "User accounts with JWT auth and a books catalog. Every response "
            "carries X-Request-ID; errors share one envelope.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": components,
    }


def _path(rule: str) -> tuple[str, list]:
    parameters = []

    def replace(match):
        converter, name = match.groups()
        schema = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
        if converter not in ("id", "int"):
            schema = {"type": "string"}
        parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
        return "{" + name + "}"

    return _CONVERTER.sub(replace, rule), parameters


def _operation(resource, method: str, op: Operation, components) -> dict:
    name = f"{resource.__name__}{method.capitalize()}"
    doc = {"operationId": name[0].lower() + name[1:], "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    doc["tags"] = [resource.__module__.rsplit(".", 1)[-1]]
    if op.auth:
        doc["security"] = [{"bearerAuth": []}]
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
            "required": not op.partial,
            "content": {"application/json": {"schema": _ref(schema_name)}},
        }
    doc["responses"] = _responses(op, components)
    return doc


def _request_id_parameter() -> dict:
    return _header_parameter(
        "X-Request-ID",
        "Your id for this request (1-128 of A-Z a-z 0-9 . _ : -), echoed back; else one is made.",
        {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
    )


def _header_parameter(name, description, schema=None) -> dict:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _type_schema(type_function) -> dict:
    schema = getattr(type_function, "schema", None)
    if schema is None:
        raise LookupError(f"the type {type_function!r} declares no schema")
    return dict(schema() if callable(schema) else schema)


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


def _responses(op: Operation, components) -> dict:
    responses = {}
    headers = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    success = {"description": op.summary, "headers": dict(headers)}
    if op.raw:
        success["content"] = {"application/json": {"schema": {"type": "object"}}}
    elif op.output is not None:
        meta = "CursorPageMeta" if op.cursor else "PageMeta"
        envelope = _envelope(_output_schema(op, components), op.many, components, meta)
        success["content"] = {"application/json": {"schema": envelope}}
    if op.etag or op.if_match or op.status == 201:
        success["headers"]["ETag"] = {"$ref": "#/components/headers/ETag"}
    if op.many:
        success["headers"]["Link"] = {"$ref": "#/components/headers/Link"}
    if op.location:
        success["headers"]["Location"] = {"$ref": "#/components/headers/Location"}
    if op.idempotent:
        success["headers"]["Idempotent-Replayed"] = {
            "$ref": "#/components/headers/Idempotent-Replayed"
        }
    responses[str(op.status)] = success
    if op.etag:
        responses["304"] = {
            "description": "Not modified: your ETag is current.",
            "headers": headers | {"ETag": {"$ref": "#/components/headers/ETag"}},
        }
    statuses = set(op.errors) | {429, 500, 503}
    if op.body is not None or op.idempotent:
        statuses |= {400, 413, 415, 422}
    if op.query is not None:
        statuses.add(422)
    if op.auth:
        statuses.add(401)
    if op.auth == "admin":
        statuses.add(403)
    if op.if_match:
        statuses |= {412}
    if op.idempotent:
        statuses |= {409, 422}
    for status in sorted(statuses):
        error_headers = dict(headers)
        if status == 429:
            error_headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        responses[str(status)] = {
            "description": ERROR_STATUSES[status],
            "headers": error_headers,
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return responses


def _output_schema(op: Operation, components) -> str:
    """The component name of the output, created from the fields and model if new."""
    if isinstance(op.output, str):
        return op.output
    name = op.model.__name__
    if name not in components["schemas"]:
        components["schemas"][name] = _fields_schema(op.output, op.model)
    return name


def _envelope(name: str, many: bool, components, page_meta: str = "PageMeta") -> dict:
    """A named envelope per output (BookItem, BookPage, ...): plain objects that client
    generators read without merging `allOf`s."""
    envelope = f"{name}{'Page' if many else 'Item'}"
    data = {"type": "array", "items": _ref(name)} if many else _ref(name)
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
    columns = model.__table__.columns
    properties = {}
    for name, kind in output.items():
        kind = kind if isinstance(kind, type) else type(kind)
        if issubclass(kind, UTCDateTime):
            schema = {"type": "string", "format": "date-time"}
        elif issubclass(kind, fr_fields.Integer):
            schema = {"type": "integer"}
        elif issubclass(kind, fr_fields.Boolean):
            schema = {"type": "boolean"}
        else:
            schema = {"type": "string"}
        if name in columns and columns[name].nullable:  # a field of no column is never null
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
    def header(description, schema=None):
        return {"description": description, "schema": schema or {"type": "string"}}

    return {
        "X-Request-ID": header("The request's id, also in meta.request_id and the log."),
        "ETag": header("The representation's entity tag (strong for items, weak for lists)."),
        "Link": header(
            "RFC 8288 links: first, prev, next, last where they exist (no last when the count "
            "is not exact or not made); a cursor page links only next."
        ),
        "Location": header("The URL of the created resource."),
        "Retry-After": header("Seconds to wait before retrying.", {"type": "integer"}),
        "Idempotent-Replayed": header("true when the response is a replay.", {"const": "true"}),
    }


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
            "page": nullable("integer", "null on a cursor page", minimum=1),
            "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
            "total": nullable(
                "integer",
                "Matching books; a lower bound when total_exact is false; null when not "
                "counted (count=false, or a cursor page)",
                minimum=0,
            ),
            "pages": nullable(
                "integer", "ceil(total / per_page); a lower bound, or null, as total", minimum=0
            ),
            "total_exact": nullable(
                "boolean",
                "false when more books match than are counted (10,000); null when not counted",
            ),
            "next_cursor": nullable(
                "string", "Send as `cursor` for the page after this one; null on the last page"
            ),
        },
    }


def _base_schemas() -> dict:
    request_id = {"type": "string"}
    tokens = {
        "type": "object",
        "required": ["access_token", "refresh_token", "token_type", "expires_in"],
        "properties": {
            "access_token": {"type": "string"},
            "refresh_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer", "description": "seconds"},
            "user": _ref("User"),
        },
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
                "page": {"type": "integer", "minimum": 1},
                "per_page": {"type": "integer", "minimum": 1, "maximum": 100},
                "total": {"type": "integer", "minimum": 0},
                "pages": {"type": "integer", "minimum": 0},
            },
        },
        "CursorPageMeta": _cursor_page_meta(request_id),
        "Error": {
            "type": "object",
            "required": ["error", "meta"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string", "examples": ["VALIDATION_ERROR"]},
                        "message": {"type": "string"},
                        "details": {"type": "object"},
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
                "device_token": {
                    "type": "string",
                    "description": "Opaque. Keep it for this account on this device (with the "
                    "refresh token, also after logging out) and send it with the next login; "
                    "each login answers a new one.",
                }
            },
        },
    }
