"""Engine settings per database: SQLite made safe for a threaded server, PostgreSQL pooled, its
waits bounded (bookshelf.postgres)."""

import math
import sqlite3
import threading
from collections.abc import Mapping

from flask import Flask, has_request_context, request
from sqlalchemy import Select, event
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import DBAPIError

from .config import ConfigError
from .extensions import db

SQLITE_BUSY_TIMEOUT_S = 15
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def engine_options(uri: str, config: Mapping | None = None) -> dict:
    """The engine's options for the database at `uri`; `config` sizes PostgreSQL's pool."""
    if uri.startswith("sqlite"):
        return {
            "connect_args": {
                "timeout": SQLITE_BUSY_TIMEOUT_S,
                "check_same_thread": False,
                "factory": _writers_take_turns(),
            }
        }
    options = {"pool_pre_ping": True}
    if config is not None and make_url(uri).get_backend_name() == "postgresql":
        options |= postgresql_pool(config)
    return options


def postgresql_pool(config: Mapping) -> dict:
    """One pooled connection per thread that may use the database: waitress's workers and the
    two probe threads, so that a loaded process opens no new connections. No overflow: a
    process never holds more than DATABASE_POOL_SIZE connections, which is what
    `max_connections` must be sized against, and a request that briefly needs a second
    connection (a token refresh) takes one of the spares or waits for one. The wait for a free
    connection is bounded like a statement: a pool timeout is a 503. In whole seconds:
    Flask-SQLAlchemy builds the engine with `engine_from_config`, which makes it an integer.
    """
    size, overflow, timeout = (
        config["DATABASE_POOL_SIZE"],
        config["DATABASE_MAX_OVERFLOW"],
        config["DATABASE_POOL_TIMEOUT"],
    )
    if size is None:
        size = config["WAITRESS_THREADS"] + 2
    if size < 1:
        raise ConfigError(f"DATABASE_POOL_SIZE must be 1 or more, got {size}")
    if overflow < 0:
        raise ConfigError(f"DATABASE_MAX_OVERFLOW must be 0 or more, got {overflow}")
    if timeout is None:
        timeout = math.ceil(config["DATABASE_STATEMENT_TIMEOUT"])
    if timeout < 1:
        raise ConfigError(f"DATABASE_POOL_TIMEOUT must be 1 or more, got {timeout}")
    return {"pool_size": size, "max_overflow": overflow, "pool_timeout": timeout}


def _writers_take_turns() -> type[sqlite3.Connection]:
    """A class of SQLite connection whose write transactions, within this process, queue on
    one lock before `BEGIN IMMEDIATE`.

    SQLite has one writer. A connection that finds the write lock taken waits in SQLite's busy
    handler, which sleeps 1, 2, 5, 10... ms between tries: under concurrent POSTs, nearly two
    sleeps per request, the lock often free while its next owner sleeps. A thread waiting on a
    Python lock is woken the moment it is released. The busy timeout still covers writers in
    other processes. The lock is released when the transaction ends (commit, rollback, or the
    connection closing), whichever way it ends.
    """
    turn = threading.Lock()

    class Connection(sqlite3.Connection):
        holds_turn = False

        def begin_write(self) -> None:
            if not turn.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
                raise sqlite3.OperationalError("database is locked")
            self.holds_turn = True
            try:
                self.execute("BEGIN IMMEDIATE")
            except BaseException:
                self._end_turn()
                raise

        def commit(self) -> None:
            self._ending_turn(super().commit)

        def rollback(self) -> None:
            self._ending_turn(super().rollback)

        def close(self) -> None:
            self._ending_turn(super().close)

        def _ending_turn(self, end) -> None:
            try:
                end()
            finally:
                self._end_turn()

        def _end_turn(self) -> None:
            if self.holds_turn:
                self.holds_turn = False
                turn.release()

    return Connection


def configure_engine(app: Flask, engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    elif engine.dialect.driver == "psycopg":
        from .postgres import configure_postgresql  # psycopg is loaded only where it is used

        configure_postgresql(app, engine)


def _configure_sqlite(engine: Engine) -> None:
    """WAL so readers never wait for the writer, writers queue (in this process for their turn, see
    `_writers_take_turns`; from other processes on the busy timeout), a Unicode-aware lower(),
    and BEGIN IMMEDIATE for requests that write: a deferred transaction that reads and then
    writes cannot wait for the lock and fails with "database is locked". Reads open no
    transaction (each statement is its own, as PostgreSQL's READ COMMITTED gives each statement
    its own snapshot): a BEGIN and a ROLLBACK fewer.
    """

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        # SQLite's lower() folds ASCII only; case-insensitive search must fold "É" too, as
        # PostgreSQL does. Deterministic, so the lower(author) indexes can still be used.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection):
        if not has_request_context() or request.method not in READ_METHODS:
            connection.connection.dbapi_connection.begin_write()  # BEGIN IMMEDIATE, in turn


def _lower(value):
    return value.lower() if isinstance(value, str) else value


class PreparedRead:
    """A constant read-only SELECT for a hot path: compiled by SQLAlchemy once per dialect, then
    run on a pooled DBAPI connection, its values converted by SQLAlchemy's own result processors
    (datetimes on SQLite).

    Per call it skips what a Core `Connection` costs: the connection and execution-context objects,
    events, the compiled-cache lookup and the result wrapper, about 5x the query itself on SQLite.
    No transaction is opened on SQLite. Driver errors are raised as SQLAlchemy's (an outage is
    still a 503), and a connection the driver reports as lost is dropped from the pool.
    """

    def __init__(self, statement: Select):
        self.statement = statement
        self._compiled: dict[type, tuple] = {}

    def rows(self, **params) -> list[dict]:
        engine = db.engine
        dialect = engine.dialect
        sql, positions, names, processors = self._compile(dialect)
        args = params if positions is None else [params[name] for name in positions]
        driver_error = dialect.loaded_dbapi.Error
        try:
            connection = engine.raw_connection()
        except driver_error as exc:
            raise DBAPIError.instance(None, None, exc, driver_error) from exc
        try:
            cursor = connection.cursor()
            try:
                cursor.execute(sql, args)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        except driver_error as exc:
            lost = dialect.is_disconnect(exc, connection.dbapi_connection, None)
            if lost:
                connection.invalidate(exc)
            raise DBAPIError.instance(
                sql, args, exc, driver_error, connection_invalidated=lost
            ) from exc
        finally:
            connection.close()
        return [
            {
                name: process(value) if process and value is not None else value
                for name, process, value in zip(names, processors, row, strict=True)
            }
            for row in rows
        ]

    def _compile(self, dialect: Dialect) -> tuple:
        key = type(dialect)
        if key not in self._compiled:
            compiled = self.statement.compile(dialect=dialect)
            columns = self.statement.selected_columns
            self._compiled[key] = (
                compiled.string,
                compiled.positiontup,
                [column.key for column in columns],
                [
                    column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in columns
                ],
            )
        return self._compiled[key]
