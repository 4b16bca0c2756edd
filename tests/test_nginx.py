"""deploy/nginx.conf as deployed: the real nginx in front of a real `python wsgi.py`.

What the proxy must keep true: each client keeps its own address (logs, rate limits) and cannot
forge another; thousands of idle, kept-alive or slowloris connections leave room for a new
client; every error a client can get, nginx's own and the protocol errors it or waitress
catches, comes in the API's JSON envelope with its request id.
"""

import contextlib
import json
import socket
import time

import pytest

from bookshelf import create_app
from bookshelf.extensions import db
from tests.nginx import (
    LISTEN,
    SHIPPED,
    UPSTREAM,
    Nginx,
    exchange,
    nginx_binary,
    raise_open_file_limit,
    read_response,
    setting,
    substituted,
)
from tests.processes import ServerProcess, call

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (apt-get install nginx)"
)

HOST = b"Host: 127.0.0.1\r\n"


@pytest.fixture
def stack(start_api, start_nginx):
    """(the API server, nginx in front of it), for a test that stops or breaks one of them."""
    api = start_api()
    return api, start_nginx(api.port)


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """(the API server, nginx in front of it) on a SQLite file, shared by the tests that
    change neither."""
    directory = tmp_path_factory.mktemp("nginx-stack")
    database_url = f"sqlite:///{directory / 'test.db'}"
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url})
    with app.app_context():
        db.create_all()
        db.engine.dispose()
    api = ServerProcess(
        directory / "server.log", DATABASE_URL=database_url, TRUSTED_PROXIES="1"
    ).start()
    nginx = None
    try:
        nginx = Nginx(directory, api.port).start()
        yield api, nginx
    finally:
        if nginx is not None:
            nginx.stop()
        api.stop()


def wait_for(find, timeout=5.0):
    """`find()`'s first truthy answer, polled until `timeout`; None if there was none."""
    deadline = time.monotonic() + timeout
    while True:
        if found := find():
            return found
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)


def access_line(nginx: Nginx, request_id: str) -> dict | None:
    """nginx's access log line (JSON) of the request with this id."""

    def find():
        for line in nginx.access_log.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line being written
                if (entry := json.loads(line))["request_id"] == request_id:
                    return entry
        return None

    return wait_for(find)


def logged_addresses(api: ServerProcess, request_ids: list[str]) -> dict[str, str]:
    """The remote_addr of the API's request log line of each request id."""

    def find():
        lines = {line.get("request_id"): line for line in api.log_lines()}
        if all(rid in lines for rid in request_ids):
            return {rid: lines[rid]["remote_addr"] for rid in request_ids}
        return None

    found = wait_for(find)
    assert found is not None, f"not all of {request_ids} in the API's log"
    return found


def assert_envelope(response, status: int, code: str) -> dict:
    """The API's error envelope, its request id in X-Request-ID."""
    got_status, headers, body = response
    assert got_status == status, body
    assert headers["content-type"] == "application/json"
    envelope = json.loads(body)
    assert set(envelope) == {"error", "meta"}
    assert envelope["error"]["code"] == code
    assert envelope["error"]["message"]
    assert isinstance(envelope["error"]["details"], dict)
    assert envelope["meta"]["request_id"] == headers["x-request-id"]
    return envelope


# -- the harness runs the shipped file -----------------------------------------------------------


def test_the_harness_runs_the_shipped_file_with_only_its_two_substitutions(start_nginx):
    nginx = start_nginx(9)  # no upstream needed to start
    shipped, ran = SHIPPED.read_text().splitlines(), nginx.config.read_text().splitlines()
    changed = [
        (before, after) for before, after in zip(shipped, ran, strict=True) if before != after
    ]
    assert [before.strip() for before, _ in changed] == [
        "server api:8000 max_fails=1 fail_timeout=2s;",
        "server api:8000 backup max_fails=0;",
        "listen 8000;",
    ]
    assert [after.strip() for _, after in changed] == [
        "server 127.0.0.1:9 max_fails=1 fail_timeout=2s;",
        "server 127.0.0.1:9 backup max_fails=0;",
        f"listen 127.0.0.1:{nginx.port};",
    ]
    with pytest.raises(ValueError, match="occurs 2 times"):
        substituted(SHIPPED.read_text() + f"\n# {LISTEN}\n", 9, 9)
    with pytest.raises(ValueError, match="outside the upstream's server lines"):
        substituted(SHIPPED.read_text() + f"\n# {UPSTREAM}\n", 9, 9)


