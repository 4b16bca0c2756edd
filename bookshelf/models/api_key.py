from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import utcnow

SCOPES = ("books:read", "books:write", "profile:read")  # what each allows: auth.api_keys


class ApiKey(db.Model):
    """A service's key to its owner's account (bookshelf.auth.api_keys): the key itself is never
    stored, only its SHA-256 and a short prefix to recognise it by."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(12))  # `bks_` and 8 of its random characters
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # hex SHA-256 of the key
    scope: Mapped[str] = mapped_column(String(200))  # its scopes, sorted, space-separated
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # Kept to API_KEY_LAST_USED_INTERVAL (60 s): written at most once a minute per key.
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_ip: Mapped[str | None] = mapped_column(String(45), default=None)

    @property
    def scopes(self) -> list[str]:
        return self.scope.split()
