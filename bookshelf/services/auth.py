"""Accounts and sessions: registration, login, refresh-token rotation and logout."""

import uuid
from datetime import UTC, datetime

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import select, update

from ..auth import password_policy
from ..auth.jwt import Actor
from ..auth.passwords import hash_password, verify_password
from ..errors import Conflict, InvalidCredentials, TokenRevoked, ValidationError
from ..extensions import db
from ..models import RefreshToken, RevokedAccessToken, User
from ..models.base import utcnow
from . import commit

DUPLICATE_EMAIL = "An account with this email already exists."


def find_live_user_by_email(email: str) -> User | None:
    return db.session.scalar(
        select(User).where(User.email == User.normalize_email(email), User.deleted_at.is_(None))
    )


def create_user(*, name: str, email: str, password: str, role: str = "user") -> User:
    password_policy.check(password, email=email)
    # Hash first: the slow hash must not run inside the transaction, which on SQLite holds the
    # database's write lock from its first statement and would queue every other writer.
    password_hash = hash_password(password)
    if find_live_user_by_email(email) is not None:
        raise Conflict(DUPLICATE_EMAIL, {"email": "is already registered"})
    user = User(
        name=name, email=User.normalize_email(email), password_hash=password_hash, role=role
    )
    db.session.add(user)
    commit(DUPLICATE_EMAIL)
    return user


def login(*, email: str, password: str) -> dict:
    user = find_live_user_by_email(email)
    password_hash = user.password_hash if user else None
    db.session.rollback()  # end the lookup's transaction (and SQLite's write lock) before hashing
    if not verify_password(password_hash, password):
        raise InvalidCredentials()
    tokens = _issue_tokens(user, family_id=str(uuid.uuid4()))
    commit()
    return tokens | {"user": user}


def refresh(payload: dict) -> dict:
    """Rotate: the presented refresh token is spent; a spent one presented again is a theft
    signal, so every token of its login family is revoked."""
    jti = payload["jti"]
    spent = db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.jti == jti, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    ).rowcount
    token = db.session.get(RefreshToken, jti)
    if token is None:
        raise TokenRevoked()
    if spent != 1:
        _revoke_family(token.family_id)
        commit()
        raise TokenRevoked("The refresh token was already used; this session has been ended.")
    user = db.session.get(User, token.user_id)
    tokens = _issue_tokens(user, family_id=token.family_id)
    commit()
    return tokens


def logout(*, access_payload: dict, refresh_token: str | None, user: Actor) -> None:
    _revoke_access_token(access_payload)
    if refresh_token is not None:
        payload = _decode_own_refresh_token(refresh_token, user)
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == payload["jti"], RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    commit()


def revoke_refresh_tokens_of(user: User) -> None:
    """End every session of a user (deletion, password change); no commit."""
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def _issue_tokens(user: User, *, family_id: str) -> dict:
    """A new access token and a new refresh token recorded in `family_id`; no commit."""
    config = current_app.config
    identity = str(user.id)
    jti = str(uuid.uuid4())  # chosen here so the refresh token need not be decoded again
    refresh_token = create_refresh_token(identity=identity, additional_claims={"jti": jti})
    db.session.add(
        RefreshToken(
            jti=jti,
            user_id=user.id,
            family_id=family_id,
            expires_at=utcnow() + config["JWT_REFRESH_TOKEN_EXPIRES"],
        )
    )
    return {
        "access_token": create_access_token(identity=identity),
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": int(config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    }


def _revoke_family(family_id: str) -> None:
    db.session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def _revoke_access_token(payload: dict) -> None:
    expires_at = datetime.fromtimestamp(payload["exp"], UTC).replace(tzinfo=None)
    db.session.merge(RevokedAccessToken(jti=payload["jti"], expires_at=expires_at))


def _decode_own_refresh_token(token: str, user: Actor) -> dict:
    try:
        payload = decode_token(token, allow_expired=True)
    except Exception:  # any PyJWT / Flask-JWT-Extended decoding failure
        payload = None
    if not payload or payload.get("type") != "refresh" or payload.get("sub") != str(user.id):
        raise ValidationError(details={"refresh_token": "is not a refresh token of this user"})
    return payload
