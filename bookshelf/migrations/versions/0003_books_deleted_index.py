"""a partial index of deleted books, so the live count is cheap

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 12:30:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("books", schema=None) as batch_op:
        batch_op.create_index(
            "ix_books_deleted",
            ["deleted_at"],
            unique=False,
            sqlite_where=sa.text("deleted_at IS NOT NULL"),
            postgresql_where=sa.text("deleted_at IS NOT NULL"),
        )


def downgrade():
    with op.batch_alter_table("books", schema=None) as batch_op:
        batch_op.drop_index("ix_books_deleted")
