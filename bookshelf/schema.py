"""Where the schema stands: the head revision of the migrations shipped in the package, the
revision a database is at, and the lock under which `init-db` migrates."""

import ast
import hashlib
import os
from collections.abc import Callable
from functools import cache

from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from . import MIGRATIONS

VERSIONS = os.path.join(MIGRATIONS, "versions")

# pg_advisory_xact_lock's key: 64 bits of a hash of a name of this application's own, so that no
# other application's advisory locks on the same database wait for it, nor it for them.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"bookshelf init-db").digest()[:8], "big", signed=True
)
WAITING = "another process is migrating the database: waiting for it"


class SchemaNotMigrated(Exception):
    """The database has no migration history (no `alembic_version` table): nothing was migrated."""


@cache
def head_revision(versions: str = VERSIONS) -> str:
    """The head revision of the migration scripts in `versions`.

    Read from each script's `revision` and `down_revision` assignments rather than through
    Alembic's ScriptDirectory, which would add 8 MiB to a serving process that has no other use
    for Alembic. The tests check that both agree.
    """
    revisions, parents = set(), set()
    for name in sorted(os.listdir(versions)):
        if not name.endswith(".py") or name.startswith("__init__"):
            continue
        assigned = _identifiers(os.path.join(versions, name))
        if "revision" not in assigned:
            raise RuntimeError(f"migration script {name} has no revision identifier")
        revisions.add(assigned["revision"])
        down = assigned.get("down_revision")
        parents.update(down if isinstance(down, tuple | list) else [down] if down else [])
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations must have one head, not {sorted(heads)}: merge them")
    return heads.pop()


def _identifiers(path: str) -> dict:
    """A migration script's module-level `revision` and `down_revision` values."""
    with open(path, encoding="utf-8") as script:
        module = ast.parse(script.read(), path)
    assigned = {}
    for node in module.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            assigned[target.id] = ast.literal_eval(value)
    return assigned


def current_revision(session: Session) -> str | None:
    """The revision the database is at (None: migrated down to nothing), in one query.

    Raises SchemaNotMigrated if it has no migration history; any other failure (the database
    does not answer) is raised as it is.
    """
    try:
        return session.scalar(text("SELECT version_num FROM alembic_version"))
    except DBAPIError as exc:
        if _undefined_table(exc):
            raise SchemaNotMigrated() from exc
        raise


def _undefined_table(exc: DBAPIError) -> bool:
    # PostgreSQL's SQLSTATE 42P01 (undefined_table); SQLite says so in its message.
    return getattr(exc.orig, "sqlstate", None) == "42P01" or str(exc.orig).startswith(
        "no such table"
    )


def lock_for_migrations(connection: Connection, waiting: Callable[[], None] = lambda: None) -> None:
    """Migrate (and load demo data) one process at a time: replicas that start together each run
    `init-db`; one migrates, the others wait, then find the schema at head and do nothing.

    Called first in the transaction of a migration (bookshelf/migrations/env.py) and of the demo
    load. On PostgreSQL, a transaction-level advisory lock: released when the transaction ends,
    also when the process dies, and kept on one server connection through a PgBouncer in
    transaction mode. `waiting` is called if another process holds it. The transaction has no
    `statement_timeout` or `lock_timeout`: the wait lasts as long as another process's migration,
    and the command line has no limit, whatever the role's settings say.

    SQLite needs no more than its write lock: each of these transactions takes it as it begins
    (`BEGIN IMMEDIATE`), and the others wait for it on the busy timeout.
    """
    if connection.dialect.name != "postgresql":
        return
    connection.execute(
        select(
            func.set_config("statement_timeout", "0", True),
            func.set_config("lock_timeout", "0", True),
        )
    )
    if not connection.scalar(select(func.pg_try_advisory_xact_lock(MIGRATION_LOCK_KEY))):
        waiting()
        connection.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
