from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import utcnow


class RefreshToken(db.Model):
    """Every refresh token issued. A login starts a family; each rotation adds one to it."""

    __tablename__ = "refresh_tokens"

    jti: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # The token that rotation issued in exchange for this one: presented again within the
    # refresh grace, this one gets that same successor back (parallel refreshes of one app).
    successor_jti: Mapped[str | None] = mapped_column(String(36), default=None)


class RevokedAccessToken(db.Model):
    """Access tokens revoked before their expiry (logout); rows may go once expired."""

    __tablename__ = "revoked_access_tokens"

    jti: Mapped[str] = mapped_column(String(36), primary_key=True)
    expires_at: Mapped[datetime]
