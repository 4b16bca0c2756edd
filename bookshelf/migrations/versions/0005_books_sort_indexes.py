"""live books in each sort's order, so a page by cursor or number reads its rows and stops

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SORT_KEYS = ("title", "author", "created_at")


def upgrade():
    live = sa.text("deleted_at IS NULL")
    with op.batch_alter_table("books", schema=None) as batch_op:
        for key in SORT_KEYS:
            batch_op.create_index(
                f"ix_books_{key}_live",
                [key, "id"],
                unique=False,
                sqlite_where=live,
                postgresql_where=live,
            )


def downgrade():
    with op.batch_alter_table("books", schema=None) as batch_op:
        for key in SORT_KEYS:
            batch_op.drop_index(f"ix_books_{key}_live")
