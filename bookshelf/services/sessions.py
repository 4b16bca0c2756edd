"""Sessions: one per login on a device. Its refresh tokens rotate within it and its access tokens
carry its id (`sid`), so ending a session refuses every token of it at once, on every process.

Every change to an account's sessions takes the user's row first (`lock_live_user`): login,
refresh, logout, ending sessions and changing the password or deleting the account queue on that
one lock, in one order, so they never deadlock and a password change never misses a session.
"""

import re
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from ..audit import audit
from ..errors import NotFound
from ..extensions import db
from ..models import RefreshToken, User, UserSession
from ..models.base import utcnow
from . import commit

UNKNOWN_DEVICE = "Unknown device"
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


def device_name(given: str | None, user_agent: str | None) -> str:
    """The name the app gave its device, else its User-Agent (printable, at most 100
    characters), else "Unknown device"."""
    name = given or _UNPRINTABLE.sub(" ", user_agent or "").strip()
    return name[:100] or UNKNOWN_DEVICE


def lock_live_user(user_id: int) -> User | None:
    """The user's row, locked until commit (PostgreSQL; SQLite's writers queue on the database)."""
    user = db.session.get(User, user_id, with_for_update=True, populate_existing=True)
    return None if user is None or user.is_deleted else user


def start(user: User, *, device: str, address: str | None, expires_in: timedelta) -> UserSession:
    now = utcnow()
    session = UserSession(
        id=str(uuid.uuid4()),
        user_id=user.id,
        device_name=device,
        created_at=now,
        last_used_at=now,
        last_ip=address,
        expires_at=now + expires_in,
    )
    db.session.add(session)
    return session


def is_live(session: UserSession | None) -> bool:
    return session is not None and session.ended_at is None and session.expires_at > utcnow()


def live_sessions(user_id: int, *, page: int, per_page: int) -> tuple[list[UserSession], int]:
    """A page of the user's live sessions, the most recently used first, and their number."""
    live = (
        UserSession.user_id == user_id,
        UserSession.ended_at.is_(None),
        UserSession.expires_at > utcnow(),
    )
    total = db.session.scalar(select(func.count()).select_from(UserSession).where(*live))
    rows = db.session.scalars(
        select(UserSession)
        .where(*live)
        .order_by(UserSession.last_used_at.desc(), UserSession.id)
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    return list(rows), total


def end_one(user_id: int, session_id: str) -> None:
    """End one of the user's live sessions; 404 for anything else (another user's included)."""
    lock_live_user(user_id)
    session = db.session.get(UserSession, session_id)
    if not is_live(session) or session.user_id != user_id:
        raise NotFound("No session with this id.")
    end_sessions(user_id, only=session_id)
    commit()
    audit(
        "session_ended", actor_id=user_id, subject_id=user_id, session_id=session_id, reason="ended"
    )


def end_others(user_id: int, *, keep: str | None) -> None:
    """End every session of the user but `keep` (log out other devices)."""
    lock_live_user(user_id)
    end_sessions(user_id, keep=keep)
    commit()
    audit(
        "session_ended",
        actor_id=user_id,
        subject_id=user_id,
        session_id=None,
        kept_session_id=keep,
        reason="others_ended",
    )


def end_sessions(user_id: int, *, only: str | None = None, keep: str | None = None) -> None:
    """End the user's sessions (`only` one of them, or all but `keep`) and spend their refresh
    tokens; the caller holds the user's row and commits."""
    now = utcnow()
    sessions = update(UserSession).where(
        UserSession.user_id == user_id, UserSession.ended_at.is_(None)
    )
    tokens = update(RefreshToken).where(
        RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None)
    )
    if only is not None:
        sessions = sessions.where(UserSession.id == only)
        tokens = tokens.where(RefreshToken.family_id == only)
    if keep is not None:
        sessions = sessions.where(UserSession.id != keep)
        tokens = tokens.where(RefreshToken.family_id != keep)
    db.session.execute(sessions.values(ended_at=now))
    db.session.execute(tokens.values(revoked_at=now))
