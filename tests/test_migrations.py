"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import text

from bookshelf import create_app
from bookshelf.extensions import db

EXPRESSION_INDEXES = {"ix_books_author_lower", "ix_books_genre_lower"}


@pytest.fixture
def app(empty_database_url):
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": empty_database_url})
    with app.app_context():
        yield app
        db.engine.dispose()


def index_names(conn) -> set[str]:
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))
    else:
        rows = conn.execute(
            text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        )
    return {name for (name,) in rows}


# Alembic cannot reflect expression indexes on SQLite and says so; they are checked by name.
@pytest.mark.filterwarnings("ignore:autogenerate skipping:UserWarning")
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection:sqlalchemy.exc.SAWarning")
def test_upgrade_produces_the_models_schema(app):
    upgrade()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, db.metadata) == []
        assert index_names(conn) >= EXPRESSION_INDEXES


def test_downgrade_removes_everything(app):
    upgrade()
    downgrade(revision="base")
    with db.engine.connect() as conn:
        assert not EXPRESSION_INDEXES & index_names(conn)
        tables = set(db.inspect(conn).get_table_names())
    assert tables <= {"alembic_version"}
