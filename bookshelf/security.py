"""Response hardening, proxies and CORS: the HTTP-level defences of SPEC 5."""

import re
from urllib.parse import urlsplit

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import ConfigError
from .errors import BadRequest
from .extensions import cors

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
HSTS = "max-age=31536000; includeSubDomains"
AUTH_PATH_PREFIX = "/api/v1/auth/"
CORS_PATH_PREFIX = "/api/"
# Called by address (kubelets, load balancers, Prometheus scraping each pod): any Host.
ANY_HOST_BLUEPRINTS = frozenset({"health", "metrics"})
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
    allowed_hosts = allowed_hosts_of(app.config)

    @app.before_request
    def check_host() -> None:
        """Only the Hosts this service is published under: the rest is 400 (probes and the
        metrics are exempt: load balancers, kubelets and Prometheus call them by address)."""
        if (
            allowed_hosts
            and request.blueprint not in ANY_HOST_BLUEPRINTS
            and not host_allowed(request.host, allowed_hosts)
        ):
            raise BadRequest("The Host header names a host this service does not serve.")

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


def allowed_hosts_of(config) -> list[tuple[str, str | None]]:
    """ALLOWED_HOSTS and the host of PUBLIC_URL, as (name, port or None); empty when any Host is
    accepted (`*`)."""
    hosts = list(config["ALLOWED_HOSTS"])
    if "*" in hosts:
        return []
    if config["PUBLIC_URL"]:
        hosts.append(urlsplit(config["PUBLIC_URL"]).netloc)
    return [split_host(host) for host in hosts]


def split_host(value: str) -> tuple[str, str | None]:
    """A Host header or an ALLOWED_HOSTS entry as (lower-case name, port or None):
    `API.example.com:8443` -> ("api.example.com", "8443"), `[::1]:80` -> ("::1", "80")."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest.removeprefix(":") or None
    if value.count(":") > 1:  # a bare IPv6 address
        return value, None
    name, _, port = value.partition(":")
    return name, port or None


def host_allowed(host: str, allowed: list[tuple[str, str | None]]) -> bool:
    """Whether a Host header names an allowed host: the same name (`.example.com` also matches
    its subdomains) and, if the entry names a port, the same port."""
    name, port = split_host(host)
    for allowed_name, allowed_port in allowed:
        if allowed_port is not None and allowed_port != port:
            continue
        if name == allowed_name or (
            allowed_name.startswith(".")
            and (name.endswith(allowed_name) or name == allowed_name[1:])
        ):
            return True
    return False


def init_cors(app: Flask) -> None:
    """CORS on /api/* for the exact origins of CORS_ORIGINS, and only for a request that names
    one in its `Origin`: a request without `Origin` (not from a browser's page) gets no CORS
    header. Since the answer then depends on `Origin`, every /api/* response says `Vary: Origin`,
    so that a cache never hands one origin's answer (or a no-Origin answer) to another."""
    origins = cors_origins(app.config["CORS_ORIGINS"])
    cors.init_app(
        app,
        resources={CORS_PATH_PREFIX + "*": {"origins": origins}},
        send_wildcard=origins == ["*"],
        always_send=False,  # Flask-CORS 6 answers requests without Origin by default
        vary_header=False,  # it would say Vary only with several origins: see add_vary_origin
        allow_headers=CORS_ALLOWED_HEADERS,
        expose_headers=CORS_EXPOSED_HEADERS,
        supports_credentials=False,  # bearer tokens, not cookies: never `*` with credentials
    )
    if not origins:
        return  # no CORS at all: no answer depends on Origin

    @app.after_request
    def add_vary_origin(response: Response) -> Response:
        if request.path.startswith(CORS_PATH_PREFIX):
            response.vary.add("Origin")
        return response


def cors_origins(origins: list[str]) -> list[str]:
    """Exact origins only: Flask-CORS would read a pattern-like string as a regex."""
    for origin in origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"CORS_ORIGINS has {origin!r}: give exact origins like https://app.example.com"
            )
    return origins
