"""/books/changes: the catalog's changes since a cursor, for apps that keep a local copy."""

import time

from flask import current_app
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import changes
from .. import validation as v
from ..errors import SyncExpired
from ..extensions import db
from ..http import item
from ..openapi import Operation
from .fields import BOOK_FIELDS, TOMBSTONE_FIELDS
from .pagination import cursor_token, open_cursor, seal_cursor

MAX_LIMIT = 100
_SCOPE = "changes"
_DAY = 86_400

changes_parser = v.query_parser(
    Argument("since", type=cursor_token),
    Argument("limit", type=v.query_integer(1, MAX_LIMIT), default=MAX_LIMIT),
)

DESCRIPTION = (
    "The books created, changed or deleted after `since`, in the order the changes committed; "
    "a deleted book as a tombstone `{id, deleted_at}`. A book changed several times appears "
    "once, at its last change, in its current state. Keep `meta.next_cursor` and send it as "
    "`since` next time; while `meta.has_more` is true, ask again at once. The first sync is "
    "the same call without `since`: every book in pages, then only what changed. Never misses "
    "a change, however writers' transactions overlap. A cursor older than `SYNC_RETENTION` "
    "days, or from before tombstones were pruned, is 410 `SYNC_EXPIRED`: sync again from the "
    "start."
)


class BookChanges(Resource):
    docs = {
        "get": Operation(
            "The catalog's changes since a cursor (offline sync)",
            query=changes_parser,
            output="BookChange",
            many=True,
            meta="ChangesMeta",
            description=DESCRIPTION,
            errors=(410,),
        )
    }

    def get(self):
        args = v.parse_query(changes_parser)
        seq, book_id = _position(args["since"])
        rows, more = changes.read_changes(db.session, (seq, book_id), args["limit"])
        if rows:
            seq, book_id = rows[-1].change_seq, rows[-1].id
        next_cursor = seal_cursor([seq, book_id, int(time.time())], _SCOPE)
        body, status, headers = item([_change(row) for row in rows])
        body["meta"] |= {"next_cursor": next_cursor, "has_more": more}
        return body, status, headers


def _position(since: str | None) -> tuple[int, int]:
    """The (change_seq, id) a cursor holds, the start without one; 410 if it is too old."""
    if since is None:
        return 0, 0
    position = open_cursor(since, _SCOPE, parameter="since")
    if not (
        isinstance(position, list)
        and len(position) == 3
        and all(isinstance(n, int) and not isinstance(n, bool) for n in position)
    ):
        raise v.ValidationError(details={"since": "is not a cursor of this list"})
    seq, book_id, issued = position
    retention = current_app.config["SYNC_RETENTION"] * _DAY
    if issued < time.time() - retention or seq < changes.pruned_through(db.session):
        raise SyncExpired()
    return seq, book_id


def _change(book) -> dict:
    return marshal(book, TOMBSTONE_FIELDS if book.is_deleted else BOOK_FIELDS)
