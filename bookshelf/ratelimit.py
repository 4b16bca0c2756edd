"""Rate limits, with the `limits` library: a generous limit per client address on every API
route, and a tight one on failed logins, per address and per email, that successful logins do not
count against. A login from a known device (with a device token of its email, see
bookshelf.auth.device_tokens) counts against that device's limit instead of the email's, which
every unknown device shares: others' failures cannot lock an owner out of her own devices.

A request with an API key also counts against the key's own limit (API_KEY_RATE_LIMIT), whatever
its address: a service spread over many addresses is limited as one.

Counters live in RATELIMIT_STORAGE_URI: memory (per process) or Redis (shared by processes). If
the storage fails, or does not answer within RATELIMIT_STORAGE_TIMEOUT, the global limit lets
requests through (an outage of the limiter must not take the API down), and failed logins are
counted in this process's memory until the storage is tried again: a password guesser is still
limited, per process. The client address is `request.remote_addr`, which TRUSTED_PROXIES makes
the forwarded one.
"""

import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import wraps
from typing import NamedTuple

from flask import Flask, current_app, g, request
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from . import metrics
from .auth import device_tokens
from .config import ConfigError
from .errors import APIError, InvalidCredentials
from .http import json_body

log = logging.getLogger("bookshelf.ratelimit")

EXEMPT_BLUEPRINTS = frozenset({"health", "docs", "metrics"})  # probes, static pages, scrapes


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

    def give_back(self, key: str) -> None:
        """Take one off `key`'s count if it has a live one above 0 (see `GIVE_BACK_SCRIPT`)."""
        with self._counting:
            if super().get(key) > 0:
                self.storage[key] -= 1

    def _MemoryStorage__expire_events(self) -> None:  # the stock sweep, under the lock
        with self._counting:
            super()._MemoryStorage__expire_events()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer start
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY_S
            self._MemoryStorage__expire_events()


# One off a count, only if it is above 0. A key that has vanished (its window ended; Redis
# restarted, evicted it or failed over) is left alone: the stock decrement would make it -1, which
# starts a window (`incr` starts one when the new count equals the amount) one failure too wide.
GIVE_BACK_SCRIPT = """
if tonumber(redis.call('get', KEYS[1]) or '0') > 0 then
    redis.call('decr', KEYS[1])
end
"""


def _storage(config):
    """The storage RATELIMIT_STORAGE_URI names; Redis with timeouts, its keys under a prefix."""
    uri = config["RATELIMIT_STORAGE_URI"]
    if uri.startswith("memory://"):
        return SweptMemoryStorage(uri, wrap_exceptions=True)
    if not uri.startswith(("redis", "valkey")):  # places are given back in memory or Redis only
        raise ConfigError(f"RATELIMIT_STORAGE_URI must be memory:// or a Redis URI, got {uri!r}")
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


def _give_back_one(storage):
    """`give_back(key)` for `storage`: GIVE_BACK_SCRIPT, run on `limits`' own Redis client (5.8)
    under its key prefix; storage errors raise StorageError, as the storage's own calls do."""
    if isinstance(storage, SweptMemoryStorage):
        return storage.give_back
    script = storage.get_connection().register_script(GIVE_BACK_SCRIPT)

    def give_back(key: str) -> None:
        try:
            script([storage.prefixed_key(key)])
        except storage.base_exceptions as exc:
            raise StorageError(exc) from exc

    return give_back


def _fail_open(method):
    """A storage failure does not fail the request: the call logs it and answers None (the global
    limit lets the request through; failed logins are counted in memory). Then the storage is left
    alone for RATELIMIT_STORAGE_RETRY_INTERVAL (calls answer None at once), so that while it is
    down or hung, requests do not each wait out its timeout; the first call after that tries it
    again."""

    @wraps(method)
    def guarded(self, *args, **kwargs):
        if time.monotonic() < self.skip_until:
            return None
        try:
            return method(self, *args, **kwargs)
        except StorageError as exc:
            self.skip_until = time.monotonic() + self.retry_interval
            log.warning(
                "rate limit storage unavailable, left alone for %g s (global limit off, "
                "failed logins counted in this process): %s",
                self.retry_interval,
                exc,
            )
            return None

    return guarded


class Place(NamedTuple):
    """A place taken in a limit of failures: whether it was free, when its window resets (a Unix
    time), the counter's key, and whether the storage holds it (else this process's memory)."""

    free: bool
    reset: float
    key: str
    shared: bool


