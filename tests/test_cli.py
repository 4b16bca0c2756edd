"""Command-line tasks: `flask --app wsgi create-admin` and `flask --app wsgi init-db --demo`."""

import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import make_url

from bookshelf import create_app
from bookshelf.cli import DEMO_BOOKS, WAITING
from bookshelf.extensions import db
from bookshelf.models import Book, User
from bookshelf.schema import head_revision, lock_for_migrations
from tests.conftest import BEHIND_PGBOUNCER, POSTGRES_URL, own_engine
from tests.processes import ROOT
from tests.support import PASSWORD, Auth, assert_error, bearer

ADMIN_PASSWORD = "a long admin password"


def invoke(app, *args, input=None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def login(client, email, password):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def all_books(client):
    response = client.get("/api/v1/books?per_page=100")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


# --- create-admin ------------------------------------------------------------------------------


def test_create_admin_makes_an_admin_who_can_log_in_and_list_users(app, client, auth):
    result = invoke(
        app,
        "create-admin",
        "--email",
        " Boss@Example.COM ",
        "--name",
        "The Boss",
        "--password",
        ADMIN_PASSWORD,
    )
    assert result.exit_code == 0, result.output
    assert "boss@example.com" in result.output
    assert ADMIN_PASSWORD not in result.output

    response = login(client, "boss@example.com", ADMIN_PASSWORD)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()["data"]
    assert body["user"]["role"] == "admin"
    assert body["user"]["name"] == "The Boss"
    assert "$argon2" not in response.get_data(as_text=True)

    other = auth.register()
    listing = client.get("/api/v1/users", headers=bearer(body["access_token"]))
    assert listing.status_code == 200, listing.get_data(as_text=True)
    assert {u["email"] for u in listing.get_json()["data"]} == {"boss@example.com", other["email"]}


def test_create_admin_asks_for_the_password_when_it_is_not_given(app, client):
    result = invoke(
        app,
        "create-admin",
        "--email",
        "prompted@example.com",
        "--name",
        "Prompted",
        input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "Password" in result.output
    assert ADMIN_PASSWORD not in result.output  # hidden input is not echoed
    response = login(client, "prompted@example.com", ADMIN_PASSWORD)
    assert response.status_code == 200
    assert response.get_json()["data"]["user"]["role"] == "admin"


def test_create_admin_refuses_a_mistyped_confirmation(app, client):
    result = invoke(
        app,
        "create-admin",
        "--email",
        "typo@example.com",
        "--name",
        "Typo",
        input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}x\n",
    )
    assert result.exit_code != 0
    assert count(app, User) == 0
    assert_error(login(client, "typo@example.com", ADMIN_PASSWORD), 401, "INVALID_CREDENTIALS")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--email", "not-an-email", "--name", "A", "--password", ADMIN_PASSWORD], "--email"),
        (["--email", "a@b", "--name", "A", "--password", ADMIN_PASSWORD], "--email"),
        (["--email", "", "--name", "A", "--password", ADMIN_PASSWORD], "--email"),
        (["--email", "ok@example.com", "--name", "A", "--password", "short7!"], "--password"),
        (["--email", "ok@example.com", "--name", "A", "--password", "p" * 129], "--password"),
        (["--email", "ok@example.com", "--name", "   ", "--password", ADMIN_PASSWORD], "--name"),
        (["--name", "A", "--password", ADMIN_PASSWORD], "--email"),
        (["--email", "ok@example.com", "--password", ADMIN_PASSWORD], "--name"),
        (
            ["--email", "boss@example.com", "--name", "A", "--password", "boss of the books"],
            "--password",
        ),
    ],
)
def test_create_admin_with_bad_input_fails_and_creates_nothing(app, options, named):
    result = invoke(app, "create-admin", *options)
    assert result.exit_code != 0
    assert named in result.output
    assert count(app, User) == 0


def test_create_admin_with_a_taken_email_fails_and_creates_nothing(app, client, auth):
    user = auth.register(email="taken@example.com")
    result = invoke(
        app,
        "create-admin",
        "--email",
        "TAKEN@example.com",
        "--name",
        "Usurper",
        "--password",
        ADMIN_PASSWORD,
    )
    assert result.exit_code == 1
    assert "Error: An account with this email already exists." in result.output
    assert count(app, User) == 1
    response = login(client, "taken@example.com", PASSWORD)
    assert response.get_json()["data"]["user"] == user  # still the same, non-admin account


# --- init-db -----------------------------------------------------------------------------------


@pytest.fixture
def bare_client(bare_app):
    return bare_app.test_client()


def test_init_db_creates_the_schema_through_the_migrations(bare_app):
    assert invoke(bare_app, "init-db").exit_code == 0
    with bare_app.app_context():
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()


def test_init_db_demo_loads_demo_books_into_an_empty_catalog_once(bare_app, bare_client):
    app, client = bare_app, bare_client
    first = invoke(app, "init-db", "--demo")
    assert first.exit_code == 0, first.output
    listed = all_books(client)
    assert listed["meta"]["total"] == len(DEMO_BOOKS)
    assert {b["title"] for b in listed["data"]} == {title for title, *_ in DEMO_BOOKS}
    dune = next(b for b in listed["data"] if b["title"] == "Dune")
    assert (dune["author"], dune["published_year"], dune["isbn"]) == (
        "Frank Herbert",
        1965,
        "9780441172719",
    )

    again = invoke(app, "init-db", "--demo")
    assert again.exit_code == 0, again.output
    assert all_books(client)["meta"]["total"] == len(DEMO_BOOKS)
    assert count(app, Book) == len(DEMO_BOOKS)


