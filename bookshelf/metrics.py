"""Prometheus metrics of this process, with prometheus-client, at GET /metrics.

On only when METRICS_TOKEN is set (else /metrics is 404 and requests pay nothing); a scrape
must send it as `Authorization: Bearer <token>`. Each process counts its own requests: scrape
every process (pod), and add them up in PromQL.

Requests are labelled by the route's template (`/api/v1/books/<id:book_id>`), never the path a
client sent, so that the number of series stays bounded; requests that match no route are one
label value, UNMATCHED. Scrapes of /metrics itself are not counted.
"""

import hmac
import time
from collections.abc import Callable

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import QueuePool

from .config import ConfigError
from .errors import Unauthorized

KEY = "bookshelf.metrics"
MIN_TOKEN_LENGTH = 16
UNMATCHED = "unmatched"  # the route label of requests no route matched (404, 405, redirects)
AUTH_EVENTS = (
    "login_succeeded",
    "login_failed",
    "refresh",
    "refresh_reused",
    "logout",
    "api_key_created",
    "api_key_revoked",
    "api_key_refused",
)
# bookshelf.ratelimit's limits: `global`, then the failed-login limits by their counters' names.
LIMITS = (
    "global",
    "login-failures-address",
    "login-failures-email",
    "login-failures-device",
    "api-key",
)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds; from a one-book read (about a millisecond) to a request that waited out timeouts.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

metrics = Blueprint("metrics", __name__)
SCRAPE_ENDPOINT = "metrics.scrape"
STARTED = "bookshelf.metrics.started"  # the request's environ key: when its handling started


class Metrics:
    """One app's metrics, in a registry of its own (tests build many apps in one process)."""

    def __init__(self, engine: Engine):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "bookshelf_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "bookshelf_http_request_duration_seconds",
            "Time from the start of a request's handling to its response, by method and route.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rate_limited = Counter(
            "bookshelf_rate_limit_rejections",
            "Requests refused with 429, by the limit that refused them.",
            ["limit"],
            registry=registry,
        )
        self.auth_events = Counter(
            "bookshelf_auth_events",
            "Authentication events: login_succeeded, login_failed, refresh, refresh_reused "
            "(a spent refresh token presented after the grace: its session is ended), logout, "
            "api_key_created, api_key_revoked, api_key_refused (a malformed, unknown, revoked "
            "or expired API key: 401).",
            ["event"],
            registry=registry,
        )
        self.pool_waits = Counter(
            "bookshelf_db_pool_waits",
            "Database connections asked for when none was free: the request waited.",
            registry=registry,
        )
        self.pool_timeouts = Counter(
            "bookshelf_db_pool_timeouts",
            "Waits for a database connection that ran out (DATABASE_POOL_TIMEOUT): a 503.",
            registry=registry,
        )
        # Known label values start at 0, so that rate() and increase() see their first event.
        for limit in LIMITS:
            self.rate_limited.labels(limit)
        for name in AUTH_EVENTS:
            self.auth_events.labels(name)
        registry.register(PoolCollector(engine))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        # (method, route, status) -> the children to count into: labels() takes a lock and
        # checks its values on every call; a dict lookup is a fraction of that.
        self._children: dict[tuple[str, str, int], tuple] = {}
        count_pool_waits(engine, self)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children.setdefault(
                key,
                (
                    self.requests.labels(method, route, str(status)),
                    self.latency.labels(method, route),
                ),
            )
        children[0].inc()
        children[1].observe(seconds)


class PoolCollector:
    """The database pool's state, read from the engine's pool at each scrape."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self):
        pool = self.engine.pool  # a new object after engine.dispose(): read it each time
        if not isinstance(pool, QueuePool):  # SQLite in memory: one connection per thread
            return
        gauges = {
            "bookshelf_db_pool_size": ("Connections the pool keeps open.", pool.size()),
            "bookshelf_db_pool_connections_in_use": (
                "Connections checked out of the pool now.",
                pool.checkedout(),
            ),
            "bookshelf_db_pool_connections_idle": (
                "Open connections in the pool, free.",
                pool.checkedin(),
            ),
            # QueuePool counts overflow from -pool_size up: below 0, the pool is not full yet.
            "bookshelf_db_pool_overflow": (
                "Connections open beyond the pool's size (DATABASE_MAX_OVERFLOW).",
                max(0, pool.overflow()),
            ),
        }
        for name, (documentation, value) in gauges.items():
            yield GaugeMetricFamily(name, documentation, value=value)


def count_pool_waits(engine: Engine, metrics_: Metrics) -> None:
    """Count the checkouts that find the pool exhausted (they wait for a connection) and the
    waits that time out, by wrapping the pool's `_do_get`, the method QueuePool subclasses
    implement (SQLAlchemy 2.1, whose `_pool`, `_overflow` and `_max_overflow` it reads: a
    checkout waits when no connection is idle and no overflow is left). engine.dispose() makes
    a new pool: it is wrapped again. tests/test_metrics.py fails if the counts stop matching."""

    def wrap(pool) -> None:
        if not isinstance(pool, QueuePool):
            return
        get = pool._do_get

        def counted_get():
            if pool._pool.empty() and -1 < pool._max_overflow <= pool._overflow:
                metrics_.pool_waits.inc()
            try:
                return get()
            except PoolTimeout:
                metrics_.pool_timeouts.inc()
                raise

        pool._do_get = counted_get

    wrap(engine.pool)
    event.listen(engine, "engine_disposed", lambda engine: wrap(engine.pool))


def init_metrics(app: Flask, engine: Engine) -> None:
    """With METRICS_TOKEN set: count every request and serve /metrics."""
    token = app.config["METRICS_TOKEN"]
    if not token:
        return
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"METRICS_TOKEN is shorter than {MIN_TOKEN_LENGTH} characters")
    # No `_created` series beside each counter and histogram: they double the series scraped,
    # and Prometheus' text format has no use for them. (A process-wide switch.)
    disable_created_metrics()
    app.extensions[KEY] = state = Metrics(engine)
    app.before_request(start_clock)
    app.after_request(count_request(state))
    app.register_blueprint(metrics)


def start_clock() -> None:
    request.environ[STARTED] = time.perf_counter()


def count_request(state: Metrics) -> Callable[[Response], Response]:
    def count(response: Response) -> Response:
        # Each request pays this: one proxy lookup, no `request.blueprint` (it splits a string).
        req = request._get_current_object()
        rule = req.url_rule
        if rule is not None and rule.endpoint == SCRAPE_ENDPOINT:
            return response
        started = req.environ.get(STARTED)
        method = req.method
        state.observe(
            method if method in METHODS else "other",
            rule.rule if rule is not None else UNMATCHED,
            response.status_code,
            time.perf_counter() - started if started is not None else 0.0,
        )
        return response

    return count


@metrics.get("/metrics")
def scrape():
    """The metrics, for a scraper that sends METRICS_TOKEN as a bearer token."""
    expected = current_app.config["METRICS_TOKEN"].encode()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("Send METRICS_TOKEN as a bearer token.")
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encoder(current_app.extensions[KEY].registry), content_type=content_type)


def count_rate_limited(limit: str) -> None:
    """A request refused with 429 by `limit` (`global`, `login-failures-address`, ...)."""
    state = current_app.extensions.get(KEY)
    if state is not None:
        state.rate_limited.labels(limit).inc()


def count_auth_event(event_: str) -> None:
    """An authentication event (see Metrics.auth_events)."""
    state = current_app.extensions.get(KEY)
    if state is not None:
        state.auth_events.labels(event_).inc()