class RateLimits:
    """One app's limits and the counters' storage."""

    GIVE_BACK_MARGIN_S = 1.0  # see `_give_back`

    def __init__(self, app: Flask):
        config = app.config
        storage = _storage(config)
        self.counter = FixedWindowRateLimiter(storage)
        self._give_back_to_storage = _give_back_one(storage)
        # Failed logins are counted here while the storage is unavailable.
        local = storage if isinstance(storage, SweptMemoryStorage) else SweptMemoryStorage()
        self.local = FixedWindowRateLimiter(local)
        self.global_limit = parse(config["GLOBAL_RATE_LIMIT"])
        self.login_per_address = parse(config["LOGIN_FAILURE_LIMIT"])
        self.login_per_email = parse(config["LOGIN_FAILURE_LIMIT_PER_EMAIL"])
        self.login_per_device = parse(config["LOGIN_FAILURE_LIMIT_PER_DEVICE"])
        self.api_key_limit = parse(config["API_KEY_RATE_LIMIT"])
        self.password_reset_per_address = parse(config["PASSWORD_RESET_LIMIT"])
        self.password_reset_per_email = parse(config["PASSWORD_RESET_LIMIT_PER_EMAIL"])
        self.verify_email_resend = parse(config["VERIFY_EMAIL_RESEND_LIMIT"])
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

    def take(self, limit: RateLimitItem, *key: str) -> Place:
        """Take a place in `key`'s limit before the outcome it limits is known, in one atomic
        step. A place refused is given back at once, so that the count is always the failures
        plus the attempts in flight. While the storage is unavailable, the place is taken in this
        process's memory instead."""
        place = self._take_shared(limit, key)
        return place if place is not None else self._take(limit, key, shared=False)

    def give_back(self, place: Place) -> None:
        """Give a place back where it was taken. If the storage fails meanwhile, the place stays
        taken there until its window ends."""
        if place.shared:
            self._give_back_shared(place)
        else:
            self._give_back(place)

    @_fail_open
    def _take_shared(self, limit: RateLimitItem, key: tuple[str, ...]) -> Place:
        return self._take(limit, key, shared=True)

    def _take(self, limit: RateLimitItem, key: tuple[str, ...], shared: bool) -> Place:
        counter = self.counter if shared else self.local
        free = counter.hit(limit, *key)
        name = limit.key_for(*key)
        place = Place(free, counter.storage.get_expiry(name), name, shared)
        if not free:
            self._give_back(place)
        return place

    @_fail_open
    def _give_back_shared(self, place: Place) -> None:
        self._give_back(place)

    def _give_back(self, place: Place) -> None:
        """Give a place back, unless its window has ended or is about to: the next one owes
        nothing. Giving back only to a count above 0 keeps a vanished key from going negative,
        but cannot tell windows apart: once a failure has started the next window, its count is
        above 0 too, and a place taken in the last one given back there would let one failure
        too many through. Redis reports a window's end to the nearest second, hence the margin;
        a place given back within it stays taken until its window ends, a second at most."""
        if time.time() < place.reset - self.GIVE_BACK_MARGIN_S:
            give_back = self._give_back_to_storage if place.shared else self.local.storage.give_back
            give_back(place.key)


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
        metrics.count_rate_limited("global")
        raise RateLimited(_seconds_until(reset))


def check_api_key_limit(key_id: int) -> None:
    """A request authenticated by an API key: count it against the key's own limit (on top of
    its address's); 429 once over."""
    _check(_limits().api_key_limit, "api-key", str(key_id))


def check_password_reset_limits(email: str) -> None:
    """A password-reset request: counted per client address and per email (known or not)."""
    limits = _limits()
    _check(limits.password_reset_per_address, "password-reset", _address())
    _check(limits.password_reset_per_email, "password-reset-email", email)


def check_verify_email_resend_limit(user_id: int) -> None:
    _check(_limits().verify_email_resend, "verify-email-resend", str(user_id))


def _check(limit: RateLimitItem, name: str, key: str) -> None:
    """Count a request against `limit` for `key`; 429 once over. Like the global limit, it lets
    requests through while the storage is unavailable."""
    counted = _limits().hit(limit, name, key)
    if counted is not None and not counted[0]:
        metrics.count_rate_limited(name)
        raise RateLimited(_seconds_until(counted[2]))


def limit_failed_logins(view):
    """Around the login view: the attempt counts against the failed-login limits of its address
    and of the email in its body, or, when the body also has a device token of that email, of
    that device instead of the email (`password_failures_counted`)."""

    @wraps(view)
    def limited(*args, **kwargs):
        body = json_body()
        device = device_tokens.known_device(body.get("device_token"), body.get("email"))
        with password_failures_counted(_email_key(body), device=device):
            return view(*args, **kwargs)

    return limited


@contextmanager
def password_failures_counted(email_key: str, *, device: str | None = None) -> Iterator[None]:
    """Around a password check (a login, or the current password of an account change): the
    attempt takes a place in the address's and the email's limits of failures before the
    password is checked, atomically, so that simultaneous attempts cannot overrun them. From a
    known `device` (a login's valid device token), the device's limit stands in for the email's.
    A full limit is 429 and takes nothing from the other. An attempt that does not fail with 401
    (a success, a 422) gives its places back: only failures count."""
    limits = _limits()
    if device is None:
        own = (limits.login_per_email, "login-failures-email", email_key)
    else:
        own = (limits.login_per_device, "login-failures-device", device)
    places = []
    for limit, *key in ((limits.login_per_address, "login-failures-address", _address()), own):
        place = limits.take(limit, *key)
        if not place.free:
            metrics.count_rate_limited(key[0])
            _give_back(limits, places)
            raise RateLimited(_seconds_until(place.reset))
        places.append(place)
    failed = False
    try:
        yield
    except InvalidCredentials:
        failed = True
        raise
    finally:
        if not failed:
            _give_back(limits, places)


def email_key(email: str) -> str:
    """The failed-login limit's key of an email."""
    return "email:" + email.strip().lower()


def _give_back(limits: RateLimits, places: list[Place]) -> None:
    for place in places:
        limits.give_back(place)


def _email_key(body: dict) -> str:
    email = body.get("email")
    if isinstance(email, str):
        return email_key(email)
    return "address:" + _address()


def add_rate_limit_headers(response):
    """The global limit's state on every limited response, 429s included."""
    headers = g.get("rate_limit_headers")
    if headers:
        response.headers.update(headers)
    return response
