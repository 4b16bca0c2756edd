"""Business rules that resources call. Each public function is one request's unit of work and
ends with `commit`, the only transaction boundary; any error before it is rolled back when the
request's session is removed."""

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
