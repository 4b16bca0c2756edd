"""/books: public search and reads; owner-or-admin writes."""

from flask import url_for
from flask_jwt_extended import current_user, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..conditional import if_match
from ..http import created, item, no_content
from ..idempotency import idempotent
from ..models import Book
from ..openapi import Operation
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
    Argument("sort", type=sort_keys, default=[("id", False)]),
    *page_arguments(),
    *cursor_arguments(),
)


class BookList(Resource):
    method_decorators = {"post": [idempotent, jwt_required()]}  # the last runs first
    docs = {
        "get": Operation(
            "Search the catalog",
            query=search_parser,
            output=BOOK_FIELDS,
            model=Book,
            many=True,
            cursor=True,
            etag=True,
            description=PAGING,
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
        args = v.parse_query(search_parser)
        if None not in (args["year_from"], args["year_to"]) and args["year_from"] > args["year_to"]:
            raise v.ValidationError(details={"year_from": "must not be after year_to"})
        paging = {name: args.pop(name) for name in ("page", "per_page", "cursor", "count")}
        search = books.Search.of(**args)
        after = open_cursor(paging["cursor"], search.scope)
        found = books.search_books(
            search,
            per_page=paging["per_page"],
            page=paging["page"],
            after=after,
            count=paging["count"],
        )
        return cursor_list(marshal_rows(found.books, BOOK_FIELDS), found, search.scope, paging)

    def post(self):
        book = books.create_book(current_user, v.parse_body(book_parser, read_only=READ_ONLY))
        return created(marshal(book, BOOK_FIELDS), url_for("book", book_id=book.id), etag=True)


class BookResource(Resource):
    method_decorators = {m: [jwt_required()] for m in ("put", "patch", "delete")}
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
        "get": Operation("One book", output=BOOK_FIELDS, model=Book, etag=True, errors=(404,)),
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
        return item(marshal(books.read_book(book_id), BOOK_FIELDS), etag=True)

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
