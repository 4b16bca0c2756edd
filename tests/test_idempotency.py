"""Idempotency-Key on POST /books and POST /auth/register: retries replay, never duplicate."""

from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import OperationalError

from bookshelf.extensions import db
from bookshelf.models import Book, IdempotencyKey, User
from bookshelf.models.base import utcnow
from bookshelf.services import books
from tests.support import PASSWORD, assert_error

BOOKS = "/api/v1/books"
REGISTER = "/api/v1/auth/register"
DUNE = {"title": "Dune", "author": "Frank Herbert"}


def count(app, model):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def post(client, path, body, key, headers=None):
    return client.post(path, json=body, headers=(headers or {}) | {"Idempotency-Key": key})


@pytest.fixture
def owner(auth):
    return auth.user()


def test_a_retry_replays_the_first_response_and_creates_nothing(app, client, owner):
    first = post(client, BOOKS, DUNE, "key-1", owner[1])
    retry = post(client, BOOKS, DUNE, "key-1", owner[1])
    assert first.status_code == retry.status_code == 201
    assert retry.get_json()["data"] == first.get_json()["data"]
    assert retry.headers["Location"] == first.headers["Location"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert retry.get_json()["meta"]["request_id"] == retry.headers["X-Request-ID"]
    assert retry.get_json()["meta"]["request_id"] != first.get_json()["meta"]["request_id"]
    assert count(app, Book) == 1


def test_the_same_body_in_another_key_order_is_the_same_request(app, client, owner):
    post(client, BOOKS, {"title": "Dune", "author": "Frank Herbert"}, "k", owner[1])
    retry = post(client, BOOKS, {"author": "Frank Herbert", "title": "Dune"}, "k", owner[1])
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert count(app, Book) == 1


def test_the_same_key_with_another_body_is_409(app, client, owner):
    post(client, BOOKS, DUNE, "key-1", owner[1])
    response = post(client, BOOKS, {"title": "Emma", "author": "Austen"}, "key-1", owner[1])
    error = assert_error(response, 409, "CONFLICT")
    assert "Idempotency-Key" in error["message"]
    assert count(app, Book) == 1


def test_keys_belong_to_their_caller(app, client, auth, owner):
    _, other = auth.user()
    post(client, BOOKS, DUNE, "shared-key", owner[1])
    response = post(client, BOOKS, DUNE, "shared-key", other)
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    assert count(app, Book) == 2


def test_different_keys_create_different_books(app, client, owner):
    assert post(client, BOOKS, DUNE, "a", owner[1]).status_code == 201
    assert post(client, BOOKS, DUNE, "b", owner[1]).status_code == 201
    assert count(app, Book) == 2


def test_without_a_key_every_post_creates(app, client, owner):
    client.post(BOOKS, json=DUNE, headers=owner[1])
    client.post(BOOKS, json=DUNE, headers=owner[1])
    assert count(app, Book) == 2


def test_a_failed_request_does_not_burn_its_key(app, client, owner):
    response = post(client, BOOKS, {"title": "Dune"}, "k", owner[1])
    assert_error(response, 422, "VALIDATION_ERROR")
    assert count(app, IdempotencyKey) == 0
    assert post(client, BOOKS, {"title": "Dune"}, "k", owner[1]).status_code == 422
    assert post(client, BOOKS, DUNE, "k", owner[1]).status_code == 201


def test_registration_is_idempotent(app, client):
    body = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    first = post(client, REGISTER, body, "reg-1")
    retry = post(client, REGISTER, body, "reg-1")
    assert first.status_code == retry.status_code == 201
    assert retry.get_json()["data"] == first.get_json()["data"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert count(app, User) == 1
    # Without the key, the duplicate is an ordinary conflict.
    assert_error(client.post(REGISTER, json=body), 409, "CONFLICT")


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "ünïcode"])
def test_a_malformed_key_is_422(client, owner, key):
    response = client.post(BOOKS, json=DUNE, headers=owner[1] | {"Idempotency-Key": key})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert set(error["details"]) == {"Idempotency-Key"}


def test_a_255_character_key_is_fine(client, owner):
    assert post(client, BOOKS, DUNE, "k" * 255, owner[1]).status_code == 201


