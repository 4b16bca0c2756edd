"""Business rules that resources call. Each public function is one request's unit of work and
ends with `commit`, the only transaction boundary; any error before it is rolled back when the
request's session is removed."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy.exc import IntegrityError

from ..errors import Conflict
from ..extensions import db

_commit_deferred: ContextVar[bool] = ContextVar("bookshelf_commit_deferred", default=False)


@contextmanager
def commit_deferred() -> Iterator[None]:
    """Within this block `commit` only flushes: the caller adds to the same transaction and
    commits it once (an idempotent request stores its response with its work)."""
    token = _commit_deferred.set(True)
    try:
        yield
    finally:
        _commit_deferred.reset(token)


CONCURRENT_CHANGE = "The request conflicts with a concurrent change."


def commit(conflict: str = CONCURRENT_CHANGE) -> None:
    """Commit, turning a unique-constraint race lost to another request into 409."""
    with _conflicts_as_409(conflict):
        if _commit_deferred.get():
            db.session.flush()
        else:
            db.session.commit()


def flush(conflict: str = CONCURRENT_CHANGE) -> None:
    """Flush (new rows get their ids) with `commit`'s 409 for a lost unique-constraint race."""
    with _conflicts_as_409(conflict):
        db.session.flush()


@contextmanager
def _conflicts_as_409(conflict: str) -> Iterator[None]:
    try:
        yield
    except IntegrityError:
        db.session.rollback()
        raise Conflict(conflict) from None
