"""The `page` and `per_page` query parameters every collection takes."""

from flask_restful.reqparse import Argument

from .. import validation as v

MAX_PAGE = 10_000_000  # keeps OFFSET within every database's integer range


def page_arguments() -> list[Argument]:
    return [
        Argument("page", type=v.query_integer(1, MAX_PAGE), default=1),
        Argument("per_page", type=v.query_integer(1, 100), default=20),
    ]
