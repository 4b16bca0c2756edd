from bookshelf import create_app
from tests.support import assert_error

UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"


def test_liveness_needs_no_database():
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": UNREACHABLE})
    response = app.test_client().get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["X-Request-ID"]


def test_readiness_answers_when_the_database_does(client):
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok"}


def test_readiness_and_requests_are_503_when_the_database_is_unreachable():
    app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": UNREACHABLE})
    client = app.test_client()
    assert_error(client.get("/health/ready"), 503, "SERVICE_UNAVAILABLE")
    error = assert_error(client.get("/api/v1/books"), 503, "SERVICE_UNAVAILABLE")
    assert "psycopg" not in error["message"] and "127.0.0.1" not in error["message"]
