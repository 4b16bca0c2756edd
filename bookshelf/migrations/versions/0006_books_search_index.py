"""an index for `q`: pg_trgm GIN indexes on PostgreSQL, a trigram FTS5 table on SQLite

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00.000000

The same objects as bookshelf/models/book.py makes for `create_all`, written out here so that
this revision stays what it was when the models change. An SQLite without the trigram tokenizer
(before 3.34) gets no FTS table; the app then searches by scanning, with the same results.
"""

import sqlite3

from alembic import op

# revision identifiers, used by Alembic.
revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# İ is indexed as Python lowers it ("i" + U+0307); every connection has replace() and char().
_FTS_TEXT = "replace({}, char(304), 'i' || char(775))"


def _fts(prefix: str) -> dict:
    return {
        "t": _FTS_TEXT.format(prefix + "title"),
        "a": _FTS_TEXT.format(prefix + "author"),
    }


SQLITE_UPGRADE = (
    "CREATE VIRTUAL TABLE books_fts USING fts5("
    "title, author, content='', tokenize='trigram case_sensitive 0')",
    "INSERT INTO books_fts (rowid, title, author) SELECT id, {t}, {a} FROM books".format(
        **_fts("")
    ),
    "CREATE TRIGGER books_fts_insert AFTER INSERT ON books BEGIN "
    "INSERT INTO books_fts (rowid, title, author) VALUES (new.id, {t}, {a}); END".format(
        **_fts("new.")
    ),
    "CREATE TRIGGER books_fts_delete AFTER DELETE ON books BEGIN "
    "INSERT INTO books_fts (books_fts, rowid, title, author) "
    "VALUES ('delete', old.id, {t}, {a}); END".format(**_fts("old.")),
    "CREATE TRIGGER books_fts_update AFTER UPDATE OF id, title, author ON books BEGIN "
    "INSERT INTO books_fts (books_fts, rowid, title, author) "
    "VALUES ('delete', old.id, {t}, {a}); ".format(**_fts("old."))
    + "INSERT INTO books_fts (rowid, title, author) VALUES (new.id, {t}, {a}); END".format(
        **_fts("new.")
    ),
)
SQLITE_DOWNGRADE = (
    "DROP TRIGGER IF EXISTS books_fts_update",
    "DROP TRIGGER IF EXISTS books_fts_delete",
    "DROP TRIGGER IF EXISTS books_fts_insert",
    "DROP TABLE IF EXISTS books_fts",
)


def _sqlite_has_trigram() -> bool:
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE probe USING fts5(x, tokenize='trigram')")
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()
    return True


def upgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # A trusted extension (PostgreSQL 13+): the database owner may create it. Named with its
        # schema, which need not be on the search path.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        schema = bind.exec_driver_sql(
            "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_trgm'"
        ).scalar_one()
        for column in ("title", "author"):
            op.execute(
                f"CREATE INDEX ix_books_{column}_trgm ON books "
                f"USING gin ({column} {schema}.gin_trgm_ops) WHERE deleted_at IS NULL"
            )
    elif bind.dialect.name == "sqlite" and _sqlite_has_trigram():
        for statement in SQLITE_UPGRADE:
            op.execute(statement)


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # The extension stays: other schemas of the database may use it.
        op.execute("DROP INDEX IF EXISTS ix_books_author_trgm")
        op.execute("DROP INDEX IF EXISTS ix_books_title_trgm")
    elif bind.dialect.name == "sqlite":
        for statement in SQLITE_DOWNGRADE:
            op.execute(statement)
