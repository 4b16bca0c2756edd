"""Configuration: defaults per environment (classes), then the process environment (12-factor),
then the overrides passed to `create_app`.

`APP_ENV` picks the class: `development` (the default), `production` or `testing`.
Every variable is documented once, in the README's configuration table.
"""

import os
import re
from collections.abc import Mapping
from datetime import timedelta

from .mail import smtp  # the standard library's smtplib alone

DEV_SECRET = "dev-only-secret-never-use-in-production-0123456789"
KNOWN_DEFAULT_SECRETS = {
    DEV_SECRET,
    "changeme",
    "change-me",
    "secret",
    "dev",
    "development",
    "super-secret",
    "your-secret-key",
}
MIN_SECRET_BYTES = 32
PUBLIC_URL_FORM = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[^\s?#]*)?")


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message names the variable to fix."""


class Config:
    ENV_NAME = "base"
    SECRET_KEY: str | None = None
    JWT_SECRET_KEY: str | None = None  # defaults to SECRET_KEY
    JWT_ALGORITHM = "HS256"
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(minutes=15)
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(days=30)
    # Seconds after its rotation during which a refresh token presented again gets the same
    # successor back instead of ending its session (an app's parallel refreshes).
    REFRESH_REUSE_GRACE = 10
    SYNC_RETENTION = 30  # days that tombstones of the changes feed are kept (bookshelf.changes)
    JWT_TOKEN_LOCATION = ["headers"]
    JWT_COOKIE_CSRF_PROTECT = False  # tokens travel in the Authorization header, never cookies
    SQLALCHEMY_DATABASE_URI: str | None = None  # None: SQLite in the instance folder
    MAX_CONTENT_LENGTH = 1024 * 1024
    CORS_ORIGINS: list[str] = []
    LOG_LEVEL = "INFO"
    # Errors must reach Flask's handlers (bookshelf.errors) in every environment, tests included:
    # propagating them is what turns extension errors into 500s behind Flask-RESTful.
    PROPAGATE_EXCEPTIONS = False
    COMPRESS_ALGORITHM = ["gzip"]
    COMPRESS_MIN_SIZE = 500  # bytes; smaller bodies gain nothing from gzip
    HSTS_ENABLED = False
    TRUSTED_PROXIES = 0  # how many reverse proxies in front set X-Forwarded-*; 0 trusts none
    DOCS_ENABLED = False  # /docs and /api/v1/openapi.json (on in development and testing)
    METRICS_TOKEN: str | None = None  # bearer token of GET /metrics; unset: no metrics (404)
    SENTRY_DSN: str | None = None  # unhandled errors go to this Sentry project; unset: nowhere
    # The address clients use, for links; the Hosts answered (others are 400). Production needs
    # one or the other, so that no client-chosen Host is ever written into a response.
    PUBLIC_URL: str | None = None
    ALLOWED_HOSTS: list[str] = []
    # waitress, as `python wsgi.py` runs it (README, "Hardening").
    WAITRESS_THREADS = 8
    WAITRESS_CONNECTION_LIMIT = 4096  # open connections, idle ones included
    WAITRESS_CHANNEL_TIMEOUT = 60  # seconds an idle keep-alive connection is kept
    WAITRESS_BACKLOG = 2048  # connections the kernel queues while none is accepted
    REQUEST_HEADER_TIMEOUT = 30  # seconds a request's head may take to arrive (slowloris)
    # Rate-limit counters: memory is per process; several processes share Redis (redis://host:6379).
    RATELIMIT_STORAGE_URI = "memory://"
    GLOBAL_RATE_LIMIT = "600 per minute"  # every route together, per client address
    LOGIN_FAILURE_LIMIT = "20 per minute"  # failed logins per client address
    LOGIN_FAILURE_LIMIT_PER_EMAIL = "5 per minute"  # failed logins per email
    # Failed logins per device token (a device that has logged in to the account before); they
    # are not counted per email, so that others' failures cannot lock the owner out.
    LOGIN_FAILURE_LIMIT_PER_DEVICE = "5 per minute"
    API_KEY_RATE_LIMIT = "600 per minute"  # requests per API key, besides its address's limit
    # Seconds: an API key's last_used_at and last_used_ip are written at most this often.
    API_KEY_LAST_USED_INTERVAL = 60
    DEVICE_TOKEN_TTL = 365 * 24 * 3600  # seconds a device token is good for, from its login
    # Redis for rate limits, when it hangs (README, "Hardening"). Meanwhile the global limit fails
    # open and failed logins are counted in each process's memory.
    RATELIMIT_STORAGE_TIMEOUT = 0.25  # seconds a request waits for Redis to answer a command
    RATELIMIT_STORAGE_CONNECT_TIMEOUT = 0.25  # seconds to open a connection to Redis
    RATELIMIT_STORAGE_RETRY_INTERVAL = 5.0  # after a failure, seconds before Redis is tried again
    RATELIMIT_KEY_PREFIX = "LIMITS"  # prefix of the counters' keys in Redis (`limits`' own)
    # argon2id parameters; the defaults meet OWASP's minimum (m=19 MiB, t=2, p=1).
    PASSWORD_HASH_TIME_COST = 2
    PASSWORD_HASH_MEMORY_KIB = 19 * 1024
    PASSWORD_HASH_PARALLELISM = 1
    # Hashes computed at once per process: each takes PASSWORD_HASH_MEMORY_KIB while it runs.
    PASSWORD_HASH_SLOTS = 2
    # PostgreSQL, when it hangs (README, "Hardening"): how long a request waits for it.
    DATABASE_CONNECT_TIMEOUT = 2  # seconds to open a connection (whole seconds, 2 at least)
    DATABASE_STATEMENT_TIMEOUT = 2.0  # seconds a request waits for the answer to one statement
    DATABASE_RETRY_INTERVAL = 1.0  # after a timeout, requests fail at once; one tries this often
    DATABASE_SOCKET_TIMEOUT = 10.0  # seconds sent data may go unacknowledged (tcp_user_timeout)
    DATABASE_KEEPALIVES_IDLE = 30  # seconds a connection idles before TCP keepalive probes
    DATABASE_KEEPALIVES_INTERVAL = 10  # seconds between probes
    DATABASE_KEEPALIVES_COUNT = 3  # unanswered probes before the kernel drops the connection
    DATABASE_POOL_SIZE: int | None = None  # pooled connections; None: WAITRESS_THREADS + 2 probes
    DATABASE_MAX_OVERFLOW = 0  # connections opened beyond the pool while all of it is in use
    DATABASE_POOL_TIMEOUT: int | None = None  # seconds to wait for one; None: statement timeout
    # Outgoing mail (bookshelf.mail; README, "Account recovery"). Without SMTP_URL, mails wait
    # in the outbox (`bookshelf send-mail` sends them once it is set).
    SMTP_URL: str | None = None  # smtp://host:25, smtp+starttls://host:587 or smtps://host:465
    SMTP_USERNAME: str | None = None  # with SMTP_PASSWORD, the login, when the server wants one
    SMTP_PASSWORD: str | None = None
    SMTP_TIMEOUT = 10.0  # seconds to connect and for each answer of the SMTP server
    MAIL_FROM = "Bookshelf <no-reply@localhost>"
    PRODUCT_NAME = "Bookshelf"  # in the mails' subjects and texts
    MAIL_RETRY_INTERVAL = 30  # seconds before a failed mail is tried again, doubled each time
    MAIL_RETRY_MAX_INTERVAL = 3600  # to at most this
    # Links in the mails: {token} is replaced by the token (an app's page or deep link, which
    # then POSTs it to /auth/verify-email or /auth/password-reset/confirm). Unset, the mails
    # give the token as a code to enter in the app.
    VERIFY_URL_TEMPLATE: str | None = None
    RESET_URL_TEMPLATE: str | None = None
    EMAIL_VERIFICATION_TTL = 24 * 3600  # seconds a verification link works
    PASSWORD_RESET_TTL = 30 * 60  # seconds a password-reset link works
    PASSWORD_RESET_LIMIT = "10 per hour"  # reset requests per client address
    PASSWORD_RESET_LIMIT_PER_EMAIL = "3 per hour"  # reset requests per email, known or not
    VERIFY_EMAIL_RESEND_LIMIT = "3 per hour"  # verification mails asked again, per account
    REQUIRE_VERIFIED_EMAIL = False  # writes (books, API keys) wait for a verified email
    # DATABASE_URL leads to a PgBouncer in transaction mode (deploy/pgbouncer/pgbouncer.ini): no
    # prepared statements, no startup `options` (the role carries the statement_timeout).
    DATABASE_PGBOUNCER = False


LOCAL_HOSTS = ["localhost", "127.0.0.1"]


# An app's page served by a development front end (CORS_ORIGINS' first); production sets its own.
LOCAL_VERIFY_URL = "http://localhost:3000/verify-email?token={token}"
LOCAL_RESET_URL = "http://localhost:3000/reset-password?token={token}"


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    ALLOWED_HOSTS = LOCAL_HOSTS
    VERIFY_URL_TEMPLATE = LOCAL_VERIFY_URL
    RESET_URL_TEMPLATE = LOCAL_RESET_URL
    SECRET_KEY = DEV_SECRET
    CORS_ORIGINS = ["http://localhost:3000", "http://127.0.0.1:3000"]
    DOCS_ENABLED = True


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    ALLOWED_HOSTS = LOCAL_HOSTS
    VERIFY_URL_TEMPLATE = LOCAL_VERIFY_URL
    RESET_URL_TEMPLATE = LOCAL_RESET_URL
    SECRET_KEY = "testing-secret-that-is-long-enough-0123456789"
    DOCS_ENABLED = True
    # Cheap hashing keeps the suite fast; the production parameters are the defaults above.
    PASSWORD_HASH_TIME_COST = 1
    PASSWORD_HASH_MEMORY_KIB = 64


class ProductionConfig(Config):
    ENV_NAME = "production"


CONFIGS = {
    "development": DevelopmentConfig,
    "production": ProductionConfig,
    "testing": TestingConfig,
}


def config_class(name: str | None = None) -> type[Config]:
    """The config class named by `name`, else by APP_ENV, else development."""
    name = (name or os.environ.get("APP_ENV") or "development").lower()
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigError(f"APP_ENV must be one of {', '.join(CONFIGS)}, got {name!r}") from None


def from_environment(environ: Mapping[str, str] = os.environ) -> dict:
    """The settings the environment sets; variables left unset keep the class defaults."""

    def boolean(name):
        value = environ[name].strip().lower()
        if value not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            raise ConfigError(f"{name} must be true or false, got {environ[name]!r}")
        return value in {"1", "true", "yes", "on"}

    def integer(name):
        try:
            return int(environ[name])
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {environ[name]!r}") from None

    def seconds(name):
        try:
            value = float(environ[name])
        except ValueError:
            value = None
        if value is None or not 0 < value < float("inf"):
            raise ConfigError(f"{name} must be a positive number of seconds, got {environ[name]!r}")
        return value

    def positive(name):
        value = integer(name)
        if value < 1:
            raise ConfigError(f"{name} must be 1 or more, got {environ[name]!r}")
        return value

    def listing(name):
        return [item.strip() for item in environ[name].split(",") if item.strip()]

    readers = {
        "SECRET_KEY": ("SECRET_KEY", str),
        "JWT_SECRET_KEY": ("JWT_SECRET_KEY", str),
        "DATABASE_URL": ("SQLALCHEMY_DATABASE_URI", str),
        "ACCESS_TOKEN_TTL": ("JWT_ACCESS_TOKEN_EXPIRES", lambda n: timedelta(seconds=integer(n))),
        "REFRESH_TOKEN_TTL": ("JWT_REFRESH_TOKEN_EXPIRES", lambda n: timedelta(seconds=integer(n))),
        "REFRESH_REUSE_GRACE": ("REFRESH_REUSE_GRACE", integer),
        "SYNC_RETENTION": ("SYNC_RETENTION", integer),
        "MAX_CONTENT_LENGTH": ("MAX_CONTENT_LENGTH", integer),
        "CORS_ORIGINS": ("CORS_ORIGINS", listing),
        "LOG_LEVEL": ("LOG_LEVEL", lambda n: environ[n].upper()),
        "HSTS_ENABLED": ("HSTS_ENABLED", boolean),
        "TRUSTED_PROXIES": ("TRUSTED_PROXIES", integer),
        "DOCS_ENABLED": ("DOCS_ENABLED", boolean),
        "METRICS_TOKEN": ("METRICS_TOKEN", str),
        "SENTRY_DSN": ("SENTRY_DSN", str),
        "PUBLIC_URL": ("PUBLIC_URL", str),
        "ALLOWED_HOSTS": ("ALLOWED_HOSTS", listing),
        "WAITRESS_THREADS": ("WAITRESS_THREADS", positive),
        "WAITRESS_CONNECTION_LIMIT": ("WAITRESS_CONNECTION_LIMIT", positive),
        "WAITRESS_CHANNEL_TIMEOUT": ("WAITRESS_CHANNEL_TIMEOUT", positive),
        "WAITRESS_BACKLOG": ("WAITRESS_BACKLOG", positive),
        "REQUEST_HEADER_TIMEOUT": ("REQUEST_HEADER_TIMEOUT", positive),
        "RATELIMIT_STORAGE_URI": ("RATELIMIT_STORAGE_URI", str),
        "RATELIMIT_DEFAULT": ("GLOBAL_RATE_LIMIT", str),
        "LOGIN_FAILURE_LIMIT": ("LOGIN_FAILURE_LIMIT", str),
        "LOGIN_FAILURE_LIMIT_PER_EMAIL": ("LOGIN_FAILURE_LIMIT_PER_EMAIL", str),
        "LOGIN_FAILURE_LIMIT_PER_DEVICE": ("LOGIN_FAILURE_LIMIT_PER_DEVICE", str),
        "API_KEY_RATE_LIMIT": ("API_KEY_RATE_LIMIT", str),
        "API_KEY_LAST_USED_INTERVAL": ("API_KEY_LAST_USED_INTERVAL", positive),
        "DEVICE_TOKEN_TTL": ("DEVICE_TOKEN_TTL", positive),
        "RATELIMIT_STORAGE_TIMEOUT": ("RATELIMIT_STORAGE_TIMEOUT", seconds),
        "RATELIMIT_STORAGE_CONNECT_TIMEOUT": ("RATELIMIT_STORAGE_CONNECT_TIMEOUT", seconds),
        "RATELIMIT_STORAGE_RETRY_INTERVAL": ("RATELIMIT_STORAGE_RETRY_INTERVAL", seconds),
        "RATELIMIT_KEY_PREFIX": ("RATELIMIT_KEY_PREFIX", str),
        "PASSWORD_HASH_TIME_COST": ("PASSWORD_HASH_TIME_COST", integer),
        "PASSWORD_HASH_MEMORY_KIB": ("PASSWORD_HASH_MEMORY_KIB", integer),
        "PASSWORD_HASH_PARALLELISM": ("PASSWORD_HASH_PARALLELISM", integer),
        "PASSWORD_HASH_SLOTS": ("PASSWORD_HASH_SLOTS", positive),
        "DATABASE_CONNECT_TIMEOUT": ("DATABASE_CONNECT_TIMEOUT", integer),
        "DATABASE_STATEMENT_TIMEOUT": ("DATABASE_STATEMENT_TIMEOUT", seconds),
        "DATABASE_RETRY_INTERVAL": ("DATABASE_RETRY_INTERVAL", seconds),
        "DATABASE_SOCKET_TIMEOUT": ("DATABASE_SOCKET_TIMEOUT", seconds),
        "DATABASE_KEEPALIVES_IDLE": ("DATABASE_KEEPALIVES_IDLE", integer),
        "DATABASE_KEEPALIVES_INTERVAL": ("DATABASE_KEEPALIVES_INTERVAL", integer),
        "DATABASE_KEEPALIVES_COUNT": ("DATABASE_KEEPALIVES_COUNT", integer),
        "DATABASE_POOL_SIZE": ("DATABASE_POOL_SIZE", integer),
        "DATABASE_MAX_OVERFLOW": ("DATABASE_MAX_OVERFLOW", integer),
        "DATABASE_POOL_TIMEOUT": ("DATABASE_POOL_TIMEOUT", integer),
        "DATABASE_PGBOUNCER": ("DATABASE_PGBOUNCER", boolean),
        "SMTP_URL": ("SMTP_URL", str),
        "SMTP_USERNAME": ("SMTP_USERNAME", str),
        "SMTP_PASSWORD": ("SMTP_PASSWORD", str),
        "SMTP_TIMEOUT": ("SMTP_TIMEOUT", seconds),
        "MAIL_FROM": ("MAIL_FROM", str),
        "PRODUCT_NAME": ("PRODUCT_NAME", str),
        "MAIL_RETRY_INTERVAL": ("MAIL_RETRY_INTERVAL", positive),
        "MAIL_RETRY_MAX_INTERVAL": ("MAIL_RETRY_MAX_INTERVAL", positive),
        "VERIFY_URL_TEMPLATE": ("VERIFY_URL_TEMPLATE", str),
        "RESET_URL_TEMPLATE": ("RESET_URL_TEMPLATE", str),
        "EMAIL_VERIFICATION_TTL": ("EMAIL_VERIFICATION_TTL", positive),
        "PASSWORD_RESET_TTL": ("PASSWORD_RESET_TTL", positive),
        "PASSWORD_RESET_LIMIT": ("PASSWORD_RESET_LIMIT", str),
        "PASSWORD_RESET_LIMIT_PER_EMAIL": ("PASSWORD_RESET_LIMIT_PER_EMAIL", str),
        "VERIFY_EMAIL_RESEND_LIMIT": ("VERIFY_EMAIL_RESEND_LIMIT", str),
        "REQUIRE_VERIFIED_EMAIL": ("REQUIRE_VERIFIED_EMAIL", boolean),
    }
    settings = {}
    for variable, (key, read) in readers.items():
        if environ.get(variable):
            settings[key] = environ[variable] if read is str else read(variable)
    return settings


def check_production_secrets(config: Mapping) -> None:
    """Refuse to boot production with a missing, short or well-known secret."""
    for name in ("SECRET_KEY", "JWT_SECRET_KEY"):
        value = config.get(name)
        if not value:
            raise ConfigError(f"{name} is not set: set it to a random string of 32+ bytes")
        if value in KNOWN_DEFAULT_SECRETS:
            raise ConfigError(f"{name} is a known default value: set a random string of 32+ bytes")
        if len(value.encode()) < MIN_SECRET_BYTES:
            raise ConfigError(f"{name} is shorter than {MIN_SECRET_BYTES} bytes: set a longer one")


def check_production_database(config: Mapping) -> None:
    """Refuse to boot production on the development default (SQLite in the instance folder):
    SQLite only when asked for, with DATABASE_URL=sqlite:///PATH."""
    if not config.get("SQLALCHEMY_DATABASE_URI"):
        raise ConfigError(
            "DATABASE_URL is not set: set it to the PostgreSQL URL"
            " (or to sqlite:///PATH to run on SQLite)"
        )


def check_public_url(config: Mapping) -> None:
    public_url = config.get("PUBLIC_URL")
    if public_url and not PUBLIC_URL_FORM.fullmatch(public_url):
        raise ConfigError(f"PUBLIC_URL must be like https://api.example.com, got {public_url!r}")


def check_production_hosts(config: Mapping) -> None:
    """Refuse to boot production without a public URL or an allowlist of Hosts: links would
    otherwise carry whatever Host a client sent (`*` in ALLOWED_HOSTS accepts any, on purpose)."""
    if not config.get("PUBLIC_URL") and not config.get("ALLOWED_HOSTS"):
        raise ConfigError(
            "neither PUBLIC_URL nor ALLOWED_HOSTS is set: set the address clients use, "
            "e.g. PUBLIC_URL=https://api.example.com"
        )


def check_mail_settings(config: Mapping) -> None:
    """SMTP_URL must be one of the forms bookshelf.mail.smtp knows, and a link template must
    hold {token} (without one, the mails give the token as a code)."""
    if config.get("SMTP_URL"):
        try:
            smtp.server(config)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for name in ("VERIFY_URL_TEMPLATE", "RESET_URL_TEMPLATE"):
        template = config.get(name)
        if template is not None and "{token}" not in template:
            raise ConfigError(f"{name} must contain {{token}}, got {template!r}")
