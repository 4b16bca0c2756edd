"""The JSON envelope's primitives: serialisation, the request id and `meta`."""

import re
import uuid

import orjson
from flask import Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def dumps(data) -> bytes:
    """Compact UTF-8 JSON (orjson: several times faster than the standard library's)."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


def request_id() -> str:
    """The client's X-Request-ID when it is safe to echo, else a fresh one; stable per request."""
    rid = g.get("request_id")
    if rid is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given if SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.request_id = rid
    return rid


def json_response(payload, status=200, headers=None) -> Response:
    response = Response(dumps(payload), status=status, mimetype="application/json")
    if headers:
        response.headers.extend(headers)
    return response


def meta(**extra) -> dict:
    return {"request_id": request_id(), **extra}
