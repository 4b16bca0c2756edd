"""API keys: scoped, expiring credentials for services, sent as `Authorization: Bearer bks_...`.

A key is `bks_`, 36 random base62 characters (214 bits) and 6 base62 characters of the CRC32 of
the random part (after GitHub's token format): secret scanners recognise the prefix, and a typo
or a truncated key fails the checksum and is refused (401) without a database read. Only the
key's SHA-256 is stored (a random secret of 214 bits needs no slow hash), with a display prefix.

Every API request that carries a key is judged here, before its view (`authenticate_request`):
the key and its live owner are read in one query (401 when unknown, revoked, expired or the
owner deleted), the key's own rate limit is counted, `last_used_at` is kept (written at most once
per API_KEY_LAST_USED_INTERVAL), and the request must be one the key's scopes allow (REQUIRED_SCOPE,
default deny: 403 INSUFFICIENT_SCOPE). A key is read from the Authorization header only, never
from the URL.

The views keep Flask-JWT-Extended's `jwt_required()` and `current_user`: `install()` puts one
wrapper around the extension's `_decode_jwt_from_request` (Flask-JWT-Extended 4.7.4, the version
the lock file pins), which answers a key's request with the claims made here instead of decoding
a JWT; the extension then loads the caller through `user_lookup_loader` (bookshelf.auth.jwt), as
for a token. tests/test_api_keys.py fails if upstream changes what the wrapper relies on.
"""

import hashlib
import logging
import re
import secrets
import string
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps

import flask_jwt_extended.view_decorators as jwt_views
from flask import current_app, g, request
from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..database import PreparedRead
from ..errors import InsufficientScope, TokenExpired, TokenInvalid, TokenRevoked
from ..extensions import db
from ..models import ApiKey, User
from ..models.base import utcnow
from ..ratelimit import EXEMPT_BLUEPRINTS, check_api_key_limit
from .jwt import API_KEY, USER_COLUMNS, Actor

log = logging.getLogger("bookshelf.auth")

PREFIX = "bks_"
ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase  # base62
RANDOM_LENGTH = 36  # 36 * log2(62) = 214 bits
CHECKSUM_LENGTH = 6  # 62**6 > 2**32: any CRC32
KEY_LENGTH = len(PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH  # 46
DISPLAY_LENGTH = len(PREFIX) + 8  # what the list shows; 28 random characters (166 bits) stay secret
KEY_PATTERN = rf"^{PREFIX}[0-9A-Za-z]{{{RANDOM_LENGTH + CHECKSUM_LENGTH}}}$"
_KEY_FORM = re.compile(KEY_PATTERN)

# What a key may call: (endpoint, method) -> the scope it needs (None: any key). Whatever is not
# here is refused to every key (403 INSUFFICIENT_SCOPE): sessions, keys, logout, refresh, account
# changes, admin-only routes, and routes added later until they are listed. HEAD is GET's.
REQUIRED_SCOPE = {
    ("books", "GET"): "books:read",
    ("book", "GET"): "books:read",
    ("book_changes", "GET"): "books:read",
    ("user_books", "GET"): "books:read",
    ("books", "POST"): "books:write",
    ("book", "PUT"): "books:write",
    ("book", "PATCH"): "books:write",
    ("book", "DELETE"): "books:write",
    ("me", "GET"): "profile:read",
    ("user", "GET"): "profile:read",  # one's own only: a key is never an admin
    ("openapi", "GET"): None,
}


def _base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, digit = divmod(number, 62)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, ALPHABET[0])


def checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


def generate() -> str:
    """A new key."""
    random_part = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    return PREFIX + random_part + checksum(random_part)


def is_well_formed(key: str) -> bool:
    """The key's form and checksum: no database read."""
    if not _KEY_FORM.fullmatch(key):
        return False
    random_part = key[len(PREFIX) : len(PREFIX) + RANDOM_LENGTH]
    return key[len(PREFIX) + RANDOM_LENGTH :] == checksum(random_part)


def digest(key: str) -> str:
    """What is stored of a key: its SHA-256, in hex."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def display_prefix(key: str) -> str:
    return key[:DISPLAY_LENGTH]


@dataclass(frozen=True)
class Caller:
    """A request's valid API key and its owner, as the caller (`current_user`) sees them."""

    key_id: int
    actor: Actor
    last_used_at: datetime | None

    @property
    def claims(self) -> dict:
        """What `get_jwt()` answers for a key's request."""
        return {
            "type": API_KEY,
            "sub": str(self.actor.id),
            "jti": f"api-key:{self.key_id}",
            "api_key_id": self.key_id,
            "scopes": sorted(self.actor.scopes),
            "fresh": False,
        }


# The key and its owner in one query, by the key's hash.
_KEY_AND_OWNER = PreparedRead(
    select(
        ApiKey.id.label("key_id"),
        ApiKey.scope,
        ApiKey.expires_at,
        ApiKey.revoked_at,
        ApiKey.last_used_at,
        User.deleted_at.label("owner_deleted_at"),
        *USER_COLUMNS,
    )
    .join(User, User.id == ApiKey.user_id)
    .where(ApiKey.key_hash == bindparam("key_hash"))
)


