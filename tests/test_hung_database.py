"""A PostgreSQL that hangs (connections accepted and kept open, nothing answered: a partition or
a stuck primary) never stops a process: requests answer 503 within seconds, however many wait,
and the service comes back by itself. A PostgreSQL that is only slow (a long statement, a lock
wait) costs a 503 to the requests it is slow for, never to the others. The breaker and the
psycopg deadline are tested alone too, the deadline against a server that completes the
start-up and then says nothing; and the pool, sized and bounded from the settings."""

import inspect
import socket
import struct
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import count

import psycopg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from bookshelf.breaker import Breaker
from bookshelf.config import Config, ConfigError, from_environment
from bookshelf.database import engine_options
from bookshelf.extensions import db
from bookshelf.postgres import (
    DatabaseNotAnswering,
    bounded_waits,
    connection_class,
    server_statement_timeout,
)
from tests.conftest import BEHIND_PGBOUNCER, POSTGRES_URL
from tests.processes import ServerProcess, call
from tests.support import PASSWORD, assert_error

ON_POSTGRES = bool(POSTGRES_URL) and make_url(POSTGRES_URL).get_backend_name() == "postgresql"
needs_postgres = pytest.mark.skipif(
    not ON_POSTGRES, reason="needs PostgreSQL: set TEST_DATABASE_URL to a postgresql:// URL"
)
# Behind PgBouncer the app sends no `options` (PgBouncer refuses them): the server's limit is
# the role's (here the test database's), the same for every connection and not the app's to set.
sends_options = pytest.mark.skipif(
    BEHIND_PGBOUNCER,
    reason="behind PgBouncer no `options` are sent: the server's statement_timeout is the "
    "role's (tests/test_pgbouncer.py checks it)",
)

LIBPQ_PARAMETERS = (
    "connect_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
)
BOUND_S = 5.0  # what a client may wait for a 503 while the database hangs
LIVENESS_S = 1.0  # what /health may take, whatever the database does


# The breaker, on a clock the test moves.


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def in_thread(function):
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join(timeout=5)
    return result[0]


def test_a_closed_breaker_lets_everyone_wait():
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=Clock())
    assert breaker.closed and breaker.allow() and in_thread(breaker.allow)


def test_after_a_failure_no_one_waits_until_the_retry_interval_has_passed():
    clock = Clock()
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=clock)
    assert breaker.failed(since=clock.now - 1) is True
    assert breaker.failed(since=clock.now - 1) is False  # already open: not a new outage
    assert not breaker.allow() and not in_thread(breaker.allow)
    clock.now += 1.9
    assert not breaker.allow()


def test_then_one_thread_tries_while_the_others_still_fail_at_once():
    clock = Clock()
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=clock)
    breaker.failed(since=clock.now - 1)
    clock.now += 2
    assert breaker.allow()  # this thread is the trial
    assert breaker.allow()  # and may wait again (a ping, then its statement)
    assert not in_thread(breaker.allow)
    clock.now += 4.9
    assert not in_thread(breaker.allow)
    clock.now += 0.1  # the trial never said how it went: another thread may try
    assert in_thread(breaker.allow)
    assert not breaker.allow()


def test_an_answer_closes_it_for_everyone_and_another_failure_reopens_it():
    clock = Clock()
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=clock)
    breaker.failed(since=clock.now - 1)
    clock.now += 2
    assert breaker.allow()
    assert breaker.failed(since=clock.now - 1) is False
    assert not breaker.allow()  # the trial failed: two more seconds for everyone
    clock.now += 2
    assert in_thread(breaker.allow)
    assert breaker.succeeded() is True
    assert breaker.closed and breaker.allow() and in_thread(breaker.allow)
    assert breaker.succeeded() is False


def test_a_timeout_opens_it_only_if_nothing_answered_since_that_wait_began():
    """Other waits answered meanwhile: the database is alive, only that statement was stuck."""
    clock = Clock()
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=clock)
    stuck_since = clock.now
    clock.now += 1
    breaker.succeeded()  # another request's answer
    clock.now += 1
    assert breaker.failed(since=stuck_since) is False
    assert breaker.closed and in_thread(breaker.allow)
    assert breaker.failed(since=clock.now - 0.5) is True  # nothing answered during this one
    assert not breaker.closed


