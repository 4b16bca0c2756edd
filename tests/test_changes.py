"""SPEC 9, offline sync: `GET /books/changes?since=` gives the books created, changed or deleted
after a cursor, in commit order, deletions as tombstones; expired cursors are 410 SYNC_EXPIRED.
The last tests run real writers against real servers while a follower copies the catalog."""

import random
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bookshelf import changes
from bookshelf.extensions import db
from bookshelf.models import Book, User
from bookshelf.models.base import utcnow
from bookshelf.resources import changes as changes_resource
from tests.conftest import POSTGRES_URL
from tests.processes import call
from tests.support import PASSWORD, assert_error

CHANGES = "/api/v1/books/changes"
BOOKS = "/api/v1/books"


def feed(client, since=None, **params):
    query = {"since": since} if since else {}
    response = client.get(CHANGES, query_string=query | params)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    return body["data"], body["meta"]


def follow(client, since=None, limit=100):
    """Every change after `since`, page after page: (changes, the last cursor)."""
    seen = []
    while True:
        data, meta = feed(client, since, limit=limit)
        seen += data
        since = meta["next_cursor"]
        if not meta["has_more"]:
            return seen, since


def add_book(client, headers, title):
    response = client.post(BOOKS, headers=headers, json={"title": title, "author": "Ann"})
    assert response.status_code == 201
    return response.get_json()["data"]


# --- the feed ----------------------------------------------------------------------------------


def test_a_first_sync_gives_every_book_in_order_then_only_what_changes(client, auth):
    _, headers = auth.user()
    books = [add_book(client, headers, f"Book {n}") for n in range(3)]
    data, meta = feed(client)
    assert data == books  # each as GET /books/{id} shows it, in the order they were created
    assert meta["has_more"] is False and meta["next_cursor"]
    assert feed(client, meta["next_cursor"])[0] == []
    quiet_cursor = feed(client, meta["next_cursor"])[1]["next_cursor"]

    changed = client.patch(f"{BOOKS}/{books[0]['id']}", headers=headers, json={"genre": "Poetry"})
    added = add_book(client, headers, "Book 3")
    data, _ = feed(client, quiet_cursor)
    assert data == [changed.get_json()["data"], added]


def test_a_book_changed_twice_appears_once_in_its_last_state_after_the_others(client, auth):
    _, headers = auth.user()
    first, second = add_book(client, headers, "First"), add_book(client, headers, "Second")
    _, start = follow(client)
    client.patch(f"{BOOKS}/{first['id']}", headers=headers, json={"title": "First, again"})
    client.patch(f"{BOOKS}/{second['id']}", headers=headers, json={"title": "Second, again"})
    client.patch(f"{BOOKS}/{first['id']}", headers=headers, json={"title": "First, thrice"})
    data, _ = follow(client, start)
    assert [(book["id"], book["title"]) for book in data] == [
        (second["id"], "Second, again"),
        (first["id"], "First, thrice"),
    ]


def test_a_deleted_book_is_a_tombstone_of_its_id_and_deletion_time(client, auth):
    _, headers = auth.user()
    book = add_book(client, headers, "Gone soon")
    _, start = follow(client)
    assert client.delete(f"{BOOKS}/{book['id']}", headers=headers).status_code == 204
    data, _ = follow(client, start)
    assert len(data) == 1 and set(data[0]) == {"id", "deleted_at"}
    assert data[0]["id"] == book["id"] and data[0]["deleted_at"].endswith("Z")


def test_limit_pages_the_feed_and_has_more_says_when_to_ask_again(client, auth):
    _, headers = auth.user()
    books = [add_book(client, headers, f"Book {n}") for n in range(5)]
    pages, since = [], None
    while True:
        data, meta = feed(client, since, limit=2)
        pages.append([book["id"] for book in data])
        since = meta["next_cursor"]
        if not meta["has_more"]:
            break
    assert pages == [[b["id"] for b in books[:2]], [b["id"] for b in books[2:4]], [books[4]["id"]]]


