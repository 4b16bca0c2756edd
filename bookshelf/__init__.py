"""Bookshelf API: a token-authenticated REST backend with user accounts and a books catalog."""

import os
from collections.abc import Mapping

from flask import Flask
from flask.sessions import SessionInterface
from werkzeug.routing import RequestRedirect

from . import config as config_module
from .conditional import answer_not_modified
from .database import configure_engine, engine_options
from .error_tracking import init_error_tracking
from .errors import redirect_response, register_error_handlers
from .extensions import api, compress, db, jwt
from .http import StrictJSONProvider, check_request_body
from .logs import configure_logging, init_request_logging
from .metrics import init_metrics
from .ratelimit import init_rate_limits
from .routing import IdConverter
from .security import init_cors, init_security

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


class NoCookieSession(SessionInterface):
    """Bearer tokens, never cookies: skip the signed-cookie session Flask opens per request."""

    def open_session(self, app, request):
        return self.make_null_session(app)

    def save_session(self, app, session, response):
        pass


class Bookshelf(Flask):
    json_provider_class = StrictJSONProvider
    session_interface = NoCookieSession()

    def handle_http_exception(self, e):
        # Flask answers routing's own redirects (/docs -> /docs/) itself, with an HTML body and a
        # Location built from the Host, before any error handler sees them.
        if isinstance(e, RequestRedirect):
            return redirect_response(e)
        return super().handle_http_exception(e)


def create_app(config: Mapping | None = None, *, commands: bool = True) -> Flask:
    """Build the app: settings from the environment's config class, overridden by `config`.

    `commands=False` leaves out the command line (and Flask-Migrate, which loads Alembic): a
    serving process needs neither, and is 11 MiB smaller without them.
    """
    app = Bookshelf(__name__, instance_relative_config=True, static_folder=None)
    load_config(app, config)
    register_extensions(app)
    register_hooks(app)
    register_error_handlers(app)
    register_routes(app)
    if commands:
        register_commands(app)
    return app


def load_config(app: Flask, overrides: Mapping | None) -> None:
    overrides = dict(overrides or {})
    app.config.from_object(config_module.config_class(overrides.pop("APP_ENV", None)))
    app.config.update(config_module.from_environment())
    app.config.update(overrides)
    if not app.config["JWT_SECRET_KEY"]:
        app.config["JWT_SECRET_KEY"] = app.config["SECRET_KEY"]
    config_module.check_public_url(app.config)
    config_module.check_mail_settings(app.config)
    if app.config["ENV_NAME"] == "production":
        config_module.check_production_secrets(app.config)
        config_module.check_production_hosts(app.config)
        config_module.check_production_database(app.config)
    if not app.config["SQLALCHEMY_DATABASE_URI"]:
        os.makedirs(app.instance_path, exist_ok=True)
        path = os.path.join(app.instance_path, "bookshelf.db")
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{path}"
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"], app.config
    ) | app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {})
    configure_logging(app.config["LOG_LEVEL"])


def register_extensions(app: Flask) -> None:
    init_error_tracking(app)
    db.init_app(app)
    with app.app_context():
        configure_engine(app, db.engine)
    jwt.init_app(app)
    from .auth.jwt import init_jwt_callbacks

    init_jwt_callbacks(jwt)
    init_cors(app)
    # Before the rate limits: its clock starts first, and it counts the 429s they answer.
    with app.app_context():
        init_metrics(app, db.engine)
    init_rate_limits(app)
    from .auth.api_keys import init_api_keys

    init_api_keys(app)  # after the address limit: a key's request counts against both
    from .mail import delivery  # noqa: F401  (sends the outbox after each commit that wrote mail)


def register_hooks(app: Flask) -> None:
    from .envelope import REQUEST_ID_HEADER, request_id

    init_request_logging(app)
    init_security(app)
    app.before_request(check_request_body)
    app.after_request(answer_not_modified)
    # Registered last so it runs first among the after-request hooks: the ETag gets its
    # `:gzip` suffix and the log line its final status.
    compress.init_app(app)

    @app.after_request
    def add_request_id(response):
        response.headers[REQUEST_ID_HEADER] = request_id()
        return response


def register_routes(app: Flask) -> None:
    from . import resources  # noqa: F401  (fills the route table)
    from .resources.docs import init_docs
    from .resources.health import health

    app.url_map.converters["id"] = IdConverter
    # `//api/v1/books` is an unknown route (404), not a redirect to a URL built from the Host.
    app.url_map.merge_slashes = False
    api.init_app(app)
    app.register_blueprint(health)
    init_docs(app)


def register_commands(app: Flask) -> None:
    from flask_migrate import Migrate

    from .cli import commands

    # transactional_ddl: on SQLite too, an upgrade is one transaction, which takes the write lock
    # as it begins (BEGIN IMMEDIATE): a concurrent `init-db` waits, then finds the schema at head.
    Migrate(
        app,
        db,
        directory=MIGRATIONS,
        render_as_batch=True,
        compare_type=True,
        transactional_ddl=True,
    )

    for command in commands:
        app.cli.add_command(command)