# -- client addresses ----------------------------------------------------------------------------


def test_clients_behind_nginx_keep_their_own_address_and_rate_limit(start_api, start_nginx):
    api = start_api(RATELIMIT_DEFAULT="5 per minute")
    nginx = start_nginx(api.port)

    def get(source, request_id):
        status, _, _ = call(
            nginx.port, "GET", "/api/v1/books", headers={"X-Request-ID": request_id}, source=source
        )
        return status

    assert [get("127.0.0.2", f"a-{i}") for i in range(6)] == [200] * 5 + [429]
    assert get("127.0.0.3", "b-0") == 200, "another client has a limit of its own"
    assert logged_addresses(api, ["a-0", "a-5", "b-0"]) == {
        "a-0": "127.0.0.2",
        "a-5": "127.0.0.2",
        "b-0": "127.0.0.3",
    }


def test_an_address_a_client_writes_in_x_forwarded_for_is_not_believed(start_api, start_nginx):
    api = start_api(RATELIMIT_DEFAULT="5 per minute")
    nginx = start_nginx(api.port)

    def get(source, request_id, forged):
        headers = {"X-Request-ID": request_id, "X-Forwarded-For": forged}
        status, _, _ = call(nginx.port, "GET", "/api/v1/books", headers=headers, source=source)
        return status

    assert [get("127.0.0.2", f"a-{i}", "203.0.113.9") for i in range(6)] == [200] * 5 + [429]
    # Naming the exhausted client's address, or another, changes nothing for a third client.
    assert get("127.0.0.4", "c-0", "127.0.0.2") == 200
    assert get("127.0.0.4", "c-1", "203.0.113.9, 127.0.0.2") == 200
    assert logged_addresses(api, ["a-0", "c-0", "c-1"]) == {
        "a-0": "127.0.0.2",
        "c-0": "127.0.0.4",
        "c-1": "127.0.0.4",
    }


# -- thousands of connections --------------------------------------------------------------------

KEPT_ALIVE, IDLE, SLOWLORIS = 1000, 2000, 2000


def test_5000_idle_kept_alive_and_slowloris_connections_leave_room_for_a_new_client(shared_stack):
    """1,000 connections that made a request and went silent, 2,000 that never send anything
    and 2,000 that send headers a byte now and then: a new client is still answered at once,
    and nginx has closed none of them (it did not make room by dropping clients)."""
    _, nginx = shared_stack
    raise_open_file_limit(KEPT_ALIVE + IDLE + SLOWLORIS + 1000)
    request = b"GET /health HTTP/1.1\r\n" + HOST + b"\r\n"
    kept, idle, slow = [], [], []
    try:
        for batch in range(0, KEPT_ALIVE, 100):
            conns = [socket.create_connection(("127.0.0.1", nginx.port)) for _ in range(100)]
            kept += conns
            for sock in conns:
                sock.sendall(request)
            deadline = time.monotonic() + 30
            for sock in conns:
                assert read_response(sock, deadline)[0] == 200, f"batch {batch}"
        opened = time.monotonic()
        idle += [socket.create_connection(("127.0.0.1", nginx.port)) for _ in range(IDLE)]
        for _ in range(SLOWLORIS):
            sock = socket.create_connection(("127.0.0.1", nginx.port))
            sock.sendall(b"GET /api/v1/books HTTP/1.1\r\n" + HOST + b"X-Slow: ")
            slow.append(sock)
        assert trickle(slow) == 0, "a byte now and then"

        for path in ("/health", "/api/v1/books"):
            started = time.monotonic()
            status, _, _ = call(nginx.port, "GET", path, timeout=5)
            elapsed = time.monotonic() - started
            assert status == 200 and elapsed < 1.0, f"{path}: {status} after {elapsed:.2f} s"

        assert trickle(slow) == 0
        # All still open: the header deadline (client_header_timeout) has not passed yet.
        assert time.monotonic() - opened < int(setting("client_header_timeout").rstrip("s"))
        closed = [sock for sock in kept + idle + slow if not is_open(sock)]
        assert not closed, f"nginx closed {len(closed)} of the connections"
        assert "worker_connections are not enough" not in nginx.errors()
    finally:
        for sock in kept + idle + slow:
            sock.close()


def trickle(socks: list[socket.socket]) -> int:
    """One more byte of headers on each: how many nginx had closed."""
    closed = 0
    for sock in socks:
        try:
            sock.send(b"s")
        except OSError:
            closed += 1
    return closed


