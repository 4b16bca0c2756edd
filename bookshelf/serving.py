"""Serving with waitress: what `python wsgi.py` changes in it, all in one place.

Written against waitress 3.0.2; pyproject.toml keeps waitress within 3.0, and
tests/test_serving.py fails when upstream behaviour that these classes rely on or correct changes.
"""

import contextlib
import ctypes
import logging
import resource
import socket
import time
import uuid
from collections.abc import Mapping

import waitress.server
import waitress.task
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.task import ThreadedTaskDispatcher

from .envelope import SAFE_REQUEST_ID, dumps
from .errors import HTTP_ERRORS
from .security import SECURITY_HEADERS

log = logging.getLogger("bookshelf.server")
request_log = logging.getLogger("bookshelf.request")

# Each probe is served on a thread of its own, so that a load balancer's probe is answered while
# every worker thread waits on a slow database, and liveness never waits behind readiness.
PROBE_PATHS = ("/health", "/health/ready")
ACCEPT_BATCH = 64
LINGER_SECONDS = 2.0


def serving_options(config: Mapping) -> dict:
    """waitress's settings from the app's configuration (README, "Hardening")."""
    return {
        "threads": config["WAITRESS_THREADS"],
        "connection_limit": config["WAITRESS_CONNECTION_LIMIT"],
        "channel_timeout": config["WAITRESS_CHANNEL_TIMEOUT"],
        "backlog": config["WAITRESS_BACKLOG"],
        # waitress compares with >=: a body of exactly MAX_CONTENT_LENGTH bytes is allowed.
        "max_request_body_size": config["MAX_CONTENT_LENGTH"] + 1,
        # For waitress's own server.run(); `python wsgi.py` picks select() or poll() each round.
        "asyncore_use_poll": True,
        # waitress deletes X-Forwarded-* unless told which proxy to trust; the app's ProxyFix
        # (TRUSTED_PROXIES) must see them to find the client's own address.
        "clear_untrusted_proxy_headers": not config["TRUSTED_PROXIES"],
    }


class Parser(HTTPRequestParser):
    """waitress's request parser, stamped with the time its first byte arrived, and with no
    `100 Continue` for a request it has already refused (a body over the limit): waitress would
    invite the body first and refuse it after."""

    def __init__(self, adj):
        super().__init__(adj)
        self.started = time.monotonic()

    def received(self, data):
        consumed = super().received(data)
        if self.error is not None:
            self.expect_continue = False
        return consumed


class Task(waitress.task.WSGITask):
    """waitress's task, keeping the connection open after a 204 or a 304, and closing it after
    any answer once the server is stopping.

    waitress closes the connection after any HTTP/1.1 response without a Content-Length,
    including the bodiless 204 and 304, which must not carry one (RFC 9110): a mobile client's
    cheap 304 would pay a new TCP and TLS handshake.

    While the server stops (`wsgi.py`'s drain sets `stopping` on its listeners), every answer
    says `Connection: close`: a client or proxy keeping the connection learns not to send it
    another request, instead of finding it closed under a request it cannot safely resend.
    """

    _building_head = False

    def build_response_header(self):
        if getattr(self.channel.server, "stopping", False):
            self.set_close_on_finish()
        self._building_head = True
        try:
            return super().build_response_header()
        finally:
            self._building_head = False

    def set_close_on_finish(self):
        if (
            self._building_head
            and not self.has_body
            and self.version == "1.1"
            and self.request.headers.get("CONNECTION", "").lower() != "close"
        ):
            return  # only "no Content-Length" could have asked, and a bodiless answer needs none
        super().set_close_on_finish()


class ErrorTask(waitress.task.ErrorTask):
    """waitress's own refusals (a malformed request, headers or a body over the limits) in the
    API's JSON error envelope, logged like any request, instead of text/plain."""

    def execute(self):
        error = self.request.error
        code, message = HTTP_ERRORS.get(error.code, HTTP_ERRORS[400])
        given = self.request.headers.get("X_REQUEST_ID", "")
        request_id = given if SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        body = dumps(
            {
                "error": {"code": code, "message": message, "details": {"reason": error.body}},
                "meta": {"request_id": request_id},
            }
        )
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend(
            [("Content-Type", "application/json"), ("X-Request-ID", request_id)]
        )
        self.response_headers.extend(SECURITY_HEADERS.items())
        self.set_close_on_finish()
        self.channel.linger_on_close = True
        self.content_length = len(body)
        self.write(body)
        request_log.info(
            "request",
            extra={
                "method": getattr(self.request, "command", None),
                "path": getattr(self.request, "path", None),
                "status": error.code,
                "duration_ms": None,
                "user_id": None,
                "remote_addr": self.channel.addr[0] if self.channel.addr else None,
                "request_id": request_id,
            },
        )


