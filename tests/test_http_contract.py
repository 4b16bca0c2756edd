"""SPEC 2: the envelopes, the request id, and a JSON error for every way a request can fail."""

import pytest

from tests.support import PASSWORD, assert_error

BOOKS = "/api/v1/books"


def test_success_envelope_carries_the_request_id(client):
    response = client.get(BOOKS)
    body = response.get_json()
    assert set(body) == {"data", "meta"}
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    assert len(response.headers["X-Request-ID"]) == 32


def test_a_safe_client_request_id_is_echoed(client):
    response = client.get(BOOKS, headers={"X-Request-ID": "mobile-1234.abc:7"})
    assert response.headers["X-Request-ID"] == "mobile-1234.abc:7"
    assert response.get_json()["meta"]["request_id"] == "mobile-1234.abc:7"


@pytest.mark.parametrize("given", ["x" * 129, "has space", "<script>", "ünïcode", ""])
def test_an_unsafe_client_request_id_is_replaced(client, given):
    response = client.get(BOOKS, headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] != given
    assert len(response.headers["X-Request-ID"]) == 32


def test_errors_echo_the_request_id_too(client):
    response = client.get("/nowhere", headers={"X-Request-ID": "abc-123"})
    error = assert_error(response, 404, "NOT_FOUND")
    assert response.get_json()["meta"]["request_id"] == "abc-123"
    assert error["details"] == {}


@pytest.mark.parametrize(
    "path",
    [
        "/nowhere",
        "/api/v1/nowhere",
        "/api/v1/books/abc",
        "/api/v1/books/-1",
        "/api/v1/books/0",
        "/api/v1/books/99999999999999999999",
        "/api/v1/users/1.5",
        "/api/v2/books",
    ],
)
def test_unknown_routes_are_json_404(client, path):
    assert_error(client.get(path), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("delete", BOOKS, {"GET", "HEAD", "OPTIONS", "POST"}),
        ("get", "/api/v1/auth/login", {"OPTIONS", "POST"}),
        ("put", "/api/v1/auth/me", {"GET", "HEAD", "OPTIONS"}),
        ("post", "/health", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_wrong_method_is_405_with_allow(client, method, path, allowed):
    response = getattr(client, method)(path)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert set(response.headers["Allow"].split(", ")) == allowed


def test_accept_header_never_changes_the_media_type(client):
    response = client.get(BOOKS, headers={"Accept": "text/plain"})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json()["data"] == []


# Hostile bodies: each is a 4xx in the error envelope, never a 500 or HTML.
REGISTER = "/api/v1/auth/register"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"{", "truncated"),
        (b"{'a': 1}", "single quotes"),
        (b'{"name": NaN}', "NaN"),
        (b'{"name": Infinity}', "Infinity"),
        (b'{"name": -Infinity}', "-Infinity"),
        (b'{"name": "a", "name": "b"}', "duplicate keys"),
        (b'{"name": "\xff\xfe"}', "invalid UTF-8"),
        (b"[" * 50_000 + b"]" * 50_000, "nesting thousands deep"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "objects nested thousands deep"),
        (b"1" * 5000, "integer too long to parse"),
    ],
)
def test_malformed_json_is_400(client, raw, why):
    response = client.post(REGISTER, data=raw, content_type="application/json")
    error = assert_error(response, 400, "BAD_REQUEST")
    assert "JSON" in error["message"], why


@pytest.mark.parametrize("raw", [b"[]", b'[{"name": "a"}]', b"1", b'"text"', b"null", b"true"])
def test_a_body_that_is_not_an_object_is_400(client, raw):
    error = assert_error(
        client.post(REGISTER, data=raw, content_type="application/json"), 400, "BAD_REQUEST"
    )
    assert "object" in error["message"]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_without_json_content_type_is_415(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(REGISTER, data=b'{"name": "a"}', headers=headers)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_json_with_charset_is_accepted(client):
    response = client.post(
        REGISTER,
        data=f'{{"name": "A", "email": "a@example.com", "password": "{PASSWORD}"}}'.encode(),
        content_type="application/json; charset=utf-8",
    )
    assert response.status_code == 201


def test_an_oversized_body_is_413(make_app):
    client = make_app(MAX_CONTENT_LENGTH=1024).test_client()
    response = client.post(
        REGISTER, data=b'{"name": "' + b"a" * 2000 + b'"}', content_type="application/json"
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_the_default_limit_is_one_mebibyte(client):
    big = b'{"name": "' + b"a" * (1024 * 1024) + b'"}'
    assert_error(
        client.post(REGISTER, data=big, content_type="application/json"), 413, "PAYLOAD_TOO_LARGE"
    )


def test_nul_and_lone_surrogates_in_strings_are_422_not_500(client):
    for name in ["bad\\u0000name", "\\ud800"]:
        raw = '{"name": "' + name + f'", "email": "x@example.com", "password": "{PASSWORD}"}}'
        response = client.post(REGISTER, data=raw.encode(), content_type="application/json")
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert set(error["details"]) == {"name"}


def test_a_bug_is_a_generic_500_without_a_traceback(make_app, caplog):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals: SELECT password_hash FROM users")

    response = app.test_client().get("/boom")
    error = assert_error(response, 500, "INTERNAL_ERROR")
    text = response.get_data(as_text=True)
    assert "secret" not in text and "Traceback" not in text and "SELECT" not in text
    assert error["message"] == "An unexpected error occurred."
    assert any("secret internals" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


def test_a_bug_inside_a_resource_is_a_json_500(make_app, monkeypatch):
    """Flask-RESTful routes go through the same handlers as plain Flask routes."""
    from bookshelf.services import books

    def broken(**kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(books, "search_books", broken)
    app = make_app()
    assert_error(app.test_client().get(BOOKS), 500, "INTERNAL_ERROR")
