"""Reference (c): a bare Flask-RESTful + Flask-SQLAlchemy resource reading one book by id from the
benchmark database (the Bookshelf schema), on waitress. The baseline the ratios are taken against.

DATABASE_URL=sqlite:////abs/path/bench.db PORT=8001 WAITRESS_THREADS=4 \
    python bench/refs/restful_sqla.py
"""

import os
from datetime import datetime

from flask import Flask
from flask_restful import Api, Resource, abort
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from waitress import serve


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Book(db.Model):
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author: Mapped[str] = mapped_column(String(200))
    genre: Mapped[str] = mapped_column(String(100))
    published_year: Mapped[int | None]
    isbn: Mapped[str | None] = mapped_column(String(13))
    owner_id: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


def utc(value: datetime) -> str:
    return value.isoformat(timespec="microseconds") + "Z"


class BookResource(Resource):
    def get(self, book_id):
        book = db.session.get(Book, book_id)
        if book is None or book.deleted_at is not None:
            abort(404, message="No book with this id.")
        return {
            "id": book.id,
            "title": book.title,
            "author": book.author,
            "genre": book.genre,
            "published_year": book.published_year,
            "isbn": book.isbn,
            "owner_id": book.owner_id,
            "created_at": utc(book.created_at),
            "updated_at": utc(book.updated_at),
        }


def create_app() -> Flask:
    app = Flask(__name__)
    url = os.environ["DATABASE_URL"]
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    if url.startswith("sqlite"):
        # waitress's threads share the pool's connections.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"check_same_thread": False}}
    db.init_app(app)
    Api(app).add_resource(BookResource, "/api/v1/books/<int:book_id>")
    return app


if __name__ == "__main__":
    serve(
        create_app(),
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        threads=int(os.environ.get("WAITRESS_THREADS", "4")),
        ident="ref-restful-sqla",
    )
