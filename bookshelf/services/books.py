"""The books catalog: search, and the owner-or-admin rules for changing it."""

import functools
from collections.abc import Callable

from sqlalchemy import Integer, bindparam, func, or_, select

from ..auth.jwt import Actor
from ..auth.permissions import ensure_owner_or_admin
from ..database import PreparedRead
from ..errors import Conflict, NotFound
from ..extensions import db
from ..models import Book
from . import commit

DUPLICATE_ISBN = "A book with this ISBN already exists."
SORT_KEYS = ("title", "author", "published_year", "created_at", "id")


Precondition = Callable[[Book], None]

_LIVE_BOOK_BY_ID = PreparedRead(
    select(Book.__table__).where(Book.id == bindparam("book_id"), Book.deleted_at.is_(None))
)


# All books less the deleted ones. On SQLite, `count(*)` of a whole table is a b-tree count that
# reads no row, and the deleted ones have a partial index, where `WHERE deleted_at IS NULL` would
# visit every row: 10 us instead of 1 ms on 10,000 books.
_LIVE_COUNT = select(
    (
        select(func.count()).select_from(Book).scalar_subquery()
        - select(func.count())
        .select_from(Book)
        .where(Book.deleted_at.is_not(None))
        .scalar_subquery()
    ).label("total")
)


def read_book(book_id: int) -> dict:
    """A live book's columns, for GET: no ORM object, no unit of work (see `PreparedRead`)."""
    rows = _LIVE_BOOK_BY_ID.rows(book_id=book_id)
    if not rows:
        raise NotFound("No book with this id.")
    return rows[0]


def get_book(book_id: int, *, for_update: bool = False) -> Book:
    """A live book; `for_update` locks its row until commit (PostgreSQL; SQLite's write
    transaction already excludes other writers), so a check and the write that follows are one
    atomic step."""
    book = db.session.get(Book, book_id, with_for_update=for_update, populate_existing=for_update)
    if book is None or book.is_deleted:
        raise NotFound("No book with this id.")
    return book


def search_books(
    *,
    page: int,
    per_page: int,
    sort: list[tuple[str, bool]],
    author: str | None = None,
    genre: str | None = None,
    q: str | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
) -> tuple[list[dict], int]:
    """`sort` is a list of (key, descending); `id` always breaks ties; NULLs sort last."""
    filters = {
        "author": author.lower() if author is not None else None,
        "genre": genre.lower() if genre is not None else None,
        "q": _like_escaped(q) if q is not None else None,
        "year_from": year_from,
        "year_to": year_to,
    }
    filters = {name: value for name, value in filters.items() if value is not None}
    page_of_books, count = _search_reads(frozenset(filters), tuple(sort))
    total = count.rows(**filters)[0]["total"]
    books = page_of_books.rows(**filters, limit=per_page, offset=(page - 1) * per_page)
    return books, total


@functools.lru_cache(maxsize=256)
def _search_reads(
    filters: frozenset[str], sort: tuple[tuple[str, bool], ...]
) -> tuple[PreparedRead, PreparedRead]:
    """The page and the count of one shape of search (which filters, which order), the values
    bound per request: each shape is compiled once."""
    conditions = [Book.deleted_at.is_(None)]
    if "author" in filters:
        conditions.append(func.lower(Book.author) == bindparam("author"))
    if "genre" in filters:
        conditions.append(func.lower(Book.genre) == bindparam("genre"))
    if "q" in filters:
        q = bindparam("q")
        conditions.append(
            or_(Book.title.icontains(q, escape=_ESCAPE), Book.author.icontains(q, escape=_ESCAPE))
        )
    if "year_from" in filters:
        conditions.append(Book.published_year >= bindparam("year_from"))
    if "year_to" in filters:
        conditions.append(Book.published_year <= bindparam("year_to"))
    # Books without a year go last in both directions, on every database.
    order = [
        (getattr(Book, key).desc() if desc else getattr(Book, key).asc()).nulls_last()
        for key, desc in sort
    ]
    if "id" not in {key for key, _ in sort}:
        order.append(Book.id)
    page_of_books = (
        select(Book.__table__)
        .where(*conditions)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    count = (
        select(func.count().label("total")).select_from(Book).where(*conditions)
        if filters
        else _LIVE_COUNT
    )
    return PreparedRead(page_of_books), PreparedRead(count)


_ESCAPE = "/"


def _like_escaped(text: str) -> str:
    """`text` matched literally inside LIKE: its wildcards and the escape character escaped."""
    return (
        text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")
    )


def create_book(owner: Actor, fields: dict) -> Book:
    book = Book(owner_id=owner.id, **(Book.DEFAULTS | _with_defaults(fields)))
    _ensure_isbn_free(book.isbn)
    db.session.add(book)
    commit(DUPLICATE_ISBN)
    return book


def replace_book(actor: Actor, book_id: int, fields: dict, precondition: Precondition) -> Book:
    """PUT: optional fields not sent go back to their defaults."""
    return _change(actor, book_id, Book.DEFAULTS | _with_defaults(fields), precondition)


def update_book(actor: Actor, book_id: int, fields: dict, precondition: Precondition) -> Book:
    """PATCH: only the fields sent change; null restores an optional field's default."""
    return _change(actor, book_id, _with_defaults(fields), precondition)


def delete_book(actor: Actor, book_id: int, precondition: Precondition) -> None:
    book = _writable(actor, book_id, precondition)
    book.soft_delete()
    commit()


def _writable(actor: Actor, book_id: int, precondition: Precondition) -> Book:
    book = get_book(book_id, for_update=True)
    ensure_owner_or_admin(actor, book)
    precondition(book)
    return book


def _change(actor: Actor, book_id: int, values: dict, precondition: Precondition) -> Book:
    book = _writable(actor, book_id, precondition)
    if values.get("isbn") not in (None, book.isbn):
        _ensure_isbn_free(values["isbn"])
    for name, value in values.items():
        setattr(book, name, value)
    commit(DUPLICATE_ISBN)
    return book


def _with_defaults(fields: dict) -> dict:
    """Sent-as-null optional fields take their default."""
    return {
        k: Book.DEFAULTS[k] if v is None and k in Book.DEFAULTS else v for k, v in fields.items()
    }


def _ensure_isbn_free(isbn: str | None) -> None:
    if isbn is None:
        return
    taken = db.session.scalar(
        select(Book.id).where(Book.isbn == isbn, Book.deleted_at.is_(None)).limit(1)
    )
    if taken is not None:
        raise Conflict(DUPLICATE_ISBN, {"isbn": "is already in the catalog"})
