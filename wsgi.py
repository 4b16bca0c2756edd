"""The WSGI entry point: `app` for any server and for `flask --app wsgi`; `python wsgi.py`
serves it with waitress."""

import logging
import os
import signal
import sys
import time

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.wasyncore import loop

from bookshelf import create_app
from bookshelf.config import ConfigError
from bookshelf.serving import create_server


def build(**options):
    try:
        return create_app(**options)
    except ConfigError as exc:
        sys.exit(f"bookshelf: configuration error: {exc}")


# `python wsgi.py` builds its own app, without the command line (see `create_app`).
if __name__ != "__main__":
    app = build()

# On SIGTERM or SIGINT: stop accepting, give the requests under way this long to finish, exit.
# Container runtimes kill 10 seconds after SIGTERM by default.
DRAIN_SECONDS = 7.0
# How long the network loop waits for a socket event at most, so how soon a signal is noticed.
POLL_SECONDS = 0.2

log = logging.getLogger("bookshelf.server")
# waitress warns "Task queue depth is N" for every request that waits for a thread: under load,
# that is most requests. Queueing shows in the request log's duration_ms instead.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def main() -> None:
    sockets = {}  # waitress's socket map: listening sockets, connections, wake-up pipes
    server = create_server(
        build(commands=False),
        map=sockets,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        ident="bookshelf",
    )
    stop = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: stop.append(signum))
    server.print_listen("Serving on http://{}:{}")
    # waitress's own server.run() is this loop, with no gentle way out of it.
    while not stop:
        loop(timeout=POLL_SECONDS, map=sockets, count=1, use_poll=True)
    log.info("%s: stopping", signal.Signals(stop[0]).name)
    drain(sockets)
    for dispatcher in server.dispatchers:
        dispatcher.shutdown(timeout=1)


def drain(sockets: dict) -> None:
    """Close the listening sockets, then each connection once it has no request left to answer."""
    for listener in [s for s in sockets.values() if isinstance(s, BaseWSGIServer)]:
        listener.del_channel()
        listener.socket.close()
    deadline = time.monotonic() + DRAIN_SECONDS
    while connections := [s for s in sockets.values() if isinstance(s, HTTPChannel)]:
        if time.monotonic() > deadline:
            log.warning("%d connection(s) still busy after %.0f s", len(connections), DRAIN_SECONDS)
            return
        for connection in connections:
            if not connection.requests:
                connection.close_when_flushed = True
        loop(timeout=0.05, map=sockets, count=1, use_poll=True)


if __name__ == "__main__":
    main()
