"""Extension singletons, created unbound and bound to an app in `create_app`."""

from flask_cors import CORS
from flask_jwt_extended import JWTManager
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from .api import JsonApi


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
jwt = JWTManager()
cors = CORS()
api = JsonApi(prefix="/api/v1")
