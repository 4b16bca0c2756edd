"""Error tracking with sentry-sdk: unhandled errors (our 500s) reported to SENTRY_DSN.

Off when SENTRY_DSN is unset: sentry_sdk is not even imported. On, an event is sent for each
exception that reaches `bookshelf.errors.handle_unexpected`, once, tagged `request_id` with the id
the 500 carries; errors the API answers on purpose (4xx, a database outage's 503) send nothing.
No performance tracing: errors only.

An event carries no secrets: no request body, no cookies, only the harmless headers, no local
variables, no SQL parameters, and the request's credentials (bearer token, cookies, query values
and body fields of secret names) replaced wherever they appear.
"""

import re
from importlib.metadata import PackageNotFoundError, version

from flask import Flask, current_app, has_request_context, request

KEY = "bookshelf.error_tracking"
FILTERED = "[Filtered]"
# The request headers an event keeps; any other (Authorization, Cookie, X-Api-Key, a device
# token...) is left out.
KEPT_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "content-length",
        "content-type",
        "host",
        "if-match",
        "if-none-match",
        "user-agent",
        "x-request-id",
    }
)
SECRET_NAME = re.compile(
    r"pass(word)?|passwd|pwd|secret|token|key|auth|cookie|session|credential|signature|jwt|csrf",
    re.I,
)
# SQLAlchemy's error text ends with the statement's parameters: user ids, emails, token ids.
SQL_PARAMETERS = re.compile(r"\n?\[parameters: .*?\](?=\n\(Background|\Z)", re.S)
MIN_SECRET_LENGTH = 4  # shorter values are replaced nowhere (they would match everywhere)


def init_error_tracking(app: Flask) -> None:
    """With SENTRY_DSN set: report unhandled errors to it."""
    dsn = app.config["SENTRY_DSN"]
    if not dsn:
        return
    import logging

    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=app.config["ENV_NAME"],
        release=_release(),
        # Log records are breadcrumbs only: handle_unexpected reports its error itself, and the
        # 503s' error lines must not become events.
        integrations=[FlaskIntegration(), LoggingIntegration(logging.INFO, event_level=None)],
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,  # a frame's locals may hold a password or a token
        before_send=before_send,
    )
    app.extensions[KEY] = True


def _release() -> str | None:
    try:
        return f"bookshelf-api-server@{version('bookshelf-api-server')}"
    except PackageNotFoundError:
        return None


def capture_unexpected(exc: BaseException) -> None:
    """Report an unhandled error (a no-op without SENTRY_DSN)."""
    if current_app.extensions.get(KEY):
        import sentry_sdk

        sentry_sdk.capture_exception(exc)


def before_send(event: dict, hint: dict) -> dict | None:
    """Drop the errors the API answers on purpose; tag the rest with the request id and take
    out what could be secret."""
    exc_info = hint.get("exc_info")
    if exc_info and is_expected(exc_info[1]):
        return None
    secrets: set[str] = set()
    if has_request_context():
        from .envelope import request_id

        event.setdefault("tags", {})["request_id"] = request_id()
        secrets = _request_secrets()
    event.pop("user", None)
    if isinstance(event.get("request"), dict):
        event["request"] = _scrubbed_request(event["request"])
    for breadcrumb in (event.get("breadcrumbs") or {}).get("values", []):
        if isinstance(breadcrumb.get("data"), dict):
            breadcrumb["data"] = _filtered_names(breadcrumb["data"])
    for exception in (event.get("exception") or {}).get("values", []):
        if isinstance(exception.get("value"), str):
            exception["value"] = SQL_PARAMETERS.sub("", exception["value"])
        for frame in (exception.get("stacktrace") or {}).get("frames", []):
            frame.pop("vars", None)
    return _replaced(event, sorted(secrets, key=len, reverse=True)) if secrets else event


def is_expected(exc: BaseException) -> bool:
    """An error with a handler of its own in bookshelf.errors (anything but handle_unexpected):
    the API meant its answer (a 4xx, a 503), so it is no bug. Flask-RESTful signals every error
    of its routes, these included, and the Flask integration would report them."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout
    from werkzeug.exceptions import HTTPException

    from .errors import APIError

    return isinstance(exc, APIError | HTTPException | OperationalError | PoolTimeout)


def _scrubbed_request(info: dict) -> dict:
    kept = {"url", "method", "headers", "query_string"}
    info = {key: value for key, value in info.items() if key in kept}
    if isinstance(info.get("headers"), dict):
        info["headers"] = {
            name: value for name, value in info["headers"].items() if name.lower() in KEPT_HEADERS
        }
    return info  # query values of secret names: replaced with the request's other secrets


def _filtered_names(data: dict) -> dict:
    return {k: FILTERED if SECRET_NAME.search(str(k)) else v for k, v in data.items()}


def _request_secrets() -> set[str]:
    """The current request's credentials: header values of secret names (the bearer token
    alone too), query values and JSON body strings of secret names."""
    found = set()
    for name, value in request.headers.items():
        if SECRET_NAME.search(name):
            found.add(value)
            found.add(value.partition(" ")[2])
    found.update(v for k, v in request.args.items(multi=True) if SECRET_NAME.search(k))
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        found.update(
            v for k, v in body.items() if isinstance(v, str) and SECRET_NAME.search(str(k))
        )
    return {value.strip() for value in found if len(value.strip()) >= MIN_SECRET_LENGTH}


def _replaced(value, secrets: list[str]):
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, FILTERED)
        return value
    if isinstance(value, dict):
        return {key: _replaced(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replaced(item, secrets) for item in value]
    return value
