"""Behind a PgBouncer in transaction mode (DATABASE_PGBOUNCER=1, deploy/pgbouncer/pgbouncer.ini):
no prepared statements, no startup `options`, the role's statement_timeout in their place, a
migration lock that holds through it, and no new PostgreSQL connection under load. The tests
marked `behind_pgbouncer` run in `make test-pgbouncer`, which runs the suite through the real
PgBouncer; the others wherever the suite runs."""

import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bookshelf import create_app
from bookshelf.config import Config, from_environment
from bookshelf.extensions import db
from bookshelf.postgres import bounded_waits, connection_parameters
from tests.conftest import BEHIND_PGBOUNCER, POSTGRES_URL, own_engine
from tests.processes import ServerProcess, call

behind_pgbouncer = pytest.mark.skipif(
    not BEHIND_PGBOUNCER, reason="runs through PgBouncer: make test-pgbouncer"
)
on_postgres_itself = pytest.mark.skipif(
    not POSTGRES_URL or BEHIND_PGBOUNCER,
    reason="needs PostgreSQL itself (TEST_DATABASE_URL), not through PgBouncer",
)
# The most server connections this PgBouncer opens for one database and user.
POOL_SIZE = 20


def test_behind_pgbouncer_connections_prepare_no_statements():
    config = vars(Config)
    assert "prepare_threshold" not in connection_parameters(config)  # psycopg's 5
    behind = connection_parameters(config | {"DATABASE_PGBOUNCER": True})
    assert behind["prepare_threshold"] is None
    assert from_environment({"DATABASE_PGBOUNCER": "1"}) == {"DATABASE_PGBOUNCER": True}


def request_connection(app):
    """(prepare_threshold, startup parameters, statement_timeout) of a connection opened for a
    request."""
    with app.app_context():
        db.engine.dispose()
        with bounded_waits(), db.engine.connect() as connection:
            driver = connection.connection.driver_connection
            timeout = connection.exec_driver_sql("SHOW statement_timeout").scalar()
            return driver.prepare_threshold, driver.info.get_parameters(), timeout


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL")
def test_the_engine_of_an_app_behind_pgbouncer_prepares_nothing_and_sends_no_options(make_app):
    threshold, parameters, _ = request_connection(make_app(DATABASE_PGBOUNCER=True))
    assert threshold is None
    assert "options" not in parameters


@on_postgres_itself
def test_without_the_setting_the_engine_prepares_and_asks_for_the_servers_limit(make_app):
    threshold, parameters, timeout = request_connection(make_app(DATABASE_PGBOUNCER=False))
    assert threshold == 5
    assert parameters["options"] == "-c statement_timeout=1750"
    assert timeout == "1750ms"


@behind_pgbouncer
def test_without_the_setting_pgbouncer_refuses_a_request_connection_at_once(make_app):
    """A serving process that was not told it is behind PgBouncer fails on its first request,
    not on the sixth run of some statement (see below)."""
    app = make_app(DATABASE_PGBOUNCER=False)
    with pytest.raises(OperationalError, match="unsupported startup parameter: options"):
        request_connection(app)
    assert app.test_client().get("/api/v1/books").status_code == 503


def conninfo(**parameters):
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    return psycopg.conninfo.make_conninfo(url.render_as_string(hide_password=False), **parameters)


@behind_pgbouncer
@pytest.mark.parametrize("prepare_threshold", [0, None])
def test_a_prepared_statement_is_unknown_to_the_next_server_connection(prepare_threshold):
    """Why DATABASE_PGBOUNCER turns them off. PgBouncer gives the idle server connection it
    used last to the next transaction: `other` takes the one `client` prepared its statement on,
    and `client`'s next statement goes to another one. If this starts to pass with a threshold
    of 0, PgBouncer follows prepared statements (1.21's max_prepared_statements)."""
    with (
        psycopg.connect(conninfo(), autocommit=True, prepare_threshold=prepare_threshold) as client,
        psycopg.connect(conninfo()) as other,
    ):
        assert client.execute("SELECT %s::int", [1]).fetchone() == (1,)
        other.execute("SELECT 1")  # a transaction: it keeps that server connection
        if prepare_threshold is None:
            assert client.execute("SELECT %s::int", [2]).fetchone() == (2,)
        else:
            with pytest.raises(psycopg.errors.InvalidSqlStatementName, match='"_pg3_0"'):
                client.execute("SELECT %s::int", [2])
        other.rollback()


