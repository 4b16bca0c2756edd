"""The WSGI entry point: `app` for any server and for `flask --app wsgi`. `python wsgi.py` is
`bookshelf serve` (bookshelf/server.py: waitress, the graceful stop, the network loop's fix),
kept for a checkout's tests, benchmark and scripts."""

from bookshelf.server import build, main

# `python wsgi.py` builds its own app, without the command line (see `create_app`).
if __name__ != "__main__":
    app = build()

if __name__ == "__main__":
    main()
