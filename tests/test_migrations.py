"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bookshelf import MIGRATIONS, create_app
from bookshelf.extensions import db
from bookshelf.models.book import SEARCH_INDEX_OBJECTS
from bookshelf.schema import head_revision

EXPRESSION_INDEXES = {"ix_books_author_lower_live", "ix_books_genre_lower_live"}


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


def not_search_index(name, type_, parent_names) -> bool:
    """The `q` index (migration 0006) is made by DDL events, not declared as tables or indexes:
    an FTS5 virtual table with its shadow tables (books_fts_data, ...) and GIN indexes with
    pg_trgm's operator class. tests/test_search_index.py checks it instead."""
    return name not in SEARCH_INDEX_OBJECTS and not (name or "").startswith("books_fts_")


# Alembic cannot reflect expression indexes on SQLite and says so; they are checked by name.
@pytest.mark.filterwarnings("ignore:autogenerate skipping:UserWarning")
@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection:sqlalchemy.exc.SAWarning")
def test_upgrade_produces_the_models_schema(app):
    upgrade()
    with db.engine.connect() as conn:

        def on_this_database(object_, name, type_, reflected, compare_to) -> bool:
            # PostgreSQL only (models.book: SQLite's indexes cannot put NULLs last)
            return not (
                name == "ix_books_published_year_desc_live" and conn.dialect.name == "sqlite"
            )

        opts = {
            "compare_type": True,
            "include_name": not_search_index,
            "include_object": on_this_database,
        }
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, db.metadata) == []
        assert index_names(conn) >= EXPRESSION_INDEXES


def test_downgrade_removes_everything(app):
    upgrade()
    downgrade(revision="base")
    with db.engine.connect() as conn:
        assert not EXPRESSION_INDEXES & index_names(conn)
        tables = set(db.inspect(conn).get_table_names())
    assert tables <= {"alembic_version"}


def test_upgrade_ends_at_the_head_revision_read_without_alembic(app):
    upgrade()
    with db.engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()
    assert head_revision() == ScriptDirectory(MIGRATIONS).get_current_head()


def test_a_failed_upgrade_leaves_the_database_as_it_was(app):
    """An upgrade is one transaction, on SQLite too: a concurrent one waits for all of it, and
    one that fails half-way applies nothing."""
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE idempotency_keys (id INTEGER)"))  # in 0002's way
    with pytest.raises(DBAPIError):
        upgrade()
    with db.engine.connect() as conn:
        assert set(db.inspect(conn).get_table_names()) == {"idempotency_keys"}


def write_script(versions, name, lines):
    versions.mkdir(exist_ok=True)
    (versions / name).write_text('"""a revision"""\n\nfrom alembic import op\n\n' + lines)


def test_the_head_revision_follows_merges_and_annotated_identifiers(tmp_path):
    versions = tmp_path / "versions"
    write_script(versions, "a.py", 'revision = "a"\ndown_revision = None\n')
    write_script(versions, "b.py", 'revision: str = "b"\ndown_revision: str | None = "a"\n')
    write_script(versions, "c.py", 'revision = "c"\ndown_revision = "a"\n')
    write_script(versions, "d.py", 'revision = "d"\ndown_revision = ("b", "c")\n')
    write_script(versions, "__init__.py", "")
    (versions / "README").write_text("not a script")
    assert head_revision(str(versions)) == "d"
    assert ScriptDirectory(str(tmp_path), version_locations=[str(versions)]).get_heads() == ["d"]


def test_two_heads_are_refused(tmp_path):
    versions = tmp_path / "versions"
    write_script(versions, "a.py", 'revision = "a"\ndown_revision = None\n')
    write_script(versions, "b.py", 'revision = "b"\ndown_revision = "a"\n')
    write_script(versions, "c.py", 'revision = "c"\ndown_revision = "a"\n')
    with pytest.raises(RuntimeError, match="one head"):
        head_revision(str(versions))
