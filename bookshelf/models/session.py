from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import utcnow


class UserSession(db.Model):
    """A login on one device. Its refresh tokens rotate within it (`refresh_tokens.family_id`
    is its id) and its access tokens carry its id (`sid`): ending it refuses all of them."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    device_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Kept by login and refresh, not by every request: no write per request.
    last_used_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_ip: Mapped[str | None] = mapped_column(String(45), default=None)
    # The expiry of its newest refresh token: past it, the session can do nothing more.
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
