import sqlite3

from sqlalchemy import BigInteger, ForeignKey, Index, String, event, func, text
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
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # Where the row's last change stands in the changes feed (bookshelf.changes stamps it).
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (
        Index(
            "uq_books_isbn_live", "isbn", unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE
        ),
        Index("ix_books_change_seq", "change_seq", "id"),  # the changes feed reads in this order
        # Deleted rows only, so counting them is cheap (services.books._LIVE_COUNT);
        # partial, so no query for live books is ever planned on it.
        Index("ix_books_deleted", "deleted_at", sqlite_where=_DELETED, postgresql_where=_DELETED),
        # Live books in each sort's order, `id` breaking ties: a page, by number or by cursor,
        # reads its rows in order and stops (services.books). The same for each filter's
        # matches in id order (migration 0008).
        *(
            Index(f"ix_books_{key}_live", key, "id", sqlite_where=_LIVE, postgresql_where=_LIVE)
            for key in ("title", "author", "created_at", "published_year")
        ),
        Index("ix_books_owner_live", "owner_id", "id", sqlite_where=_LIVE, postgresql_where=_LIVE),
    )

    # What PUT resets and PATCH with null restores.
    DEFAULTS = {"genre": DEFAULT_GENRE, "published_year": None, "isbn": None}


# Case-insensitive exact filters compare lower(column); these indexes serve them, in id order.
for _column in (Book.author, Book.genre):
    Index(
        f"ix_books_{_column.key}_lower_live",
        func.lower(_column),
        Book.id,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
# `-published_year`: years descending, books without one last, ties by id ascending (PostgreSQL;
# SQLite's indexes cannot put NULLs last, and it sorts).
Index(
    "ix_books_published_year_desc_live",
    Book.published_year.desc().nulls_last(),
    Book.id,
    postgresql_where=_LIVE,
).ddl_if(dialect="postgresql")


# The `q` search's index (migration 0006), made here too so that `create_all` builds the schema
# the migrations build. These objects are not SQLAlchemy tables or indexes (an FTS5 virtual table
# and its triggers; GIN indexes with an operator class of an extension): the drift test ignores
# them by these names (tests/test_migrations.py), and tests/test_search_index.py checks them.
SEARCH_INDEX_OBJECTS = ("books_fts", "ix_books_title_trgm", "ix_books_author_trgm")

# SQLite: a trigram FTS5 index of title and author, contentless (`content=''`) because what it
# indexes is not quite the columns: İ is indexed as Python lowers it, "i" + U+0307, which the
# tokenizer's own case folding does not do. Triggers keep it in step; a 'delete' must repeat
# exactly the text indexed, hence the same expression everywhere, built from functions every
# SQLite connection has (not the app's Unicode lower()).
_FTS_TEXT = "replace({}, char(304), 'i' || char(775))"
SQLITE_SEARCH_INDEX = (
    "CREATE VIRTUAL TABLE books_fts USING fts5("
    "title, author, content='', tokenize='trigram case_sensitive 0')",
    "INSERT INTO books_fts (rowid, title, author) SELECT id, {t}, {a} FROM books".format(
        t=_FTS_TEXT.format("title"), a=_FTS_TEXT.format("author")
    ),
    "CREATE TRIGGER books_fts_insert AFTER INSERT ON books BEGIN "
    "INSERT INTO books_fts (rowid, title, author) VALUES (new.id, {t}, {a}); END".format(
        t=_FTS_TEXT.format("new.title"), a=_FTS_TEXT.format("new.author")
    ),
    "CREATE TRIGGER books_fts_delete AFTER DELETE ON books BEGIN "
    "INSERT INTO books_fts (books_fts, rowid, title, author) "
    "VALUES ('delete', old.id, {t}, {a}); END".format(
        t=_FTS_TEXT.format("old.title"), a=_FTS_TEXT.format("old.author")
    ),
    "CREATE TRIGGER books_fts_update AFTER UPDATE OF id, title, author ON books BEGIN "
    "INSERT INTO books_fts (books_fts, rowid, title, author) "
    "VALUES ('delete', old.id, {ot}, {oa}); "
    "INSERT INTO books_fts (rowid, title, author) VALUES (new.id, {nt}, {na}); END".format(
        ot=_FTS_TEXT.format("old.title"),
        oa=_FTS_TEXT.format("old.author"),
        nt=_FTS_TEXT.format("new.title"),
        na=_FTS_TEXT.format("new.author"),
    ),
)


def sqlite_has_trigram() -> bool:
    """Whether this process's SQLite has FTS5 with the trigram tokenizer (3.34 and later)."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE probe USING fts5(x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()
    return True


def postgres_search_index(connection) -> list[str]:
    """PostgreSQL: pg_trgm GIN indexes of live books' title and author, which serve `ILIKE`
    itself. The operator class is named with the extension's schema, which need not be on the
    search path (the extension exists once per database)."""
    connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    schema = connection.exec_driver_sql(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
    ).scalar_one()
    return [
        f"CREATE INDEX ix_books_{column}_trgm ON books USING gin ({column} {schema}.gin_trgm_ops) "
        "WHERE deleted_at IS NULL"
        for column in ("title", "author")
    ]


@event.listens_for(Book.__table__, "after_create")
def _create_search_index(target, connection, **kw):
    if connection.dialect.name == "postgresql":
        statements = postgres_search_index(connection)
    elif connection.dialect.name == "sqlite" and sqlite_has_trigram():
        statements = SQLITE_SEARCH_INDEX
    else:
        return
    for statement in statements:
        connection.exec_driver_sql(statement)


@event.listens_for(Book.__table__, "after_drop")
def _drop_search_index(target, connection, **kw):
    if connection.dialect.name == "sqlite":  # the triggers went with the table
        connection.exec_driver_sql("DROP TABLE IF EXISTS books_fts")
