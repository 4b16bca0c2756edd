"""Through a real waitress server on a free port: the wire format, and concurrency that the
test client cannot produce (SQLite locking, unique-email races)."""

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from waitress.server import create_server

from tests.support import PASSWORD


@pytest.fixture
def server(app):
    """Serve the test app with waitress on 127.0.0.1 and an OS-chosen port."""
    srv = create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield srv
    srv.close()
    thread.join(timeout=5)


def call(server, method, path, body=None, headers=None, raw=None):
    """One request on its own connection: (status, headers, parsed JSON or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=30)
    try:
        headers = dict(headers or {})
        payload = raw
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        parsed = json.loads(data) if data else None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        conn.close()


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
    assert head["location"] == f"/api/v1/books/{body['data']['id']}"
    assert head["content-type"] == "application/json"
    status, head, body = call(server, "GET", head["location"])
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
