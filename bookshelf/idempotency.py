"""Idempotent retries: the `Idempotency-Key` header on POST.

The first request with a key claims it (a committed row) before doing anything; a retry with the
same key and body replays the stored response and creates nothing; with another body it is 409;
while the first is still running, a retry is 409 too. Keys live in the database, so this holds
across processes and restarts, and expire after 24 hours.
"""

import hashlib
import json
from datetime import timedelta
from functools import wraps

from flask import g, request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from .envelope import dumps, meta
from .errors import Conflict, ValidationError, log
from .extensions import db
from .http import json_body
from .models import IdempotencyKey
from .models.base import utcnow

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
LIFETIME = timedelta(hours=24)
ABANDONED_AFTER = timedelta(minutes=1)  # a claim still unanswered then: its process died


def idempotent(view):
    """Wrap a Resource's POST. Put it inside `jwt_required` so the caller is known."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 255 or not all(" " <= c <= "~" for c in key):
            raise ValidationError(details={HEADER: "must be 1 to 255 printable ASCII characters"})
        claim = _claim(key)
        if claim.status_code is not None:
            return _replay(claim)
        try:
            body, status, headers = view(*args, **kwargs)
        except Exception:
            _release(claim.id)
            raise
        claim.status_code, claim.body = status, dumps(body).decode()
        claim.location = headers.get("Location")
        db.session.commit()
        return body, status, headers

    return wrapper


def _scope() -> str:
    user_id = g.get("user_id")  # set when a token was verified (auth.jwt)
    return f"user:{user_id}" if user_id is not None else "anonymous"


def _fingerprint() -> str:
    canonical = json.dumps(json_body(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _claim(key: str) -> IdempotencyKey:
    """The key's row: a new claim (status_code None) or the finished first response."""
    scope, endpoint, fingerprint = _scope(), request.endpoint, _fingerprint()
    existing = db.session.scalar(
        select(IdempotencyKey).where(
            IdempotencyKey.scope == scope,
            IdempotencyKey.endpoint == endpoint,
            IdempotencyKey.key == key,
        )
    )
    now = utcnow()
    if existing is not None:
        stale = existing.expires_at <= now or (
            existing.status_code is None and existing.created_at <= now - ABANDONED_AFTER
        )
        if not stale:
            if existing.fingerprint != fingerprint:
                raise Conflict(f"This {HEADER} was used with another request body.")
            if existing.status_code is None:
                raise Conflict(f"A request with this {HEADER} is still in progress; retry later.")
            return existing
        db.session.delete(existing)
        db.session.flush()
    claim = IdempotencyKey(
        scope=scope,
        endpoint=endpoint,
        key=key,
        fingerprint=fingerprint,
        created_at=now,
        expires_at=now + LIFETIME,
    )
    db.session.add(claim)
    try:
        db.session.commit()  # visible to concurrent retries before any work is done
    except IntegrityError:
        db.session.rollback()
        raise Conflict(f"A request with this {HEADER} is still in progress; retry later.") from None
    return claim


def _replay(stored: IdempotencyKey):
    body = json.loads(stored.body)
    body["meta"] = meta()  # this request's id, not the first one's
    headers = {REPLAYED_HEADER: "true"}
    if stored.location:
        headers["Location"] = stored.location
    return body, stored.status_code, headers


def _release(claim_id: int) -> None:
    """The request failed: forget the claim so the client may retry with the same key."""
    try:
        db.session.rollback()
        db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == claim_id))
        db.session.commit()
    except Exception:  # the database may be what failed; the claim then expires on its own
        log.warning("could not release an idempotency key", exc_info=True)