def test_init_db_without_demo_loads_no_books(bare_app, bare_client):
    result = invoke(bare_app, "init-db")
    assert result.exit_code == 0, result.output
    assert all_books(bare_client)["meta"]["total"] == 0


def test_init_db_demo_leaves_a_non_empty_catalog_alone(bare_app, bare_client):
    app, client = bare_app, bare_client
    assert invoke(app, "init-db").exit_code == 0
    _, headers = Auth(app, client).user()
    created = client.post("/api/v1/books", headers=headers, json={"title": "Mine", "author": "Me"})
    assert created.status_code == 201, created.get_data(as_text=True)
    result = invoke(app, "init-db", "--demo")
    assert result.exit_code == 0, result.output
    listed = all_books(client)
    assert listed["meta"]["total"] == 1
    assert [b["title"] for b in listed["data"]] == ["Mine"]


def test_init_db_demo_owner_cannot_administer(bare_app):
    invoke(bare_app, "init-db", "--demo")
    with bare_app.app_context():
        roles = db.session.scalars(select(User.role)).all()
    assert roles == ["user"]


# --- init-db from many processes at once (replicas starting together) ---------------------------

REPLICAS = 4
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL"
)


def start_init_db(database_url, log_path, *options):
    """`flask --app wsgi init-db` in a process of its own, as a replica's container runs it."""
    env = os.environ | {"APP_ENV": "testing", "DATABASE_URL": database_url}
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "init-db", *options],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def finish(process, timeout=120) -> int:
    """The process's exit status, once it has exited (killed if it takes longer than `timeout`)."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@contextmanager
def one_door(database_url):
    """Hold the `init-db`s started within at one door until they have all arrived, then let
    them through together, as replicas that start at one moment arrive at the database.
    Without it, a second of imports each spreads them out and they often pass one by one.

    On PostgreSQL the door is an empty `alembic_version` table (as `downgrade base` leaves it),
    locked by this test: every `init-db` reads it before it migrates. On SQLite there is no
    door: a writer waiting for SQLite's lock cannot be seen from outside.
    """
    started = []
    if not database_url.startswith("postgresql"):
        yield started
        return
    engine = own_engine(database_url)
    with engine.connect() as door, engine.connect() as watch:
        door.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        door.commit()
        door.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))
        yield started
        watch = watch.execution_options(isolation_level="AUTOCOMMIT")
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        wait_for(
            lambda: (
                watch.scalar(waiting) >= len(started)
                or any(process.poll() is not None for process in started)
            )
        )
        door.rollback()
    engine.dispose()


@pytest.mark.parametrize("round_", range(3))
def test_init_db_run_by_many_processes_at_once_migrates_once(empty_database_url, tmp_path, round_):
    logs = [tmp_path / f"init-db-{i}.log" for i in range(REPLICAS)]
    with one_door(empty_database_url) as started:
        started += [start_init_db(empty_database_url, log, "--demo") for log in logs]
    codes = [finish(process) for process in started]
    for code, log in zip(codes, logs, strict=True):
        assert code == 0, log.read_text()
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": empty_database_url})
    with app.app_context():
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()
        assert db.session.scalar(select(func.count(Book.id))) == len(DEMO_BOOKS)
        assert db.session.scalar(select(func.count(User.id))) == 1
        db.session.rollback()
        db.engine.dispose()


def with_statement_timeout(url, timeout):
    """`url`, whose sessions start with this `statement_timeout`, as a role's setting gives it:
    through the URL's `options`, or behind PgBouncer (which does not pass them on) as a setting
    of the test's own database."""
    if not BEHIND_PGBOUNCER:
        return f"{url}%20-cstatement_timeout%3D{timeout}"
    # From the test database: no server connection to this one is open yet without the setting.
    engine = own_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        name = make_url(url).database
        conn.execute(text(f"ALTER DATABASE {name} SET statement_timeout = '{timeout}'"))
    engine.dispose()
    return url


@needs_postgres
def test_init_db_waits_while_another_process_migrates(bare_app, empty_database_url, tmp_path):
    log = tmp_path / "init-db.log"
    # A limit on the role's statements (README: Hardening) does not cut the wait short.
    limited = with_statement_timeout(empty_database_url, "500ms")
    with bare_app.app_context(), db.engine.begin() as holder:
        lock_for_migrations(holder)
        process = start_init_db(limited, log)
        try:
            wait_for(lambda: WAITING in log.read_text() or process.poll() is not None)
            time.sleep(1.0)
            assert process.poll() is None, log.read_text()
            assert WAITING in log.read_text()
            assert not inspect(db.engine).get_table_names()  # it waits before it reads anything
        except BaseException:
            process.kill()
            process.wait()
            raise
    assert finish(process) == 0, log.read_text()
    with bare_app.app_context():
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == head_revision()
        db.session.rollback()


def test_init_db_needs_no_more_than_a_pool_of_one_connection(empty_database_url):
    """The lock's connection is not the pool's: the migrations and the demo load still get one."""
    app = create_app(
        {
            "APP_ENV": "testing",
            "SQLALCHEMY_DATABASE_URI": empty_database_url,
            "DATABASE_POOL_SIZE": 1,
            "DATABASE_MAX_OVERFLOW": 0,
        }
    )
    result = invoke(app, "init-db", "--demo")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(select(func.count(Book.id))) == len(DEMO_BOOKS)
        db.session.rollback()
        db.engine.dispose()
