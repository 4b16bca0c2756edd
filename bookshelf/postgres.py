"""PostgreSQL as deployed: a request never waits for the database longer than a timeout.

psycopg waits for the server's answer as long as the connection stays open. A server that
hangs (a stuck primary, a partition where something still holds the connection open) answers
nothing and closes nothing: each request that reaches it would wait for the whole outage, until
all of waitress's threads wait and the process answers nothing at all. So:

- connections are opened within DATABASE_CONNECT_TIMEOUT, with TCP keepalives and
  `tcp_user_timeout` (DATABASE_SOCKET_TIMEOUT), so the kernel drops a connection whose server
  has vanished;
- within a request, every wait for the server is bounded by DATABASE_STATEMENT_TIMEOUT, then the
  connection is closed and the request answers 503: only the client can tell that a server
  that acknowledges every packet is not answering;
- after a timeout, a `Breaker` makes the requests behind it fail at once (503) instead of each
  waiting out its own timeout, and lets one request try again every DATABASE_RETRY_INTERVAL.

The command line (migrations, `prune`) is not bounded: its statements may rightly take longer.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps

import psycopg
from flask import Flask
from psycopg.connection import _WAIT_INTERVAL
from sqlalchemy import event
from sqlalchemy.engine import Engine

from .breaker import Breaker

log = logging.getLogger("bookshelf.database")

_bounded: ContextVar[bool] = ContextVar("bookshelf_bounded_database_waits", default=False)


class DatabaseNotAnswering(psycopg.OperationalError):
    """The database did not answer in time, or has just failed to: a 503, never shown as is."""


@contextmanager
def bounded_waits() -> Iterator[None]:
    """Database waits in this block are bounded and go through the breaker."""
    token = _bounded.set(True)
    try:
        yield
    finally:
        _bounded.reset(token)


def bounded_requests(wsgi_app: Callable) -> Callable:
    """A WSGI app whose requests' database waits are bounded, from the first statement to the
    rollback that returns the connection to the pool at teardown."""

    @wraps(wsgi_app)
    def app(environ, start_response):
        with bounded_waits():
            return wsgi_app(environ, start_response)

    return app


def connection_class(breaker: Breaker, statement_timeout: float) -> type[psycopg.Connection]:
    """A psycopg connection whose waits for the server, within `bounded_waits`, last at most
    `statement_timeout` seconds and consult `breaker` first.

    Written against psycopg 3.3.9, whose `Connection.wait(gen, interval=_WAIT_INTERVAL,
    timeout=None)` is where every query, commit and rollback waits for the server, and raises
    the internal `psycopg.errors._WaitTimeout` when `timeout` passes; the tests check both.
    """

    class Connection(psycopg.Connection):
        def wait(self, gen, interval=_WAIT_INTERVAL, timeout=None):
            if not _bounded.get():
                return super().wait(gen, interval, timeout)
            if not breaker.allow():
                self.pgconn.finish()  # the pool replaces it, once the database answers again
                raise DatabaseNotAnswering("the database has stopped answering; not waiting")
            try:
                answer = super().wait(
                    gen, interval, statement_timeout if timeout is None else timeout
                )
            except psycopg.errors._WaitTimeout:
                # The answer may still come, in the middle of the next query: never reuse it.
                self.pgconn.finish()
                failed(breaker)
                raise DatabaseNotAnswering(
                    f"no answer from the database within {statement_timeout} s"
                ) from None
            succeeded(breaker)
            return answer

    return Connection


def configure_postgresql(app: Flask, engine: Engine) -> None:
    """Connect with the configured timeouts and keepalives, and bound every request's waits."""
    config = app.config
    statement_timeout = config["DATABASE_STATEMENT_TIMEOUT"]
    connect_timeout = max(config["DATABASE_CONNECT_TIMEOUT"], 2)  # libpq's minimum
    # A trial may ping a pooled connection, then open a new one.
    breaker = Breaker(config["DATABASE_RETRY_INTERVAL"], statement_timeout + connect_timeout)
    connection = connection_class(breaker, statement_timeout)
    # Parameters given in DATABASE_URL's query win over these.
    parameters = {
        "connect_timeout": connect_timeout,
        "keepalives": 1,
        "keepalives_idle": config["DATABASE_KEEPALIVES_IDLE"],
        "keepalives_interval": config["DATABASE_KEEPALIVES_INTERVAL"],
        "keepalives_count": config["DATABASE_KEEPALIVES_COUNT"],
        "tcp_user_timeout": round(config["DATABASE_SOCKET_TIMEOUT"] * 1000),  # milliseconds
    }

    @event.listens_for(engine, "do_connect")
    def connect(_dialect, _record, cargs, cparams):
        for name, value in parameters.items():
            cparams.setdefault(name, value)
        if not _bounded.get():
            return connection.connect(*cargs, **cparams)
        if not breaker.allow():
            raise DatabaseNotAnswering("the database has stopped answering; not connecting")
        try:
            opened = connection.connect(*cargs, **cparams)
        except psycopg.errors.ConnectionTimeout:
            failed(breaker)
            raise
        except psycopg.OperationalError:
            # Refused at once, say: no need to fail fast for that, unless it was the trial.
            if not breaker.closed:
                failed(breaker)
            raise
        succeeded(breaker)
        return opened

    app.extensions["bookshelf.database_breaker"] = breaker
    app.wsgi_app = bounded_requests(app.wsgi_app)


def failed(breaker: Breaker) -> None:
    if breaker.failed():
        log.warning(
            "the database is not answering: requests fail at once, one tries again every %s s",
            breaker.retry_after,
        )


def succeeded(breaker: Breaker) -> None:
    if breaker.succeeded():
        log.warning("the database answers again")