@behind_pgbouncer
def test_the_roles_statement_timeout_cancels_a_slow_statement_through_pgbouncer(make_app):
    """As tests/test_hung_database.py checks with the limit sent in `options`, with the limit
    `make test-pgbouncer` gives the test database, as the README gives the role: the server
    answers (QueryCanceled) before the client's deadline, the connection stays usable and the
    breaker closed."""
    app = make_app()
    breaker = app.extensions["bookshelf.database_breaker"]
    with app.app_context(), bounded_waits(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1750ms"
        started = time.monotonic()
        with pytest.raises(OperationalError) as raised:
            connection.exec_driver_sql("SELECT pg_sleep(3)")
        assert isinstance(raised.value.orig, psycopg.errors.QueryCanceled)
        assert time.monotonic() - started < 2.0  # the client's own deadline
        assert not raised.value.connection_invalidated
        connection.rollback()
        assert connection.exec_driver_sql("SELECT 1").scalar() == 1
    assert breaker.closed


@behind_pgbouncer
def test_init_db_through_pgbouncer_leaves_no_advisory_lock_on_a_server_connection(
    empty_database_url,
):
    """A session-level lock taken through PgBouncer would stay on the server connection, in
    PgBouncer's pool, after init-db ended; the transaction-level one ends with its transaction."""
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": empty_database_url})
    result = app.test_cli_runner().invoke(args=["init-db", "--demo"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        db.engine.dispose()
    engine = own_engine(POSTGRES_URL)
    with engine.connect() as connection:
        held = connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = database"
                " WHERE locktype = 'advisory' AND d.datname = :name"
            ),
            {"name": make_url(empty_database_url).database},
        )
    engine.dispose()
    assert held == 0


def postgresql_sessions(connection) -> tuple[int, int]:
    """(sessions PostgreSQL has ever opened on the test database, backends open on it now)."""
    connection.execute(text("SELECT pg_stat_clear_snapshot()"))
    return connection.execute(
        text(
            "SELECT (SELECT sessions FROM pg_stat_database WHERE datname = current_database()),"
            " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            "  AND backend_type = 'client backend')"
        )
    ).one()


def load(port, seconds, clients=8) -> int:
    """Reads of one book and of a page, from `clients` threads, for `seconds`: how many."""
    stop = time.monotonic() + seconds
    statuses = []

    def client(_):
        while time.monotonic() < stop:
            statuses.append(call(port, "GET", "/api/v1/books/1")[0])
            statuses.append(call(port, "GET", "/api/v1/books?per_page=5")[0])

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    assert set(statuses) == {200}, f"not all answered 200: {set(statuses)}"
    return len(statuses)


def hold_server_connections(count):
    """Has PgBouncer open `count` server connections at once (a transaction on each), which it
    then keeps: the most the load below can need, so that whether it opens one more does not
    depend on how the warm-up's requests happened to overlap."""
    connections = [psycopg.connect(conninfo(), prepare_threshold=None) for _ in range(count)]
    for connection in connections:
        connection.execute("SELECT 1")
    for connection in connections:
        connection.rollback()  # a server connection left in a transaction would be closed
        connection.close()


@behind_pgbouncer
def test_under_steady_load_postgresql_opens_no_connection(client, auth, tmp_path):
    """`python wsgi.py` through PgBouncer: its requests reach PostgreSQL on the server
    connections PgBouncer already has, however many connections the process opens to
    PgBouncer."""
    _, headers = auth.user()
    book = {"title": "Dune", "author": "Frank Herbert"}
    assert client.post("/api/v1/books", json=book, headers=headers).status_code == 201
    server = ServerProcess(
        tmp_path / "server.log", DATABASE_URL=POSTGRES_URL, RATELIMIT_DEFAULT="1000000 per minute"
    ).start()
    engine = own_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        # The process's 10 pooled connections (8 threads and 2 probes), this test's, the app's.
        hold_server_connections(12)
        load(server.port, 1.0)  # the process opens its connections to PgBouncer
        with engine.connect() as watch:
            before, _ = postgresql_sessions(watch)
            answered = load(server.port, 3.0)
            time.sleep(1.2)  # a backend reports its session within a second
            after, backends = postgresql_sessions(watch)
    finally:
        server.stop()
        engine.dispose()
    assert answered > 100
    assert after - before == 0, f"{after - before} new PostgreSQL sessions under load"
    assert backends <= POOL_SIZE
