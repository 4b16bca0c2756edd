"""The WSGI entry point: `app` for any server; `python wsgi.py` serves it with waitress."""

import logging
import os
import sys

from bookshelf import create_app
from bookshelf.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.exit(f"bookshelf: configuration error: {exc}")


def main() -> None:
    from waitress import serve

    logging.basicConfig(level=app.config["LOG_LEVEL"], format="%(levelname)s %(name)s %(message)s")
    serve(
        app,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        threads=int(os.environ.get("WAITRESS_THREADS", "8")),
        ident="bookshelf",
    )


if __name__ == "__main__":
    main()
