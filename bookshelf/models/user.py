from sqlalchemy import Index, String, false, text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import Timestamped

ROLES = ("user", "admin")


class User(Timestamped, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    # Stored trimmed and lower-cased, so equality is case-insensitive on every database.
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="user")
    # Whether the owner has followed a link mailed to `email` (bookshelf.services.account_tokens).
    email_verified: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (
        Index(
            "uq_users_email_live",
            "email",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
    )

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @staticmethod
    def normalize_email(email: str) -> str:
        return email.strip().lower()