def test_the_breaker_is_thread_safe_one_trial_among_many_threads():
    clock = Clock()
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=clock)
    breaker.failed(since=clock.now - 1)
    clock.now += 2
    barrier = threading.Barrier(16)

    def try_once(_):
        barrier.wait()
        return breaker.allow()

    with ThreadPoolExecutor(max_workers=16) as pool:
        allowed = list(pool.map(try_once, range(16)))
    assert allowed.count(True) == 1


# The psycopg internals the deadline relies on (bookshelf.postgres).


def test_the_psycopg_internals_the_deadline_relies_on_are_unchanged():
    """When this fails, psycopg has changed `Connection.wait` (written against 3.3.9): check
    `bookshelf.postgres.connection_class` against the new version. The test below checks that
    every query still waits through it."""
    upstream = inspect.signature(psycopg.Connection.wait).parameters
    ours = inspect.signature(connection_class(Breaker(1, 1), statement_timeout=1).wait).parameters
    assert list(upstream) == ["self", "gen", "interval", "timeout"]
    assert [p.default for p in ours.values()] == [p.default for p in upstream.values()]
    assert upstream["timeout"].default is None
    assert issubclass(psycopg.errors._WaitTimeout, psycopg.OperationalError)
    assert issubclass(psycopg.errors.ConnectionTimeout, psycopg.OperationalError)


class SilentServer:
    """Accepts connections and completes PostgreSQL's start-up (no TLS, no password), then never
    answers, as a hung server does. Each connection is closed after `hang_s`, so that even an
    unbounded wait ends."""

    def __init__(self, hang_s=5.0):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.hang_s = hang_s
        threading.Thread(target=self._serve, daemon=True).start()

    def conninfo(self):
        return (
            f"host=127.0.0.1 port={self.port} user=nobody dbname=none "
            "sslmode=disable gssencmode=disable connect_timeout=2"
        )

    def close(self):
        self.listener.close()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._start_up, args=(connection,), daemon=True).start()

    def _start_up(self, connection):
        with connection:
            (length,) = struct.unpack("!I", self._read(connection, 4))
            self._read(connection, length - 4)  # the start-up message
            authentication_ok = b"R" + struct.pack("!II", 8, 0)
            ready_for_query = b"Z" + struct.pack("!I", 5) + b"I"
            connection.sendall(authentication_ok + ready_for_query)
            time.sleep(self.hang_s)

    @staticmethod
    def _read(connection, size):
        data = b""
        while len(data) < size:
            data += connection.recv(size - len(data))
        return data


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def test_a_bounded_wait_ends_at_the_deadline_closes_the_connection_and_opens_the_breaker(
    silent_server,
):
    breaker = Breaker(retry_after=60, trial_timeout=60)
    connection = connection_class(breaker, statement_timeout=1.0).connect(silent_server.conninfo())
    with bounded_waits():
        started = time.monotonic()
        with pytest.raises(DatabaseNotAnswering, match="no answer from the database within 1.0 s"):
            connection.execute("SELECT 1")
        assert 0.9 < time.monotonic() - started < BOUND_S
        assert connection.closed  # never reused: its answer could still come
        assert not breaker.closed

        # While the breaker is open, another connection does not even ask.
        other = connection_class(breaker, statement_timeout=1.0).connect(silent_server.conninfo())
        started = time.monotonic()
        with pytest.raises(DatabaseNotAnswering, match="stopped answering"):
            other.execute("SELECT 1")
        assert time.monotonic() - started < 0.5 and other.closed  # well under the 1 s deadline


def test_a_wait_that_asks_the_server_nothing_is_no_sign_that_it_answers(silent_server):
    """A rollback outside any transaction completes without a word to the server: while a
    statement hangs, it must not pass for an answer that keeps the breaker closed."""
    breaker = Breaker(retry_after=60, trial_timeout=60)
    bounded_connection = connection_class(breaker, statement_timeout=1.0)
    stuck = bounded_connection.connect(silent_server.conninfo())
    idle = bounded_connection.connect(silent_server.conninfo())

    def roll_back_meanwhile():
        time.sleep(0.3)
        with bounded_waits():
            idle.rollback()

    meanwhile = threading.Thread(target=roll_back_meanwhile)
    meanwhile.start()
    with bounded_waits(), pytest.raises(DatabaseNotAnswering, match="no answer"):
        stuck.execute("SELECT 1")
    meanwhile.join()
    assert not breaker.closed and not idle.closed
    idle.close()


