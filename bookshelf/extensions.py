"""Extension singletons, created unbound and bound to an app in `create_app`."""

from flask import current_app
from flask_compress import Compress
from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from .api import JsonApi


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
jwt = JWTManager()
migrate = Migrate()
cors = CORS()
compress = Compress()


def _global_rate_limit() -> str:
    # Read per request: Flask-Limiter keeps the first app's limits, and tests build many apps.
    return current_app.config["GLOBAL_RATE_LIMIT"]


# Keyed by client address (see TRUSTED_PROXIES); one limit shared by every route.
limiter = Limiter(key_func=get_remote_address, application_limits=[_global_rate_limit])
api = JsonApi(prefix="/api/v1")