def test_books_written_in_one_transaction_share_a_position_and_are_paged_by_id(app, client, auth):
    user, _ = auth.user()
    with app.app_context():
        db.session.add_all(Book(title=f"B{n}", author="A", owner_id=user["id"]) for n in range(3))
        db.session.commit()
        assert len({book.change_seq for book in db.session.scalars(select(Book))}) == 1
    pages = [feed(client, limit=2)]
    pages.append(feed(client, pages[0][1]["next_cursor"], limit=2))
    assert [len(data) for data, _ in pages] == [2, 1]
    assert [meta["has_more"] for _, meta in pages] == [True, False]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": ""}, "since"),
        ({"since": "not-a-cursor"}, "since"),
        ({"since": "x" * 2049}, "since"),
        ({"cursor": "abc"}, "cursor"),
        ({"page": "2"}, "page"),
    ],
)
def test_bad_parameters_are_422_naming_them(client, query, field):
    error = assert_error(client.get(CHANGES, query_string=query), 422, "VALIDATION_ERROR")
    assert field in error["details"]


def test_a_changed_cursor_or_one_of_another_list_is_422(client, auth):
    _, headers = auth.user()
    for n in range(3):
        add_book(client, headers, f"Book {n}")
    _, meta = feed(client, limit=1)
    body, mac = meta["next_cursor"].split(".")
    tampered = f"{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{mac}"
    list_cursor = client.get(BOOKS, query_string={"per_page": 1}).get_json()["meta"]
    for since in (tampered, list_cursor["next_cursor"]):
        response = client.get(CHANGES, query_string={"since": since})
        error = assert_error(response, 422, "VALIDATION_ERROR")
        assert set(error["details"]) == {"since"}


# --- retention ---------------------------------------------------------------------------------


def age_tombstones(app, days):
    with app.app_context():
        db.session.execute(
            update(Book)
            .where(Book.deleted_at.is_not(None))
            .values(deleted_at=utcnow() - timedelta(days=days))
        )
        db.session.commit()


def test_prune_removes_old_tombstones_and_refuses_cursors_that_could_miss_them(app, client, auth):
    _, headers = auth.user()
    kept, gone = add_book(client, headers, "Kept"), add_book(client, headers, "Gone")
    _, before = follow(client)
    client.delete(f"{BOOKS}/{gone['id']}", headers=headers)
    _, after = follow(client, before)
    age_tombstones(app, 31)

    result = app.test_cli_runner().invoke(args=["prune"])
    assert result.exit_code == 0 and "book tombstones: 1 deleted" in result.output

    expired = client.get(CHANGES, query_string={"since": before})
    error = assert_error(expired, 410, "SYNC_EXPIRED")
    assert "again from the start" in error["message"]
    assert feed(client, after)[0] == []  # this follower saw the deletion: nothing is missing
    assert [book["id"] for book in follow(client)[0]] == [kept["id"]]  # a new first sync
    with app.app_context():
        assert db.session.get(Book, gone["id"]) is None


def test_prune_keeps_tombstones_within_the_retention(app, client, auth):
    _, headers = auth.user()
    book = add_book(client, headers, "Recently gone")
    _, before = follow(client)
    client.delete(f"{BOOKS}/{book['id']}", headers=headers)
    age_tombstones(app, 29)
    assert "book tombstones: 0 deleted" in app.test_cli_runner().invoke(args=["prune"]).output
    assert [change["id"] for change in feed(client, before)[0]] == [book["id"]]


def test_a_cursor_older_than_the_retention_is_410(client, auth, monkeypatch):
    _, headers = auth.user()
    add_book(client, headers, "Any")
    _, since = follow(client)
    real_time = time.time
    monkeypatch.setattr(changes_resource.time, "time", lambda: real_time() + 30 * 86_400 - 60)
    assert client.get(CHANGES, query_string={"since": since}).status_code == 200
    monkeypatch.setattr(changes_resource.time, "time", lambda: real_time() + 30 * 86_400 + 60)
    assert_error(client.get(CHANGES, query_string={"since": since}), 410, "SYNC_EXPIRED")


# --- commit order ------------------------------------------------------------------------------