def test_outside_a_request_waits_are_not_bounded(silent_server):
    """The command line (migrations, prune) may wait as long as its statements need."""
    breaker = Breaker(retry_after=60, trial_timeout=60)
    connection = connection_class(breaker, statement_timeout=0.3).connect(silent_server.conninfo())
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as raised:
        connection.execute("SELECT 1")  # ends when the server closes the connection, after 5 s
    assert not isinstance(raised.value, DatabaseNotAnswering)
    assert time.monotonic() - started > 3 and breaker.closed


def test_the_timeouts_are_read_from_the_environment():
    settings = from_environment(
        {
            "DATABASE_CONNECT_TIMEOUT": "3",
            "DATABASE_STATEMENT_TIMEOUT": "1.5",
            "DATABASE_RETRY_INTERVAL": "0.5",
            "DATABASE_SOCKET_TIMEOUT": "20",
            "DATABASE_KEEPALIVES_IDLE": "60",
            "DATABASE_KEEPALIVES_INTERVAL": "5",
            "DATABASE_KEEPALIVES_COUNT": "4",
            "DATABASE_POOL_SIZE": "12",
            "DATABASE_MAX_OVERFLOW": "3",
            "DATABASE_POOL_TIMEOUT": "3",
        }
    )
    assert settings == {
        "DATABASE_CONNECT_TIMEOUT": 3,
        "DATABASE_STATEMENT_TIMEOUT": 1.5,
        "DATABASE_RETRY_INTERVAL": 0.5,
        "DATABASE_SOCKET_TIMEOUT": 20.0,
        "DATABASE_KEEPALIVES_IDLE": 60,
        "DATABASE_KEEPALIVES_INTERVAL": 5,
        "DATABASE_KEEPALIVES_COUNT": 4,
        "DATABASE_POOL_SIZE": 12,
        "DATABASE_MAX_OVERFLOW": 3,
        "DATABASE_POOL_TIMEOUT": 3,
    }
    for value in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match="DATABASE_STATEMENT_TIMEOUT must be a positive"):
            from_environment({"DATABASE_STATEMENT_TIMEOUT": value})
    with pytest.raises(ConfigError, match="DATABASE_POOL_TIMEOUT must be an integer"):
        from_environment({"DATABASE_POOL_TIMEOUT": "0.5"})


@needs_postgres
def test_connections_are_opened_with_the_configured_timeouts_and_keepalives(make_app):
    app = make_app(
        DATABASE_CONNECT_TIMEOUT=3,
        DATABASE_SOCKET_TIMEOUT=4.5,
        DATABASE_KEEPALIVES_IDLE=11,
        DATABASE_KEEPALIVES_INTERVAL=6,
        DATABASE_KEEPALIVES_COUNT=2,
    )
    with app.app_context(), db.engine.connect() as connection:
        parameters = connection.connection.driver_connection.info.get_parameters()
    assert {name: parameters.get(name) for name in LIBPQ_PARAMETERS} == {
        "connect_timeout": "3",
        "keepalives": "1",
        "keepalives_idle": "11",
        "keepalives_interval": "6",
        "keepalives_count": "2",
        "tcp_user_timeout": "4500",  # milliseconds
    }


# The server's own limit: a slow statement is answered (cancelled) before the client gives up.


@pytest.mark.parametrize(
    ("deadline", "server_ms"), [(2.0, 1750), (10.0, 9750), (0.5, 375), (0.004, 3)]
)
def test_the_server_cancels_a_statement_a_little_before_the_client_gives_up(deadline, server_ms):
    assert server_statement_timeout(deadline) == server_ms


def with_query(url, **query):
    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


def show(connection, setting):
    return connection.exec_driver_sql(f"SHOW {setting}").scalar()


