"""Rate limits: failed logins per address and per email, and the global per-address limit."""

import socket
import threading
import time
import uuid

import pytest

from tests.support import PASSWORD, assert_error

LOGIN = "/api/v1/auth/login"


def login(client, email, password="wrong password", address="10.0.0.1"):
    return client.post(
        LOGIN, json={"email": email, "password": password}, environ_base={"REMOTE_ADDR": address}
    )


def assert_limited(response):
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) > 0


@pytest.fixture
def limited(make_app):
    app = make_app(LOGIN_FAILURE_LIMIT="5 per minute", LOGIN_FAILURE_LIMIT_PER_EMAIL="3 per minute")
    return app, app.test_client()


def test_failed_logins_are_limited_per_email(limited, auth):
    app, client = limited
    for _ in range(3):
        assert_error(login(client, "ann@example.com"), 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, "ann@example.com"))
    # The right password does not get through either, and case does not dodge the limit.
    assert_limited(login(client, "ANN@example.com", PASSWORD))
    # Another email from another address is not affected.
    assert_error(login(client, "bob@example.com", address="10.0.0.2"), 401, "INVALID_CREDENTIALS")


def test_failed_logins_are_limited_per_address(limited):
    _, client = limited
    for i in range(5):
        assert_error(login(client, f"user{i}@example.com"), 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, "someone-else@example.com"))
    assert_error(login(client, "x@example.com", address="10.0.0.9"), 401, "INVALID_CREDENTIALS")


def test_successful_logins_do_not_count(limited):
    _, client = limited
    client.post(
        "/api/v1/auth/register",
        json={"name": "Ann", "email": "ann@example.com", "password": PASSWORD},
    )
    for _ in range(10):
        assert login(client, "ann@example.com", PASSWORD).status_code == 200
    for _ in range(3):
        assert_error(login(client, "ann@example.com"), 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, "ann@example.com"))


def test_the_global_limit_applies_per_address_across_routes(make_app):
    client = make_app(GLOBAL_RATE_LIMIT="3 per minute").test_client()
    assert client.get("/api/v1/books").status_code == 200
    assert client.get("/api/v1/books/1").status_code == 404
    assert client.post("/api/v1/auth/login", json={}).status_code == 422
    assert_limited(client.get("/api/v1/books"))
    other = client.get("/api/v1/books", environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other.status_code == 200
    # Health probes are never limited.
    assert client.get("/health").status_code == 200


def test_the_default_global_limit_is_generous(app):
    assert app.config["GLOBAL_RATE_LIMIT"] == "600 per minute"


def test_forwarded_addresses_count_only_behind_trusted_proxies(make_app):
    def hammer(client):
        forwarded = {"X-Forwarded-For": f"203.0.113.{uuid.uuid4().int % 250}"}
        return [client.get("/api/v1/books", headers=forwarded).status_code for _ in range(3)]

    untrusted = make_app(GLOBAL_RATE_LIMIT="2 per minute").test_client()
    assert hammer(untrusted) == [200, 200, 429]  # the header is ignored: one address
    trusted = make_app(GLOBAL_RATE_LIMIT="2 per minute", TRUSTED_PROXIES=1).test_client()
    statuses = [
        trusted.get("/api/v1/books", headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
        for i in range(5)
    ]
    assert statuses == [200] * 5  # five clients behind one proxy


def redis_is_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not redis_is_up(), reason="no Redis on 127.0.0.1:6379")
def test_processes_share_limits_through_redis(make_app):
    """Two app instances (two processes, in production) count against one limit in Redis."""
    settings = {
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379",
        "LOGIN_FAILURE_LIMIT_PER_EMAIL": "2 per minute",
    }
    first = make_app(**settings).test_client()
    second = make_app(**settings).test_client()
    # Redis outlives the test: a fresh email and address keep runs from counting together.
    email, address = f"{uuid.uuid4().hex}@example.com", f"10.{uuid.uuid4().int % 250}.0.1"
    assert_error(login(first, email, address=address), 401, "INVALID_CREDENTIALS")
    assert_error(login(second, email, address=address), 401, "INVALID_CREDENTIALS")
    assert_limited(login(first, email, address=address))
    assert_limited(login(second, email, address=address))


def test_responses_show_the_global_limit(make_app):
    client = make_app(GLOBAL_RATE_LIMIT="3 per minute").test_client()
    first = client.get("/api/v1/books")
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert 0 < int(first.headers["X-RateLimit-Reset"]) - time.time() <= 61  # a Unix time
    assert client.get("/api/v1/books/1").headers["X-RateLimit-Remaining"] == "1"
    client.get("/api/v1/books")
    limited = client.get("/api/v1/books")
    assert_limited(limited)
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Limit" not in client.get("/health").headers


def test_a_storage_outage_lets_requests_through(make_app):
    """Nothing listens on the storage's port: limits fail open instead of failing requests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed
    client = make_app(
        RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{port}",
        GLOBAL_RATE_LIMIT="1 per minute",
        LOGIN_FAILURE_LIMIT_PER_EMAIL="1 per minute",
    ).test_client()
    for _ in range(3):
        response = client.get("/api/v1/books")
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers
        assert_error(login(client, "ann@example.com"), 401, "INVALID_CREDENTIALS")


def test_counting_in_memory_starts_no_thread_per_request(make_app):
    """The stock memory storage starts a timer thread every 10 ms under load; ours sweeps inline."""
    client = make_app().test_client()
    client.get("/api/v1/books")
    before = threading.active_count()
    for _ in range(20):
        assert client.get("/api/v1/books").headers["X-RateLimit-Limit"] == "600"
        time.sleep(0.011)  # longer than the stock timer's life
        assert threading.active_count() <= before  # (a thread of an earlier test may end)
