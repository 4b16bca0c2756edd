"""Audit events: one JSON log line per security event, on the logger "bookshelf.audit".

Each line names the event, who did it (`actor_id`) and to whose account (`subject_id`); the
request id and the client's address are added when there is a request. Never pass secrets,
tokens or passwords: the line goes to the ordinary log.
"""

import logging

from flask import has_request_context, request

log = logging.getLogger("bookshelf.audit")


def audit(event: str, *, actor_id: int | None, subject_id: int | None, **fields) -> None:
    """Log `event` at INFO with its actor, subject, client address and `fields`."""
    address = request.remote_addr if has_request_context() else None
    log.info(
        "audit",
        extra={
            "event": event,
            "actor_id": actor_id,
            "subject_id": subject_id,
            "remote_addr": address,
            **fields,
        },
    )
