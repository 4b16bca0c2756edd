"""the changes feed: each book's position in it, and the clock that hands positions out

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 22:00:00.000000

Books that exist already take their id as their position (any order would do: a first sync
reads them all), and the clock starts after the largest.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "books", sa.Column("change_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.execute("UPDATE books SET change_seq = id")
    op.create_index("ix_books_change_seq", "books", ["change_seq", "id"], unique=False)
    clock = op.create_table(
        "sync_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    start = op.get_bind().execute(sa.text("SELECT coalesce(max(id), 0) FROM books")).scalar()
    op.bulk_insert(clock, [{"id": 1, "last_seq": start, "pruned_through": 0}])


def downgrade():
    op.drop_table("sync_clock")
    op.drop_index("ix_books_change_seq", table_name="books")
    # ALTER TABLE ... DROP COLUMN, SQLite's too (3.35+): a batch copy of the table would drop
    # the search index's triggers with it.
    op.drop_column("books", "change_seq")
