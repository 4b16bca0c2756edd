"""Reference (d): the same one-book read in FastAPI + SQLAlchemy, served by uvicorn in one
process. Runs in bench/.venv (FastAPI and uvicorn are not project dependencies).

DATABASE_URL=sqlite:////abs/path/bench.db PORT=8001 \\
    bench/.venv/bin/python bench/refs/fastapi_sqla.py
"""

import os
from datetime import datetime

import uvicorn
from fastapi import FastAPI, HTTPException
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Book(Base):
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


URL = os.environ["DATABASE_URL"]
# One connection per thread of FastAPI's pool (40 by default), kept open: with SQLAlchemy's
# default pool (5 + 10 overflow, the overflow closed after use) the 32 connections of the load
# would open and close database connections all the time.
THREADS = 40
engine = create_engine(
    URL,
    pool_size=THREADS,
    max_overflow=0,
    connect_args={"check_same_thread": False} if URL.startswith("sqlite") else {},
)
app = FastAPI()


def utc(value: datetime) -> str:
    return value.isoformat(timespec="microseconds") + "Z"


@app.get("/api/v1/books/{book_id}")
def get_book(book_id: int):  # a plain def: FastAPI runs it in its thread pool
    with Session(engine) as session:
        book = session.get(Book, book_id)
        if book is None or book.deleted_at is not None:
            raise HTTPException(status_code=404, detail="No book with this id.")
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


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), workers=1)
