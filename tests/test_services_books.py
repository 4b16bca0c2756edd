"""The books service's rules, called directly on the suite's real database (no HTTP).

Covered: who may change a book (owner or admin, else 403; a missing book is 404 first), PUT
(`replace_book`: optional fields not sent go back to their defaults) versus PATCH
(`update_book`: only the fields sent change, null restores a default), ISBN uniqueness among
live books (checked by the service, backed by the partial unique index), and soft delete (the
row stays, the book is gone from reads and search, a second delete is 404).

ISBNs reach the service already normalised: hyphens and spaces are stripped by
`bookshelf.validation.isbn` in the request parser, and the service compares stored digits.
"""

import pytest
from sqlalchemy import func, select

from bookshelf import validation
from bookshelf.auth.jwt import Actor
from bookshelf.errors import Conflict, Forbidden, NotFound, PreconditionFailed
from bookshelf.extensions import db
from bookshelf.models import Book
from bookshelf.services import books
from tests.support import make_user, refused

ISBN_13 = "9780306406157"
OTHER_ISBN_13 = "9781861972712"


# --- helpers ---------------------------------------------------------------------------------


def make_book(owner: Actor, **fields) -> int:
    book = books.create_book(owner, {"title": "Dune", "author": "Frank Herbert"} | fields)
    return book.id


def stored(book_id: int) -> Book:
    """The book's row as the database has it now, not as the session remembers it."""
    db.session.expire_all()
    return db.session.scalars(select(Book).where(Book.id == book_id)).one()


def no_precondition(book: Book) -> None:
    """No If-Match header was sent."""


def replace(actor, book_id, **fields):
    return books.replace_book(actor, book_id, fields, no_precondition)


def update(actor, book_id, **fields):
    return books.update_book(actor, book_id, fields, no_precondition)


def delete(actor, book_id):
    return books.delete_book(actor, book_id, no_precondition)


WRITES = {
    "replace": lambda actor, book_id: replace(actor, book_id, title="New", author="Someone"),
    "update": lambda actor, book_id: update(actor, book_id, title="New"),
    "delete": delete,
}
# What each write leaves in the row: (title, deleted).
WRITTEN = {"replace": ("New", False), "update": ("New", False), "delete": ("Dune", True)}


def assert_written(book_id: int, write: str) -> Book:
    book = stored(book_id)
    assert (book.title, book.deleted_at is not None) == WRITTEN[write]
    return book


# --- ownership -------------------------------------------------------------------------------


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_someone_elses_book_is_forbidden_and_left_as_it_was(ctx, write):
    owner, stranger = make_user(), make_user()
    book_id = make_book(owner)
    with refused(Forbidden, 403, "FORBIDDEN"):
        write(stranger, book_id)
    book = stored(book_id)
    assert (book.title, book.owner_id, book.deleted_at) == ("Dune", owner.id, None)


@pytest.mark.parametrize("write", WRITES)
def test_an_admin_may_write_anyones_book_without_taking_it_over(ctx, write):
    owner, admin = make_user(), make_user(role="admin")
    book_id = make_book(owner)
    WRITES[write](admin, book_id)
    assert assert_written(book_id, write).owner_id == owner.id


@pytest.mark.parametrize("write", WRITES)
def test_the_owner_may_write_their_book(ctx, write):
    owner = make_user()
    book_id = make_book(owner)
    WRITES[write](owner, book_id)
    assert_written(book_id, write)


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_an_unknown_book_is_404_for_anyone_before_ownership_is_asked(ctx, write):
    with refused(NotFound, 404, "NOT_FOUND"):
        write(make_user(), 12345)


def test_a_failed_precondition_changes_nothing(ctx):
    owner = make_user()
    book_id = make_book(owner)

    def stale(book):
        raise PreconditionFailed()

    with refused(PreconditionFailed, 412, "PRECONDITION_FAILED"):
        books.update_book(owner, book_id, {"title": "New"}, stale)
    with refused(PreconditionFailed, 412, "PRECONDITION_FAILED"):
        books.delete_book(owner, book_id, stale)
    book = stored(book_id)
    assert (book.title, book.deleted_at) == ("Dune", None)


