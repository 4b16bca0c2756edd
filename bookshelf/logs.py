"""JSON log lines on stdout: one per request, and every record tagged with its request id."""

import logging
import sys
import time
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request
from pythonjsonlogger.orjson import OrjsonFormatter

from .envelope import request_id

log = logging.getLogger("bookshelf.request")


class Formatter(OrjsonFormatter):
    def __init__(self):
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record, datefmt=None):  # noqa: N802 (logging's name)
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class RequestIdFilter(logging.Filter):
    """Stamp the current request's id on every record logged while serving it."""

    def filter(self, record):
        if has_request_context() and not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now (a test may have replaced it since start-up)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(Formatter())
        self.addFilter(RequestIdFilter())

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value):
        pass


def configure_logging(level: str) -> None:
    """One JSON handler on the root logger (idempotent: apps built again replace it)."""
    # Nothing we log uses the caller's file and line, thread or process names: skip collecting
    # them for every record (the logging HOWTO's "Optimization" switches).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, StdoutHandler)]:
        root.removeHandler(handler)
    root.addHandler(StdoutHandler())
    root.setLevel(level)
    # Alembic announces each of its plugins at INFO when the command line loads it.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def init_request_logging(app: Flask) -> None:
    @app.before_request
    def start_timer():
        g.request_started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        started = g.get("request_started")
        duration = (time.perf_counter() - started) * 1000 if started else None
        log.log(
            logging.ERROR if response.status_code >= 500 else logging.INFO,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round(duration, 2) if duration is not None else None,
                "user_id": g.get("user_id"),
                "remote_addr": request.remote_addr,
            },
        )
        return response
