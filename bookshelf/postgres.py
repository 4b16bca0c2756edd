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
- the server cancels a statement itself a little earlier (its `statement_timeout`), so that a
  slow statement (a heavy search, a lock wait behind a migration) ends with the server's
  answer, QueryCanceled: a 503 for that request, on a connection that stays usable. Only a
  server that answers nothing at all reaches the client's deadline. Behind a PgBouncer, the
  role's `statement_timeout` does this (DATABASE_PGBOUNCER, below);
- after a timeout with no answer to any other wait meanwhile, a `Breaker` makes the requests
  behind it fail at once (503) instead of each waiting out its own timeout, and lets one
  request try again every DATABASE_RETRY_INTERVAL.

The command line (migrations, `prune`) is not bounded: its statements may rightly take longer.
"""

import logging
import os
from collections.abc import Callable, Iterator, Mapping
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
# How much earlier than the client's deadline the server cancels a statement itself: time for
# its QueryCanceled to arrive (the query's way there, the cancel, the answer's way back) on a
# loaded machine. A quarter of the deadline at most, for deadlines under a second.
SERVER_MARGIN_S = 0.25


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

    A wait the breaker refuses closes the connection, though nothing was sent on it. The
    breaker opens only when no wait got an answer for a whole deadline, so the pooled
    connections are then most likely as stuck as the one that timed out: closed as requests
    meet them, they are replaced by new ones when the database answers again, and no trial
    waits out a deadline on one of them. If the database was only slow, the cost is reopening
    the connections refused, a few milliseconds each.

    Written against psycopg 3.3.9, whose `Connection.wait(gen, interval=_WAIT_INTERVAL,
    timeout=None)` is where every query, commit and rollback waits for the server, and raises
    the internal `psycopg.errors._WaitTimeout` when `timeout` passes; the tests check both. Its
    generators are driven by `send` alone, and a rollback outside a transaction completes
    without waiting (a test fails if it starts to wait).
    """

    class Connection(psycopg.Connection):
        def wait(self, gen, interval=_WAIT_INTERVAL, timeout=None):
            if not _bounded.get():
                return super().wait(gen, interval, timeout)
            if not breaker.allow():
                self.pgconn.finish()  # the pool replaces it, once the database answers again
                raise DatabaseNotAnswering("the database has stopped answering; not waiting")
            started, asked = breaker.clock(), []
            try:
                answer = super().wait(
                    _noting_waits(gen, asked),
                    interval,
                    statement_timeout if timeout is None else timeout,
                )
            except psycopg.errors._WaitTimeout:
                # The answer may still come, in the middle of the next query: never reuse it.
                self.pgconn.finish()
                failed(breaker, started)
                raise DatabaseNotAnswering(
                    f"no answer from the database within {statement_timeout} s"
                ) from None
            if asked:  # not, say, the rollback of a connection outside any transaction
                succeeded(breaker)
            return answer

    return Connection


def _noting_waits(gen, asked: list):
    """`gen`, a psycopg generator, noting in `asked` whether it waited for the server at all:
    one that completes at once has not heard from it, and is no sign that it answers."""
    ready = None
    while True:
        try:
            wanted = gen.send(ready)
        except StopIteration as done:
            return done.value
        if not asked:
            asked.append(True)
        ready = yield wanted


def server_statement_timeout(statement_timeout: float) -> int:
    """The `statement_timeout` (milliseconds) the server enforces on connections opened for
    requests: `SERVER_MARGIN_S` under the client's deadline, so that a slow statement is
    answered (cancelled) before the client gives up on a server that says nothing."""
    margin = min(SERVER_MARGIN_S, statement_timeout / 4)
    return max(1, round((statement_timeout - margin) * 1000))


def connection_parameters(config: Mapping) -> dict:
    """What every connection is opened with, unless DATABASE_URL's query (or the engine's
    `connect_args`) says otherwise: libpq's timeouts and keepalives, and behind a PgBouncer
    (DATABASE_PGBOUNCER) no prepared statements.

    psycopg prepares a statement once a connection has run it 5 times (`prepare_threshold`), then
    runs it by name. Through a PgBouncer in transaction mode, the next transaction may be given
    another server connection, where that name is unknown (`prepared statement "_pg3_0" does not
    exist`): PgBouncer follows prepared statements only from 1.21 (`max_prepared_statements`),
    and Debian 12's is 1.18.
    """
    parameters = {
        "connect_timeout": max(config["DATABASE_CONNECT_TIMEOUT"], 2),  # libpq's minimum
        "keepalives": 1,
        "keepalives_idle": config["DATABASE_KEEPALIVES_IDLE"],
        "keepalives_interval": config["DATABASE_KEEPALIVES_INTERVAL"],
        "keepalives_count": config["DATABASE_KEEPALIVES_COUNT"],
        "tcp_user_timeout": round(config["DATABASE_SOCKET_TIMEOUT"] * 1000),  # milliseconds
    }
    if config["DATABASE_PGBOUNCER"]:
        parameters["prepare_threshold"] = None
    return parameters


def configure_postgresql(app: Flask, engine: Engine) -> None:
    """Connect with the configured timeouts and keepalives, and bound every request's waits.

    Connections opened for a request (in a serving process, all of them) ask the server for
    its own `statement_timeout` through libpq's `options` startup parameter; those of the
    command line do not. Options already given (DATABASE_URL's `options`, else libpq's
    PGOPTIONS) are kept and come after ours, so a `statement_timeout` among them wins.
    Behind a PgBouncer (DATABASE_PGBOUNCER) nothing is added to `options`: PgBouncer refuses a
    connection whose `options` it cannot track, or drops them (`ignore_startup_parameters`); the
    role's own `statement_timeout` stands in (README, "PgBouncer").
    """
    config = app.config
    statement_timeout = config["DATABASE_STATEMENT_TIMEOUT"]
    parameters = connection_parameters(config)
    # A trial may ping a pooled connection, then open a new one.
    breaker = Breaker(
        config["DATABASE_RETRY_INTERVAL"], statement_timeout + parameters["connect_timeout"]
    )
    connection = connection_class(breaker, statement_timeout)
    server_limit = (
        None
        if config["DATABASE_PGBOUNCER"]
        else f"-c statement_timeout={server_statement_timeout(statement_timeout)}"
    )

    @event.listens_for(engine, "do_connect")
    def connect(_dialect, _record, cargs, cparams):
        for name, value in parameters.items():
            cparams.setdefault(name, value)
        if not _bounded.get():
            return connection.connect(*cargs, **cparams)
        if server_limit:
            given = cparams.get("options", os.environ.get("PGOPTIONS", ""))
            cparams["options"] = f"{server_limit} {given}".strip()
        if not breaker.allow():
            raise DatabaseNotAnswering("the database has stopped answering; not connecting")
        started = breaker.clock()
        try:
            opened = connection.connect(*cargs, **cparams)
        except psycopg.errors.ConnectionTimeout:
            failed(breaker, started)
            raise
        except psycopg.OperationalError:
            # Refused at once, say: no need to fail fast for that, unless it was the trial.
            if not breaker.closed:
                failed(breaker, started)
            raise
        succeeded(breaker)
        return opened

    app.extensions["bookshelf.database_breaker"] = breaker
    app.wsgi_app = bounded_requests(app.wsgi_app)


def failed(breaker: Breaker, since: float) -> None:
    if breaker.failed(since):
        log.warning(
            "the database is not answering: requests fail at once, one tries again every %s s",
            breaker.retry_after,
        )


def succeeded(breaker: Breaker) -> None:
    if breaker.succeeded():
        log.warning("the database answers again")