def test_the_precondition_is_not_asked_of_a_non_owner(ctx):
    """Ownership is checked first: a stranger learns nothing from the ETag check."""
    owner, stranger = make_user(), make_user()
    book_id = make_book(owner)
    asked = []
    with refused(Forbidden, 403, "FORBIDDEN"):
        books.update_book(stranger, book_id, {"title": "New"}, asked.append)
    assert asked == []


# --- PUT versus PATCH ------------------------------------------------------------------------


def full_book(owner: Actor) -> int:
    return make_book(owner, genre="Science fiction", published_year=1965, isbn=ISBN_13)


def test_create_gives_omitted_optional_fields_their_defaults(ctx):
    book = stored(make_book(make_user()))
    assert (book.genre, book.published_year, book.isbn) == ("Unknown", None, None)


def test_replace_resets_the_optional_fields_not_sent(ctx):
    owner = make_user()
    book_id = full_book(owner)
    replace(owner, book_id, title="Dune Messiah", author="Frank Herbert")
    book = stored(book_id)
    assert (book.title, book.author) == ("Dune Messiah", "Frank Herbert")
    assert (book.genre, book.published_year, book.isbn) == ("Unknown", None, None)
    assert book.owner_id == owner.id


def test_replace_sets_every_field_sent(ctx):
    owner = make_user()
    book_id = make_book(owner)
    replace(
        owner,
        book_id,
        title="Emma",
        author="Jane Austen",
        genre="Novel",
        published_year=1815,
        isbn=OTHER_ISBN_13,
    )
    book = stored(book_id)
    assert (book.title, book.author, book.genre, book.published_year, book.isbn) == (
        "Emma",
        "Jane Austen",
        "Novel",
        1815,
        OTHER_ISBN_13,
    )


def test_update_leaves_the_fields_not_sent_unchanged(ctx):
    owner = make_user()
    book_id = full_book(owner)
    update(owner, book_id, title="Dune Messiah")
    book = stored(book_id)
    assert (book.title, book.author) == ("Dune Messiah", "Frank Herbert")
    assert (book.genre, book.published_year, book.isbn) == ("Science fiction", 1965, ISBN_13)


def test_update_with_null_restores_an_optional_fields_default(ctx):
    owner = make_user()
    book_id = full_book(owner)
    update(owner, book_id, genre=None, isbn=None)
    book = stored(book_id)
    assert (book.genre, book.published_year, book.isbn) == ("Unknown", 1965, None)


# --- ISBN uniqueness -------------------------------------------------------------------------


def live_books_with_isbn(isbn: str) -> int:
    return db.session.scalar(
        select(func.count()).select_from(Book).where(Book.isbn == isbn, Book.deleted_at.is_(None))
    )


def test_a_second_live_book_with_the_same_isbn_is_a_conflict(ctx):
    owner, other = make_user(), make_user()
    make_book(owner, isbn=ISBN_13)
    with refused(Conflict, 409, "CONFLICT") as caught:
        make_book(other, isbn=ISBN_13, title="Another")
    assert caught.value.details == {"isbn": "is already in the catalog"}
    assert live_books_with_isbn(ISBN_13) == 1


@pytest.mark.parametrize("change", ["replace", "update"])
def test_changing_a_book_to_a_taken_isbn_is_a_conflict(ctx, change):
    owner = make_user()
    make_book(owner, isbn=ISBN_13)
    book_id = make_book(owner, isbn=OTHER_ISBN_13, title="Another")
    write = replace if change == "replace" else update
    with refused(Conflict, 409, "CONFLICT"):
        write(owner, book_id, title="Another", author="Frank Herbert", isbn=ISBN_13)
    assert stored(book_id).isbn == OTHER_ISBN_13


