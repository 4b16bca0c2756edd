"""Accounts and sessions: registration, login, refresh-token rotation and logout."""

import uuid
from datetime import UTC, datetime, timedelta

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token
from sqlalchemy import update

from .. import metrics
from ..audit import audit
from ..auth import device_tokens, password_policy
from ..auth.jwt import Actor
from ..auth.passwords import hash_password, verify_password
from ..errors import InvalidCredentials, TokenRevoked, ValidationError
from ..extensions import db
from ..models import RefreshToken, RevokedAccessToken, User, UserSession
from ..models.base import utcnow
from . import account_recovery, commit, flush, sessions
from .emails import DUPLICATE_EMAIL, ensure_email_free, find_live_user_by_email

# How many later rotations a token presented within the grace may follow to the live one.
MAX_SUCCESSORS = 5


def create_user(
    *, name: str, email: str, password: str, role: str = "user", verified: bool = False
) -> User:
    """A new account. Unless its email is `verified` already (an operator's `create-admin`), a
    verification mail goes to the outbox in the same transaction."""
    password_policy.check(password, email=email)
    # Hash first: the slow hash must not run inside the transaction, which on SQLite holds the
    # database's write lock from its first statement and would queue every other writer.
    password_hash = hash_password(password)
    ensure_email_free(email)
    user = User(
        name=name,
        email=User.normalize_email(email),
        password_hash=password_hash,
        role=role,
        email_verified=verified,
    )
    db.session.add(user)
    if not verified:
        flush(DUPLICATE_EMAIL)  # the id, for the token
        account_recovery.send_verification(user)
    commit(DUPLICATE_EMAIL)
    return user


def login(*, email: str, password: str, device: str, address: str | None) -> dict:
    """Check the password, then start a session on this device, and give the device a new device
    token (bookshelf.auth.device_tokens)."""
    user = find_live_user_by_email(email)
    password_hash = user.password_hash if user else None
    db.session.rollback()  # end the lookup's transaction (and SQLite's write lock) before hashing
    if not verify_password(password_hash, password):
        metrics.count_auth_event("login_failed")
        _audit_failed_login(user.id if user else None, email)
        raise InvalidCredentials()
    # The password may have changed while it was being checked: the session starts only if the
    # hash is still the one that matched, under the user's lock (a change racing this login
    # either comes first and fails it, or comes after and ends the new session).
    user = sessions.lock_live_user(user.id)
    if user is None or user.password_hash != password_hash:
        metrics.count_auth_event("login_failed")
        _audit_failed_login(user.id if user else None, email)
        raise InvalidCredentials()
    expires_in = current_app.config["JWT_REFRESH_TOKEN_EXPIRES"]
    session = sessions.start(user, device=device, address=address, expires_in=expires_in)
    tokens = _token_pair(_new_refresh_token(session), session)
    commit()
    metrics.count_auth_event("login_succeeded")
    audit("login_succeeded", actor_id=user.id, subject_id=user.id, session_id=session.id)
    return tokens | {"user": user, "device_token": device_tokens.issue(user.email)}


def refresh(payload: dict, *, address: str | None) -> dict:
    """Rotate: the presented refresh token is spent and a successor issued in its session.

    Presented again within REFRESH_REUSE_GRACE seconds of its rotation (an app's parallel
    requests each refreshing with the same token, or a retry after a lost response), it gets the
    same successor back. Later, a spent token is a theft signal: its session is ended."""
    user = sessions.lock_live_user(int(payload["sub"]))
    token = db.session.get(RefreshToken, payload["jti"], with_for_update=True)
    if user is None or token is None or token.user_id != user.id:
        raise TokenRevoked()
    session = db.session.get(UserSession, token.family_id)
    if not sessions.is_live(session):
        raise TokenRevoked("This session has ended.")
    now = utcnow()
    if token.revoked_at is None:
        token.revoked_at = now
        successor = _new_refresh_token(session)
        token.successor_jti = successor.jti
    else:
        successor = _successor_within_grace(token, now)
        if successor is None:
            sessions.end_sessions(user.id, only=session.id)
            commit()
            metrics.count_auth_event("refresh_reused")
            audit("refresh_reused", actor_id=user.id, subject_id=user.id, session_id=session.id)
            raise TokenRevoked("The refresh token was already used; this session has been ended.")
    session.last_used_at, session.last_ip = now, address
    tokens = _token_pair(successor, session)
    commit()
    metrics.count_auth_event("refresh")
    return tokens


def logout(*, access_payload: dict, refresh_token: str | None, user: Actor) -> None:
    """End the session of the access token (every token of it); a token issued before sessions
    existed is revoked alone, with the refresh token if sent."""
    sessions.lock_live_user(user.id)
    _revoke_access_token(access_payload)
    if access_payload.get("sid"):
        sessions.end_sessions(user.id, only=access_payload["sid"])
    if refresh_token is not None:
        payload = _decode_own_refresh_token(refresh_token, user)
        db.session.execute(
            update(RefreshToken)
            .where(RefreshToken.jti == payload["jti"], RefreshToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    commit()
    metrics.count_auth_event("logout")
    audit(
        "session_ended",
        actor_id=user.id,
        subject_id=user.id,
        session_id=access_payload.get("sid"),
        reason="logout",
    )


def _audit_failed_login(user_id: int | None, email: str) -> None:
    """The address tried (never the password), and the account's id when there is one."""
    audit("login_failed", actor_id=None, subject_id=user_id, email=email)


def _new_refresh_token(session: UserSession) -> RefreshToken:
    """A refresh token in `session`, which lives as long as it; no commit. Its times are whole
    seconds, as in the JWT, so that the JWT can be made again from the row."""
    issued = utcnow().replace(microsecond=0)
    token = RefreshToken(
        jti=str(uuid.uuid4()),
        user_id=session.user_id,
        family_id=session.id,
        created_at=issued,
        expires_at=issued + current_app.config["JWT_REFRESH_TOKEN_EXPIRES"],
    )
    db.session.add(token)
    session.expires_at = token.expires_at
    return token


def _token_pair(refresh_token: RefreshToken, session: UserSession) -> dict:
    """A new access token of `session` and `refresh_token` as its JWT: the same string each
    time, since its claims are the row's (the signature of HS256 is deterministic)."""
    config = current_app.config
    identity = str(session.user_id)
    issued = _timestamp(refresh_token.created_at)
    claims = {
        "jti": refresh_token.jti,
        "iat": issued,
        "nbf": issued,
        "exp": _timestamp(refresh_token.expires_at),
    }
    access_token = create_access_token(identity=identity, additional_claims={"sid": session.id})
    return {
        "access_token": access_token,
        "refresh_token": create_refresh_token(identity=identity, additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": int(config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    }


def _successor_within_grace(token: RefreshToken, now: datetime) -> RefreshToken | None:
    """The live token that rotation made of `token` (following later rotations too), if `token`
    was spent by a rotation less than REFRESH_REUSE_GRACE seconds ago."""
    grace = timedelta(seconds=current_app.config["REFRESH_REUSE_GRACE"])
    if token.successor_jti is None or now - token.revoked_at > grace:
        return None
    successor = token
    for _ in range(MAX_SUCCESSORS):
        successor = db.session.get(RefreshToken, successor.successor_jti)
        if successor is None or successor.revoked_at is None:
            return successor
        if successor.successor_jti is None:
            return None  # spent without a successor: its session was ended
    return None


def _timestamp(moment: datetime) -> int:
    return int(moment.replace(tzinfo=UTC).timestamp())


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
