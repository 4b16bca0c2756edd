"""Reference (b): plain Flask returning a book from an in-memory dict (the first tutorial's app),
on waitress.

PORT=8001 WAITRESS_THREADS=4 python bench/refs/flask_plain.py
"""

import os

from flask import Flask, abort
from waitress import serve

BOOKS = {
    1: {"id": 1, "title": "Dune", "author": "Frank Herbert", "published_year": 1965},
    2: {"id": 2, "title": "Beloved", "author": "Toni Morrison", "published_year": 1987},
    3: {"id": 3, "title": "Pride and Prejudice", "author": "Jane Austen", "published_year": 1813},
}

app = Flask(__name__)


@app.get("/api/v1/books/<int:book_id>")
def get_book(book_id):
    # Any positive id maps onto one of the books, so the same random-id load works here.
    book = BOOKS.get((book_id - 1) % len(BOOKS) + 1) if book_id > 0 else None
    if book is None:
        abort(404)
    return book


if __name__ == "__main__":
    serve(
        app,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        threads=int(os.environ.get("WAITRESS_THREADS", "4")),
        ident="ref-flask",
    )
