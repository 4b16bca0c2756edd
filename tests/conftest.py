"""Fixtures: a fresh app and database per test, a client, and users obtained through the API.

The suite runs on SQLite (a new file per test) by default and on PostgreSQL when
TEST_DATABASE_URL is set (tables created once, emptied after each test), also through a
PgBouncer in transaction mode (`make test-pgbouncer`: DATABASE_PGBOUNCER=1 in the environment,
which the apps read as a deployment's do).
"""

import os
import uuid

import pytest
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bookshelf import MIGRATIONS, create_app
from bookshelf.config import from_environment
from bookshelf.extensions import db
from bookshelf.mail.delivery import stop_deliverer
from tests.nginx import start_api, start_nginx  # noqa: F401 (fixtures of the nginx tests)
from tests.processes import TcpProxy
from tests.support import Auth

POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
BEHIND_PGBOUNCER = bool(POSTGRES_URL) and from_environment().get("DATABASE_PGBOUNCER", False)


def own_engine(url, **options):
    """An engine of the test's own on PostgreSQL: behind PgBouncer, without psycopg's prepared
    statements, as the app's (bookshelf.postgres.connection_parameters)."""
    if BEHIND_PGBOUNCER:
        options.setdefault("connect_args", {"prepare_threshold": None})
    return create_engine(url, **options)


MIGRATION_SCRIPTS = ScriptDirectory(MIGRATIONS)


@pytest.fixture(scope="session", autouse=True)
def fresh_postgres_schema():
    """On PostgreSQL, start the session from an empty schema (the test database is wiped)."""
    if POSTGRES_URL:
        engine = own_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()


@pytest.fixture
def database_url(tmp_path):
    return POSTGRES_URL or f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def empty_database_url(tmp_path):
    """A database with no tables: a new SQLite file, or a new PostgreSQL schema (a new database
    behind PgBouncer, which does not pass on the `options` that choose the schema)."""
    if not POSTGRES_URL:
        yield f"sqlite:///{tmp_path / 'migrated.db'}"
        return
    if BEHIND_PGBOUNCER:
        yield from new_database()
        return
    schema = f"migrations_{uuid.uuid4().hex[:8]}"
    engine = own_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def new_database():
    """A database of its own beside the test database, dropped afterwards; the test PgBouncer
    forwards any database name (deploy/pgbouncer/run_tests.py)."""
    url = make_url(POSTGRES_URL)
    name = f"{url.database}_{uuid.uuid4().hex[:8]}"
    # Created and dropped from the `postgres` database: the test database carries the API's
    # statement_timeout, which CREATE and DROP DATABASE can outlast on a loaded machine.
    admin_url = url.set(database="postgres").render_as_string(hide_password=False)
    engine = own_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    yield url.set(database=name).render_as_string(hide_password=False)
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    engine.dispose()


def stamp_head(engine) -> None:
    """Record tables made by create_all() as migrated to the head revision (as `flask db stamp
    --purge head` does), whatever an earlier test left: the migrations build the same schema
    (tests/test_migrations.py), and readiness requires the head."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        MigrationContext.configure(conn).stamp(MIGRATION_SCRIPTS, "head")


@pytest.fixture
def bare_app(empty_database_url):
    """An app on a database with no tables yet, as a new deployment has."""
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": empty_database_url})
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def make_app(database_url):
    """Build an app on the test database with extra settings; tables exist (migrated to the head
    revision, as far as the app can tell) and are empty."""
    apps = []

    def make(**overrides):
        config = {"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url} | overrides
        app = create_app(config)
        with app.app_context():
            db.create_all()
            stamp_head(db.engine)
        apps.append(app)
        return app

    yield make
    for app in apps:
        stop_deliverer(app)  # an app with SMTP_URL has a mail thread
        with app.app_context():
            if db.engine.dialect.name == "postgresql":
                tables = ", ".join(t.name for t in db.metadata.sorted_tables)
                with db.engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            db.engine.dispose()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def ctx(app):
    """The service layer's world: an app context, as a request has, and no request."""
    with app.app_context():
        yield


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(app, client):
    return Auth(app, client)


@pytest.fixture
def proxy():
    """A TCP proxy in front of the test PostgreSQL, to cut or stall (tests.processes.TcpProxy).
    Ask for it before `make_app`: it must outlive the app, whose teardown goes through it."""
    url = make_url(POSTGRES_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432)).start()
    yield proxy
    proxy.stop()
