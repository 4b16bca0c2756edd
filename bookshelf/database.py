"""Engine settings per database: SQLite made safe for a threaded server, PostgreSQL pooled."""

from flask import Flask, has_request_context, request
from sqlalchemy import event
from sqlalchemy.engine import Engine

SQLITE_BUSY_TIMEOUT_S = 15
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def engine_options(uri: str) -> dict:
    if uri.startswith("sqlite"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    return {"pool_pre_ping": True}


def configure_engine(app: Flask, engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)


def _configure_sqlite(engine: Engine) -> None:
    """WAL so readers never wait for the writer, a busy timeout so writers queue instead of
    failing, a Unicode-aware lower(), and BEGIN IMMEDIATE for requests that write: a deferred
    transaction that reads and then writes cannot wait for the lock and fails with
    "database is locked". Reads open no transaction (each statement is its own, as PostgreSQL's
    READ COMMITTED gives each statement its own snapshot): a BEGIN and a ROLLBACK fewer."""

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
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _lower(value):
    return value.lower() if isinstance(value, str) else value
