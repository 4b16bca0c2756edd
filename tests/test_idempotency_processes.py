"""Idempotency-Key through real `python wsgi.py` processes on one database: a process killed in
the middle of a request, and concurrent retries on several processes.

Killed: the retry, on a new process, creates the book or replays it, at once, and there is never
a second book. The first process pauses where the test asks (IDEMPOTENCY_TEST_PAUSE, read only
when APP_ENV=testing) and is killed there with SIGKILL: no handler, no rollback, no goodbye to
the database, which has to find out for itself that the connection is gone.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from bookshelf.extensions import db
from bookshelf.models import Book
from tests.processes import ServerProcess, call
from tests.support import PASSWORD

BOOKS = "/api/v1/books"
REGISTER = "/api/v1/auth/register"
DUNE = {"title": "Dune", "author": "Frank Herbert"}


def book_ids(app) -> list[int]:
    with app.app_context():
        ids = list(db.session.scalars(select(Book.id).order_by(Book.id)))
        db.session.remove()
        return ids


def wait_for_pause(server: ServerProcess, point: str, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.get("pause") == point for line in server.log_lines()):
            return
        time.sleep(0.02)
    raise AssertionError(f"the request never paused {point}:\n" + server.log_path.read_text())


@pytest.fixture
def servers(database_url, tmp_path):
    """Start `python wsgi.py` processes on the test database; all are stopped at the end."""
    started = []

    def start(name, **env):
        started.append(ServerProcess(tmp_path / f"{name}.log", DATABASE_URL=database_url, **env))
        return started[-1].start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def headers(app, servers):
    """A user's bearer token and an Idempotency-Key; tokens hold on every test process."""
    setup = servers("setup")
    account = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    assert call(setup.port, "POST", REGISTER, account)[0] == 201
    login = {"email": account["email"], "password": PASSWORD}
    _, _, body = call(setup.port, "POST", "/api/v1/auth/login", login)
    setup.stop()
    return {"Authorization": f"Bearer {body['data']['access_token']}", "Idempotency-Key": "k-1"}


def kill_while_paused(server: ServerProcess, point: str, pool: ThreadPoolExecutor, headers):
    """Send the POST to `server`, wait until it pauses at `point`, SIGKILL the process."""
    first = pool.submit(call, server.port, "POST", BOOKS, DUNE, headers)
    wait_for_pause(server, point)
    server.process.kill()
    server.process.wait()
    with pytest.raises(OSError):  # the connection died with the process, unanswered
        first.result(timeout=30)


def test_killed_before_its_commit_the_retry_creates_the_book(app, servers, headers):
    first = servers("first", IDEMPOTENCY_TEST_PAUSE="before-commit")
    with ThreadPoolExecutor(1) as pool:
        kill_while_paused(first, "before-commit", pool, headers)
    assert book_ids(app) == []
    second = servers("second")
    status, head, body = call(second.port, "POST", BOOKS, DUNE, headers)
    assert status == 201, body
    assert "idempotent-replayed" not in head
    assert book_ids(app) == [body["data"]["id"]]
    # The key is now used: another retry replays.
    status, head, again = call(second.port, "POST", BOOKS, DUNE, headers)
    assert status == 201 and head["idempotent-replayed"] == "true"
    assert again["data"] == body["data"]


def test_killed_after_its_commit_the_retry_replays_the_book(app, servers, headers):
    first = servers("first", IDEMPOTENCY_TEST_PAUSE="after-commit")
    with ThreadPoolExecutor(1) as pool:
        kill_while_paused(first, "after-commit", pool, headers)
    [book_id] = book_ids(app)
    second = servers("second")
    status, head, body = call(second.port, "POST", BOOKS, DUNE, headers)
    assert status == 201, body
    assert head["idempotent-replayed"] == "true"
    assert head["location"] == f"http://127.0.0.1:{second.port}{BOOKS}/{book_id}"
    assert body["data"]["id"] == book_id and body["data"]["title"] == "Dune"
    assert book_ids(app) == [book_id]


def test_a_retry_waiting_on_a_process_that_is_killed_creates_the_book(app, servers, headers):
    """The retry reaches another process while the first is still inside its transaction: it
    waits for it (PostgreSQL: the key's unique index; SQLite: the write lock) and, when the
    database rolls the dead process's transaction back, goes on and creates the book itself."""
    first = servers("first", IDEMPOTENCY_TEST_PAUSE="before-commit")
    # Room for the wait, on a loaded machine, within one statement's deadline.
    second = servers("second", DATABASE_STATEMENT_TIMEOUT="20")
    with ThreadPoolExecutor(2) as pool:
        original = pool.submit(call, first.port, "POST", BOOKS, DUNE, headers)
        wait_for_pause(first, "before-commit")
        retry = pool.submit(call, second.port, "POST", BOOKS, DUNE, headers)
        time.sleep(0.5)  # the retry is on its way to the wait
        assert not retry.done()
        first.process.kill()
        first.process.wait()
        with pytest.raises(OSError):
            original.result(timeout=30)
        status, head, body = retry.result(timeout=30)
    assert status == 201, body
    assert "idempotent-replayed" not in head
    assert book_ids(app) == [body["data"]["id"]]


def isbn13(n: int) -> str:
    digits = f"978{n:09d}"
    check = -sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10
    return f"{digits}{check}"


@pytest.mark.parametrize(
    "path, body",
    [
        (BOOKS, lambda n: {"title": f"Dune {n}", "author": "Frank Herbert"}),
        # The twins also race for the ISBN's unique index, before they race for the key's.
        (BOOKS, lambda n: {"title": "Dune", "author": "Frank Herbert", "isbn": isbn13(n)}),
        (REGISTER, lambda n: {"name": "Bo", "email": f"bo{n}@example.com", "password": PASSWORD}),
    ],
    ids=["book", "book-with-isbn", "registration"],
)
def test_concurrent_retries_on_two_processes_all_get_the_one_created(
    app, servers, headers, path, body
):
    """Every retry is answered 201 with the same resource, never 409: a retry that runs into the
    first one's transaction waits for its outcome and replays it."""
    ports = [servers("a").port, servers("b").port]
    rounds, twins = 3, 8
    for n in range(rounds):
        key = headers | {"Idempotency-Key": f"storm-{n}"}
        barrier = threading.Barrier(twins)

        def send(i, key=key, barrier=barrier, n=n):
            barrier.wait()
            return call(ports[i % 2], "POST", path, body(n), key)

        with ThreadPoolExecutor(twins) as pool:
            results = list(pool.map(send, range(twins)))
        assert [status for status, _, _ in results] == [201] * twins, results
        assert len({answer["data"]["id"] for _, _, answer in results}) == 1
        replayed = [head for _, head, _ in results if head.get("idempotent-replayed") == "true"]
        assert len(replayed) == twins - 1
    if path == BOOKS:
        assert len(book_ids(app)) == rounds
