from sqlalchemy import ForeignKey, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from .base import Timestamped

DEFAULT_GENRE = "Unknown"
_LIVE = text("deleted_at IS NULL")
_DELETED = text("deleted_at IS NOT NULL")


class Book(Timestamped, db.Model):
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author: Mapped[str] = mapped_column(String(200))
    genre: Mapped[str] = mapped_column(String(100), default=DEFAULT_GENRE)
    published_year: Mapped[int | None]
    isbn: Mapped[str | None] = mapped_column(String(13))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)

    __table_args__ = (
        Index(
            "uq_books_isbn_live", "isbn", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE
        ),
        Index("ix_books_published_year", "published_year"),
        # Deleted rows only, so counting them is cheap (services.books._LIVE_COUNT);
        # partial, so no query for live books is ever planned on it.
        Index("ix_books_deleted", "deleted_at", sqlite_where=_DELETED, postgresql_where=_DELETED),
        # Live books in each sort's order, `id` breaking ties: a page, by number or by cursor,
        # reads its rows in order and stops (services.books; published_year has its own).
        *(
            Index(f"ix_books_{key}_live", key, "id", sqlite_where=_LIVE, postgresql_where=_LIVE)
            for key in ("title", "author", "created_at")
        ),
    )

    # What PUT resets and PATCH with null restores.
    DEFAULTS = {"genre": DEFAULT_GENRE, "published_year": None, "isbn": None}


# Case-insensitive exact filters compare lower(column); these indexes serve them.
Index("ix_books_author_lower", func.lower(Book.author))
Index("ix_books_genre_lower", func.lower(Book.genre))
