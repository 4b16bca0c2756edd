"""The books catalog: search, and the owner-or-admin rules for changing it."""

import functools
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, Integer, and_, bindparam, column, false, func, or_, select, table

from .. import changes  # noqa: F401 (stamps each committed change of a book for the feed)
from ..auth.jwt import Actor
from ..auth.permissions import ensure_owner_or_admin
from ..database import PreparedRead
from ..errors import Conflict, NotFound, ValidationError
from ..extensions import db
from ..models import Book, User
from . import commit

DUPLICATE_ISBN = "A book with this ISBN already exists."
SORT_KEYS = ("title", "author", "published_year", "created_at", "id")


Precondition = Callable[[Book], None]

_LIVE_BOOK_BY_ID = PreparedRead(
    select(Book.__table__).where(Book.id == bindparam("book_id"), Book.deleted_at.is_(None))
)


def read_book(book_id: int) -> dict:
    """A live book's columns, for GET: no ORM object, no unit of work (see `PreparedRead`)."""
    rows = _LIVE_BOOK_BY_ID.rows(book_id=book_id)
    if not rows:
        raise NotFound("No book with this id.")
    return rows[0]


_LIVE_USER_BY_ID = PreparedRead(
    select(User.id).where(User.id == bindparam("user_id"), User.deleted_at.is_(None))
)


def ensure_live_owner(user_id: int) -> None:
    """404 unless `user_id` is a live account: the books of no one (never registered, or
    deleted) are not an empty list but a list that does not exist."""
    if not _LIVE_USER_BY_ID.rows(user_id=user_id):
        raise NotFound("No user with this id.")


def get_book(book_id: int, *, for_update: bool = False) -> Book:
    """A live book; `for_update` locks its row until commit (PostgreSQL; SQLite's write
    transaction already excludes other writers), so a check and the write that follows are one
    atomic step."""
    book = db.session.get(Book, book_id, with_for_update=for_update, populate_existing=for_update)
    if book is None or book.is_deleted:
        raise NotFound("No book with this id.")
    return book