def test_a_book_keeps_its_own_isbn_without_conflicting_with_itself(ctx):
    owner = make_user()
    book_id = make_book(owner, isbn=ISBN_13)
    replace(owner, book_id, title="Dune", author="F. Herbert", isbn=ISBN_13)
    update(owner, book_id, isbn=ISBN_13)
    assert stored(book_id).isbn == ISBN_13


def test_books_without_an_isbn_never_conflict(ctx):
    owner = make_user()
    make_book(owner)
    make_book(owner)
    assert db.session.scalar(select(func.count()).select_from(Book).where(Book.isbn.is_(None))) == 2


def test_a_soft_deleted_books_isbn_may_be_used_again(ctx):
    owner = make_user()
    first = make_book(owner, isbn=ISBN_13)
    delete(owner, first)
    second = make_book(make_user(), isbn=ISBN_13)
    assert second != first
    assert live_books_with_isbn(ISBN_13) == 1
    # The deleted book keeps its ISBN: the rule is uniqueness among live books only.
    assert stored(first).isbn == ISBN_13


def test_spellings_of_one_isbn_are_one_isbn_once_parsed(ctx):
    """The service compares what the parser stores: bare digits (the parser's own cases are
    in the HTTP tests)."""
    owner = make_user()
    book_id = make_book(owner, isbn=validation.isbn("978-0-306-40615-7"))
    with refused(Conflict, 409, "CONFLICT"):
        make_book(owner, isbn=validation.isbn("978 0306 40615 7"))
    assert stored(book_id).isbn == ISBN_13


def test_a_race_past_the_check_is_still_a_conflict(ctx, monkeypatch):
    """Two requests can both pass the service's check; the partial unique index then refuses
    the second, and `commit` answers 409, not 500."""
    owner = make_user()
    make_book(owner, isbn=ISBN_13)
    monkeypatch.setattr(books, "_ensure_isbn_free", lambda isbn: None)
    with refused(Conflict, 409, "CONFLICT") as caught:
        make_book(owner, isbn=ISBN_13)
    assert caught.value.message == books.DUPLICATE_ISBN
    assert live_books_with_isbn(ISBN_13) == 1


# --- soft delete -----------------------------------------------------------------------------


def search_ids() -> list[int]:
    found = books.search_books(books.Search.of(sort=[("id", False)]), per_page=100)
    assert found.total == len(found.books)
    return [row["id"] for row in found.books]


def test_delete_marks_the_row_and_keeps_it(ctx):
    owner = make_user()
    book_id = make_book(owner)
    delete(owner, book_id)
    book = stored(book_id)
    assert book.deleted_at is not None
    assert (book.title, book.owner_id) == ("Dune", owner.id)
    assert db.session.scalar(select(func.count()).select_from(Book)) == 1


def test_a_deleted_book_is_gone_from_reads_and_search(ctx):
    owner = make_user()
    kept, gone = make_book(owner), make_book(owner, title="Gone")
    delete(owner, gone)
    assert search_ids() == [kept]
    assert books.read_book(kept)["id"] == kept
    with refused(NotFound, 404, "NOT_FOUND"):
        books.read_book(gone)
    with refused(NotFound, 404, "NOT_FOUND"):
        books.get_book(gone)
    found = books.search_books(books.Search.of(sort=[("id", False)], q="Gone"), per_page=10)
    assert (found.books, found.total) == ([], 0)


def test_deleting_twice_is_404_and_keeps_the_first_deletion_time(ctx):
    owner = make_user()
    book_id = make_book(owner)
    delete(owner, book_id)
    deleted_at = stored(book_id).deleted_at
    with refused(NotFound, 404, "NOT_FOUND"):
        delete(owner, book_id)
    assert stored(book_id).deleted_at == deleted_at


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_deleted_book_cannot_be_written_even_by_an_admin(ctx, write):
    owner = make_user()
    book_id = make_book(owner)
    delete(owner, book_id)
    with refused(NotFound, 404, "NOT_FOUND"):
        write(make_user(role="admin"), book_id)
    book = stored(book_id)
    assert book.title == "Dune"