def is_open(sock: socket.socket) -> bool:
    """Still open, and nothing more has come from nginx."""
    sock.setblocking(False)
    try:
        sock.recv(1)  # b"": closed; anything else: an answer nobody asked for
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


def test_a_client_trickling_its_headers_is_closed_at_the_header_deadline(shared_stack):
    """The deadline is for the whole head, not renewed by each byte; nginx answers nothing
    (no 408 can be sent in the envelope: nginx only closes the connection)."""
    _, nginx = shared_stack
    timeout = int(setting("client_header_timeout").rstrip("s"))
    with socket.create_connection(("127.0.0.1", nginx.port)) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/v1/books HTTP/1.1\r\n" + HOST + b"X-Slow: ")
        sock.settimeout(1)
        received = None
        while time.monotonic() - started < timeout + 5:
            try:
                sock.send(b"s")
                received = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                received = b""
            break
        elapsed = time.monotonic() - started
    assert received == b"", "closed without an answer"
    assert timeout - 1 < elapsed < timeout + 3


# -- errors in the envelope ----------------------------------------------------------------------

POST_BOOK = b"POST /api/v1/books HTTP/1.1\r\n" + HOST + b"Content-Type: application/json\r\n"

# Caught by nginx: (request, status, code).
NGINX_REFUSES = {
    "lowercase method": (b"get /api/v1/books HTTP/1.1\r\n" + HOST + b"\r\n", 400, "BAD_REQUEST"),
    "TLS on the plain port": (
        bytes.fromhex("16030100a5010000a10303") + bytes(64),
        400,
        "BAD_REQUEST",
    ),
    "no request line": (b"GET\r\n\r\n", 400, "BAD_REQUEST"),
    "unknown HTTP version": (
        b"GET / HTTP/3.0\r\n" + HOST + b"\r\n",
        505,
        "HTTP_VERSION_NOT_SUPPORTED",
    ),
    "no Host": (b"GET /api/v1/books HTTP/1.1\r\n\r\n", 400, "BAD_REQUEST"),
    "NUL in a header": (b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n", 400, "BAD_REQUEST"),
    "control byte in a header name": (
        b"GET / HTTP/1.1\r\n" + HOST + b"X\x01A: b\r\n\r\n",
        400,
        "BAD_REQUEST",
    ),
    "a header over 256 KiB": (
        b"GET / HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * (257 * 1024) + b"\r\n\r\n",
        431,
        "HEADERS_TOO_LARGE",
    ),
    "headers over 32 KiB": (
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(9))
        + b"\r\n",
        431,
        "HEADERS_TOO_LARGE",
    ),
    "a URL over 8 KiB": (
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
        414,
        "URI_TOO_LONG",
    ),
    "bad chunk size": (
        POST_BOOK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        "BAD_REQUEST",
    ),
    "Content-Length and chunked": (
        POST_BOOK + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n0\r\n\r\n",
        400,
        "BAD_REQUEST",
    ),
    "unknown Transfer-Encoding": (
        POST_BOOK + b"Transfer-Encoding: gzip\r\n\r\n",
        501,
        "NOT_IMPLEMENTED",
    ),
    "a 5 MiB body": (
        POST_BOOK + b"Content-Length: %d\r\n\r\n" % (5 * 1024 * 1024) + b" " * 65536,
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    "a chunked body over 2 MiB": (
        POST_BOOK
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"10000\r\n" + b" " * 65536 + b"\r\n" for _ in range(40)),
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    "TRACE": (b"TRACE / HTTP/1.1\r\n" + HOST + b"\r\n", 405, "METHOD_NOT_ALLOWED"),
    "nginx's error page itself": (b"GET /_error HTTP/1.1\r\n" + HOST + b"\r\n", 404, "NOT_FOUND"),
}


@pytest.mark.parametrize("case", NGINX_REFUSES)
def test_what_nginx_refuses_comes_in_the_envelope(shared_stack, case):
    _, nginx = shared_stack
    request, status, code = NGINX_REFUSES[case]
    response = exchange(nginx.port, request)
    envelope = assert_envelope(response, status, code)
    request_id = envelope["meta"]["request_id"]
    assert len(request_id) == 32, "nginx's own request id"
    line = access_line(nginx, request_id)
    assert line is not None and line["status"] == status
    assert line["upstream"] == "", "nginx answered by itself"
    assert envelope["error"]["details"] == {}


def test_nginx_keeps_the_clients_request_id_in_its_own_errors(shared_stack):
    _, nginx = shared_stack
    request = POST_BOOK + b"X-Request-ID: phone-42.7\r\nTransfer-Encoding: gzip\r\n\r\n"
    envelope = assert_envelope(exchange(nginx.port, request), 501, "NOT_IMPLEMENTED")
    assert envelope["meta"]["request_id"] == "phone-42.7"


def test_nginx_and_the_api_log_one_request_under_one_id(shared_stack):
    api, nginx = shared_stack
    status, headers, body = call(nginx.port, "GET", "/api/v1/books")
    assert status == 200
    request_id = body["meta"]["request_id"]
    assert headers["x-request-id"] == request_id
    assert access_line(nginx, request_id)["upstream_status"] == "200"
    assert logged_addresses(api, [request_id]) == {request_id: "127.0.0.1"}


def test_a_control_byte_in_a_header_value_is_waitress_s_400_in_the_envelope(shared_stack):
    """nginx passes it on (it refuses only NUL, CR and LF in a value); waitress refuses it."""
    _, nginx = shared_stack
    request = (
        b"GET /api/v1/books HTTP/1.1\r\n" + HOST + b"X-Request-ID: ctl-1\r\nX-A: a\x01b\r\n\r\n"
    )
    assert_envelope(exchange(nginx.port, request), 400, "BAD_REQUEST")
    assert access_line(nginx, "ctl-1")["upstream_status"] == "400", "waitress answered"


def test_a_body_over_the_apis_limit_gets_the_apis_own_413(shared_stack):
    """nginx lets bodies up to 2 MiB through (buffered in a temporary file): the API refuses
    the 1.5 MiB one with its own 413. Ten times: the API answers before nginx has sent the
    whole body, and must not reset the connection under nginx's feet (a 502, sent as 503)."""
    _, nginx = shared_stack
    body = b"{" + b" " * (1536 * 1024) + b"}"
    statuses = []
    for attempt in range(10):
        head = b"X-Request-ID: big-%d\r\nContent-Length: %d\r\n\r\n" % (attempt, len(body))
        response = exchange(nginx.port, POST_BOOK + head + body)
        statuses.append(response[0])
        if response[0] == 413:
            assert_envelope(response, 413, "PAYLOAD_TOO_LARGE")
            assert access_line(nginx, f"big-{attempt}")["upstream_status"] == "413"
    assert statuses == [413] * 10


def test_a_temporary_file_nginx_cannot_write_is_a_500_in_the_envelope(stack):
    _, nginx = stack
    (nginx.prefix / "client_body_temp").rename(nginx.prefix / "gone")
    body = b"{" + b" " * (64 * 1024) + b"}"  # over client_body_buffer_size: to a file
    request = POST_BOOK + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert_envelope(exchange(nginx.port, request), 500, "INTERNAL_ERROR")


def test_no_replica_up_is_503_with_retry_after(stack):
    api, nginx = stack
    api.stop()
    response = exchange(nginx.port, b"GET /api/v1/books HTTP/1.1\r\n" + HOST + b"\r\n")
    assert_envelope(response, 503, "SERVICE_UNAVAILABLE")
    assert response[1]["retry-after"] == "5"


def test_a_replica_that_does_not_accept_in_time_is_504(start_nginx):
    with unaccepting_listener() as port:
        nginx = start_nginx(port)
        started = time.monotonic()
        response = exchange(nginx.port, b"GET /api/v1/books HTTP/1.1\r\n" + HOST + b"\r\n")
        elapsed = time.monotonic() - started
    assert_envelope(response, 504, "GATEWAY_TIMEOUT")
    assert "retry-after" not in response[1], "a 504 may come after the work was done"
    # Tried twice: on the server line, then on the backup line once the first has failed.
    connect_timeout = int(setting("proxy_connect_timeout").rstrip("s"))
    assert 2 * connect_timeout - 0.5 < elapsed < 2 * connect_timeout + 3


@contextlib.contextmanager
def unaccepting_listener():
    """A port whose accept queue is full: a further connection attempt gets no answer."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    try:
        for _ in range(16):  # Linux queues backlog + 1; stop at the first that hangs
            sock = socket.socket()
            fillers.append(sock)
            sock.settimeout(0.3)
            try:
                sock.connect(address)
            except TimeoutError:
                break
        else:
            pytest.fail("the listener never stopped accepting")
        yield address[1]
    finally:
        for sock in fillers:
            sock.close()
        listener.close()
