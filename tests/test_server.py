"""Through a real waitress server on a free port: the wire format, and concurrency that the
test client cannot produce (SQLite locking, unique-email races)."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from bookshelf.schema import head_revision
from bookshelf.serving import create_server
from tests.processes import ServerProcess, call
from tests.support import PASSWORD


@pytest.fixture
def server_log(tmp_path):
    return tmp_path / "server.log"


@pytest.fixture
def server(app, database_url, server_log):
    """`python wsgi.py` (waitress) in its own process, on the test database and a free port."""
    process = ServerProcess(server_log, DATABASE_URL=database_url).start()
    yield process.port
    process.stop()


def token_for(server, email):
    call(
        server,
        "POST",
        "/api/v1/auth/register",
        {"name": "Ann", "email": email, "password": PASSWORD},
    )
    _, _, body = call(server, "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
    return {"Authorization": f"Bearer {body['data']['access_token']}"}


def test_a_full_flow_over_http(server):
    headers = token_for(server, "ann@example.com")
    status, head, body = call(
        server, "POST", "/api/v1/books", {"title": "Dune", "author": "Frank Herbert"}, headers
    )
    assert status == 201
    path = f"/api/v1/books/{body['data']['id']}"
    assert head["location"] == f"http://127.0.0.1:{server}{path}"  # absolute, as Link's
    assert head["content-type"] == "application/json"
    status, head, body = call(server, "GET", path)
    assert status == 200 and body["data"]["title"] == "Dune"
    assert body["meta"]["request_id"] == head["x-request-id"]


def test_errors_over_http_are_json(server):
    status, head, body = call(server, "GET", "/nope")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, head, body = call(
        server,
        "POST",
        "/api/v1/auth/register",
        raw=b"[1]",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400 and body["error"]["code"] == "BAD_REQUEST"
    status, head, body = call(
        server, "GET", "/api/v1/auth/me", headers={"Authorization": "Bearer x.y.z"}
    )
    assert status == 401 and body["error"]["code"] == "TOKEN_INVALID"


def test_an_oversized_body_over_http_is_413(server):
    status, _, body = call(
        server,
        "POST",
        "/api/v1/auth/register",
        raw=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and body["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_40_concurrent_creates_all_succeed(server):
    headers = token_for(server, "ann@example.com")

    def create(i):
        return call(
            server, "POST", "/api/v1/books", {"title": f"Book {i}", "author": "Writer"}, headers
        )

    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(create, range(40)))
    assert [status for status, _, _ in results] == [201] * 40
    ids = {body["data"]["id"] for _, _, body in results}
    assert len(ids) == 40
    _, _, listing = call(server, "GET", "/api/v1/books?per_page=100")
    assert listing["meta"]["total"] == 40


def test_12_concurrent_registrations_of_one_email_give_one_201(server):
    barrier = threading.Barrier(12)

    def register(i):
        barrier.wait()
        return call(
            server,
            "POST",
            "/api/v1/auth/register",
            {"name": f"N{i}", "email": "Same@Example.com", "password": PASSWORD},
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(register, range(12)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] + [409] * 11
    assert all(body["error"]["code"] == "CONFLICT" for status, _, body in results if status == 409)


def test_the_server_logs_one_json_line_per_request(server, server_log):
    status, head, _ = call(server, "GET", "/api/v1/books", headers={"X-Request-ID": "wire-1"})
    assert status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server_log.read_text().splitlines() if line]
        requests = [line for line in lines if line.get("request_id") == "wire-1"]
        if requests:
            break
        time.sleep(0.05)
    [line] = requests
    assert (
        line["message"] == "request" and line["status"] == 200 and line["path"] == "/api/v1/books"
    )
    # Every line of the process is JSON, waitress's own included.
    assert any(line.get("logger") == "waitress" for line in lines)


def test_concurrent_writes_with_one_if_match_let_exactly_one_through(server):
    headers = token_for(server, "ann@example.com")
    _, head, body = call(server, "POST", "/api/v1/books", {"title": "v1", "author": "A"}, headers)
    path, etag = urlsplit(head["location"]).path, head["etag"]
    barrier = threading.Barrier(8)

    def patch(i):
        barrier.wait()
        return call(server, "PATCH", path, {"title": f"v2 by {i}"}, headers | {"If-Match": etag})

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(patch, range(8)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] + [412] * 7
    [winner] = [body for status, _, body in results if status == 200]
    _, _, current = call(server, "GET", path)
    assert current["data"]["title"] == winner["data"]["title"]


def test_concurrent_retries_with_one_idempotency_key_create_one_book(server):
    headers = token_for(server, "ann@example.com") | {"Idempotency-Key": "retry-storm"}
    barrier = threading.Barrier(8)

    def create(_):
        barrier.wait()
        return call(server, "POST", "/api/v1/books", {"title": "Once", "author": "A"}, headers)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(create, range(8)))
    assert [status for status, _, _ in results] == [201] * 8  # one created, seven replayed
    assert len({body["data"]["id"] for _, _, body in results}) == 1
    _, _, listing = call(server, "GET", "/api/v1/books")
    assert listing["meta"]["total"] == 1


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of one response that has a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection mid-head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {len(body)} of {length} bytes"
        body += chunk
    return head, body


@pytest.fixture
def small_buffer_server(app):
    """The app on waitress in this process, as `python wsgi.py` serves it (bookshelf.serving),
    but with 4 KiB send buffers: a large response cannot go out in one send."""
    sockets = {}
    server = create_server(app, map=sockets, host="127.0.0.1", port=0, threads=2)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # connections inherit it
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    yield server.effective_port
    server.task_dispatcher.shutdown(timeout=5)
    for dispatcher in list(sockets.values()):
        dispatcher.close()


@pytest.mark.parametrize("path", ["/api/v1/openapi.json", "/docs/swagger-ui-bundle.js"])
def test_a_large_response_to_a_slow_reader_arrives_whole_and_the_connection_goes_on(
    small_buffer_server, path
):
    """The task thread sends what the buffers take; the network loop sends the rest as the
    client reads. The JSON is a body in memory, the script a file that waitress streams."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", small_buffer_server), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(2):  # the second on the same connection, once the first is all sent
            sock.sendall(request)
            time.sleep(0.3)  # the server fills the buffers and has to leave the rest
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert len(body) > 50_000
            assert path.endswith(".js") or json.loads(body)["openapi"].startswith("3.1")


def test_one_start_up_line_names_environment_database_revision_and_address(
    app, database_url, server_log
):
    process = ServerProcess(server_log, DATABASE_URL=database_url).start()
    try:
        deadline = time.monotonic() + 10
        while not (lines := starting_lines(process)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.stop()
    [line] = lines
    assert line["level"] == "INFO" and line["logger"] == "bookshelf.server"
    assert line["environment"] == "testing"
    assert line["database"] == make_url(database_url).render_as_string(hide_password=True)
    assert line["schema_revision"] == head_revision()
    assert line["addresses"] == [f"http://127.0.0.1:{process.port}"]


def starting_lines(process) -> list[dict]:
    return [line for line in process.log_lines() if line.get("message") == "starting"]
