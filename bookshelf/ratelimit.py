"""Rate limits, with the `limits` library: a generous limit per client address on every API
route, and a tight one on failed logins, per address and per email, that successful logins do not
count against.

Counters live in RATELIMIT_STORAGE_URI: memory (per process) or Redis (shared by processes). If
the storage is unreachable, requests go through: an outage of the limiter must not take the API
down. The client address is `request.remote_addr`, which TRUSTED_PROXIES makes the forwarded one.
"""

import logging
import math
import time
from functools import wraps

from flask import Flask, current_app, g, request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from .errors import APIError, InvalidCredentials
from .http import json_body

log = logging.getLogger("bookshelf.ratelimit")

EXEMPT_BLUEPRINTS = frozenset({"health", "docs"})  # load balancers probe often; static pages


class RateLimited(APIError):
    status, code, message = 429, "RATE_LIMITED", "Too many requests; retry later."

    def __init__(self, retry_after: int, message=None):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class SweptMemoryStorage(MemoryStorage):
    """`limits`' memory storage, with expired counters swept inline once a minute.

    The stock class drops expired counters from a timer thread that it starts again whenever the
    last one has finished (10 ms): under load, about 100 new threads a second, each start a GIL
    hand-off on the request's path. Counters past their window are already ignored on read, so
    sweeping is only housekeeping and can wait.
    """

    SWEEP_EVERY_S = 60.0
    _next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer start
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY_S
            self._MemoryStorage__expire_events()


def _storage(uri: str):
    if uri.startswith("memory://"):
        return SweptMemoryStorage(uri, wrap_exceptions=True)
    return storage_from_string(uri, wrap_exceptions=True)


def _fail_open(method):
    """A storage outage lets the request through: the call logs it and answers None."""

    @wraps(method)
    def guarded(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except StorageError as exc:
            log.warning("rate limit storage unavailable, not limiting: %s", exc)
            return None

    return guarded


class RateLimits:
    """One app's limits and the counters' storage."""

    def __init__(self, app: Flask):
        config = app.config
        self.counter = FixedWindowRateLimiter(_storage(config["RATELIMIT_STORAGE_URI"]))
        self.global_limit = parse(config["GLOBAL_RATE_LIMIT"])
        self.login_per_address = parse(config["LOGIN_FAILURE_LIMIT"])
        self.login_per_email = parse(config["LOGIN_FAILURE_LIMIT_PER_EMAIL"])

    @_fail_open
    def hit(self, limit: RateLimitItem, *key: str) -> tuple[bool, int, float] | None:
        """Count a request: (allowed, remaining, when the window resets as a Unix time)."""
        allowed = self.counter.hit(limit, *key)
        reset, remaining = self.counter.get_window_stats(limit, *key)
        return allowed, remaining, reset

    @_fail_open
    def retry_after(self, limit: RateLimitItem, *key: str) -> int | None:
        """Seconds until `key` may try again, or None if it is under its limit."""
        if self.counter.test(limit, *key):
            return None
        reset, _ = self.counter.get_window_stats(limit, *key)
        return _seconds_until(reset)

    @_fail_open
    def count(self, limit: RateLimitItem, *key: str) -> None:
        self.counter.hit(limit, *key)


def _seconds_until(moment: float) -> int:
    return max(1, math.ceil(moment - time.time()))


def _address() -> str:
    return request.remote_addr or "unknown"


def _limits() -> RateLimits:
    return current_app.extensions["bookshelf.ratelimits"]


def init_rate_limits(app: Flask) -> None:
    app.extensions["bookshelf.ratelimits"] = RateLimits(app)
    app.before_request(check_global_limit)
    app.after_request(add_rate_limit_headers)


def check_global_limit() -> None:
    """Before every API request: count it against its address's limit; 429 once over."""
    if request.endpoint is None or request.blueprint in EXEMPT_BLUEPRINTS:
        return  # unknown routes are 404 anyway; probes and docs are free
    limits = _limits()
    counted = limits.hit(limits.global_limit, "global", _address())
    if counted is None:
        return
    allowed, remaining, reset = counted
    g.rate_limit_headers = {
        "X-RateLimit-Limit": str(limits.global_limit.amount),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(math.ceil(reset)),  # a Unix time, as Flask-Limiter sent it
    }
    if not allowed:
        raise RateLimited(_seconds_until(reset))


def limit_failed_logins(view):
    """Around the login view: 429 while the address or the email has too many recent failures;
    a failure (401) counts against both."""

    @wraps(view)
    def limited(*args, **kwargs):
        limits = _limits()
        keys = [
            (limits.login_per_address, "login-failures-address", _address()),
            (limits.login_per_email, "login-failures-email", _email_key()),
        ]
        waits = [limits.retry_after(*key) for key in keys]
        if any(waits):
            raise RateLimited(max(w for w in waits if w))
        try:
            return view(*args, **kwargs)
        except InvalidCredentials:
            for key in keys:
                limits.count(*key)
            raise

    return limited


def _email_key() -> str:
    email = json_body().get("email")
    if isinstance(email, str):
        return "email:" + email.strip().lower()
    return "address:" + _address()


def add_rate_limit_headers(response):
    """The global limit's state on every limited response, 429s included."""
    headers = g.get("rate_limit_headers")
    if headers:
        response.headers.update(headers)
    return response
