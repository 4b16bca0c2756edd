"""Extension singletons, created unbound and bound to an app in `create_app`."""

from flask_compress import Compress
from flask_cors import CORS
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from .api import JsonApi
from .auth.verified import CachingJWTManager


class Base(DeclarativeBase):
    pass


# A request's unit of work ends with its commit, and what follows only renders the objects it
# wrote: expiring them would re-read each row just to render it.
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
jwt = CachingJWTManager()
cors = CORS()
compress = Compress()

api = JsonApi(prefix="/api/v1")
