"""GET /metrics: Prometheus' text format, read back with prometheus-client's own parser; on only
with METRICS_TOKEN, and only for its bearer."""

import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bookshelf.config import ConfigError, from_environment
from bookshelf.extensions import db
from tests.support import PASSWORD, Auth, assert_error, bearer

TOKEN = "metrics-token-0123456789abcdef"
SCRAPE = {"Authorization": f"Bearer {TOKEN}"}
BOOK = "/api/v1/books/<id:book_id>"


@pytest.fixture
def metrics_app(make_app):
    return make_app(METRICS_TOKEN=TOKEN)


def scrape(client) -> dict:
    """The scrape, parsed: {family name: family}."""
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    assert "version=0.0.4" in response.content_type
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def value(families, sample_name, **labels) -> float:
    family = families[sample_name.removesuffix("_total").removesuffix("_count")]
    matches = [
        s.value
        for s in family.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(matches) == 1, (sample_name, labels, family.samples)
    return matches[0]


def routes(families) -> set[str]:
    return {s.labels["route"] for s in families["bookshelf_http_requests"].samples}


def test_no_token_no_metrics(client):
    assert_error(client.get("/metrics"), 404, "NOT_FOUND")
    assert_error(client.get("/metrics", headers=SCRAPE), 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
def test_only_the_token_may_scrape(metrics_app, headers):
    response = metrics_app.test_client().get("/metrics", headers=headers)
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_short_token_stops_the_start(make_app):
    with pytest.raises(ConfigError, match="METRICS_TOKEN is shorter than 16"):
        make_app(METRICS_TOKEN="short")


def test_the_token_is_read_from_the_environment():
    assert from_environment({"METRICS_TOKEN": TOKEN})["METRICS_TOKEN"] == TOKEN


def test_requests_by_method_route_template_and_status(metrics_app):
    client = metrics_app.test_client()
    client.get("/api/v1/books")
    for book_id in (1, 2, 3):  # three paths, one route: the template is the label
        assert client.get(f"/api/v1/books/{book_id}").status_code == 404
    client.get("/api/v1/books/abc")  # no route matches a non-numeric id
    client.get(f"/nowhere/{time.time()}")
    client.delete("/api/v1/books")  # 405: the method matches no rule
    client.open("/api/v1/books", method="BREW")
    families = scrape(client)

    requests = families["bookshelf_http_requests"]
    assert requests.type == "counter"
    assert value(families, "bookshelf_http_requests_total", route="/api/v1/books", status="200")
    assert value(families, "bookshelf_http_requests_total", route=BOOK, status="404") == 3
    assert value(families, "bookshelf_http_requests_total", route="unmatched", status="404") == 2
    assert value(families, "bookshelf_http_requests_total", method="DELETE", status="405") == 1
    assert value(families, "bookshelf_http_requests_total", method="other", status="405") == 1
    assert routes(families) == {"/api/v1/books", BOOK, "unmatched"}

    latency = families["bookshelf_http_request_duration_seconds"]
    assert latency.type == "histogram"
    assert value(families, "bookshelf_http_request_duration_seconds_count", route=BOOK) == 3
    buckets = [
        s for s in latency.samples if s.name.endswith("_bucket") and s.labels["route"] == BOOK
    ]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 3
    assert {"method", "route", "le"} == set(buckets[0].labels)


def test_the_families_an_operator_needs_are_there(metrics_app):
    families = scrape(metrics_app.test_client())
    assert {
        "bookshelf_http_requests",
        "bookshelf_http_request_duration_seconds",
        "bookshelf_rate_limit_rejections",
        "bookshelf_auth_events",
        "bookshelf_db_pool_size",
        "bookshelf_db_pool_connections_in_use",
        "bookshelf_db_pool_connections_idle",
        "bookshelf_db_pool_overflow",
        "bookshelf_db_pool_waits",
        "bookshelf_db_pool_timeouts",
        "process_resident_memory_bytes",
        "python_info",
    } <= set(families)
    # Known label values are there from the start, at 0.
    assert value(families, "bookshelf_auth_events_total", event="login_failed") == 0
    assert value(families, "bookshelf_rate_limit_rejections_total", limit="global") == 0


def test_scrapes_are_not_counted_nor_rate_limited_and_answer_any_host(make_app):
    app = make_app(METRICS_TOKEN=TOKEN, GLOBAL_RATE_LIMIT="2 per minute")
    client = app.test_client()
    for _ in range(5):
        response = client.get("/metrics", headers=SCRAPE | {"Host": "10.1.2.3:8000"})
        assert response.status_code == 200
        assert "X-RateLimit-Limit" not in response.headers
    assert [client.get("/api/v1/books").status_code for _ in range(3)] == [200, 200, 429]
    families = scrape(client)
    assert routes(families) == {"/api/v1/books"}
    assert value(families, "bookshelf_http_requests_total", status="429") == 1
    assert value(families, "bookshelf_rate_limit_rejections_total", limit="global") == 1


def test_failed_login_rejections_are_counted_by_limit(make_app):
    app = make_app(METRICS_TOKEN=TOKEN, LOGIN_FAILURE_LIMIT_PER_EMAIL="1 per minute")
    client = app.test_client()
    wrong = {"email": "nobody@example.com", "password": "not the password"}
    assert client.post("/api/v1/auth/login", json=wrong).status_code == 401
    assert client.post("/api/v1/auth/login", json=wrong).status_code == 429
    families = scrape(client)
    assert value(families, "bookshelf_rate_limit_rejections_total", limit="login-failures-email")
    assert value(families, "bookshelf_auth_events_total", event="login_failed") == 1


def test_auth_events(make_app):
    app = make_app(METRICS_TOKEN=TOKEN, REFRESH_REUSE_GRACE=0)
    client = app.test_client()
    auth = Auth(app, client)
    user = auth.register()
    first = auth.login(user["email"])
    second = auth.login(user["email"])
    wrong = {"email": user["email"], "password": PASSWORD + "!"}
    assert client.post("/api/v1/auth/login", json=wrong).status_code == 401
    refreshed = client.post("/api/v1/auth/refresh", headers=bearer(first["refresh_token"]))
    assert refreshed.status_code == 200
    time.sleep(1.1)  # past a grace of 0 s, to the second
    reused = client.post("/api/v1/auth/refresh", headers=bearer(first["refresh_token"]))
    assert reused.status_code == 401
    logout = client.post("/api/v1/auth/logout", headers=bearer(second["access_token"]))
    assert logout.status_code == 204
    families = scrape(client)
    assert {
        event: value(families, "bookshelf_auth_events_total", event=event)
        for event in ("login_succeeded", "login_failed", "refresh", "refresh_reused", "logout")
    } == {"login_succeeded": 2, "login_failed": 1, "refresh": 1, "refresh_reused": 1, "logout": 1}


def test_pool_gauges_waits_and_timeouts(make_app):
    """One pooled connection, held by the test: a request waits for it and times out (503); a
    second one waits and gets it when it is given back. Both are waits; one is a timeout."""
    app = make_app(
        METRICS_TOKEN=TOKEN,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0, "pool_timeout": 1},
    )
    client = app.test_client()
    with app.app_context():
        db.engine.dispose()  # a new pool: still counted
        held = db.engine.connect()
    families = scrape(client)
    assert value(families, "bookshelf_db_pool_size") == 1
    assert value(families, "bookshelf_db_pool_connections_in_use") == 1
    assert value(families, "bookshelf_db_pool_connections_idle") == 0
    assert value(families, "bookshelf_db_pool_overflow") == 0
    assert_error(client.get("/api/v1/books"), 503, "SERVICE_UNAVAILABLE")

    threading.Timer(0.3, held.close).start()
    assert client.get("/api/v1/books").status_code == 200
    families = scrape(client)
    assert value(families, "bookshelf_db_pool_waits_total") == 2
    assert value(families, "bookshelf_db_pool_timeouts_total") == 1
    assert value(families, "bookshelf_db_pool_connections_in_use") == 0
