"""SPEC 5: security headers, CORS, proxies and the JSON request log."""

import json

import pytest

from bookshelf.config import ConfigError
from bookshelf.extensions import db
from bookshelf.models import Book
from bookshelf.services.auth import create_user
from tests.support import PASSWORD, Auth, assert_error

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def assert_security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("get", "/api/v1/books", 200),
        ("get", "/health", 200),
        ("get", "/nowhere", 404),
        ("delete", "/api/v1/books", 405),
        ("get", "/api/v1/auth/me", 401),
        ("post", "/api/v1/auth/login", 422),
    ],
)
def test_security_headers_are_on_every_response(client, method, path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert_security_headers(response)
    assert "Strict-Transport-Security" not in response.headers


def test_security_headers_are_on_500s_too(make_app):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("bug")

    response = app.test_client().get("/boom")
    assert_error(response, 500, "INTERNAL_ERROR")
    assert_security_headers(response)


def test_auth_responses_are_not_stored(client, auth):
    user = auth.register()
    responses = [
        client.post("/api/v1/auth/login", json={"email": user["email"], "password": "nope!!!!"}),
        client.post(
            "/api/v1/auth/login", json={"email": user["email"], "password": "correct horse battery"}
        ),
        client.get("/api/v1/auth/me"),
    ]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/api/v1/books").headers.get("Cache-Control", "")


def test_hsts_when_enabled(make_app):
    response = make_app(HSTS_ENABLED=True).test_client().get("/nowhere")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


def test_proxy_headers_count_only_when_trusted(make_app, capsys):
    forwarded = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com",
    }
    for proxies, address, origin in [
        (0, "127.0.0.1", "http://localhost"),
        (1, "203.0.113.7", "https://api.example.com"),
    ]:
        app = make_app(TRUSTED_PROXIES=proxies, ALLOWED_HOSTS=["localhost", "api.example.com"])
        with app.app_context():
            owner = create_user(name="O", email=f"o{proxies}@example.com", password=PASSWORD)
            db.session.add(Book(title="T", author="A", owner_id=owner.id))
            db.session.commit()
        capsys.readouterr()
        response = app.test_client().get("/api/v1/books", headers=forwarded)
        assert response.headers["Link"].startswith(f"<{origin}/api/v1/books?")
        assert log_lines(capsys)[-1]["remote_addr"] == address


def test_links_come_from_the_public_url_whatever_the_host(make_app):
    app = make_app(PUBLIC_URL="https://api.example.com", ALLOWED_HOSTS=["localhost"])
    with app.app_context():
        owner = create_user(name="O", email="o@example.com", password=PASSWORD)
        db.session.add_all([Book(title=f"T{i}", author="A", owner_id=owner.id) for i in range(3)])
        db.session.commit()
    client = app.test_client()
    response = client.get("/api/v1/books?per_page=1")
    assert response.headers["Link"].startswith("<https://api.example.com/api/v1/books?")
    assert "localhost" not in response.headers["Link"]
    # PUBLIC_URL's own host is answered; any other is 400 in the envelope.
    assert client.get("/api/v1/books", headers={"Host": "api.example.com"}).status_code == 200
    response = client.get("/api/v1/books", headers={"Host": "evil.example"})
    assert_error(response, 400, "BAD_REQUEST")
    assert "evil.example" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("API.Example.com", True),  # names are case-insensitive
        ("api.example.com:8443", True),  # an entry without a port allows any port
        ("eu.example.org", True),  # `.example.org` allows its subdomains
        ("example.org", True),  # and itself
        ("example.org.evil.test", False),
        ("pinned.example.com:443", True),
        ("pinned.example.com:6666", False),  # an entry with a port allows that port only
        ("[::1]:8000", True),
        ("api.example.com.", False),
        ("", False),
    ],
)
def test_allowed_hosts_match_names_and_ports(make_app, host, allowed):
    app = make_app(
        ALLOWED_HOSTS=["api.example.com", ".example.org", "pinned.example.com:443", "[::1]"]
    )
    response = app.test_client().get("/api/v1/books", headers={"Host": host})
    if allowed:
        assert response.status_code == 200
    else:
        assert_error(response, 400, "BAD_REQUEST")


def test_a_malformed_public_url_stops_any_start(make_app):
    with pytest.raises(ConfigError, match="PUBLIC_URL must be like"):
        make_app(PUBLIC_URL="api.example.com")


def test_a_star_in_allowed_hosts_accepts_any_host(make_app):
    client = make_app(ALLOWED_HOSTS=["*"]).test_client()
    assert client.get("/api/v1/books", headers={"Host": "anything.example"}).status_code == 200


# CORS

APP_ORIGIN = "https://app.example.com"


@pytest.fixture
def cors_client(make_app):
    return make_app(CORS_ORIGINS=[APP_ORIGIN]).test_client()