@needs_postgres
@sends_options
def test_a_statement_slower_than_the_server_limit_is_cancelled_by_the_server(make_app):
    """The server answers (QueryCanceled) before the client's deadline: the connection stays
    usable and the breaker closed."""
    app = make_app(DATABASE_STATEMENT_TIMEOUT=1.0)
    breaker = app.extensions["bookshelf.database_breaker"]
    with app.app_context():
        db.engine.dispose()  # from here on, connections are opened for "requests"
        with bounded_waits(), db.engine.connect() as connection:
            assert show(connection, "statement_timeout") == "750ms"
            started = time.monotonic()
            with pytest.raises(OperationalError) as raised:
                connection.exec_driver_sql("SELECT pg_sleep(3)")
            assert isinstance(raised.value.orig, psycopg.errors.QueryCanceled)
            assert time.monotonic() - started < BOUND_S
            assert not raised.value.connection_invalidated
            connection.rollback()
            assert connection.exec_driver_sql("SELECT 1").scalar() == 1
        assert breaker.closed

        db.engine.dispose()
        with db.engine.connect() as connection:  # the command line's: no limit of ours
            assert show(connection, "statement_timeout") != "750ms"


@needs_postgres
@sends_options
def test_options_in_the_database_url_are_kept_and_win(make_app):
    given = "-c lock_timeout=3s -c statement_timeout=4s"
    app = make_app(SQLALCHEMY_DATABASE_URI=with_query(POSTGRES_URL, options=given))
    with app.app_context():
        db.engine.dispose()
        with bounded_waits(), db.engine.connect() as connection:
            assert show(connection, "lock_timeout") == "3s"
            assert show(connection, "statement_timeout") == "4s"
            parameters = connection.connection.driver_connection.info.get_parameters()
    assert parameters["options"] == f"-c statement_timeout=1750 {given}"


# The pool: one connection per thread, no overflow, a bounded wait for a free one.


def test_the_pool_settings_are_postgresqls_only_and_checked():
    config = vars(Config) | {"WAITRESS_THREADS": 6, "DATABASE_STATEMENT_TIMEOUT": 1.5}
    assert engine_options("postgresql+psycopg://h/db", config) == {
        "pool_pre_ping": True,
        "pool_size": 8,  # the worker threads and the two probe threads
        "max_overflow": 0,
        "pool_timeout": 2,  # DATABASE_STATEMENT_TIMEOUT, in whole seconds
    }
    assert not {"pool_size", "max_overflow", "pool_timeout"} & set(
        engine_options("sqlite:///bookshelf.db", config)
    )
    with pytest.raises(ConfigError, match="DATABASE_POOL_SIZE must be 1 or more"):
        engine_options("postgresql://h/db", config | {"DATABASE_POOL_SIZE": 0})
    with pytest.raises(ConfigError, match="DATABASE_MAX_OVERFLOW must be 0 or more"):
        engine_options("postgresql://h/db", config | {"DATABASE_MAX_OVERFLOW": -1})
    with pytest.raises(ConfigError, match="DATABASE_POOL_TIMEOUT must be 1 or more"):
        engine_options("postgresql://h/db", config | {"DATABASE_POOL_TIMEOUT": 0})


def checked_out_until_the_pool_times_out(engine):
    """How many connections `engine` gives at once, and how long it then waits for one more."""
    held = []
    try:
        while len(held) < 50:
            started = time.monotonic()
            try:
                held.append(engine.connect())
            except PoolTimeout:
                return len(held), time.monotonic() - started
    finally:
        for connection in held:
            connection.close()
    raise AssertionError("the pool gave 50 connections")


@needs_postgres
def test_by_default_the_pool_has_a_connection_per_thread_and_waits_a_statement_timeout(make_app):
    app = make_app(WAITRESS_THREADS=2, DATABASE_STATEMENT_TIMEOUT=0.5)
    with app.app_context():
        held, waited = checked_out_until_the_pool_times_out(db.engine)
    assert held == 2 + 2 and 0.9 < waited < BOUND_S  # 0.5 s, rounded up to whole seconds


@needs_postgres
def test_the_pool_settings_reach_the_engine(make_app):
    app = make_app(
        DATABASE_POOL_SIZE=2,
        DATABASE_MAX_OVERFLOW=1,
        DATABASE_POOL_TIMEOUT=2,
        DATABASE_STATEMENT_TIMEOUT=1.0,
    )
    with app.app_context():
        held, waited = checked_out_until_the_pool_times_out(db.engine)
    assert held == 2 + 1 and 1.9 < waited < BOUND_S


