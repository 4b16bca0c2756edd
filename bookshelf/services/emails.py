"""Accounts by email: the lookup and the 409 that registration, account changes and email
verification share. Emails are stored trimmed and lower-cased (User.normalize_email)."""

from sqlalchemy import select

from ..errors import Conflict
from ..extensions import db
from ..models import User

DUPLICATE_EMAIL = "An account with this email already exists."


def find_live_user_by_email(email: str) -> User | None:
    return db.session.scalar(
        select(User).where(User.email == User.normalize_email(email), User.deleted_at.is_(None))
    )


def ensure_email_free(email: str) -> None:
    """409 naming `email` when a live account has it (a race past this check is caught by the
    unique index, as `commit(DUPLICATE_EMAIL)`)."""
    if find_live_user_by_email(email) is not None:
        raise Conflict(DUPLICATE_EMAIL, {"email": "is already registered"})
