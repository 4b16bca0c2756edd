"""Configuration: defaults per environment (classes), then the process environment (12-factor),
then the overrides passed to `create_app`.

`APP_ENV` picks the class: `development` (the default), `production` or `testing`.
Every variable is documented once, in the README's configuration table.
"""

import os
from collections.abc import Mapping
from datetime import timedelta

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


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message names the variable to fix."""


class Config:
    ENV_NAME = "base"
    SECRET_KEY: str | None = None
    JWT_SECRET_KEY: str | None = None  # defaults to SECRET_KEY
    JWT_ALGORITHM = "HS256"
    JWT_ACCESS_TOKEN_EXPIRES = timedelta(minutes=15)
    JWT_REFRESH_TOKEN_EXPIRES = timedelta(days=30)
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
    # Rate-limit counters: memory is per process; several processes share Redis (redis://host:6379).
    RATELIMIT_STORAGE_URI = "memory://"
    GLOBAL_RATE_LIMIT = "600 per minute"  # every route together, per client address
    LOGIN_FAILURE_LIMIT = "20 per minute"  # failed logins per client address
    LOGIN_FAILURE_LIMIT_PER_EMAIL = "5 per minute"  # failed logins per email
    # argon2id parameters; the defaults meet OWASP's minimum (m=19 MiB, t=2, p=1).
    PASSWORD_HASH_TIME_COST = 2
    PASSWORD_HASH_MEMORY_KIB = 19 * 1024
    PASSWORD_HASH_PARALLELISM = 1


class DevelopmentConfig(Config):
    ENV_NAME = "development"
    SECRET_KEY = DEV_SECRET
    CORS_ORIGINS = ["http://localhost:3000", "http://127.0.0.1:3000"]


class TestingConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "testing-secret-that-is-long-enough-0123456789"
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

    readers = {
        "SECRET_KEY": ("SECRET_KEY", str),
        "JWT_SECRET_KEY": ("JWT_SECRET_KEY", str),
        "DATABASE_URL": ("SQLALCHEMY_DATABASE_URI", str),
        "ACCESS_TOKEN_TTL": ("JWT_ACCESS_TOKEN_EXPIRES", lambda n: timedelta(seconds=integer(n))),
        "REFRESH_TOKEN_TTL": ("JWT_REFRESH_TOKEN_EXPIRES", lambda n: timedelta(seconds=integer(n))),
        "MAX_CONTENT_LENGTH": ("MAX_CONTENT_LENGTH", integer),
        "CORS_ORIGINS": (
            "CORS_ORIGINS",
            lambda n: [o.strip() for o in environ[n].split(",") if o.strip()],
        ),
        "LOG_LEVEL": ("LOG_LEVEL", lambda n: environ[n].upper()),
        "HSTS_ENABLED": ("HSTS_ENABLED", boolean),
        "TRUSTED_PROXIES": ("TRUSTED_PROXIES", integer),
        "RATELIMIT_STORAGE_URI": ("RATELIMIT_STORAGE_URI", str),
        "RATELIMIT_DEFAULT": ("GLOBAL_RATE_LIMIT", str),
        "LOGIN_FAILURE_LIMIT": ("LOGIN_FAILURE_LIMIT", str),
        "LOGIN_FAILURE_LIMIT_PER_EMAIL": ("LOGIN_FAILURE_LIMIT_PER_EMAIL", str),
        "PASSWORD_HASH_TIME_COST": ("PASSWORD_HASH_TIME_COST", integer),
        "PASSWORD_HASH_MEMORY_KIB": ("PASSWORD_HASH_MEMORY_KIB", integer),
        "PASSWORD_HASH_PARALLELISM": ("PASSWORD_HASH_PARALLELISM", integer),
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