def test_no_pooled_connection_free_in_time_is_a_503_not_a_500(make_app):
    app = make_app(
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.1}
    )
    with app.app_context():
        held = db.engine.connect()  # the pool's only connection
        try:
            response = app.test_client().get("/api/v1/books")
        finally:
            held.close()
    error = assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert "QueuePool" not in error["message"] and "timeout" not in error["message"].lower()


# As deployed: `python wsgi.py` on PostgreSQL through a proxy that stalls.


@pytest.fixture
def through_proxy(proxy):
    url = make_url(POSTGRES_URL).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def server(proxy, through_proxy, make_app, tmp_path):
    """`python wsgi.py` on the test database through `proxy`, with its default timeouts. `proxy`
    comes first: it must outlive make_app, whose teardown empties the tables through it."""
    make_app(SQLALCHEMY_DATABASE_URI=through_proxy)  # the schema
    process = ServerProcess(tmp_path / "server.log", DATABASE_URL=through_proxy).start()
    yield process
    if not proxy.flowing.is_set():
        proxy.resume()  # a failed test must not leave the teardown hanging on the proxy
    process.stop()


def timed(port, method, path, body=None, headers=None):
    """(seconds, status, body) of one request, timed from the client's send."""
    started = time.monotonic()
    try:
        status, _, answer = call(port, method, path, body, headers, timeout=BOUND_S + 5)
    except TimeoutError:
        return time.monotonic() - started, None, None
    return time.monotonic() - started, status, answer


emails = count()


def register_and_log_in(port):
    email = f"reader{next(emails)}@example.com"
    status, _, _ = call(
        port, "POST", "/api/v1/auth/register", {"name": "R", "email": email, "password": PASSWORD}
    )
    assert status == 201
    _, _, body = call(port, "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {body['data']['access_token']}"}


def requests_of_every_kind(headers):
    """The session (ORM) path, the raw PreparedRead path, a write, an authenticated read."""
    return [
        ("GET", "/api/v1/books", None, None),
        ("GET", "/api/v1/books/1", None, None),
        (
            "POST",
            "/api/v1/auth/register",
            {"name": "N", "email": f"new{next(emails)}@example.com", "password": PASSWORD},
            None,
        ),
        ("GET", "/api/v1/auth/me", None, headers),
        ("GET", "/health/ready", None, None),
    ]


def assert_unavailable(seconds, status, body, what):
    assert status == 503, f"{what}: {status} after {seconds:.2f} s: {body}"
    assert seconds < BOUND_S, f"{what}: 503 after {seconds:.2f} s"
    assert set(body) == {"error", "meta"} and body["error"]["code"] == "SERVICE_UNAVAILABLE"
    message = body["error"]["message"].lower()
    assert not any(word in message for word in ("psycopg", "select", "timeout", "127.0.0.1"))


def warm_up(port, headers):
    """Fill the pool: the stall then catches pooled connections, the worst case (a ping, then a
    reconnection, on each checkout)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for status, _, _ in pool.map(lambda _: call(port, "GET", "/api/v1/books"), range(16)):
            assert status == 200
    status, _, _ = call(port, "GET", "/api/v1/auth/me", headers=headers)
    assert status == 200


class LivenessWatch:
    """Asks /health every 0.2 s in a thread of its own; keeps each answer's status and time."""

    def __init__(self, port):
        self.port, self.answers = port, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(timeout=BOUND_S + 5)

    def _watch(self):
        while not self._stop.is_set():
            seconds, status, _ = timed(self.port, "GET", "/health")
            self.answers.append((status, seconds))
            self._stop.wait(0.2)


