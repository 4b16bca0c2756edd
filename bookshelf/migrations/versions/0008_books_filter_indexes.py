"""live books by each filter in id order, and by year in both directions

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 22:30:00.000000

Every list reads live books only (`deleted_at IS NULL`) and pages in (sort key, id) order, so
each filter gets a partial index on (its value, id): the first page of `author=`, `genre=` or
`owner_id=` reads 20 index entries in order instead of every match. They replace 0001's plain
indexes of the same columns. `-published_year` (years descending, books without one last, ties
by id ascending) is not the backward scan of (published_year, id): on PostgreSQL it gets an
index of its own; SQLite, whose indexes cannot put NULLs last, sorts.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LIVE = sa.text("deleted_at IS NULL")
FILTERS = {
    "ix_books_author_lower_live": [sa.text("lower(author)"), "id"],
    "ix_books_genre_lower_live": [sa.text("lower(genre)"), "id"],
    "ix_books_owner_live": ["owner_id", "id"],
    "ix_books_published_year_live": ["published_year", "id"],
}
OLD = {
    "ix_books_author_lower": [sa.text("lower(author)")],
    "ix_books_genre_lower": [sa.text("lower(genre)")],
    "ix_books_owner_id": ["owner_id"],
    "ix_books_published_year": ["published_year"],
}
YEAR_DESC = "ix_books_published_year_desc_live"


def upgrade():
    for name, columns in FILTERS.items():
        op.create_index(name, "books", columns, sqlite_where=LIVE, postgresql_where=LIVE)
    if op.get_bind().dialect.name == "postgresql":
        op.create_index(
            YEAR_DESC,
            "books",
            [sa.text("published_year DESC NULLS LAST"), "id"],
            postgresql_where=LIVE,
        )
    for name in OLD:
        op.drop_index(name, table_name="books")


def downgrade():
    for name, columns in OLD.items():
        op.create_index(name, "books", columns)
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(YEAR_DESC, table_name="books")
    for name in FILTERS:
        op.drop_index(name, table_name="books")
