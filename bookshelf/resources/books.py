"""/books: public search and reads; owner-or-admin writes."""

from flask import url_for
from flask_jwt_extended import current_user, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..auth.permissions import verified_email_required
from ..conditional import if_match
from ..http import created, item, no_content
from ..idempotency import idempotent
from ..models import Book
from ..openapi import Operation
from ..routing import MAX_ID
from ..services import books
from .fields import BOOK_FIELDS, marshal_rows
from .pagination import cursor_arguments, cursor_list, open_cursor, page_arguments

PAGING = (
    "Pages by number (`page`) or by cursor: every page's `meta.next_cursor` (null on the last) "
    "asks, as `cursor`, for the page after it in the same sort and filters, stable while books "
    'are added and deleted, and is linked as `rel="next"`. Pages by number are counted up to '
    f"{books.COUNT_LIMIT:,} matching books; past that `total_exact` is false and `total` and "
    "`pages` are lower bounds. `count=false` skips the count; cursor pages are never counted."
)
READ_ONLY = frozenset({"id", "owner_id", "created_at", "updated_at", "deleted_at"})
SPARSE = (
    " `fields` (e.g. `title,author`) sends only those fields of each book, and `id`; the ETag "
    "is that of the representation sent, so If-None-Match answers 304 only to the tag of the "
    "same fields, and If-Match on a write needs the full book's tag."
)


def sort_keys(value, name=None, op=None) -> list[tuple[str, bool]]:
    """`title,-published_year` -> [("title", False), ("published_year", True)]."""
    keys = []
    for part in value.split(","):
        key = part[1:] if part.startswith("-") else part
        if key not in books.SORT_KEYS:
            raise ValueError(
                f"each key must be one of {', '.join(books.SORT_KEYS)}, optionally "
                "prefixed with - for descending"
            )
        if key in {k for k, _ in keys}:
            raise ValueError(f"{key} is given twice")
        keys.append((key, part.startswith("-")))
    return keys


_SORT_KEY = f"-?({'|'.join(books.SORT_KEYS)})"
sort_keys.schema = {
    "type": "string",
    "pattern": f"^{_SORT_KEY}(,{_SORT_KEY})*$",
    "maxLength": len(",".join(f"-{key}" for key in books.SORT_KEYS)),  # each key once
    "examples": ["author,-published_year"],
}


def book_fields(value, name=None, op=None) -> tuple[str, ...]:
    """`title,author` -> ("id", "title", "author"): the output fields asked for, `id` always
    among them, in the book's own order, so that one set of fields is one representation (one
    ETag) however it is written."""
    names = value.split(",")
    if "" in names:
        raise ValueError("must be field names separated by commas, e.g. title,author")
    if not set(names) <= BOOK_FIELDS.keys():
        raise ValueError(f"each name must be one of {', '.join(BOOK_FIELDS)}")
    for field in names:
        if names.count(field) > 1:
            raise ValueError(f"{field} is given twice")
    wanted = {"id", *names}
    return tuple(field for field in BOOK_FIELDS if field in wanted)


_FIELD = f"({'|'.join(BOOK_FIELDS)})"
book_fields.schema = {
    "type": "string",
    "pattern": f"^{_FIELD}(,{_FIELD})*$",
    "maxLength": len(",".join(BOOK_FIELDS)),  # each name once
    "description": "Only these fields of each book, comma-separated, each once, from: "
    f"{', '.join(BOOK_FIELDS)}. `id` is always sent. Without `fields`, every field.",
    "examples": ["title,author"],
}


def book_output(names: tuple[str, ...] | None) -> dict:
    """The output fields of a read: every field, or those `fields` names."""
    return BOOK_FIELDS if names is None else {field: BOOK_FIELDS[field] for field in names}


book_parser = v.json_parser(
    Argument("title", type=v.text(1, 200), required=True, nullable=False),
    Argument("author", type=v.text(1, 200), required=True, nullable=False),
    Argument("genre", type=v.text(1, 100)),
    Argument("published_year", type=v.integer(0, v.next_year)),
    Argument("isbn", type=v.isbn),
)
search_parser = v.query_parser(
    Argument("author", type=v.text(1, 200)),
    Argument("genre", type=v.text(1, 100)),
    Argument("q", type=v.text(1, 200)),
    Argument("year_from", type=v.query_integer(0, v.next_year)),
    Argument("year_to", type=v.query_integer(0, v.next_year)),
    Argument("owner_id", type=v.query_integer(1, MAX_ID)),
    Argument("sort", type=sort_keys, default=[("id", False)]),
    Argument("fields", type=book_fields),
    *page_arguments(),
    *cursor_arguments(),
)
# /users/{id}/books: the same list, its owner named by the path.
owner_books_parser = search_parser.copy().remove_argument("owner_id")
read_parser = v.query_parser(Argument("fields", type=book_fields))