@needs_postgres
def test_with_postgresql_hung_20_concurrent_clients_get_503s_within_seconds(server, proxy):
    port = server.port
    headers = register_and_log_in(port)
    warm_up(port, headers)
    kinds = requests_of_every_kind(headers)[:4] * 5  # 20 clients, 8 server threads
    barrier = threading.Barrier(len(kinds))

    def client(request):
        method, path, body, extra = request
        barrier.wait()
        return (method, path), *timed(port, method, path, body, extra)

    with LivenessWatch(port) as liveness:
        proxy.stall()
        with ThreadPoolExecutor(max_workers=len(kinds)) as pool:
            results = list(pool.map(client, kinds))
        ready = timed(port, "GET", "/health/ready")
    for what, seconds, status, body in results:
        assert_unavailable(seconds, status, body, what)
    assert_unavailable(*ready, "/health/ready")
    slow = [
        (status, round(seconds, 2))
        for status, seconds in liveness.answers
        if status != 200 or seconds >= LIVENESS_S
    ]
    assert liveness.answers and not slow, f"/health while the database hangs: {slow}"


@needs_postgres
def test_with_postgresql_hung_each_request_is_503_and_service_returns_when_it_answers(
    server, proxy
):
    port = server.port
    headers = register_and_log_in(port)
    warm_up(port, headers)
    proxy.stall()
    for _ in range(2):  # the first meets the timeout, the second the open breaker
        for method, path, body, extra in requests_of_every_kind(headers):
            assert_unavailable(*timed(port, method, path, body, extra), f"{method} {path}")
    seconds, status, _ = timed(port, "GET", "/health")
    assert status == 200 and seconds < LIVENESS_S

    proxy.resume()
    resumed = time.monotonic()
    while time.monotonic() - resumed < 10:
        _, status, _ = timed(port, "GET", "/api/v1/books")
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200, "still not serving 10 s after the database came back"
    assert time.monotonic() - resumed < BOUND_S
    assert call(port, "GET", "/health/ready")[0] == 200
    assert call(port, "GET", "/api/v1/auth/me", headers=headers)[0] == 200
    status, _, body = call(port, "GET", "/api/v1/books/1")  # the raw PreparedRead path
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"


def answered_within(seconds, request):
    """(time taken, response) of `request()`, run in a thread that is given up on after
    `seconds`: the test client itself has no timeout."""
    answers = []
    started = time.monotonic()
    thread = threading.Thread(target=lambda: answers.append(request()), daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert answers, f"no answer within {seconds} s"
    return time.monotonic() - started, answers[0]


@needs_postgres
def test_in_process_a_timeout_opens_the_breaker_and_a_trial_closes_it(
    proxy, through_proxy, make_app
):
    app = make_app(
        SQLALCHEMY_DATABASE_URI=through_proxy,
        DATABASE_STATEMENT_TIMEOUT=1.5,
        DATABASE_RETRY_INTERVAL=1.0,
    )
    client = app.test_client()
    breaker = app.extensions["bookshelf.database_breaker"]
    assert client.get("/api/v1/books").status_code == 200  # a connection in the pool
    proxy.stall()
    try:
        seconds, response = answered_within(BOUND_S, lambda: client.get("/api/v1/books"))
        assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert 1.4 < seconds < BOUND_S and not breaker.closed
        seconds, response = answered_within(BOUND_S, lambda: client.get("/api/v1/books/1"))
        assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert seconds < 1.0  # the breaker is open: no waiting out the 1.5 s
    finally:
        proxy.resume()
    time.sleep(1.0)  # the retry interval: the next request is the trial
    assert client.get("/api/v1/books").status_code == 200
    assert breaker.closed


# As deployed: `python wsgi.py` on a PostgreSQL that answers, slowly for some statements.


@pytest.fixture
def serve(make_app, tmp_path):
    """Starts `python wsgi.py` straight on the test database, with these settings."""
    make_app()  # the schema
    processes = []

    def start(database_url=POSTGRES_URL, **env):
        log = tmp_path / f"server{len(processes)}.log"
        processes.append(ServerProcess(log, DATABASE_URL=database_url, **env).start())
        return processes[-1]

    yield start
    for process in processes:
        process.stop()


def create_book(port, headers):
    status, _, body = call(port, "POST", "/api/v1/books", {"title": "T", "author": "A"}, headers)
    assert status == 201, body
    return body["data"]["id"]


@contextmanager
def row_locked(book_id):
    """Holds a book's row lock from a connection of the test's own, as a long transaction or a
    migration would: a request's `SELECT ... FOR UPDATE` of that row waits for it."""
    url = make_url(POSTGRES_URL).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as connection:
        connection.execute("SELECT 1 FROM books WHERE id = %s FOR UPDATE", [book_id])
        yield
        connection.rollback()


class Traffic:
    """GET /api/v1/books from a few threads, one request after another, until the block ends."""

    def __init__(self, port, clients=3):
        self.port, self.statuses = port, []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._browse) for _ in range(clients)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=BOUND_S + 5)

    def _browse(self):
        while not self._stop.is_set():
            self.statuses.append(timed(self.port, "GET", "/api/v1/books")[1])
            self._stop.wait(0.05)


