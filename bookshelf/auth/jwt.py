"""Flask-JWT-Extended callbacks: who a token belongs to, whether it was revoked, and the
contract's 401 for every way a token can fail."""

from dataclasses import dataclass
from datetime import datetime

from flask import g
from flask_jwt_extended import JWTManager
from sqlalchemy import bindparam, exists, or_, select

from ..database import PreparedRead
from ..errors import error_response
from ..extensions import db
from ..models import RefreshToken, RevokedAccessToken, User, UserSession
from ..routing import is_id


@dataclass(frozen=True)
class Actor:
    """Who a verified token speaks for (`current_user`): the user's public columns, read without
    an ORM object since most requests only need the id and role. Services that change an account
    load its `User` themselves."""

    id: int
    name: str
    email: str
    role: str
    email_verified: bool
    created_at: datetime
    updated_at: datetime
    # An API key's caller (bookshelf.auth.api_keys): the key's scopes. None: a token's caller.
    scopes: frozenset[str] | None = None

    @property
    def is_admin(self) -> bool:
        """An admin's token acts as an admin; an admin's API key never does."""
        return self.role == "admin" and self.scopes is None


# The `type` of the claims that stand for an API key (bookshelf.auth.api_keys).
API_KEY = "api_key"


_USER_COLUMNS = (
    User.id,
    User.name,
    User.email,
    User.role,
    User.email_verified,
    User.created_at,
    User.updated_at,
)
USER_COLUMNS = _USER_COLUMNS  # an API key's owner is read with these too (auth.api_keys)
_LIVE = (User.id == bindparam("user_id"), User.deleted_at.is_(None))
_LIVE_USER = PreparedRead(select(*_USER_COLUMNS).where(*_LIVE))
_REVOKED_ACCESS_TOKEN = PreparedRead(
    select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == bindparam("jti"))
)
# An access token's user and its revocation in one query: one round trip per request, not two.
_REVOKED = exists().where(RevokedAccessToken.jti == bindparam("jti"))
_LIVE_USER_AND_REVOCATION = PreparedRead(
    select(*_USER_COLUMNS, _REVOKED.label("revoked")).where(*_LIVE)
)
# The same for a token of a session (`sid`): refused as well once its session has ended.
_SESSION_LIVE = exists().where(UserSession.id == bindparam("sid"), UserSession.ended_at.is_(None))
_LIVE_USER_AND_SESSION = PreparedRead(
    select(*_USER_COLUMNS, or_(_REVOKED, ~_SESSION_LIVE).label("revoked")).where(*_LIVE)
)


def _user_id(payload) -> int | None:
    """The token's subject as a user id, or None when no row can have it."""
    try:
        user_id = int(payload["sub"])
    except (KeyError, TypeError, ValueError):
        return None
    return user_id if is_id(user_id) else None


def _unauthorized(code: str, message: str, reason: str | None = None):
    details = {"reason": reason} if reason else None
    return error_response(401, code, message, details, {"WWW-Authenticate": "Bearer"})


def init_jwt_callbacks(jwt: JWTManager) -> None:
    @jwt.token_in_blocklist_loader
    def is_revoked(_header, payload) -> bool:
        """Runs first. For an access token whose user is live, it reads the user as well and
        leaves the row to `load_user`."""
        jti = payload.get("jti")
        if payload.get("type") == "refresh":
            token = db.session.get(RefreshToken, jti)
            return token is None or token.revoked_at is not None
        user_id, sid = _user_id(payload), payload.get("sid")
        if user_id is not None:
            if sid is None:  # issued before sessions existed
                rows = _LIVE_USER_AND_REVOCATION.rows(user_id=user_id, jti=jti)
            else:
                rows = _LIVE_USER_AND_SESSION.rows(user_id=user_id, jti=jti, sid=str(sid))
            if rows:
                user = rows[0]
                g.token_user = user
                return bool(user.pop("revoked"))
        return bool(_REVOKED_ACCESS_TOKEN.rows(jti=jti))

    @jwt.user_lookup_loader
    def load_user(_header, payload):
        """A token is only as good as its user: deleted users' tokens stop working at once."""
        if payload.get("type") == API_KEY:  # its key and live owner were read in one query
            caller = g.get("api_key")
            return caller.actor if caller is not None else None
        user_id = _user_id(payload)
        if user_id is None:
            return None
        user = g.pop("token_user", None)
        if user is None or user["id"] != user_id:
            rows = _LIVE_USER.rows(user_id=user_id)
            if not rows:
                return None
            user = rows[0]
        g.user_id = user_id  # for the request log line
        return Actor(**user)

    @jwt.unauthorized_loader
    def missing_token(reason):
        return _unauthorized("UNAUTHORIZED", "A bearer token is required.", reason)

    @jwt.invalid_token_loader
    def invalid_token(reason):
        return _unauthorized("TOKEN_INVALID", "The token is invalid.", reason)

    @jwt.expired_token_loader
    def expired_token(_header, _payload):
        return _unauthorized("TOKEN_EXPIRED", "The token has expired.")

    @jwt.revoked_token_loader
    def revoked_token(_header, _payload):
        return _unauthorized("TOKEN_REVOKED", "The token has been revoked.")

    @jwt.user_lookup_error_loader
    def unknown_user(_header, _payload):
        return _unauthorized("TOKEN_INVALID", "The token's user no longer exists.")

    @jwt.token_verification_failed_loader
    def failed_verification(_header, _payload):
        return _unauthorized("TOKEN_INVALID", "The token is invalid.")

    @jwt.needs_fresh_token_loader
    def needs_fresh(_header, _payload):
        return _unauthorized("TOKEN_INVALID", "A fresh token is required.")
