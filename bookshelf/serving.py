"""Serving with waitress: what `python wsgi.py` changes in it."""

import waitress.server
from waitress.channel import HTTPChannel


class Channel(HTTPChannel):
    """waitress's connection, without a busy loop while a task thread sends a response.

    A task thread sends its response itself, holding the connection's output lock. Meanwhile
    waitress's network loop sees bytes waiting and a writable socket, tries to send them too,
    cannot take the lock and polls again at once: under load, dozens of rounds per request,
    each holding the GIL that the task thread needs to finish. Measured on the one-book read
    at 32 connections: the loop's CPU fell from ~840 to ~120 us a request.

    Here the loop leaves a connection alone while a task thread holds its output lock. Bytes a
    task thread could not send (the client reads slowly) are the loop's to send: after each
    write, the task thread wakes the loop if any are left.
    """

    def writable(self):
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
    """waitress's `create_server`, its connections `Channel`s."""
    server = waitress.server.create_server(app, **options)
    server.channel_class = Channel
    return server
