"""Rate limits, with the `limits` library: a generous limit per client address on every API
route, and a tight one on failed logins, per address and per email, that successful logins do not
count against.

Counters live in RATELIMIT_STORAGE_URI: memory (per process) or Redis (shared by processes). If
the storage fails, or does not answer within RATELIMIT_STORAGE_TIMEOUT, requests go through: an
outage of the limiter must not take the API down. The client address is `request.remote_addr`,
which TRUSTED_PROXIES makes the forwarded one.
"""

import logging
import math
import threading
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
    """`limits`' memory storage (5.8) for fixed windows, exact under threads, with expired
    counters swept inline once a minute.

    The stock `incr` reads the new count after releasing its per-key lock, and `get` drops the
    per-key lock of a key with no live count, so two threads counting a new key may hold two
    locks at once: concurrent hits could lose a count or read each other's. Here one lock covers
    every count and read.

    The stock class also drops expired counters from a timer thread that it starts again whenever
    the last one has finished (10 ms): under load, about 100 new threads a second, each start a
    GIL hand-off on the request's path. Counters past their window are already ignored on read, so
    sweeping is only housekeeping and can wait.
    """

    SWEEP_EVERY_S = 60.0
    _next_sweep = 0.0

    def __init__(self, *args, **kwargs):
        self._counting = threading.RLock()  # before the stock __init__, whose timer sweeps
        super().__init__(*args, **kwargs)

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        with self._counting:
            self._MemoryStorage__schedule_expiry()
            count = super().get(key) + amount  # the stock `get` drops a count past its window
            self.storage[key] = count
            if count == amount:  # the window starts (as in the stock class and in Redis)
                self.expirations[key] = time.time() + expiry
            return count

    def get(self, key: str) -> int:
        with self._counting:
            return super().get(key)

    def _MemoryStorage__expire_events(self) -> None:  # the stock sweep, under the lock
        with self._counting:
            super()._MemoryStorage__expire_events()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer start
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY_S
            self._MemoryStorage__expire_events()


def _storage(config):
    """The storage RATELIMIT_STORAGE_URI names; Redis with timeouts, its keys under a prefix."""
    uri = config["RATELIMIT_STORAGE_URI"]
    if uri.startswith("memory://"):
        return SweptMemoryStorage(uri, wrap_exceptions=True)
    if not uri.startswith(("redis", "valkey")):
        return storage_from_string(uri, wrap_exceptions=True)
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # redis-py waits for an answer forever by default. Options go to its client (redis 7.4).
    return storage_from_string(
        uri,
        wrap_exceptions=True,
        key_prefix=config["RATELIMIT_KEY_PREFIX"],
        socket_timeout=config["RATELIMIT_STORAGE_TIMEOUT"],
        socket_connect_timeout=config["RATELIMIT_STORAGE_CONNECT_TIMEOUT"],
        retry=Retry(NoBackoff(), 0),  # one wait per call, never several with back-off between
    )


def _fail_open(method):
    """A storage failure lets the request through: the call logs it and answers None. Then the
    storage is left alone for RATELIMIT_STORAGE_RETRY_INTERVAL (calls answer None at once), so
    that while it is down or hung, requests do not each wait out its timeout; the first call after
    that tries it again."""

    @wraps(method)
    def guarded(self, *args, **kwargs):
        if time.monotonic() < self.skip_until:
            return None
        try:
            return method(self, *args, **kwargs)
        except StorageError as exc:
            self.skip_until = time.monotonic() + self.retry_interval
            log.warning(
                "rate limit storage unavailable, not limiting for %g s: %s",
                self.retry_interval,
                exc,
            )
            return None

    return guarded


class RateLimits:
    """One app's limits and the counters' storage."""

    # A place given back this close to its window's end stays taken: Redis reports a window's end
    # to the nearest second, and a place given back into the next window would be one too many.
    GIVE_BACK_MARGIN_S = 1.0

    def __init__(self, app: Flask):
        config = app.config
        self.counter = FixedWindowRateLimiter(_storage(config))
        self.global_limit = parse(config["GLOBAL_RATE_LIMIT"])
        self.login_per_address = parse(config["LOGIN_FAILURE_LIMIT"])
        self.login_per_email = parse(config["LOGIN_FAILURE_LIMIT_PER_EMAIL"])
        self.retry_interval = config["RATELIMIT_STORAGE_RETRY_INTERVAL"]
        # Until when (time.monotonic) the storage is skipped. One float, read and written whole
        # by any thread: no lock needed.
        self.skip_until = 0.0

    @_fail_open
    def hit(self, limit: RateLimitItem, *key: str) -> tuple[bool, int, float] | None:
        """Count a request: (allowed, remaining, when the window resets as a Unix time)."""
        allowed = self.counter.hit(limit, *key)
        reset, remaining = self.counter.get_window_stats(limit, *key)
        return allowed, remaining, reset

    @_fail_open
    def take(self, limit: RateLimitItem, *key: str) -> tuple[bool, float] | None:
        """Take a place in `key`'s limit before the outcome it limits is known, in one atomic
        step: (whether there was one, when the window resets as a Unix time). An attempt refused
        stays counted, against a limit that is full anyway."""
        taken = self.counter.hit(limit, *key)
        return taken, self.counter.storage.get_expiry(limit.key_for(*key))

    @_fail_open
    def give_back(self, limit: RateLimitItem, *key: str, reset: float) -> None:
        """Give back a place taken in the window that resets at `reset`, unless that window has
        ended (or is about to): the next one owes nothing."""
        if time.time() < reset - self.GIVE_BACK_MARGIN_S:
            self.counter.storage.incr(limit.key_for(*key), limit.get_expiry(), amount=-1)


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
    """Around the login view: each attempt takes a place in the address's and the email's limits
    of failures before the password is checked, atomically, so that simultaneous attempts cannot
    overrun them. A full limit is 429 and takes nothing from the other. An attempt that does not
    fail with 401 (a successful login, a 422) gives its places back: only failures count."""

    @wraps(view)
    def limited(*args, **kwargs):
        limits = _limits()
        taken = []
        for limit, *key in (
            (limits.login_per_address, "login-failures-address", _address()),
            (limits.login_per_email, "login-failures-email", _email_key()),
        ):
            outcome = limits.take(limit, *key)
            if outcome is None:
                continue  # the storage is unavailable: not limited
            free, reset = outcome
            if not free:
                _give_back(limits, taken)
                raise RateLimited(_seconds_until(reset))
            taken.append((limit, key, reset))
        failed = False
        try:
            return view(*args, **kwargs)
        except InvalidCredentials:
            failed = True
            raise
        finally:
            if not failed:
                _give_back(limits, taken)

    return limited


def _give_back(limits: RateLimits, taken: list) -> None:
    for limit, key, reset in taken:
        limits.give_back(limit, *key, reset=reset)


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