def book_page(parser, **fixed):
    """A page of the catalog, by number or by cursor, as `parser` reads the query, `fixed`
    adding filters. `fields` shapes each book, not which books: it is not in a cursor's scope,
    so a cursor is good with any fields."""
    args = v.parse_query(parser) | fixed
    if None not in (args["year_from"], args["year_to"]) and args["year_from"] > args["year_to"]:
        raise v.ValidationError(details={"year_from": "must not be after year_to"})
    paging = {name: args.pop(name) for name in ("page", "per_page", "cursor", "count")}
    output = book_output(args.pop("fields"))
    search = books.Search.of(**args)
    after = open_cursor(paging["cursor"], search.scope)
    found = books.search_books(
        search,
        per_page=paging["per_page"],
        page=paging["page"],
        after=after,
        count=paging["count"],
    )
    return cursor_list(marshal_rows(found.books, output), found, search.scope, paging)


# What a list of books answers: pages of books, by number or cursor, each with `fields`.
_LIST = {
    "output": BOOK_FIELDS,
    "model": Book,
    "many": True,
    "cursor": True,
    "etag": True,
    "sparse": True,
}


class BookList(Resource):
    # The last runs first.
    method_decorators = {"post": [idempotent, verified_email_required, jwt_required()]}
    docs = {
        "get": Operation(
            "Search the catalog",
            query=search_parser,
            **_LIST,
            description=PAGING + SPARSE + " `owner_id`: only the books of that user (as "
            "/users/{user_id}/books, but an empty list, not 404, for an id of no one).",
        ),
        "post": Operation(
            "Add a book; you own it",
            auth="access",
            body=book_parser,
            read_only=READ_ONLY,
            status=201,
            output=BOOK_FIELDS,
            model=Book,
            location=True,
            idempotent=True,
            errors=(409,),
        ),
    }

    def get(self):
        return book_page(search_parser)

    def post(self):
        book = books.create_book(current_user, v.parse_body(book_parser, read_only=READ_ONLY))
        return created(marshal(book, BOOK_FIELDS), url_for("book", book_id=book.id), etag=True)


class BookResource(Resource):
    method_decorators = {
        m: [verified_email_required, jwt_required()] for m in ("put", "patch", "delete")
    }
    _write = {
        "auth": "access",
        "body": book_parser,
        "read_only": READ_ONLY,
        "output": BOOK_FIELDS,
        "model": Book,
        "if_match": True,
        "errors": (403, 404, 409),
    }
    docs = {
        "get": Operation(
            "One book",
            query=read_parser,
            output=BOOK_FIELDS,
            model=Book,
            etag=True,
            sparse=True,
            errors=(404,),
            description=SPARSE.strip(),
        ),
        "put": Operation(
            "Replace a book (owner or admin): optional fields not sent get their defaults",
            **_write,
        ),
        "patch": Operation(
            "Change some fields (owner or admin); null restores a default",
            partial=True,
            **_write,
        ),
        "delete": Operation(
            "Delete a book (owner or admin)",
            auth="access",
            status=204,
            if_match=True,
            errors=(403, 404),
        ),
    }

    def get(self, book_id):
        output = book_output(v.parse_query(read_parser)["fields"])
        return item(marshal(books.read_book(book_id), output), etag=True)

    def put(self, book_id):
        fields = v.parse_body(book_parser, read_only=READ_ONLY)
        book = books.replace_book(current_user, book_id, fields, if_match(BOOK_FIELDS))
        return item(marshal(book, BOOK_FIELDS), etag=True)

    def patch(self, book_id):
        fields = v.parse_body(book_parser, partial=True, read_only=READ_ONLY)
        book = books.update_book(current_user, book_id, fields, if_match(BOOK_FIELDS))
        return item(marshal(book, BOOK_FIELDS), etag=True)

    def delete(self, book_id):
        books.delete_book(current_user, book_id, if_match(BOOK_FIELDS))
        return no_content()


class UserBookList(Resource):
    docs = {
        "get": Operation(
            "The books a user owns",
            query=owner_books_parser,
            **_LIST,
            errors=(404,),
            description="Public, as the catalog: the list `GET /books?owner_id={user_id}` "
            "gives, with the same parameters, and its cursors. 404 when the user does not "
            "exist or was deleted. " + PAGING + SPARSE,
        )
    }

    def get(self, user_id):
        books.ensure_live_owner(user_id)
        return book_page(owner_books_parser, owner_id=user_id)
