"""Business rules that resources call. Each public function is one request's unit of work and
ends with `commit`, the only transaction boundary; any error before it is rolled back when the
request's session is removed."""

from collections.abc import Sequence

from sqlalchemy import Executable
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from ..extensions import db


def commit(conflict: str = "The request conflicts with a concurrent change.") -> None:
    """Commit, turning a unique-constraint race lost to another request into 409."""
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Conflict(conflict) from None


def read(statement: Executable, **params) -> Sequence[dict]:
    """The rows of a read-only statement as dicts, run on a pooled connection of its own: no ORM
    objects, no identity map, no unit of work. For the hot public reads, where those were most of
    the request's cost. (Plain dicts: `marshal` probes a RowMapping's attributes, which raises.)"""
    with db.engine.connect() as connection:
        return [dict(row) for row in connection.execute(statement, params).mappings()]
