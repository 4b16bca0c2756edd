"""Flask-JWT-Extended callbacks: who a token belongs to, whether it was revoked, and the
contract's 401 for every way a token can fail."""

from dataclasses import dataclass
from datetime import datetime

from flask import g
from flask_jwt_extended import JWTManager
from sqlalchemy import bindparam, select

from ..database import PreparedRead
from ..errors import error_response
from ..extensions import db
from ..models import RefreshToken, RevokedAccessToken, User
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
    created_at: datetime
    updated_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


_LIVE_USER = PreparedRead(
    select(User.id, User.name, User.email, User.role, User.created_at, User.updated_at).where(
        User.id == bindparam("user_id"), User.deleted_at.is_(None)
    )
)
_REVOKED_ACCESS_TOKEN = PreparedRead(
    select(RevokedAccessToken.jti).where(RevokedAccessToken.jti == bindparam("jti"))
)


def _unauthorized(code: str, message: str, reason: str | None = None):
    details = {"reason": reason} if reason else None
    return error_response(401, code, message, details, {"WWW-Authenticate": "Bearer"})


def init_jwt_callbacks(jwt: JWTManager) -> None:
    @jwt.user_lookup_loader
    def load_user(_header, payload):
        """A token is only as good as its user: deleted users' tokens stop working at once."""
        try:
            user_id = int(payload["sub"])
        except (KeyError, TypeError, ValueError):
            return None
        if not is_id(user_id):
            return None
        rows = _LIVE_USER.rows(user_id=user_id)
        if not rows:
            return None
        g.user_id = user_id  # for the request log line
        return Actor(**rows[0])

    @jwt.token_in_blocklist_loader
    def is_revoked(_header, payload) -> bool:
        jti = payload.get("jti")
        if payload.get("type") == "refresh":
            token = db.session.get(RefreshToken, jti)
            return token is None or token.revoked_at is not None
        return bool(_REVOKED_ACCESS_TOKEN.rows(jti=jti))

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