def test_a_conflict_does_not_burn_its_key(app, client, owner):
    isbn = {"isbn": "9780441172719"}
    assert client.post(BOOKS, json=DUNE | isbn, headers=owner[1]).status_code == 201
    assert_error(post(client, BOOKS, DUNE | isbn, "k", owner[1]), 409, "CONFLICT")
    assert count(app, IdempotencyKey) == 0
    assert post(client, BOOKS, DUNE, "k", owner[1]).status_code == 201  # not "another body"


def fail_on_commit(app):
    """Every commit of the app's sessions fails as if the database had gone away."""

    def fail(_session):
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    with app.app_context():
        event.listen(db.session, "before_commit", fail)
    return lambda: event.remove(db.session, "before_commit", fail)


def test_the_work_and_the_key_are_committed_together(app, client, owner):
    """The book is flushed before the commit fails: it goes with the key, and the retry
    creates it."""
    restore = fail_on_commit(app)
    try:
        assert_error(post(client, BOOKS, DUNE, "k", owner[1]), 503, "SERVICE_UNAVAILABLE")
    finally:
        restore()
    assert count(app, Book) == count(app, IdempotencyKey) == 0
    response = post(client, BOOKS, DUNE, "k", owner[1])
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    assert count(app, Book) == 1


def test_a_database_error_in_the_work_does_not_burn_its_key(app, client, owner, monkeypatch):
    def create_and_fail(owner, fields):
        db.session.add(Book(owner_id=owner.id, **fields))
        db.session.flush()
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(books, "create_book", create_and_fail)
    assert_error(post(client, BOOKS, DUNE, "k", owner[1]), 503, "SERVICE_UNAVAILABLE")
    monkeypatch.undo()
    assert count(app, Book) == count(app, IdempotencyKey) == 0
    assert post(client, BOOKS, DUNE, "k", owner[1]).status_code == 201


def claimed_by_an_earlier_version(app, age: timedelta):
    """What a version that committed the key before the work left: a row without a response."""
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey).values(
                status_code=None, body=None, location=None, created_at=utcnow() - age
            )
        )
        db.session.commit()


def test_a_key_claimed_by_an_earlier_version_is_409_while_it_may_still_run(app, client, owner):
    post(client, BOOKS, DUNE, "k", owner[1])
    claimed_by_an_earlier_version(app, timedelta(seconds=5))
    error = assert_error(post(client, BOOKS, DUNE, "k", owner[1]), 409, "CONFLICT")
    assert "in progress" in error["message"]
    error = assert_error(
        post(client, BOOKS, {"title": "Emma", "author": "Austen"}, "k", owner[1]), 409, "CONFLICT"
    )
    assert "another request body" in error["message"]
    assert count(app, Book) == 1


def test_a_key_claimed_by_an_earlier_version_is_taken_over_after_a_minute(app, client, owner):
    post(client, BOOKS, DUNE, "k", owner[1])
    claimed_by_an_earlier_version(app, timedelta(minutes=1, seconds=1))
    response = post(client, BOOKS, DUNE, "k", owner[1])
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    replay = post(client, BOOKS, DUNE, "k", owner[1])
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["data"] == response.get_json()["data"]
    assert count(app, IdempotencyKey) == 1


def test_keys_expire_after_24_hours(app, client, owner):
    post(client, BOOKS, DUNE, "k", owner[1])
    with app.app_context():
        past = utcnow() - timedelta(seconds=1)
        db.session.execute(update(IdempotencyKey).values(expires_at=past))
        db.session.commit()
    response = post(client, BOOKS, DUNE, "k", owner[1])
    assert response.status_code == 201 and "Idempotent-Replayed" not in response.headers
    assert count(app, Book) == 2


def test_keys_are_stored_for_24_hours(app, client, owner):
    post(client, BOOKS, DUNE, "k", owner[1])
    with app.app_context():
        key = db.session.scalar(select(IdempotencyKey))
        assert key.expires_at - key.created_at == timedelta(hours=24)


def test_prune_deletes_expired_keys(app, client, owner):
    post(client, BOOKS, DUNE, "old", owner[1])
    post(client, BOOKS, DUNE, "new", owner[1])
    with app.app_context():
        db.session.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == "old")
            .values(expires_at=IdempotencyKey.created_at)
        )
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["prune"])
    assert result.exit_code == 0 and "idempotency_keys: 1 deleted" in result.output
    assert count(app, IdempotencyKey) == 1
