"""Every error the API can answer, in one shape, mapped to HTTP in one place.

Domain code raises an `APIError` subclass; werkzeug's HTTP exceptions, Flask-JWT-Extended's
failures, database outages and bugs are all turned into the same JSON envelope here:
`{"error": {"code", "message", "details"}, "meta": {"request_id"}}`.
"""

import logging
import math
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from .envelope import json_response, meta
from .error_tracking import capture_unexpected

log = logging.getLogger("bookshelf")


class APIError(Exception):
    status = 500
    code = "INTERNAL_ERROR"
    message = "An unexpected error occurred."

    def __init__(self, message=None, details=None, headers=None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details or {}
        self.headers = headers or {}


class BadRequest(APIError):
    status, code, message = 400, "BAD_REQUEST", "The request is malformed."


class Unauthorized(APIError):
    status, code, message = 401, "UNAUTHORIZED", "Authentication is required."

    def __init__(self, message=None, details=None, headers=None):
        super().__init__(message, details, {"WWW-Authenticate": "Bearer", **(headers or {})})


class InvalidCredentials(Unauthorized):
    code, message = "INVALID_CREDENTIALS", "The email or password is incorrect."


class TokenExpired(Unauthorized):
    code, message = "TOKEN_EXPIRED", "The token has expired."


class TokenRevoked(Unauthorized):
    code, message = "TOKEN_REVOKED", "The token has been revoked."


class TokenInvalid(Unauthorized):
    code, message = "TOKEN_INVALID", "The token is invalid."


class Forbidden(APIError):
    status, code, message = 403, "FORBIDDEN", "You are not allowed to do this."


class InsufficientScope(Forbidden):
    code, message = "INSUFFICIENT_SCOPE", "This API key's scopes do not allow this request."


class EmailNotVerified(Forbidden):
    code = "EMAIL_NOT_VERIFIED"
    message = "Verify your email address first: follow the link mailed to it."


class NotFound(APIError):
    status, code, message = 404, "NOT_FOUND", "The resource does not exist."


class Conflict(APIError):
    status, code, message = 409, "CONFLICT", "The request conflicts with the current state."


class SyncExpired(APIError):
    status, code = 410, "SYNC_EXPIRED"
    message = (
        "This sync cursor is too old: changes it would need were pruned. Sync again from the "
        "start (without `since`) and keep the new cursor."
    )


class PreconditionFailed(APIError):
    status, code = 412, "PRECONDITION_FAILED"
    message = "The resource has changed since you read it; fetch it again and retry."


class UnsupportedMediaType(APIError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"
    message = "A request body must be sent with Content-Type: application/json."


class ValidationError(APIError):
    status, code, message = 422, "VALIDATION_ERROR", "The request has invalid fields."


class ServiceUnavailable(APIError):
    status, code, message = 503, "SERVICE_UNAVAILABLE", "The service is temporarily unavailable."


# werkzeug's exceptions (routing, size limit, ...) by status: the contract's code and a sentence.
HTTP_ERRORS = {
    400: ("BAD_REQUEST", "The request is malformed."),
    401: ("UNAUTHORIZED", "Authentication is required."),
    403: ("FORBIDDEN", "You are not allowed to do this."),
    404: ("NOT_FOUND", "The requested URL does not exist."),
    405: ("METHOD_NOT_ALLOWED", "The method is not allowed for this URL."),
    409: ("CONFLICT", "The request conflicts with the current state."),
    410: ("SYNC_EXPIRED", SyncExpired.message),  # the one 410 there is: the changes feed's
    412: ("PRECONDITION_FAILED", "The resource has changed since you read it."),
    413: ("PAYLOAD_TOO_LARGE", "The request body is too large."),
    415: ("UNSUPPORTED_MEDIA_TYPE", UnsupportedMediaType.message),
    422: ("VALIDATION_ERROR", "The request has invalid fields."),
    429: ("RATE_LIMITED", "Too many requests; retry later."),
    431: ("HEADERS_TOO_LARGE", "The request's headers are too large."),
    500: ("INTERNAL_ERROR", APIError.message),
    501: ("NOT_IMPLEMENTED", "The request uses a feature this server does not implement."),
    503: ("SERVICE_UNAVAILABLE", ServiceUnavailable.message),
}
# Headers of a werkzeug exception worth passing on to the client.
_PASSED_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def error_response(status, code, message, details=None, headers=None):
    body = {"error": {"code": code, "message": message, "details": details or {}}, "meta": meta()}
    return json_response(body, status, headers)


def _code_for(exc: HTTPException) -> tuple[str, str]:
    if exc.code in HTTP_ERRORS:
        return HTTP_ERRORS[exc.code]
    name = (exc.name or "Error").upper().replace(" ", "_").replace("'", "")
    return name, exc.name or "Error"


def handle_api_error(exc: APIError):
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def handle_http_exception(exc: HTTPException):
    code, message = _code_for(exc)
    headers = [(k, v) for k, v in exc.get_headers() if k in _PASSED_HEADERS]
    if exc.code is not None and exc.code >= 500:
        log.error("server error", exc_info=exc)
    return error_response(exc.code or 500, code, message, None, headers)


def redirect_response(exc: RequestRedirect):
    """A routing redirect to a path on this server, in the envelope: its Location is that path,
    never a URL built from the Host the client sent."""
    target = urlsplit(exc.new_url)
    location = target.path + (f"?{target.query}" if target.query else "")
    return json_response(
        {"data": {"location": location}, "meta": meta()}, exc.code, {"Location": location}
    )


def handle_database_unavailable(exc: DBAPIError | PoolTimeout):
    log.error("database unavailable: %s", exc.__class__.__name__, exc_info=exc)
    # The next try at the database is this far off (see bookshelf.breaker); one second at least.
    retry_after = math.ceil(current_app.config.get("DATABASE_RETRY_INTERVAL", 1))
    return handle_api_error(
        ServiceUnavailable(
            "The database is unavailable; retry later.",
            headers={"Retry-After": str(max(1, retry_after))},
        )
    )


def handle_unexpected(exc: Exception):
    log.error("unhandled exception", exc_info=exc)
    capture_unexpected(exc)  # to Sentry, with SENTRY_DSN set
    return handle_api_error(APIError())


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(APIError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    # No pooled connection came free in time: the database is too slow to answer, or hung.
    app.register_error_handler(PoolTimeout, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