class Channel(HTTPChannel):
    """waitress's connection: JSON protocol errors, keep-alive after 204 and 304, a deadline for
    a request's head, and no busy loop while a task thread sends a response.

    A task thread sends its response itself, holding the connection's output lock. Meanwhile
    waitress's network loop sees bytes waiting and a writable socket, tries to send them too,
    cannot take the lock and polls again at once: under load, dozens of rounds per request,
    each holding the GIL that the task thread needs to finish. Measured on the one-book read
    at 32 connections: the loop's CPU fell from ~840 to ~120 us a request.

    Here the loop leaves a connection alone while a task thread holds its output lock. Bytes a
    task thread could not send (the client reads slowly) are the loop's to send: after each
    write, the task thread wakes the loop if any are left.

    A client that trickles a request's head (slowloris) keeps resetting waitress's idle timeout;
    it is closed once the head has taken longer than `header_timeout` seconds.
    """

    parser_class = Parser
    task_class = Task
    error_task_class = ErrorTask
    header_timeout = 30.0
    # After a refusal the rest of the request (a body over the limit) may still be on its way:
    # a proxy sends the whole body before it reads an answer. Closing with unread bytes would
    # reset the connection and the refusal be lost, so the connection closes only after that
    # rest has been read and dropped (never stored), up to `linger_bytes` or LINGER_SECONDS.
    linger_on_close = False
    linger_bytes = 4 * 1024 * 1024
    lingering_until: float | None = None
    dropped = 0

    def handle_close(self):
        if self.linger_on_close and self.lingering_until is None and self.connected:
            try:
                self.socket.shutdown(socket.SHUT_WR)  # the answer is whole: say so
            except OSError:
                return super().handle_close()
            self.lingering_until = time.monotonic() + LINGER_SECONDS
            self.will_close = False
            return None
        return super().handle_close()

    def handle_read(self):
        if self.lingering_until is None:
            return super().handle_read()
        try:
            data = self.recv(self.adj.recv_bytes)
        except OSError:
            data = b""
        self.dropped += len(data)
        if not data or self.dropped > self.linger_bytes:
            super().handle_close()
        return None

    def readable(self):
        if self.lingering_until is not None:
            if time.monotonic() > self.lingering_until:
                super().handle_close()
                return False
            return True
        request = self.request
        if (
            request is not None
            and not request.headers_finished
            and not self.requests  # while the server answers earlier ones, the client waits
            and time.monotonic() - request.started > self.header_timeout
        ):
            self.will_close = True  # the loop closes it as soon as it asks writable()
            return False
        return super().readable()

    def service(self):
        super().service()
        request = self.request
        if request is not None:  # a head begun while the server was answering: its clock
            request.started = time.monotonic()  # starts now (a float: one atomic store)

    def writable(self):
        if self.lingering_until is not None:
            return False
        if self.will_close or self.close_when_flushed:
            return True
        if not self.total_outbufs_len:
            return False
        if self.requests:  # a task thread is writing; is it sending right now?
            if not self.outbuf_lock.acquire(blocking=False):
                return False
            self.outbuf_lock.release()
        return True

    def write_soon(self, data):
        written = super().write_soon(data)
        if self.total_outbufs_len:
            self.server.pull_trigger()
        return written


def create_server(app, **options):
    """waitress's `create_server` with `Channel` connections and the probes on threads of their
    own; `options` are waitress's, by default from `serving_options(app.config)`. The returned
    server's `dispatchers` are every thread pool, to shut down when it stops."""
    options = serving_options(app.config) | options
    raise_open_file_limit(options.get("connection_limit", 100) + 64)
    give_large_blocks_back()
    server = waitress.server.create_server(app, **options)
    channel_class = type(
        "Channel",
        (Channel,),
        {
            "header_timeout": app.config["REQUEST_HEADER_TIMEOUT"],
            "linger_bytes": 4 * app.config["MAX_CONTENT_LENGTH"],
        },
    )
    workers = server.task_dispatcher
    probes = {path: ThreadedTaskDispatcher() for path in PROBE_PATHS}
    for dispatcher in probes.values():
        dispatcher.set_thread_count(1)

    def add_task(channel):
        path = getattr(channel.requests[0], "path", None) if channel.requests else None
        probes.get(path, workers).add_task(channel)

    # A HOST with several addresses (localhost: 127.0.0.1 and ::1) gives one listener each.
    for listener in _listeners(server):
        listener.channel_class = channel_class
        listener.add_task = add_task
        listener.handle_accept = accepting_in_batches(listener)
    server.dispatchers = [workers, *probes.values()]
    return server


def _listeners(server) -> list:
    if isinstance(server, waitress.server.MultiSocketServer):
        return [s for s in server.map.values() if isinstance(s, waitress.server.BaseWSGIServer)]
    return [server]


def accepting_in_batches(server):
    """waitress accepts one connection per round of its network loop, and a round costs time in
    proportion to the open connections: with 4,000 open, a burst of 3,000 new ones took 9 s to
    accept, a new client waiting behind them. This takes up to ACCEPT_BATCH per round."""
    accept_one = server.handle_accept
    connections = server._map
    limit = server.adj.connection_limit

    def handle_accept():
        for _ in range(ACCEPT_BATCH):
            before = len(connections)
            accept_one()
            if len(connections) == before or len(connections) >= limit:
                return  # none was waiting (or it failed), or the limit is reached

    return handle_accept


def raise_open_file_limit(needed: int) -> None:
    """Each connection is an open file: raise the soft limit towards the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning(
                "open-file limit %d is below the %d that WAITRESS_CONNECTION_LIMIT needs",
                target,
                needed,
            )


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def give_large_blocks_back() -> None:
    """Make glibc give every block over 128 KiB back to the system when it is freed.

    glibc raises its mmap threshold to the size of the largest block freed, up to 32 MiB, and
    keeps smaller blocks in its heaps. argon2 takes a 19 MiB block per hash: after a burst of
    logins each worker thread's heap kept one (measured: 62 MiB idle, 215 MiB after 50 concurrent
    logins, for good; 63 MiB with the threshold fixed here). MALLOC_ARENA_MAX=2 did not help
    (233 MiB). Does nothing where the C library has no mallopt.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 * 1024)