# Counted exactly up to here; past it a list says `total_exact: false` and `total` is a lower
# bound (this, or as far as the page has seen): counting more would cost time proportional to
# the catalog.
COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class Search:
    """Which books, in which order: the filters normalised as they are matched, and the sort
    keys with `id` last (it breaks ties, and nothing sorts after it)."""

    keys: tuple[tuple[str, bool], ...]
    filters: tuple[tuple[str, object], ...]

    @classmethod
    def of(
        cls,
        *,
        sort: list[tuple[str, bool]],
        author: str | None = None,
        genre: str | None = None,
        q: str | None = None,
        year_from: int | None = None,
        year_to: int | None = None,
        owner_id: int | None = None,
    ) -> "Search":
        keys = []
        for key, desc in sort:
            keys.append((key, desc))
            if key == "id":
                break
        else:
            keys.append(("id", False))
        filters = {
            "author": author.lower() if author is not None else None,
            "genre": genre.lower() if genre is not None else None,
            "q": q,
            "year_from": year_from,
            "year_to": year_to,
            "owner_id": owner_id,
        }
        return cls(tuple(keys), tuple((k, v) for k, v in filters.items() if v is not None))

    @property
    def scope(self) -> str:
        """What a cursor is only valid for: this order and these filters."""
        return json.dumps([self.keys, self.filters], separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Found:
    books: list[dict]
    total: int | None  # None when not counted
    total_exact: bool  # False: more books match than `total`, a lower bound
    more: bool  # another page follows
    next_position: list | None  # the last book's sort values and id, when another page follows


def search_books(
    search: Search,
    *,
    per_page: int,
    page: int = 1,
    after: list | None = None,
    count: bool = True,
) -> Found:
    """A page by number (`page`) or the page that follows a position (`after`, from an earlier
    `Found.next_position`, never counted). NULLs sort last in both directions; `id` breaks ties.
    One row more than the page is read to tell whether another follows."""
    filters = dict(search.filters)
    if "q" in filters:
        filters |= _q_values(filters.pop("q"))
    values = _position_values(search.keys, after) if after is not None else None
    nulls = None if values is None else tuple(value is None for value in values)
    page_of_books = _page_read(frozenset(filters), search.keys, nulls)
    params = dict(filters)
    if values is not None:
        params |= {
            f"after_{i}": _bound(key, value)
            for i, ((key, _), value) in enumerate(zip(search.keys, values, strict=True))
            if value is not None
        }
    offset = 0 if after is not None else (page - 1) * per_page
    rows = page_of_books.rows(**params, limit=per_page + 1, offset=offset)
    more = len(rows) > per_page
    books = rows[:per_page]
    total, exact = None, True
    if after is None and count:
        if not more and (books or offset == 0):
            total = offset + len(books)  # the rows tell: no count needed
        else:
            counted = _count_read(frozenset(filters)).rows(**filters, cap=COUNT_LIMIT + 1, offset=0)
            total = counted[0]["total"]
            if total > COUNT_LIMIT:  # a lower bound, at least as far as this page has seen
                total, exact = max(COUNT_LIMIT, offset + len(rows)), False
    position = None
    if more:
        last = books[-1]
        position = [_position_value(last[key]) for key, _ in search.keys]
    return Found(books, total, exact, more, position)


# A position's values as JSON holds them: datetimes as ISO 8601 text.
_POSITION_TYPES = {"id": int, "title": str, "author": str, "published_year": int, "created_at": str}


def _position_value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def _position_values(keys, position: list) -> list:
    """A position's values typed as their columns; a position of another shape is a 422."""
    invalid = ValidationError(details={"cursor": "is not a valid cursor"})
    if not isinstance(position, list) or len(position) != len(keys):
        raise invalid
    values = []
    for (key, _), value in zip(keys, position, strict=True):
        if value is None and Book.__table__.c[key].nullable:
            values.append(None)
        elif type(value) is not _POSITION_TYPES[key]:
            raise invalid
        elif key == "created_at":
            try:
                values.append(datetime.fromisoformat(value))
            except ValueError:
                raise invalid from None
        else:
            values.append(value)
    return values


def _bound(key: str, value):
    """`value` as the driver must receive it for column `key` (PreparedRead binds raw values;
    SQLite stores datetimes as SQLAlchemy's strings)."""
    dialect = db.engine.dialect
    process = Book.__table__.c[key].type.dialect_impl(dialect).bind_processor(dialect)
    return process(value) if process is not None else value


def _conditions(filters: frozenset[str]) -> list:
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
    if "q_fts" in filters:  # SQLite: the trigram index narrows the rows the line above checks
        conditions.append(
            Book.id.in_(select(_FTS.c.rowid).where(_FTS.c.books_fts.match(bindparam("q_fts"))))
        )
    if "year_from" in filters:
        conditions.append(Book.published_year >= bindparam("year_from"))
    if "year_to" in filters:
        conditions.append(Book.published_year <= bindparam("year_to"))
    if "owner_id" in filters:
        conditions.append(Book.owner_id == bindparam("owner_id"))
    return conditions


@functools.lru_cache(maxsize=512)
def _page_read(
    filters: frozenset[str],
    keys: tuple[tuple[str, bool], ...],
    nulls: tuple[bool, ...] | None,
) -> PreparedRead:
    """The page of one shape of search (which filters, which order, and for a cursor page which
    of its position's values are NULL), the values bound per request: compiled once per shape."""
    conditions = _conditions(filters)
    if nulls is not None:
        conditions += _after(keys, nulls)
    # Books without a year go last in both directions, on every database. Only a nullable
    # column says so: `title DESC NULLS LAST` would not match an index scanned backwards.
    order = []
    for key, desc in keys:
        column = getattr(Book, key)
        term = column.desc() if desc else column.asc()
        order.append(term.nulls_last() if Book.__table__.c[key].nullable else term)
    return PreparedRead(
        select(Book.__table__)
        .where(*conditions)
        .order_by(*order)
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )


def _after(keys: tuple[tuple[str, bool], ...], nulls: tuple[bool, ...]) -> list:
    """The rows after a position in this order, NULLs last in both directions: those that equal
    it on the first keys and come after it on the next. Nothing comes after a NULL on its own
    key. The first key's bound is repeated on its own, for an index to seek to it."""
    alternatives, equal = [], []
    for i, ((key, desc), is_null) in enumerate(zip(keys, nulls, strict=True)):
        column, value = getattr(Book, key), bindparam(f"after_{i}")
        nullable = Book.__table__.c[key].nullable
        if is_null:
            equal.append(column.is_(None))
            continue
        beyond = column < value if desc else column > value
        if nullable:
            beyond = or_(beyond, column.is_(None))
        alternatives.append(and_(*equal, beyond))
        equal.append(column == value)
    (first, desc), first_null = keys[0], nulls[0]
    column, value = getattr(Book, first), bindparam("after_0")
    if first_null:
        seek = column.is_(None)
    else:
        seek = column <= value if desc else column >= value
        if Book.__table__.c[first].nullable:
            seek = or_(seek, column.is_(None))
    return [seek, or_(*alternatives) if alternatives else false()]


@functools.lru_cache(maxsize=64)
def _count_read(filters: frozenset[str]) -> PreparedRead:
    """The matching books counted up to `cap`: bounded work however many match."""
    # An explicit OFFSET: SQLite's compiler adds one to every LIMIT, as a literal that
    # PreparedRead would not bind.
    matching = (
        select(Book.id)
        .where(*_conditions(filters))
        .limit(bindparam("cap", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    return PreparedRead(select(func.count().label("total")).select_from(matching.subquery()))


_ESCAPE = "/"

# `q` matches a book when q.lower() is a substring of title.lower() or of author.lower() (Python's
# str.lower on SQLite, database.py; lower() of a UTF-8 locale on PostgreSQL), a literal % or _
# included. PostgreSQL's ILIKE is served by pg_trgm GIN indexes; SQLite's LIKE by the trigram
# FTS5 table `books_fts` (migration 0006), which finds a superset of the matches for 3 or more
# characters that LIKE then checks. Under 3 characters, or with a letter whose case the
# tokenizer folds otherwise than Python (below), SQLite scans.
_FTS = table("books_fts", column("rowid"), column("books_fts"))
_FTS_MIN_LENGTH = 3
# Lowercase letters with an uppercase form that SQLite's FTS5 (3.34-3.46, its Unicode 6.1
# folding) does not fold to them: newer scripts and additions (Georgian Mtavruli, Cherokee,
# Osage, Adlam, ...). İ is indexed as "i" + U+0307 (models.book), so "i" is not among them.
# tests/test_search_index.py recomputes this against the SQLite in use.
_FTS_UNFOLDED = frozenset(
    chr(code)
    for first, last in (
        (0x025C, 0x025C),
        (0x0261, 0x0261),
        (0x026A, 0x026A),
        (0x026C, 0x026C),
        (0x0282, 0x0282),
        (0x0287, 0x0287),
        (0x029D, 0x029E),
        (0x03F3, 0x03F3),
        (0x0529, 0x0529),
        (0x052B, 0x052B),
        (0x052D, 0x052D),
        (0x052F, 0x052F),
        (0x10D0, 0x10FA),
        (0x10FD, 0x10FF),
        (0x13F8, 0x13FD),
        (0x1D8E, 0x1D8E),
        (0x2C5F, 0x2C5F),
        (0xA699, 0xA699),
        (0xA69B, 0xA69B),
        (0xA794, 0xA794),
        (0xA797, 0xA797),
        (0xA799, 0xA799),
        (0xA79B, 0xA79B),
        (0xA79D, 0xA79D),
        (0xA79F, 0xA79F),
        (0xA7B5, 0xA7B5),
        (0xA7B7, 0xA7B7),
        (0xA7B9, 0xA7B9),
        (0xA7BB, 0xA7BB),
        (0xA7BD, 0xA7BD),
        (0xA7BF, 0xA7BF),
        (0xA7C1, 0xA7C1),
        (0xA7C3, 0xA7C3),
        (0xA7C8, 0xA7C8),
        (0xA7CA, 0xA7CA),
        (0xA7D1, 0xA7D1),
        (0xA7D7, 0xA7D7),
        (0xA7D9, 0xA7D9),
        (0xA7F6, 0xA7F6),
        (0xAB53, 0xAB53),
        (0xAB70, 0xABBF),
        (0x104D8, 0x104FB),
        (0x10597, 0x105A1),
        (0x105A3, 0x105B1),
        (0x105B3, 0x105B9),
        (0x105BB, 0x105BC),
        (0x10CC0, 0x10CF2),
        (0x118C0, 0x118DF),
        (0x16E60, 0x16E7F),
        (0x1E922, 0x1E943),
    )  # fmt: skip
    for code in range(first, last + 1)
)
_fts_tables: "weakref.WeakKeyDictionary[Engine, bool]" = weakref.WeakKeyDictionary()


def _q_values(q: str) -> dict:
    """The bound values `q` is searched with: the LIKE pattern, and on SQLite the FTS5 phrase
    when the trigram index can narrow the search."""
    values = {"q": _like_escaped(q)}
    lowered = q.lower()
    if (
        len(lowered) >= _FTS_MIN_LENGTH
        and db.engine.dialect.name == "sqlite"
        and not _FTS_UNFOLDED.intersection(lowered)
        and _has_fts_table(db.engine)
    ):
        values["q_fts"] = '"' + lowered.replace('"', '""') + '"'
    return values


def _has_fts_table(engine: Engine) -> bool:
    """Whether this SQLite database has `books_fts`: not when its SQLite lacked the trigram
    tokenizer at migration time. Read once per engine."""
    found = _fts_tables.get(engine)
    if found is None:
        with engine.connect() as connection:
            found = (
                connection.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'books_fts'"
                ).first()
                is not None
            )
        _fts_tables[engine] = found
    return found


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
