"""A database outage at request time is a 503 in the envelope, and the service recovers by
itself when the database comes back. PostgreSQL is reached through a TCP proxy that the test
cuts and restores, which drops every connection as a database restart does."""

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL
from tests.support import PASSWORD, assert_error

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL")


def test_an_outage_is_503_and_the_service_recovers_without_a_restart(proxy, make_app):
    # `proxy` first: it must outlive make_app, whose teardown empties the tables through it.
    through_proxy = make_url(POSTGRES_URL).set(host="127.0.0.1", port=proxy.port)
    app = make_app(SQLALCHEMY_DATABASE_URI=through_proxy.render_as_string(hide_password=False))
    client = app.test_client()
    assert client.get("/api/v1/books").status_code == 200
    assert_error(client.get("/api/v1/books/1"), 404, "NOT_FOUND")
    assert client.get("/health/ready").status_code == 200

    proxy.stop()
    try:
        response = client.get("/api/v1/books")
        error = assert_error(response, 503, "SERVICE_UNAVAILABLE")
        assert response.headers["Retry-After"] == "1"  # DATABASE_RETRY_INTERVAL, rounded up
        assert "psycopg" not in error["message"] and "connection" not in error["message"].lower()
        # The one-book read runs on a raw pooled connection (PreparedRead): the same 503.
        error = assert_error(client.get("/api/v1/books/1"), 503, "SERVICE_UNAVAILABLE")
        assert "psycopg" not in error["message"]
        assert_error(client.get("/health/ready"), 503, "SERVICE_UNAVAILABLE")
        register = client.post(
            "/api/v1/auth/register",
            json={"name": "Ann", "email": "ann@example.com", "password": PASSWORD},
        )
        assert_error(register, 503, "SERVICE_UNAVAILABLE")
        assert client.get("/health").status_code == 200  # liveness does not need the database
    finally:
        proxy.start()

    assert client.get("/health/ready").status_code == 200
    response = client.get("/api/v1/books")
    assert response.status_code == 200 and response.get_json()["data"] == []
    assert_error(client.get("/api/v1/books/1"), 404, "NOT_FOUND")


def test_a_database_restart_between_requests_is_invisible(proxy, make_app):
    """Pooled connections killed by a restart are detected before use (pool_pre_ping)."""
    through_proxy = make_url(POSTGRES_URL).set(host="127.0.0.1", port=proxy.port)
    app = make_app(SQLALCHEMY_DATABASE_URI=through_proxy.render_as_string(hide_password=False))
    client = app.test_client()
    assert client.get("/api/v1/books").status_code == 200  # a connection now sits in the pool
    proxy.stop()
    proxy.start()
    assert_error(client.get("/api/v1/books/1"), 404, "NOT_FOUND")  # a raw pooled connection
    assert client.get("/api/v1/books").status_code == 200
