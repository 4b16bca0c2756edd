"""The server: the app on waitress (bookshelf/serving.py), with a graceful stop on SIGTERM or
SIGINT. `bookshelf serve` runs it, and so does `python wsgi.py` in a checkout."""

import ctypes
import logging
import os
import signal
import socket
import struct
import sys
import time

from sqlalchemy.engine import make_url
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer
from waitress.wasyncore import loop

from . import create_app
from .config import ConfigError
from .extensions import db
from .mail.delivery import wake_deliverer
from .schema import SchemaNotMigrated, current_revision
from .serving import create_server


def build(**options):
    """The app, or an exit with one line naming what is wrong in the configuration."""
    try:
        return create_app(**options)
    except ConfigError as exc:
        sys.exit(f"bookshelf: configuration error: {exc}")


# On SIGTERM or SIGINT: stop accepting, give the requests under way this long to finish, exit.
# Container runtimes kill 10 seconds after SIGTERM by default.
DRAIN_SECONDS = 7.0
# A connection with nothing to do during the stop is closed once it has been idle this long:
# longer than a proxy keeps an idle connection to us (deploy/nginx.conf: 4 s), so that the proxy
# closes it first and never sends a request on one we are closing (it could not resend a POST).
# A request that still comes is answered with `Connection: close` (bookshelf.serving.Task).
IDLE_CLOSE_SECONDS = 5.0
SELECT_LIMIT = 1024  # FD_SETSIZE: select() takes no descriptor numbered this or higher
# How long the network loop waits for a socket event at most, so how soon a signal is noticed.
POLL_SECONDS = 0.2

log = logging.getLogger("bookshelf.server")
# waitress warns "Task queue depth is N" for every request that waits for a thread: under load,
# that is most requests. Queueing shows in the request log's duration_ms instead.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def main() -> None:
    """Serve on HOST:PORT until SIGTERM or SIGINT, then drain and return."""
    sockets = {}  # waitress's socket map: listening sockets, connections, wake-up pipes
    app = build(commands=False)
    revision = schema_revision(app)  # before listening: no request waits on this query
    server = create_server(
        app,
        map=sockets,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        ident="bookshelf",
    )
    stop = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: stop.append(signum))
    server.print_listen("Serving on http://{}:{}")
    log.info("starting", extra=startup_fields(app, server, revision))
    if app.config["SMTP_URL"]:
        wake_deliverer(app)  # the mails an earlier process left: now, then every retry interval
    # waitress's own server.run() is this loop, with no gentle way out of it.
    while not stop:
        loop(timeout=POLL_SECONDS, map=sockets, count=1, use_poll=needs_poll(sockets))
    log.info("%s: stopping", signal.Signals(stop[0]).name)
    drain(sockets)
    for dispatcher in server.dispatchers:
        dispatcher.shutdown(timeout=1)


def startup_fields(app, server, revision: str | None) -> dict:
    """The start-up line's fields: environment, database (no password), its schema revision
    (from `schema_revision`) and the addresses served."""
    listening = getattr(server, "effective_listen", None) or [
        (server.effective_host, server.effective_port)
    ]
    return {
        "environment": app.config["ENV_NAME"],
        "database": make_url(app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(
            hide_password=True
        ),
        "schema_revision": revision,
        "addresses": [_address(host, port) for host, port in listening],
    }


def schema_revision(app) -> str | None:
    """The database's schema revision: "none" before `init-db`, None if it does not answer."""
    with app.app_context():
        try:
            return current_revision(db.session) or "none"
        except SchemaNotMigrated:
            return "none"
        except Exception:  # the database does not answer: the server starts anyway
            log.warning("the schema revision could not be read", exc_info=True)
            return None
        finally:
            db.session.remove()
            # The connection was opened outside a request, so without the server-side
            # statement_timeout that requests' connections carry (bookshelf.postgres): it must
            # not stay in the pool for requests to use.
            db.engine.dispose()


def _address(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def needs_poll(sockets: dict) -> bool:
    """select() cannot watch a descriptor numbered 1024 or more; poll() can, but waitress's
    poll() registers every socket anew each round and costs more: 7% fewer one-book reads a
    second. So select() until a descriptor is that high (the map's keys are descriptors)."""
    return max(sockets, default=0) >= SELECT_LIMIT


# The kernel's filter program for a listening socket that drops every new connection's first
# packet (TCP flags SYN without ACK) and lets everything else through: classic BPF, as
# SO_ATTACH_FILTER takes it. A socket filter sees the packet from its TCP header on.
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux
DROP_NEW_CONNECTIONS = (
    (0x30, 0, 0, 13),  # ldb [13]: the TCP flags
    (0x54, 0, 0, 0x12),  # and #(SYN|ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN: a new connection -> drop, else -> keep
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: keep the whole packet
)
# How long handshakes already under way get to complete once new ones are dropped: one round
# trip, generously.
HANDSHAKE_SECONDS = 0.05


def refuse_new_connections(sock: socket.socket) -> bool:
    """Have the kernel drop new connections' SYNs to `sock` (Linux), so that no connection can
    complete between the last accept() and close(), which would reset it. A client's dropped SYN
    is sent again a second later and then refused (or taken by the next process on the port).
    False where the kernel refuses the filter: the stop is then as good as it was without."""
    program = b"".join(struct.pack("HBBI", *instruction) for instruction in DROP_NEW_CONNECTIONS)
    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(DROP_NEW_CONNECTIONS), ctypes.addressof(buffer))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError:
        log.warning("could not attach the filter that drops new connections", exc_info=True)
        return False
    return True


def drain(sockets: dict) -> None:
    """Stop listening, answer every request already accepted, then close each connection.

    The kernel completes connections before the server accepts them: they wait in the listen
    queue, and closing the listening socket would reset them. So the queue is taken in first.
    From then on every answer closes its connection. A connection with no request under way is
    closed once it has been idle for IDLE_CLOSE_SECONDS with nothing waiting to be read (one
    just accepted has its request on the way); a client that closes it first ends it sooner.
    """
    listeners = [s for s in sockets.values() if isinstance(s, BaseWSGIServer)]
    for listener in listeners:
        listener.stopping = True  # read by bookshelf.serving.Task
        refuse_new_connections(listener.socket)
    time.sleep(HANDSHAKE_SECONDS)  # handshakes under way complete into the queue meanwhile
    for listener in listeners:
        while listener.accepting:
            before = len(sockets)
            listener.handle_accept()  # up to a batch a call
            if len(sockets) == before:
                break
        listener.del_channel()
        listener.socket.close()
    deadline = time.monotonic() + DRAIN_SECONDS
    while connections := [s for s in sockets.values() if isinstance(s, HTTPChannel)]:
        if time.monotonic() > deadline:
            log.warning("%d connection(s) still busy after %.0f s", len(connections), DRAIN_SECONDS)
            return
        quiet_since = time.time() - IDLE_CLOSE_SECONDS
        for connection in connections:
            if (
                not connection.requests
                and connection.request is None
                and connection.last_activity < quiet_since
                and not _input_waiting(connection.socket)
            ):
                connection.close_when_flushed = True
        loop(timeout=0.05, map=sockets, count=1, use_poll=needs_poll(sockets))


def _input_waiting(sock: socket.socket) -> bool:
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return False
    except OSError:
        return False  # broken: nothing more will come