def presented_key() -> str | None:
    """The key of `Authorization: Bearer bks_...`, read as Flask-JWT-Extended reads a bearer
    token (`Bearer` as written, the one Bearer credential of a comma-separated list); None when
    the header carries no key, and Flask-JWT-Extended has its say (a missing or bad header)."""
    header = request.headers.get("Authorization", "").strip().strip(",")
    bearers = [c for c in re.split(r",\s*", header) if c and c.split()[0] == "Bearer"]
    parts = bearers[0].split() if len(bearers) == 1 else ()
    return parts[1] if len(parts) == 2 and parts[1].startswith(PREFIX) else None


def _refuse(error):
    metrics.count_auth_event("api_key_refused")
    raise error


def _caller(key: str) -> Caller:
    """The key's caller, or 401."""
    if not is_well_formed(key):
        _refuse(TokenInvalid("The API key is malformed.", {"reason": "malformed API key"}))
    rows = _KEY_AND_OWNER.rows(key_hash=digest(key))
    if not rows:
        _refuse(TokenInvalid("The API key is not known."))
    row = rows[0]
    if row.pop("revoked_at") is not None:
        _refuse(TokenRevoked("The API key has been revoked."))
    if row.pop("owner_deleted_at") is not None:
        _refuse(TokenInvalid("The API key's user no longer exists."))
    if row.pop("expires_at") <= utcnow():
        _refuse(TokenExpired("The API key has expired."))
    key_id, last_used_at = row.pop("key_id"), row.pop("last_used_at")
    scopes = frozenset(row.pop("scope").split())
    return Caller(key_id, Actor(**row, scopes=scopes), last_used_at)


def _touch(caller: Caller) -> None:
    """Keep the key's last use, to API_KEY_LAST_USED_INTERVAL: no write while the stored time is
    more recent than that, and one conditional UPDATE otherwise, which concurrent requests of
    one key cannot all win. Its own transaction: the request's may not commit."""
    interval = timedelta(seconds=current_app.config["API_KEY_LAST_USED_INTERVAL"])
    now = utcnow()
    if caller.last_used_at is not None and caller.last_used_at > now - interval:
        return
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - interval)
    statement = (
        update(ApiKey)
        .where(ApiKey.id == caller.key_id, stale)
        .values(last_used_at=now, last_used_ip=request.remote_addr)
    )
    try:
        with db.engine.begin() as connection:
            connection.execute(statement)
    except SQLAlchemyError:  # bookkeeping: the request goes on without it
        log.warning("could not record an API key's last use", exc_info=True)


def _method() -> str:
    return "GET" if request.method == "HEAD" else request.method


def current_caller() -> Caller | None:
    """The request's API key caller, judged once per request: None without a key; else the
    caller, or 401, 429 or 403 INSUFFICIENT_SCOPE."""
    if "api_key" in g:
        return g.api_key
    key = presented_key()
    if key is None:
        g.api_key = None
        return None
    caller = _caller(key)
    g.api_key = caller
    g.user_id = caller.actor.id  # for the request log line
    check_api_key_limit(caller.key_id)
    _touch(caller)
    route = (request.endpoint, _method())
    if route not in REQUIRED_SCOPE:
        raise InsufficientScope("API keys cannot be used for this request; log in instead.")
    scope = REQUIRED_SCOPE[route]
    if scope is not None and scope not in caller.actor.scopes:
        raise InsufficientScope(
            f"This API key lacks the scope this request needs: {scope}.", {"scope": scope}
        )
    return caller


def authenticate_request() -> None:
    """Before each API request: judge its API key, if it has one (public routes included: a
    request that presents a key is the key's, with its scopes and its limit)."""
    if request.endpoint is None or request.blueprint in EXEMPT_BLUEPRINTS:
        return  # unknown routes are 404 anyway; probes, docs and /metrics have their own auth
    if request.method == "OPTIONS":
        return
    current_caller()


def install() -> None:
    """Make Flask-JWT-Extended's `jwt_required()` accept a key: its request's claims are the
    key's (`Caller.claims`), not a decoded JWT's. Idempotent (one wrapper per process)."""
    upstream = jwt_views._decode_jwt_from_request
    if getattr(upstream, "bookshelf_api_keys", False):
        return

    @wraps(upstream)
    def decode_from_request(*args, **kwargs):
        caller = current_caller() if presented_key() is not None else None
        if caller is None:
            return upstream(*args, **kwargs)
        return caller.claims, {}, "headers"  # (claims, JOSE header, location), as upstream's

    decode_from_request.bookshelf_api_keys = True
    jwt_views._decode_jwt_from_request = decode_from_request


def init_api_keys(app) -> None:
    install()
    app.before_request(authenticate_request)
