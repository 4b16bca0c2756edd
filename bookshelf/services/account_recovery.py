"""Email verification and password reset: single-use tokens sent by mail.

A token is 32 random bytes (URL-safe base64), mailed as a link built from VERIFY_URL_TEMPLATE or
RESET_URL_TEMPLATE; only its SHA-256 is stored. Spending one marks it used in the statement that
checks it is unused, so two requests with one token cannot both succeed. A new token of one
purpose voids the account's earlier unused ones of that purpose. The mail is written to the
outbox in the transaction that issues the token (bookshelf.mail).
"""

import hashlib
import secrets
import time
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from ..audit import audit
from ..auth import password_policy
from ..auth.passwords import hash_password
from ..errors import ValidationError
from ..extensions import db
from ..mail import outbox
from ..models import AccountToken, User
from ..models.base import utcnow
from . import commit, sessions
from .emails import DUPLICATE_EMAIL, ensure_email_free, find_live_user_by_email

VERIFY_EMAIL = "verify_email"
RESET_PASSWORD = "reset_password"
UNUSABLE = "is invalid, expired or already used"
RESET_REQUEST_SECONDS = 0.1


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(user: User, purpose: str, *, email: str, ttl: int) -> str:
    now = utcnow()
    db.session.execute(
        update(AccountToken)
        .where(
            AccountToken.user_id == user.id,
            AccountToken.purpose == purpose,
            AccountToken.used_at.is_(None),
        )
        .values(used_at=now)
    )
    token = secrets.token_urlsafe(32)
    db.session.add(
        AccountToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=_hash(token),
            email=email,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    return token


def _link(template_setting: str, token: str) -> str | None:
    """The mail's link, or None when no template is set: the mail then gives the token as a
    code to enter in the app."""
    template = current_app.config[template_setting]
    return template.replace("{token}", token) if template else None


def _usable(token: str, purpose: str) -> AccountToken:
    """The token's row; 422 naming `token` when it is unknown, of another purpose, expired or
    used."""
    row = db.session.scalar(
        select(AccountToken).where(
            AccountToken.token_hash == _hash(token), AccountToken.purpose == purpose
        )
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise ValidationError(details={"token": UNUSABLE})
    return row


def _spend(row: AccountToken) -> None:
    """Mark the token used in the statement that finds it unused: of two requests with one
    token, one spends it and the other gets 422. The caller holds the account's row (locked
    first, as every change to an account does: bookshelf.services.sessions)."""
    spent = db.session.execute(
        update(AccountToken)
        .where(AccountToken.id == row.id, AccountToken.used_at.is_(None))
        .values(used_at=utcnow())
    )
    if spent.rowcount != 1:
        raise ValidationError(details={"token": UNUSABLE})


# --- email verification ---------------------------------------------------------------------


def send_verification(user: User, email: str | None = None) -> None:
    """Write a verification mail for `email` (the account's, or the one it is to change to) to
    the outbox, in the caller's transaction."""
    email = email or user.email
    ttl = current_app.config["EMAIL_VERIFICATION_TTL"]
    token = _issue(user, VERIFY_EMAIL, email=email, ttl=ttl)
    link = _link("VERIFY_URL_TEMPLATE", token)
    outbox.enqueue(
        email,
        "verify_email",
        name=user.name,
        email=email,
        link=link,
        token=token,
        hours=ttl // 3600,
    )


def resend_verification(user_id: int) -> None:
    """Another verification mail for the account's address, unless it is verified already."""
    user = sessions.lock_live_user(user_id)
    if user is not None and not user.email_verified:
        send_verification(user)
    commit()


def verify_email(token: str) -> User:
    """Spend a verification token: the address it was sent to becomes the account's, verified.
    409 when that address has meanwhile been registered by another account."""
    row = _usable(token, VERIFY_EMAIL)
    user = sessions.lock_live_user(row.user_id)
    if user is None:
        raise ValidationError(details={"token": UNUSABLE})
    _spend(row)
    changed = row.email != user.email
    if changed:
        ensure_email_free(row.email)
    user.email = row.email
    user.email_verified = True
    commit(DUPLICATE_EMAIL)
    audit("email_changed" if changed else "email_verified", actor_id=user.id, subject_id=user.id)
    return user


# --- password reset -------------------------------------------------------------------------


def request_password_reset(email: str) -> None:
    """Mail a reset link if a live account has this email; nothing otherwise. Either way the
    caller answers the same (202), and the call takes RESET_REQUEST_SECONDS at least: writing
    the token and the mail would otherwise take longer (about 6 ms on SQLite) than finding no
    account, and tell who has one."""
    started = time.monotonic()
    _request_password_reset(email)
    time.sleep(max(0.0, started + RESET_REQUEST_SECONDS - time.monotonic()))


def _request_password_reset(email: str) -> None:
    user = find_live_user_by_email(email)
    if user is not None:
        user = sessions.lock_live_user(user.id)  # the account's row first, as everywhere
    if user is not None:
        ttl = current_app.config["PASSWORD_RESET_TTL"]
        token = _issue(user, RESET_PASSWORD, email=user.email, ttl=ttl)
        link = _link("RESET_URL_TEMPLATE", token)
        outbox.enqueue(
            user.email,
            "reset_password",
            name=user.name,
            email=user.email,
            link=link,
            token=token,
            minutes=ttl // 60,
        )
    commit()
    audit("password_reset_requested", actor_id=None, subject_id=user.id if user else None)


def reset_password(token: str, new_password: str) -> None:
    """Spend a reset token and set the password (the password rules apply): every session of
    the account ends. Following a link mailed to the address also proves it is the owner's."""
    email = _usable(token, RESET_PASSWORD).email  # no hashing for a token that cannot work
    db.session.rollback()  # no transaction (nor SQLite's write lock) while hashing
    password_policy.check(new_password, email=email, field="new_password")
    new_hash = hash_password(new_password)
    row = _usable(token, RESET_PASSWORD)
    user = sessions.lock_live_user(row.user_id)
    if user is None or user.email != row.email:  # deleted, or its email changed since
        raise ValidationError(details={"token": UNUSABLE})
    _spend(row)
    user.password_hash = new_hash
    user.email_verified = True
    sessions.end_sessions(user.id)
    commit()
    audit("password_reset", actor_id=user.id, subject_id=user.id)
