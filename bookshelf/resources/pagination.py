"""The query parameters that page a collection: `page` and `per_page` everywhere, and on lists
that page by cursor too, `cursor` and `count`; the cursors themselves."""

import base64
import binascii
import hashlib
import hmac
import json

from flask import current_app, request
from flask_restful.reqparse import Argument

from .. import validation as v
from ..http import cursor_page, page

MAX_PAGE = 10_000_000  # keeps OFFSET within every database's integer range
MAX_CURSOR = 2048  # characters; a cursor holds one row's sort values (titles up to 200)
_CURSOR_VERSION = 1


def page_arguments() -> list[Argument]:
    return [
        Argument("page", type=v.query_integer(1, MAX_PAGE), default=1),
        Argument("per_page", type=v.query_integer(1, 100), default=20),
    ]


def cursor_token(value, name=None, op=None) -> str:
    if not 1 <= len(value) <= MAX_CURSOR:
        raise ValueError(f"must be 1 to {MAX_CURSOR} characters long")
    return value


cursor_token.schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_CURSOR,
    "description": "An opaque `meta.next_cursor` from an earlier page of the same list (same "
    "sort, same filters): the page that follows it, by key set, not counted. Not with `page`.",
}


def count_flag(value, name=None, op=None) -> bool:
    if value not in ("true", "false"):
        raise ValueError("must be true or false")
    return value == "true"


count_flag.schema = {
    "type": "boolean",
    "description": "false: do not count (`total`, `pages` and `total_exact` are null).",
}


def cursor_arguments() -> list[Argument]:
    return [
        Argument("cursor", type=cursor_token),
        Argument("count", type=count_flag, default=True),
    ]


def seal_cursor(position: list | None, scope: str) -> str | None:
    """An opaque cursor for `position` in the list `scope` names: base64url JSON and an HMAC of
    it and the scope under SECRET_KEY, so that a changed cursor, or one brought to another list,
    is refused rather than followed."""
    if position is None:
        return None
    body = _b64encode(json.dumps([_CURSOR_VERSION, position], separators=(",", ":")).encode())
    return f"{body}.{_b64encode(_mac(body, scope))}"


def open_cursor(token: str | None, scope: str, parameter: str = "cursor") -> list | None:
    """The position a cursor from `seal_cursor` holds; 422 naming `parameter` if it was changed,
    belongs to another list, or comes with `page`."""
    if token is None:
        return None
    if "page" in request.args:
        raise v.ValidationError(
            details={
                "cursor": "cannot be combined with page",
                "page": "cannot be combined with cursor",
            }
        )
    body, _, mac = token.partition(".")
    try:
        valid = hmac.compare_digest(_b64decode(mac), _mac(body, scope))
        version, position = json.loads(_b64decode(body)) if valid else (None, None)
    except (ValueError, TypeError, binascii.Error):
        valid = False
    if not valid or version != _CURSOR_VERSION:
        raise v.ValidationError(
            details={
                parameter: "is not a cursor of this list: it was changed, or was made for "
                "another sort or other filters"
            }
        )
    return position


def cursor_list(data: list, found, scope: str, paging: dict):
    """The list envelope of `found` (services' `Found`), a page by number or by cursor, with
    the cursor of the page after it."""
    next_cursor = seal_cursor(found.next_position, scope)
    if paging["cursor"] is not None:
        return cursor_page(data, per_page=paging["per_page"], next_cursor=next_cursor)
    return page(
        data,
        page=paging["page"],
        per_page=paging["per_page"],
        total=found.total,
        total_exact=found.total_exact,
        more=found.more,
        next_cursor=next_cursor,
    )


def _mac(body: str, scope: str) -> bytes:
    key = hashlib.sha256(b"bookshelf cursor\0" + current_app.config["SECRET_KEY"].encode()).digest()
    return hmac.new(key, f"{body}\0{scope}".encode(), hashlib.sha256).digest()[:16]


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    padded = text.encode("ascii") + b"=" * (-len(text) % 4)
    return base64.b64decode(padded, altchars=b"-_", validate=True)
