"""Response hardening, proxies and CORS: the HTTP-level defences of SPEC 5."""

import re

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import ConfigError

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
HSTS = "max-age=31536000; includeSubDomains"
AUTH_PATH_PREFIX = "/api/v1/auth/"
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?")

CORS_ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "X-Request-ID",
]
CORS_EXPOSED_HEADERS = [
    "ETag",
    "Idempotent-Replayed",
    "Link",
    "Location",
    "Retry-After",
    "X-Request-ID",
]


def init_security(app: Flask) -> None:
    hsts = app.config["HSTS_ENABLED"]

    @app.after_request
    def add_security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith(AUTH_PATH_PREFIX):
            response.headers["Cache-Control"] = "no-store"  # tokens and credentials
        if hsts:
            response.headers["Strict-Transport-Security"] = HSTS
        return response

    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        # Only as many X-Forwarded-* hops as there are proxies we run are believed.
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies
        )


def cors_origins(origins: list[str]) -> list[str]:
    """Exact origins only: Flask-CORS would read a pattern-like string as a regex."""
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"CORS_ORIGINS has {origin!r}: give exact origins like https://app.example.com"
            )
    return origins
