"""SPEC 4: configuration from the environment; production refuses unsafe secrets."""

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bookshelf import create_app
from bookshelf.config import DEV_SECRET, ConfigError, from_environment
from bookshelf.server import schema_revision, startup_fields

ROOT = Path(__file__).resolve().parent.parent
GOOD_SECRET = "a" * 16 + "b" * 16 + "c" * 8


def production(**overrides):
    base = {
        "APP_ENV": "production",
        "SECRET_KEY": GOOD_SECRET,
        "JWT_SECRET_KEY": GOOD_SECRET,
        "PUBLIC_URL": "https://api.example.com",
    }
    return create_app(base | {"SQLALCHEMY_DATABASE_URI": "sqlite://"} | overrides)


def test_production_starts_with_a_strong_secret():
    assert production().config["ENV_NAME"] == "production"


@pytest.mark.parametrize(
    ("overrides", "variable", "problem"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY", "not set"),
        ({"SECRET_KEY": ""}, "SECRET_KEY", "not set"),
        ({"SECRET_KEY": "too-short"}, "SECRET_KEY", "shorter than 32"),
        ({"SECRET_KEY": DEV_SECRET}, "SECRET_KEY", "known default"),
        ({"SECRET_KEY": "changeme"}, "SECRET_KEY", "known default"),
        ({"JWT_SECRET_KEY": "x" * 31}, "JWT_SECRET_KEY", "shorter than 32"),
        ({"SECRET_KEY": None, "JWT_SECRET_KEY": None}, "SECRET_KEY", "not set"),
    ],
)
def test_production_refuses_a_missing_short_or_default_secret(overrides, variable, problem):
    with pytest.raises(ConfigError) as raised:
        production(**overrides)
    assert str(raised.value).startswith(variable + " ")
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"PUBLIC_URL": None}, "neither PUBLIC_URL nor ALLOWED_HOSTS is set"),
        ({"PUBLIC_URL": "api.example.com"}, "PUBLIC_URL must be like"),
        ({"PUBLIC_URL": "https://api.example.com?x=1"}, "PUBLIC_URL must be like"),
    ],
)
def test_production_refuses_to_start_without_its_public_address(overrides, problem):
    with pytest.raises(ConfigError, match=problem):
        production(**overrides)


def test_production_starts_with_an_allowlist_of_hosts_alone():
    app = production(PUBLIC_URL=None, ALLOWED_HOSTS=["api.example.com"])
    assert app.config["ALLOWED_HOSTS"] == ["api.example.com"]


def _python(code, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"APP_ENV", "SECRET_KEY", "JWT_SECRET_KEY", "DATABASE_URL"}
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_server_refuses_to_boot_with_one_clear_line():
    result = _python("import wsgi", APP_ENV="production", SECRET_KEY="short")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bookshelf: configuration error: SECRET_KEY is shorter than 32 bytes: set a longer one"
    ]


def test_development_needs_no_variables(tmp_path):
    result = _python(
        "from bookshelf import create_app; app = create_app(); "
        "print(app.config['ENV_NAME'], app.config['SQLALCHEMY_DATABASE_URI'])"
    )
    assert result.returncode == 0, result.stderr
    env_name, uri = result.stdout.split()
    assert env_name == "development"
    assert uri.startswith("sqlite:///") and uri.endswith("instance/bookshelf.db")


def test_token_lifetimes_come_from_the_environment():
    result = _python(
        "from bookshelf import create_app; c = create_app().config; "
        "print(int(c['JWT_ACCESS_TOKEN_EXPIRES'].total_seconds()), "
        "int(c['JWT_REFRESH_TOKEN_EXPIRES'].total_seconds()))",
        ACCESS_TOKEN_TTL="60",
        REFRESH_TOKEN_TTL="3600",
        DATABASE_URL="sqlite://",
    )
    assert result.stdout.split() == ["60", "3600"], result.stderr


def test_a_malformed_number_names_its_variable():
    result = _python("import wsgi", ACCESS_TOKEN_TTL="soon", DATABASE_URL="sqlite://")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "bookshelf: configuration error: ACCESS_TOKEN_TTL must be an integer, got 'soon'"
    ]


@pytest.mark.parametrize(
    "variable",
    [
        "WAITRESS_THREADS",
        "WAITRESS_CONNECTION_LIMIT",
        "WAITRESS_CHANNEL_TIMEOUT",
        "WAITRESS_BACKLOG",
        "REQUEST_HEADER_TIMEOUT",
    ],
)
@pytest.mark.parametrize("value", ["0", "-5"])
def test_serving_limits_must_be_positive(variable, value):
    with pytest.raises(ConfigError, match=f"^{variable} must be 1 or more"):
        from_environment({variable: value})


def test_serving_settings_come_from_the_environment():
    settings = from_environment(
        {"WAITRESS_CONNECTION_LIMIT": "2000", "ALLOWED_HOSTS": " a.example , b.example,"}
    )
    assert settings == {
        "WAITRESS_CONNECTION_LIMIT": 2000,
        "ALLOWED_HOSTS": ["a.example", "b.example"],
    }


def test_an_unknown_app_env_is_refused():
    with pytest.raises(ConfigError, match="APP_ENV must be one of"):
        create_app({"APP_ENV": "staging"})


def test_production_refuses_to_start_without_database_url():
    with pytest.raises(ConfigError) as raised:
        production(SQLALCHEMY_DATABASE_URI=None)
    assert str(raised.value).startswith("DATABASE_URL is not set")


def test_production_runs_on_sqlite_when_asked_for_explicitly(tmp_path):
    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    assert production(SQLALCHEMY_DATABASE_URI=url).config["SQLALCHEMY_DATABASE_URI"] == url


def test_the_server_refuses_production_without_database_url_in_one_line():
    result = _python(
        "import wsgi",
        APP_ENV="production",
        SECRET_KEY=GOOD_SECRET,
        PUBLIC_URL="https://api.example.com",
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "bookshelf: configuration error: DATABASE_URL is not set: set it to the PostgreSQL URL"
        " (or to sqlite:///PATH to run on SQLite)"
    ]


def test_the_start_up_fields_hide_the_password_and_survive_a_silent_database():
    app = create_app(
        {
            "APP_ENV": "testing",
            "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://bob:hunter2@127.0.0.1:9/books",
        }
    )
    server = SimpleNamespace(effective_listen=[("0.0.0.0", 8000), ("::1", 8000)])
    fields = startup_fields(app, server, schema_revision(app))
    assert fields == {
        "environment": "testing",
        "database": "postgresql+psycopg://bob:***@127.0.0.1:9/books",
        "schema_revision": None,  # nothing listens on port 9
        "addresses": ["http://0.0.0.0:8000", "http://[::1]:8000"],
    }
