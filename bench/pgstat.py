"""New PostgreSQL connections during a turn: the `sessions` counter of pg_stat_database
(PostgreSQL 14+), every session established to the benchmark's database, read before and after.

The counter is read on one connection of its own, opened before the first reading, so that it
is in no difference. A backend reports its session when it first waits for a query (PostgreSQL
15+: its statistics are flushed then, later ones at most once a second), so a connection opened
at the very end of a turn may be counted in the next one: the figure is for a whole row's turns.
"""

from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

QUERY = text("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")


class Sessions:
    """Sessions established to the database so far; `close()` when done."""

    def __init__(self, url: str):
        self.engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self.connection = None

    def open(self) -> str:
        """Connects; returns why the counter cannot be read ('' when it can)."""
        try:
            self.connection = self.engine.connect()
            self.read()
        except DBAPIError as exc:
            self.close()
            return f"pg_stat_database.sessions unreadable (PostgreSQL 14+ has it): {exc.orig}"
        return ""

    def read(self) -> int:
        # Each statement is a transaction of its own (autocommit): a fresh statistics snapshot.
        return self.connection.scalar(QUERY)

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
        self.engine.dispose()
