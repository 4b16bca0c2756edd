from sqlalchemy import BigInteger
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db


class SyncClock(db.Model):
    """One row: the changes feed's clock (bookshelf.changes)."""

    __tablename__ = "sync_clock"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The position of the last committed change; a write takes the next under this row's lock.
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Tombstones at or below this position were pruned: a cursor before it may miss deletions.
    pruned_through: Mapped[int] = mapped_column(BigInteger, default=0)
