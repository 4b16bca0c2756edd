"""Liveness and readiness probes, outside the versioned API."""

from flask import Blueprint, current_app

from ..envelope import json_response
from ..errors import ServiceUnavailable
from ..extensions import db
from ..schema import SchemaNotMigrated, current_revision, head_revision

health = Blueprint("health", __name__)

NOT_MIGRATED = "The database schema is not at the latest migration."
# Set in an app's extensions once its database has been seen at the head revision.
SEEN_AT_HEAD = "bookshelf.schema_seen_at_head"


@health.get("/health")
def live():
    """The process answers; says nothing about the database."""
    return json_response({"status": "ok"})


@health.get("/health/ready")
def ready():
    """The database answers and its schema is the one this code was written for: one query."""
    try:
        revision = current_revision(db.session)
    except SchemaNotMigrated:
        raise ServiceUnavailable(NOT_MIGRATED) from None
    except Exception as exc:
        raise ServiceUnavailable("The database is not reachable.") from exc
    if not at_head(revision):
        raise ServiceUnavailable(NOT_MIGRATED)
    return json_response({"status": "ok", "database": "ok"})


def at_head(revision: str | None) -> bool:
    """Whether a database at `revision` is ready for this code: at the head of its migrations,
    or seen there before by this app.

    A schema does not go back under a running process, but it does go ahead of it: the next
    release migrates while this one still serves (a rolling deploy). A process that has seen its
    head keeps answering ready until it is replaced; the next release's migrations must keep it
    working meanwhile, as any rolling deploy requires.
    """
    if revision == head_revision():
        current_app.extensions[SEEN_AT_HEAD] = True
        return True
    return current_app.extensions.get(SEEN_AT_HEAD, False)
