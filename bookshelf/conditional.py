"""Conditional requests: ETags for caching (If-None-Match) and optimistic concurrency (If-Match).

A strong ETag is a hash of the JSON representation, so it changes exactly when what the client
sees changes. Compression appends `:gzip` to a strong tag (Flask-Compress); If-Match accepts
either form, since both name the same state of the resource.
"""

import hashlib
import re

from flask import Response, request
from flask_restful import marshal
from werkzeug.http import quote_etag

from .envelope import dumps
from .errors import PreconditionFailed

_ENCODING_SUFFIX = re.compile(r":(gzip|br|zstd|deflate)$")


def etag_value(representation) -> str:
    return hashlib.sha256(dumps(representation)).hexdigest()[:32]


def strong_etag(representation) -> str:
    return quote_etag(etag_value(representation))


def weak_etag(representation) -> str:
    return quote_etag(etag_value(representation), weak=True)


def check_if_match(representation) -> None:
    """412 unless If-Match is absent, `*`, or names the current strong ETag."""
    if_match = request.if_match
    if not if_match or if_match.star_tag:
        return
    current = etag_value(representation)
    if not any(_ENCODING_SUFFIX.sub("", tag) == current for tag in if_match.as_set()):
        raise PreconditionFailed()


def if_match(fields: dict):
    """The precondition a service checks on the row it is about to change, once it holds the
    row's lock: If-Match against the representation `fields` gives of it."""
    return lambda model: check_if_match(marshal(model, fields))


def answer_not_modified(response: Response) -> Response:
    """After every request: a GET whose If-None-Match names the ETag becomes a bodyless 304."""
    if (
        "If-None-Match" in request.headers
        and request.method in ("GET", "HEAD")
        and response.status_code == 200
        and "ETag" in response.headers
    ):
        response.make_conditional(request)
    return response