@pytest.mark.skipif(
    not POSTGRES_URL, reason="needs PostgreSQL: SQLite's write transactions never overlap"
)
def test_a_change_that_began_first_but_committed_last_is_not_skipped(app, client, auth):
    """Writer A changes a book and flushes, then waits; writer B changes another and commits;
    a follower reads B's change and moves its cursor past it; then A commits. The follower's
    next read must still bring A's change: positions follow commits, not statements."""
    user, headers = auth.user()
    book_a, book_b = add_book(client, headers, "A"), add_book(client, headers, "B")
    _, cursor = follow(client)
    flushed, release = threading.Event(), threading.Event()

    def writer_a():
        with app.app_context():
            book = db.session.get(Book, book_a["id"])
            book.title = "A, changed first"
            db.session.flush()  # its UPDATE has run: the row is changed, not yet committed
            flushed.set()
            release.wait(10)
            db.session.commit()

    thread = threading.Thread(target=writer_a)
    thread.start()
    assert flushed.wait(10)
    client.patch(f"{BOOKS}/{book_b['id']}", headers=headers, json={"title": "B, committed first"})
    data, cursor = follow(client, cursor)
    assert [book["title"] for book in data] == ["B, committed first"]
    release.set()
    thread.join(10)
    data, _ = follow(client, cursor)
    assert [book["title"] for book in data] == ["A, changed first"]


def test_the_clock_starts_again_when_its_table_was_emptied(app, auth, client):
    """The clock's row is made by its first tick (the tests empty every table)."""
    _, headers = auth.user()
    with app.app_context():
        db.session.execute(changes.SyncClock.__table__.delete())
        db.session.commit()
    add_book(client, headers, "After the reset")
    with app.app_context():
        assert db.session.get(changes.SyncClock, changes.CLOCK_ID).last_seq >= 1


# --- as deployed: writers and a follower on real servers -----------------------------------------

WRITERS = 4
WRITING_SECONDS = 4


def test_a_follower_polling_during_concurrent_writes_ends_with_the_servers_books(start_api, app):
    """Writers create, change and delete books through two server processes while a follower
    polls the feed through a third connection; afterwards the follower's copy equals the live
    books exactly (by GET /books, every page)."""
    ports = [start_api(RATELIMIT_DEFAULT="100000 per minute").port for _ in range(2)]
    body = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    assert call(ports[0], "POST", "/api/v1/auth/register", body)[0] == 201
    credentials = {"email": body["email"], "password": PASSWORD}
    status, _, login = call(ports[0], "POST", "/api/v1/auth/login", credentials)
    assert status == 200
    headers = {"Authorization": f"Bearer {login['data']['access_token']}"}
    stop = threading.Event()
    errors = []

    def write(n):
        rng, mine, port = random.Random(n), [], ports[n % 2]
        while not stop.is_set():
            action = rng.choice(["create", "create", "update", "delete"] if mine else ["create"])
            if action == "create":
                book = {"title": f"W{n} {rng.random():.6f}", "author": "Ann"}
                status, _, created = call(port, "POST", BOOKS, book, headers)
                mine.append(created["data"]["id"]) if status == 201 else errors.append(created)
            elif action == "update":
                change = {"title": f"W{n} changed {rng.random():.6f}"}
                status, _, _ = call(port, "PATCH", f"{BOOKS}/{rng.choice(mine)}", change, headers)
                status == 200 or errors.append(status)
            else:
                book_id = mine.pop(rng.randrange(len(mine)))
                status, _, _ = call(port, "DELETE", f"{BOOKS}/{book_id}", None, headers)
                status == 204 or errors.append(status)

    copy, cursor, polls = {}, None, 0

    def poll_once():
        nonlocal cursor, polls
        query = f"?since={cursor}&limit=7" if cursor else "?limit=7"
        status, _, page = call(ports[polls % 2], "GET", CHANGES + query)
        assert status == 200, page
        polls += 1
        for change in page["data"]:
            if "title" in change:
                copy[change["id"]] = change
            else:
                copy.pop(change["id"], None)
        cursor = page["meta"]["next_cursor"]
        return page["meta"]["has_more"]

    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + WRITING_SECONDS
    while time.monotonic() < deadline:
        poll_once()
    stop.set()
    for thread in writers:
        thread.join(30)
    while poll_once():
        pass
    assert not errors, errors[:5]

    live, list_cursor = {}, None
    while True:
        query = f"?per_page=100&cursor={list_cursor}" if list_cursor else "?per_page=100"
        status, _, page = call(ports[0], "GET", BOOKS + query)
        assert status == 200
        live |= {book["id"]: book for book in page["data"]}
        list_cursor = page["meta"]["next_cursor"]
        if list_cursor is None:
            break
    with app.app_context():
        deleted = db.session.scalar(
            select(db.func.count()).select_from(Book).where(Book.deleted_at.is_not(None))
        )
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 1
    assert len(live) > 20 and deleted > 5 and polls > 20, (len(live), deleted, polls)
    assert copy == live
