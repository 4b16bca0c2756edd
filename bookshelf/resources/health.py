"""Liveness and readiness probes, outside the versioned API."""

from flask import Blueprint
from sqlalchemy import text

from ..envelope import json_response
from ..errors import ServiceUnavailable
from ..extensions import db

health = Blueprint("health", __name__)


@health.get("/health")
def live():
    """The process answers; says nothing about the database."""
    return json_response({"status": "ok"})


@health.get("/health/ready")
def ready():
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable("The database is not reachable.") from exc
    return json_response({"status": "ok", "database": "ok"})