def update_behind_a_lock(server, breaker_window_s=1.5):
    """PATCHes a book whose row is locked while other clients browse, and goes on browsing for
    `breaker_window_s` after its answer (an open breaker would refuse them meanwhile).
    (PATCH's (seconds, status, body), the browsing's statuses, /health/ready's status)."""
    port = server.port
    headers = register_and_log_in(port)
    book_id = create_book(port, headers)
    path = f"/api/v1/books/{book_id}"
    with row_locked(book_id), Traffic(port) as traffic:
        time.sleep(0.3)
        patched = timed(port, "PATCH", path, {"title": "New"}, headers)
        time.sleep(breaker_window_s)
        ready = timed(port, "GET", "/health/ready")[1]
    assert call(port, "PATCH", path, {"title": "New"}, headers)[0] == 200  # the lock is gone
    return patched, Counter(traffic.statuses), ready


def logged(server, level):
    """The lines `server` logged at `level`, but the per-request lines."""
    return [
        line
        for line in server.log_lines()
        if line.get("level") == level and line.get("logger") != "bookshelf.request"
    ]


def assert_only_it_failed(server, patched, browsing, ready, cause):
    """The PATCH stuck behind a row lock got its 503 (for `cause`, logged once); the requests
    browsing meanwhile and readiness were answered, and the breaker stayed closed."""
    assert_unavailable(*patched, "PATCH behind a row lock")
    assert set(browsing) == {200} and browsing[200] > 10, f"others while it waited: {browsing}"
    assert ready == 200
    errors = logged(server, "ERROR")
    assert len(errors) == 1 and cause in errors[0].get("exc_info", "")
    assert not logged(server, "WARNING"), "the breaker opened"


@needs_postgres
def test_a_slow_statement_is_a_503_for_its_own_request_only(serve):
    server = serve()
    patched, browsing, ready = update_behind_a_lock(server)

    assert patched[0] > 1.0  # it did wait for the lock
    # PostgreSQL cancelled it (its own statement_timeout): the database answered, nothing opened.
    assert_only_it_failed(server, patched, browsing, ready, "QueryCanceled")


@needs_postgres
@sends_options
def test_without_the_server_limit_a_stuck_statement_opens_nothing_while_others_are_answered(
    serve,
):
    """As through a PgBouncer that drops `options`, on a role without a statement_timeout: the
    statement meets the client's deadline, but the database answered the others meanwhile."""
    server = serve(with_query(POSTGRES_URL, options="-c statement_timeout=0"))
    patched, browsing, ready = update_behind_a_lock(server)

    assert patched[0] > 1.5  # the client's 2 s deadline
    assert_only_it_failed(server, patched, browsing, ready, "DatabaseNotAnswering")


@needs_postgres
def test_as_deployed_no_pooled_connection_free_in_time_is_a_503(serve):
    server = serve(DATABASE_POOL_SIZE="1", DATABASE_POOL_TIMEOUT="1")
    port = server.port
    headers = register_and_log_in(port)
    book_id = create_book(port, headers)
    with row_locked(book_id), ThreadPoolExecutor(max_workers=1) as pool:
        # The pool's only connection waits for the lock, in a request of its own.
        pool.submit(call, port, "PATCH", f"/api/v1/books/{book_id}", {"title": "N"}, headers)
        time.sleep(0.3)
        seconds, status, body = timed(port, "GET", "/api/v1/books")
    assert_unavailable(seconds, status, body, "GET with no free connection")
    assert seconds > 0.9  # it waited DATABASE_POOL_TIMEOUT for a connection
    assert "QueuePool" not in body["error"]["message"]
    assert any("TimeoutError" in line.get("exc_info", "") for line in logged(server, "ERROR"))
    assert call(port, "GET", "/api/v1/books")[0] == 200
