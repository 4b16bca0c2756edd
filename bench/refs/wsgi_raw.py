"""Reference (a): a raw WSGI callable on waitress returning a small JSON body, whatever the path.

PORT=8001 WAITRESS_THREADS=4 python bench/refs/wsgi_raw.py
"""

import os

from waitress import serve

BODY = b'{"id": 1, "title": "Dune", "author": "Frank Herbert", "published_year": 1965}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


if __name__ == "__main__":
    serve(
        app,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        threads=int(os.environ.get("WAITRESS_THREADS", "4")),
        ident="ref-wsgi",
    )
