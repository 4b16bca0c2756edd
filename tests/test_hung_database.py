"""A PostgreSQL that hangs (connections accepted and kept open, nothing answered: a partition or
a stuck primary) never stops a process: requests answer 503 within seconds, however many wait,
and the service comes back by itself. The breaker and the psycopg deadline are tested alone too,
the deadline against a server that completes the start-up and then says nothing."""

import inspect
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bookshelf.breaker import Breaker
from bookshelf.config import ConfigError, from_environment
from bookshelf.extensions import db
from bookshelf.postgres import DatabaseNotAnswering, bounded_waits, connection_class
from tests.conftest import POSTGRES_URL
from tests.processes import ServerProcess, TcpProxy, call
from tests.support import PASSWORD, assert_error

ON_POSTGRES = bool(POSTGRES_URL) and make_url(POSTGRES_URL).get_backend_name() == "postgresql"
needs_postgres = pytest.mark.skipif(
    not ON_POSTGRES, reason="needs PostgreSQL: set TEST_DATABASE_URL to a postgresql:// URL"
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
    assert breaker.failed() is True
    assert breaker.failed() is False  # already open: not a new outage
    assert not breaker.allow() and not in_thread(breaker.allow)
    clock.now += 1.9
    assert not breaker.allow()


def test_then_one_thread_tries_while_the_others_still_fail_at_once():
    clock = Clock()
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=clock)
    breaker.failed()
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
    breaker.failed()
    clock.now += 2
    assert breaker.allow()
    assert breaker.failed() is False
    assert not breaker.allow()  # the trial failed: two more seconds for everyone
    clock.now += 2
    assert in_thread(breaker.allow)
    assert breaker.succeeded() is True
    assert breaker.closed and breaker.allow() and in_thread(breaker.allow)
    assert breaker.succeeded() is False


def test_the_breaker_is_thread_safe_one_trial_among_many_threads():
    clock = Clock()
    breaker = Breaker(retry_after=2, trial_timeout=5, clock=clock)
    breaker.failed()
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
    connection = connection_class(breaker, statement_timeout=0.5).connect(silent_server.conninfo())
    with bounded_waits():
        started = time.monotonic()
        with pytest.raises(DatabaseNotAnswering, match="no answer from the database within 0.5 s"):
            connection.execute("SELECT 1")
        assert 0.4 < time.monotonic() - started < 2.0
        assert connection.closed  # never reused: its answer could still come
        assert not breaker.closed

        # While the breaker is open, another connection does not even ask.
        other = connection_class(breaker, statement_timeout=0.5).connect(silent_server.conninfo())
        started = time.monotonic()
        with pytest.raises(DatabaseNotAnswering, match="stopped answering"):
            other.execute("SELECT 1")
        assert time.monotonic() - started < 0.2 and other.closed


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
    }
    for value in ("0", "-1", "soon", "nan", "inf"):
        with pytest.raises(ConfigError, match="DATABASE_STATEMENT_TIMEOUT must be a positive"):
            from_environment({"DATABASE_STATEMENT_TIMEOUT": value})


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
def proxy():
    url = make_url(POSTGRES_URL)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    yield proxy
    proxy.stop()


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
        DATABASE_STATEMENT_TIMEOUT=0.5,
        DATABASE_RETRY_INTERVAL=1.0,
    )
    client = app.test_client()
    breaker = app.extensions["bookshelf.database_breaker"]
    assert client.get("/api/v1/books").status_code == 200  # a connection in the pool
    proxy.stall()
    try:
        seconds, response = answered_within(BOUND_S, lambda: client.get("/api/v1/books"))
        assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert 0.4 < seconds < 2.5 and not breaker.closed
        seconds, response = answered_within(BOUND_S, lambda: client.get("/api/v1/books/1"))
        assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert seconds < 0.3  # the breaker is open: no waiting
    finally:
        proxy.resume()
    time.sleep(1.0)  # the retry interval: the next request is the trial
    assert client.get("/api/v1/books").status_code == 200
    assert breaker.closed
