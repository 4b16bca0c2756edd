from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import utcnow


class IdempotencyKey(db.Model):
    """A client's Idempotency-Key and the response to replay, stored in the transaction of the
    request's work (bookshelf.idempotency).

    `status_code` is NULL only in rows claimed by earlier versions, which committed the key
    before the work."""

    __tablename__ = "idempotency_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(32))  # "user:<id>", or "anonymous"
    endpoint: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # of the request body
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    status_code: Mapped[int | None]
    body: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (UniqueConstraint("scope", "endpoint", "key", name="uq_idempotency_key"),)
