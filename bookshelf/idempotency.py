"""Idempotent retries: the `Idempotency-Key` header on POST.

A retry with the same key and body replays the stored response and creates nothing; with
another body it is 409. Keys live in the database, so this holds across processes and
restarts, and expire after 24 hours.

Crash safety: the key is stored with its response in the transaction that does the work, and
that transaction is committed once. A process that dies before the commit leaves nothing (the
database rolls back the transaction of a connection that drops), one that dies after it leaves
both, so a retry either does the work or replays it, and no key is ever left "in progress".

Concurrent requests with one key: the unique index on the key lets one transaction store it.
On PostgreSQL, a second INSERT of the key waits for the first transaction's outcome, then fails
(it committed) or goes on (it rolled back); on SQLite, write transactions take turns (BEGIN
IMMEDIATE), so a later one sees what an earlier one committed. A request that loses the race
rolls its work back and replays the winner's response.
"""

import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import wraps
from urllib.parse import urlsplit

from flask import current_app, g, request
from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import SQLAlchemyError

from .database import PreparedRead
from .envelope import dumps, meta
from .errors import Conflict, ValidationError, log
from .extensions import db
from .http import json_body, public_url
from .models import IdempotencyKey
from .models.base import utcnow
from .services import commit_deferred

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
LIFETIME = timedelta(hours=24)
# Earlier versions committed a claim (a row without a response) before the work. Such a row may
# belong to a request still running in a process of that version during an upgrade.
ABANDONED_AFTER = timedelta(minutes=1)
# Crash tests pause a request at a point of its transaction and kill the process there.
TEST_PAUSE_VARIABLE = "IDEMPOTENCY_TEST_PAUSE"  # "before-commit" or "after-commit"
TEST_PAUSE_SECONDS = 30

_STORED = PreparedRead(
    select(IdempotencyKey.__table__).where(
        IdempotencyKey.scope == bindparam("scope"),
        IdempotencyKey.endpoint == bindparam("endpoint"),
        IdempotencyKey.key == bindparam("key"),
    )
)


@dataclass(frozen=True)
class Key:
    """A request's key, within its caller's scope and endpoint, and its body's fingerprint."""

    scope: str
    endpoint: str
    key: str
    fingerprint: str


def idempotent(view):
    """Wrap a Resource's POST. Put it inside `jwt_required` so the caller is known."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        header = request.headers.get(HEADER)
        if header is None:
            return view(*args, **kwargs)
        if not 1 <= len(header) <= 255 or not all(" " <= c <= "~" for c in header):
            raise ValidationError(details={HEADER: "must be 1 to 255 printable ASCII characters"})
        key = Key(_scope(), request.endpoint, header, _fingerprint())
        stored, stale_id = _stored(key)
        if stored is not None:
            return _replay(stored)
        try:
            with commit_deferred():  # the services' commits only flush: one transaction
                body, status, headers = view(*args, **kwargs)
            _store(key, stale_id, body, status, headers)
            _pause_for_tests("before-commit")
            db.session.commit()
        except (Conflict, SQLAlchemyError):
            # Lost to a concurrent request with this key (at the key's unique index, or at a
            # unique email or ISBN it created first), or the database failed, maybe in a commit
            # that happened: if the key has a response now, it is the answer.
            stored = _stored_after_failure(key)
            if stored is None:
                raise
            return _replay(stored)
        _pause_for_tests("after-commit")
        return body, status, headers

    return wrapper


def _scope() -> str:
    user_id = g.get("user_id")  # set when a token was verified (auth.jwt)
    return f"user:{user_id}" if user_id is not None else "anonymous"


def _fingerprint() -> str:
    canonical = json.dumps(json_body(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stored(key: Key) -> tuple[dict | None, int | None]:
    """(the key's stored response, None); (None, the row's id) when the row is to be replaced
    (expired, or abandoned by an earlier version); (None, None) when there is none. Another
    body is 409.

    Read outside the session's transaction: on SQLite, a request that writes holds the write
    lock from its transaction's first statement, and the work may first do slow things (a
    password hash) that must not hold it."""
    rows = _STORED.rows(scope=key.scope, endpoint=key.endpoint, key=key.key)
    if not rows:
        return None, None
    row, now = rows[0], utcnow()
    if row["expires_at"] <= now:
        return None, row["id"]
    if row["status_code"] is None:  # claimed by an earlier version (see ABANDONED_AFTER)
        if row["created_at"] <= now - ABANDONED_AFTER:
            return None, row["id"]
        if row["fingerprint"] == key.fingerprint:
            raise Conflict(f"A request with this {HEADER} is still in progress; retry later.")
    if row["fingerprint"] != key.fingerprint:
        raise Conflict(f"This {HEADER} was used with another request body.")
    return row, None


def _stored_after_failure(key: Key) -> dict | None:
    """The key's stored response, once this request's transaction is rolled back."""
    try:
        db.session.rollback()
        return _stored(key)[0]
    except Conflict:
        raise
    except Exception:  # the database may be what failed: the request's own error says it
        log.warning("could not look up an idempotency key after a failure", exc_info=True)
        return None


def _store(key: Key, stale_id: int | None, body, status: int, headers: dict) -> None:
    """Add the key and its response to the request's transaction."""
    if stale_id is not None:
        db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == stale_id))
    now = utcnow()
    db.session.add(
        IdempotencyKey(
            scope=key.scope,
            endpoint=key.endpoint,
            key=key.key,
            fingerprint=key.fingerprint,
            created_at=now,
            expires_at=now + LIFETIME,
            status_code=status,
            body=dumps(body).decode(),
            # The path: the replay's Location is made absolute for the request it answers.
            location=urlsplit(headers["Location"]).path if headers.get("Location") else None,
        )
    )
    db.session.flush()  # a concurrent request's key: IntegrityError now, not at the commit


def _replay(stored: dict):
    body = json.loads(stored["body"])
    body["meta"] = meta()  # this request's id, not the first one's
    headers = {REPLAYED_HEADER: "true"}
    if stored["location"]:
        headers["Location"] = public_url(urlsplit(stored["location"]).path)
    return body, stored["status_code"], headers


def _pause_for_tests(point: str) -> None:
    if current_app.testing and os.environ.get(TEST_PAUSE_VARIABLE) == point:
        log.warning("paused for a crash test", extra={"pause": point})
        time.sleep(TEST_PAUSE_SECONDS)
