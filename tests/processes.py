"""Real processes for tests that must run as deployed: `python wsgi.py` servers on free ports,
and a TCP proxy that forwards, cuts or stalls a connection to PostgreSQL or Redis."""

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_port(
    port: int, process: subprocess.Popen | None = None, timeout=30.0, host="127.0.0.1"
) -> bool:
    """True once something accepts on host:port; False if `process` died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            if process is not None and process.poll() is not None:
                return False
            time.sleep(0.05)
    return False


class ServerProcess:
    """`python wsgi.py` (waitress) in its own process on a free port (or the given host and
    port), its output in `log_path`."""

    def __init__(self, log_path: Path, host="127.0.0.1", port: int | None = None, **env: str):
        self.host = host
        self.port = port or free_port()
        self.log_path = log_path
        self.env = os.environ | {
            "APP_ENV": "testing",
            "HOST": host,
            "PORT": str(self.port),
            "WAITRESS_THREADS": "8",
        }
        self.env.update(env)
        self.process: subprocess.Popen | None = None
        self.retired: list[subprocess.Popen] = []  # replaced by restart()

    def start(self) -> "ServerProcess":
        self._log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "wsgi.py"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if not wait_for_port(self.port, self.process, host=self.host):
            self.stop()
            raise RuntimeError("the waitress server did not start:\n" + self.log_path.read_text())
        return self

    def restart(self) -> None:
        """A rolling restart's step: SIGTERM, and a new process on the same port as soon as
        the old one has closed its listening socket (it drains its connections meanwhile).
        Returns once the new one accepts; the old one is left to finish on its own."""
        old = self.process
        old.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and old.poll() is None:
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
            except OSError:
                break  # the old listener is closed
            time.sleep(0.02)
        self._log.close()
        self.start()
        self.retired.append(old)

    def stop(self) -> None:
        for old in self.retired:
            if old.wait(timeout=15) != 0:
                raise RuntimeError(f"a restarted process exited {old.returncode}")
        if self.process is not None:
            stop_process(self.process)
        self._log.close()

    def log_lines(self) -> list[dict]:
        """The JSON lines the process has logged so far."""
        lines = []
        for line in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines


def call(port: int, method, path, body=None, headers=None, raw=None, timeout=30, source=None):
    """One request on its own connection: (status, lower-cased headers, parsed JSON or None).
    `source` picks the client's own address (any of 127.0.0.0/8 on Linux)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        headers = dict(headers or {})
        payload = raw
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        parsed = json.loads(data) if data else None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
    finally:
        conn.close()


class TcpProxy:
    """Forwards a local port to `target`. `cut()` closes every connection (a restart or a refused
    connection); `stall()` keeps every socket open but forwards nothing, and accepts new
    connections without forwarding them either (a hung server or a partition); `resume()` forwards
    again (connections made during the stall are dropped, as a recovered server would have)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.port: int | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.flowing = threading.Event()
        self.flowing.set()
        self.accepted = 0  # connections accepted so far

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port or 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._track(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        """Forward again; what was accepted or sent during the stall is dropped with its
        connection, as a database that comes back would have lost it."""
        self.cut()
        self.flowing.set()
        self.start()

    def cut(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    stop = cut

    def _track(self, sock):
        with self.lock:
            self.sockets.append(sock)

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            self._track(client)
            self.accepted += 1
            if not self.flowing.is_set():
                continue  # accepted, never answered
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self._track(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                self.flowing.wait()  # stalled: hold the bytes, keep both sockets open
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
