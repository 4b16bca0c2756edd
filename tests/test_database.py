"""SQLite write transactions of one process take turns on a lock (bookshelf.database), however
they end; writers in other processes still meet SQLite's busy timeout."""

import sqlite3
import threading

import pytest

from bookshelf.database import engine_options


@pytest.fixture
def connect(tmp_path):
    """Connections of one engine's class to one database file."""
    options = engine_options("sqlite://")["connect_args"]
    path = tmp_path / "turns.db"
    opened = []

    def connect():
        connection = sqlite3.connect(path, isolation_level=None, **options)
        opened.append(connection)
        return connection

    connect().execute("CREATE TABLE t (n INTEGER)")
    yield connect
    for connection in opened:
        connection.close()


@pytest.fixture
def waits_for_turn():
    """Starts `begin_write` on a thread; the event it returns is set once it has its turn."""
    threads = []

    def start(connection) -> threading.Event:
        began = threading.Event()

        def begin():
            connection.begin_write()
            began.set()

        threads.append(threading.Thread(target=begin, daemon=True))
        threads[-1].start()
        return began

    yield start
    for thread in threads:
        thread.join(timeout=5)


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_the_next_writer_has_its_turn_when_the_transaction_ends(connect, waits_for_turn, end):
    first, second = connect(), connect()
    first.begin_write()
    first.execute("INSERT INTO t VALUES (1)")
    began = waits_for_turn(second)
    assert not began.wait(0.3)  # queued on the lock, not in SQLite
    getattr(first, end)()
    assert began.wait(5)
    second.execute("INSERT INTO t VALUES (2)")
    second.commit()
    expected = [(1,), (2,)] if end == "commit" else [(2,)]
    assert connect().execute("SELECT n FROM t ORDER BY n").fetchall() == expected


def test_a_failed_begin_gives_the_turn_back(connect, waits_for_turn):
    outsider = sqlite3.connect(connect().execute("PRAGMA database_list").fetchone()[2])
    outsider.isolation_level = None
    outsider.execute("BEGIN IMMEDIATE")  # another process's writer, outside the turns
    first = connect()
    first.execute("PRAGMA busy_timeout=50")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        first.begin_write()
    outsider.rollback()
    outsider.close()
    second = connect()
    assert waits_for_turn(second).wait(5)


def test_reads_and_ends_without_a_transaction_take_no_turn(connect, waits_for_turn):
    reader, writer = connect(), connect()
    reader.execute("SELECT count(*) FROM t").fetchall()
    reader.rollback()
    reader.commit()  # nothing to end: the lock must not be released twice
    writer.begin_write()
    writer.commit()
    assert waits_for_turn(connect()).wait(5)
