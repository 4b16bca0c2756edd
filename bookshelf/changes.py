"""The changes feed: every committed change of a book, in the order the changes committed.

Each book carries `change_seq`, the position of its last change. A transaction that changes
books takes the next position from the one-row `sync_clock` as the last thing before it commits,
and stamps every book it changed with it. The row lock that the clock's UPDATE takes is held to
the commit, so positions are handed out in commit order: while a change at position n is not
yet committed, no change at n + 1 exists. A reader that has seen position n has therefore seen
every change at n or before, however the writers' transactions overlapped (one that began first
and committed last gets the later position). On SQLite, write transactions are serial anyway.

A row changed again moves on to the new position; a reader sees its last state once it gets
there. Deleted books stay as tombstones (`deleted_at` set) until `prune` removes those older
than SYNC_RETENTION, and records up to where it did: a cursor from before that may have missed a
deletion and is refused (410 SYNC_EXPIRED), as is any cursor older than SYNC_RETENTION.

The price: writes of books queue for the clock row between their last statement and their
commit (a few milliseconds each on PostgreSQL). Reads are not affected.
"""

from datetime import timedelta

from sqlalchemy import delete, event, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import Book, SyncClock
from .models.base import utcnow

CLOCK_ID = 1
# The clock's row is made by its first tick (an upsert), so an emptied table starts again at 1.
_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_CHANGED = "bookshelf_changed_books"


def _changed_books(session: Session) -> set:
    return session.info.setdefault(_CHANGED, set())


@event.listens_for(Session, "before_flush")
def _note_changed_books(session, flush_context, instances) -> None:
    """Remember the books this transaction writes (a flush may come before the commit)."""
    changed = _changed_books(session)
    for book in session.new:
        if isinstance(book, Book):
            changed.add(book)
    for book in session.dirty:
        if isinstance(book, Book) and session.is_modified(book):
            changed.add(book)


@event.listens_for(Session, "before_commit")
def _stamp_changed_books(session) -> None:
    """Take the next position and stamp the changed books with it, just before the commit."""
    _note_changed_books(session, None, None)  # and those not flushed yet
    changed = session.info.pop(_CHANGED)
    if not changed:
        return
    connection = session.connection()
    upsert = _INSERT[connection.dialect.name](SyncClock).values(
        id=CLOCK_ID, last_seq=1, pruned_through=0
    )
    seq = connection.execute(
        upsert.on_conflict_do_update(
            index_elements=[SyncClock.id], set_={"last_seq": SyncClock.last_seq + 1}
        ).returning(SyncClock.last_seq)
    ).scalar_one()
    for book in changed:
        book.change_seq = seq


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_changed_books(session) -> None:
    """The commit's own flush noted the stamped books again: forget them with the transaction."""
    session.info.pop(_CHANGED, None)


def read_changes(session: Session, after: tuple[int, int], limit: int) -> tuple[list, bool]:
    """Up to `limit` books changed after position `after` (a book's (change_seq, id)), in
    order, and whether more follow. Deleted ones are returned too: the caller shows them as
    tombstones. An index range scan: it costs what it returns, not the catalog."""
    rows = session.scalars(
        select(Book)
        .where(tuple_(Book.change_seq, Book.id) > tuple_(*after))
        .order_by(Book.change_seq, Book.id)
        .limit(limit + 1)
    ).all()
    return rows[:limit], len(rows) > limit


def pruned_through(session: Session) -> int:
    return session.scalar(select(SyncClock.pruned_through).where(SyncClock.id == CLOCK_ID)) or 0


def prune_tombstones(session: Session, retention_days: int) -> int:
    """Delete books deleted more than `retention_days` ago, and record the last position they
    held, so that cursors from before it are refused. The caller commits (the clock's row
    exists: tombstones were stamped by it)."""
    cutoff = utcnow() - timedelta(days=retention_days)
    old = (Book.deleted_at.is_not(None), Book.deleted_at < cutoff)
    last = session.scalar(select(func.max(Book.change_seq)).where(*old))
    if last is None:
        return 0
    count = session.execute(delete(Book).where(*old)).rowcount
    session.execute(
        update(SyncClock)
        .where(SyncClock.id == CLOCK_ID, SyncClock.pruned_through < last)
        .values(pruned_through=last)
    )
    return count