def test_a_preflight_from_an_allowed_origin_succeeds(cors_client):
    response = cors_client.options(
        "/api/v1/books",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_responses_to_an_allowed_origin_expose_the_useful_headers(cors_client):
    response = cors_client.get("/api/v1/books", headers={"Origin": APP_ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"ETag", "Link", "Location", "Retry-After", "X-Request-ID"} <= exposed


def test_errors_carry_cors_headers_so_browsers_can_read_them(cors_client):
    response = cors_client.get("/api/v1/auth/me", headers={"Origin": APP_ORIGIN})
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.com",
        "https://app.example.com.evil.com",
        "http://app.example.com",
        "https://app.example.co",
    ],
)
def test_other_origins_get_no_cors_headers(cors_client, origin):
    response = cors_client.options(
        "/api/v1/books", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    response = cors_client.get("/api/v1/books", headers={"Origin": origin})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_no_origin_is_allowed_by_default_in_production(make_app):
    secret = "s" * 40
    app = make_app(
        APP_ENV="production", SECRET_KEY=secret, JWT_SECRET_KEY=secret, ALLOWED_HOSTS=["localhost"]
    )
    response = app.test_client().get("/api/v1/books", headers={"Origin": APP_ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_wildcard_never_comes_with_credentials(make_app):
    client = make_app(CORS_ORIGINS=["*"]).test_client()
    response = client.get("/api/v1/books", headers={"Origin": "https://anywhere.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("origins", [[APP_ORIGIN], [APP_ORIGIN, "https://b.example.com"], ["*"]])
@pytest.mark.parametrize("method", ["get", "options"])
def test_a_request_without_origin_gets_no_cors_headers(make_app, origins, method):
    """Not a browser's cross-origin call: nothing to allow, whatever CORS_ORIGINS says."""
    response = getattr(make_app(CORS_ORIGINS=origins).test_client(), method)("/api/v1/books")
    assert not [name for name, _ in response.headers if name.startswith("Access-Control-")]
    assert "Origin" in response.vary


@pytest.mark.parametrize(
    ("path", "origin"),
    [
        ("/api/v1/books", APP_ORIGIN),
        ("/api/v1/books", "https://evil.example.com"),
        ("/api/v1/books", None),
        ("/api/v1/nowhere", APP_ORIGIN),
        ("/api/v1/auth/me", APP_ORIGIN),
    ],
)
def test_api_answers_vary_on_origin(cors_client, path, origin):
    """The answer depends on Origin: a shared cache must not give one origin's answer to
    another, or an answer without CORS headers to a browser."""
    headers = {"Origin": origin} if origin else {}
    assert "Origin" in cors_client.get(path, headers=headers).vary


def test_routes_without_cors_do_not_vary_on_origin(cors_client, make_app):
    assert "Origin" not in cors_client.get("/health", headers={"Origin": APP_ORIGIN}).vary
    no_cors = make_app(CORS_ORIGINS=[]).test_client()
    response = no_cors.get("/api/v1/books", headers={"Origin": APP_ORIGIN})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Origin" not in response.vary


def test_a_not_modified_answer_varies_on_origin_too(cors_client):
    _, headers = Auth(cors_client.application, cors_client).user()
    book = cors_client.post("/api/v1/books", json={"title": "Dune", "author": "F"}, headers=headers)
    url = book.headers["Location"]
    etag = cors_client.get(url, headers={"Origin": APP_ORIGIN}).headers["ETag"]
    response = cors_client.get(url, headers={"Origin": APP_ORIGIN, "If-None-Match": etag})
    assert response.status_code == 304
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in response.vary


@pytest.mark.parametrize("origin", ["https://*.example.com", "app.example.com", "https://a.com/"])
def test_cors_origins_must_be_exact(make_app, origin):
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        make_app(CORS_ORIGINS=[origin])


# The request log


def log_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]


def test_one_json_line_per_request(client, auth, capsys):
    _, headers = auth.user()
    capsys.readouterr()
    response = client.get("/api/v1/auth/me", headers=headers | {"X-Request-ID": "trace-42"})
    [line] = [entry for entry in log_lines(capsys) if entry.get("message") == "request"]
    assert line["request_id"] == "trace-42" == response.headers["X-Request-ID"]
    assert line["level"] == "INFO"
    assert line["method"] == "GET" and line["path"] == "/api/v1/auth/me"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["user_id"] == response.get_json()["data"]["id"]
    assert line["time"].endswith("Z")


def test_anonymous_requests_log_no_user(client, capsys):
    client.get("/nowhere")
    [line] = log_lines(capsys)
    assert line["status"] == 404 and line["user_id"] is None


def test_a_500_logs_its_traceback_with_the_request_id_and_hides_it(make_app, capsys):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("the secret cause")

    capsys.readouterr()
    response = app.test_client().get("/boom", headers={"X-Request-ID": "req-500"})
    assert "secret" not in response.get_data(as_text=True)
    lines = log_lines(capsys)
    [failure] = [line for line in lines if line.get("exc_info")]
    assert failure["request_id"] == "req-500" and failure["level"] == "ERROR"
    assert "RuntimeError: the secret cause" in failure["exc_info"]
    [request_line] = [line for line in lines if line["message"] == "request"]
    assert request_line["status"] == 500 and request_line["level"] == "ERROR"


def test_log_level_is_honoured(make_app, capsys):
    client = make_app(LOG_LEVEL="WARNING").test_client()
    capsys.readouterr()
    client.get("/api/v1/books")
    assert log_lines(capsys) == []
