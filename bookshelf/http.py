"""HTTP conventions shared by every route: JSON in and out, envelopes, request ids, links."""

import json
import math
from urllib.parse import urlencode

from flask import Response, current_app, request
from flask.json.provider import DefaultJSONProvider

from .conditional import strong_etag, weak_etag
from .envelope import meta
from .errors import BadRequest, UnsupportedMediaType

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def strict_loads(data):
    """Parse JSON as RFC 8259 says: UTF-8, no NaN or Infinity, no duplicate keys."""
    if isinstance(data, bytes | bytearray):
        data = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        return json.loads(data, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class StrictJSONProvider(DefaultJSONProvider):
    def loads(self, s, **kwargs):
        return strict_loads(s)


def item(data, status=200, headers=None, *, etag=False):
    """One resource in the success envelope, as a Flask-RESTful return value; with `etag`, the
    strong ETag of `data` (on reads for caching, on writes so the next If-Match is at hand)."""
    headers = dict(headers or {})
    if etag:
        headers["ETag"] = strong_etag(data)
    return {"data": data, "meta": meta()}, status, headers


def created(data, location: str, *, etag=False):
    """201 with the new resource, and its absolute URL (as `Link`'s) in `Location`."""
    return item(data, 201, {"Location": public_url(location)}, etag=etag)


def no_content() -> Response:
    return Response(status=204)


_NO_CURSOR = object()


def page(
    items,
    *,
    page: int,
    per_page: int,
    total: int | None,
    total_exact: bool = True,
    more: bool | None = None,
    next_cursor=_NO_CURSOR,
):
    """A page of a collection in the list envelope, with an RFC 8288 Link header. `total` None:
    not counted; `total_exact` False: `total` and `pages` are lower bounds, and there is no
    `last` link. `more` (when the rows tell) decides `next`. A list that also pages by cursor
    passes `next_cursor`, and its meta says `total_exact` and `next_cursor`."""
    pages = None if total is None else math.ceil(total / per_page)
    paging = {"page": page, "per_page": per_page, "total": total, "pages": pages}
    if next_cursor is not _NO_CURSOR:
        paging["total_exact"] = None if total is None else total_exact
        paging["next_cursor"] = next_cursor
    last = pages if total_exact else None
    return _list(items, paging, _page_links(page, pages, last, more))


def cursor_page(items, *, per_page: int, next_cursor: str | None):
    """A page that follows a cursor: never counted, linked only to the `next` one."""
    paging = {
        "page": None,
        "per_page": per_page,
        "total": None,
        "pages": None,
        "total_exact": None,
        "next_cursor": next_cursor,
    }
    links = ""
    if next_cursor is not None:
        args = request.args.to_dict()
        args["cursor"] = next_cursor
        links = f'<{public_url(request.path)}?{urlencode(args)}>; rel="next"'
    return _list(items, paging, links)


def _list(items, paging: dict, links: str):
    headers = {"ETag": weak_etag({"data": items, "paging": paging})}
    if links:
        headers["Link"] = links
    return {"data": items, "meta": meta(**paging)}, 200, headers


def _page_links(current: int, pages: int | None, last: int | None, more: bool | None) -> str:
    """`pages` None: not counted; `last` None: the last page is not known."""
    targets = {}
    if pages or last is None:
        targets["first"] = 1
        if current > 1:
            targets["prev"] = current - 1 if last is None else min(current - 1, last)
        if more if more is not None else current < pages:
            targets["next"] = current + 1
        if last is not None:
            targets["last"] = last
    args = request.args.to_dict()
    base = public_url(request.path)
    parts = []
    for rel, number in targets.items():
        args["page"] = str(number)
        parts.append(f'<{base}?{urlencode(args)}>; rel="{rel}"')
    return ", ".join(parts)


def public_url(path: str) -> str:
    """The absolute URL of `path`: under PUBLIC_URL when it is set, else under the request's own
    Host, which the allowlist has checked (ALLOWED_HOSTS)."""
    base = current_app.config["PUBLIC_URL"]
    if base:
        return base.rstrip("/") + path
    return request.host_url.rstrip("/") + path


def has_body() -> bool:
    return (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )


def check_request_body():
    """Before any view runs: a body must be JSON (415), parse strictly (400) and be an object."""
    if request.method not in BODY_METHODS or not has_body():
        return
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()
    request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: werkzeug raises 413 here
    try:
        body = request.get_json()
    except Exception as exc:  # werkzeug wraps the decoder's error in a 400
        raise BadRequest("The request body is not valid JSON.") from exc
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")


def json_body() -> dict:
    """The request's JSON object, already checked by `check_request_body`; {} when none."""
    if not has_body():
        return {}
    return request.get_json(silent=True) or {}
