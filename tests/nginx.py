"""The shipped deploy/nginx.conf run by the real nginx, in front of servers of the test's choice.

The file runs as it ships but for two values: the replicas' address (`api:8000`) becomes the
upstream's, and `listen 8000;` a free port on 127.0.0.1. Everything a deployment sets outside
the file (pid file, error log, foreground, worker user) goes on nginx's command line.

With `hosts`, nginx runs as it does in compose: under deploy/nginx-follow-replicas.sh, with the
name `api` kept and looked up in that hosts file (bind-mounted over /etc/hosts in a mount
namespace of its own), so that a test can move the replicas to other addresses.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from bookshelf.serving import raise_open_file_limit
from tests.processes import ServerProcess, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "nginx.conf"
FOLLOW = ROOT / "deploy" / "nginx-follow-replicas.sh"
UPSTREAM = "api:8000"
LISTEN = "listen 8000;"
# Where nginx lives when it is not on a user's PATH (Debian puts it in /usr/sbin).
SBIN = ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"]


def nginx_binary() -> str | None:
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def substituted(text: str, upstream_ports: int | list[int], port: int, name=False) -> str:
    """The configuration with its two deployment values replaced, so that what runs is the
    shipped file, not a look-alike: `listen 8000;` must occur once, and `api:8000` only on the
    upstream's `server` lines. Several upstream ports stand for several replicas: each such
    line once for each. With `name`, the replicas keep the name `api` (one port: the replicas
    are the name's addresses)."""
    if (count := text.count(LISTEN)) != 1:
        raise ValueError(f"{LISTEN!r} occurs {count} times in the nginx config, not once")
    server_lines = re.findall(rf"^\s*server {re.escape(UPSTREAM)}\b.*$", text, re.M)
    if not server_lines or text.count(UPSTREAM) != len(server_lines):
        raise ValueError(f"{UPSTREAM!r} occurs outside the upstream's server lines")
    ports = [upstream_ports] if isinstance(upstream_ports, int) else upstream_ports
    host = "api" if name else "127.0.0.1"
    for line in server_lines:
        servers = "\n".join(line.replace(UPSTREAM, f"{host}:{p}") for p in ports)
        text = text.replace(line, servers)
    return text.replace(LISTEN, f"listen 127.0.0.1:{port};")


def setting(name: str) -> str:
    """The value of a directive in the shipped file, e.g. setting("client_header_timeout")."""
    [value] = re.findall(rf"^\s*{name}\s+([^;]+);", SHIPPED.read_text(), re.M)
    return value


class Nginx:
    """The real nginx, in the foreground, running the shipped configuration.

    The substituted configuration, the access log (JSON lines) and the error log are written
    to `directory`. The prefix (temporary files, pid) is a fresh directory that an unprivileged
    worker can enter: started by root, nginx runs its workers as its default unprivileged user,
    as the official image does.
    """

    def __init__(self, directory: Path, upstream_port: int | list[int], hosts: Path | None = None):
        binary = nginx_binary()
        if binary is None:
            pytest.skip("nginx is not installed (apt-get install nginx): cannot run the config")
        if hosts is not None and (os.geteuid() != 0 or not shutil.which("unshare")):
            pytest.skip("a hosts file of nginx's own needs root and unshare (a mount namespace)")
        self.binary = binary
        self.upstream_port = upstream_port
        self.hosts = hosts
        self.port = free_port()
        self.config = directory / f"nginx-{self.port}.conf"
        self.access_log = directory / f"nginx-{self.port}-access.log"
        self.error_log = directory / f"nginx-{self.port}-error.log"
        self.prefix: Path | None = None
        self.process: subprocess.Popen | None = None

    def start(self) -> "Nginx":
        self.prefix = Path(tempfile.mkdtemp(prefix="bookshelf-nginx-"))
        self.prefix.chmod(0o755)  # the workers' user reads temporary files under it
        self.config.write_text(
            substituted(SHIPPED.read_text(), self.upstream_port, self.port, name=bool(self.hosts))
        )
        # Room for thousands of connections; nginx's own worker_rlimit_nofile may be refused
        # where the hard limit is lower, and then the workers keep this one.
        raise_open_file_limit(20_000)
        directives = f"daemon off; pid {self.prefix}/nginx.pid; error_log stderr info;"
        options = ["-p", f"{self.prefix}/", "-e", "stderr", "-c", str(self.config)]
        options += ["-g", directives]
        command, env = [self.binary, *options], None
        if self.hosts is not None:
            # The follow script runs `nginx` from PATH, with these options.
            mount = 'mount --bind "$0" /etc/hosts && exec sh "$1" "${@:2}"'
            command = ["unshare", "--mount", "--propagation", "private", "bash", "-c", mount]
            command += [str(self.hosts), str(FOLLOW), *options]
            env = os.environ | {
                "PATH": os.pathsep.join([str(Path(self.binary).parent), os.environ["PATH"]]),
                "FOLLOW_SECONDS": "0.5",
            }
        with self.access_log.open("ab") as out, self.error_log.open("ab") as err:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: the workers go with it
            )
        if not wait_for_port(self.port, self.process, timeout=10):
            self.stop()
            raise RuntimeError(f"nginx did not start:\n{self.error_log.read_text()[-3000:]}")
        return self

    def stop(self) -> None:
        """A fast shutdown (SIGTERM), then SIGKILL to the whole group after 10 s."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.prefix is not None:
            shutil.rmtree(self.prefix, ignore_errors=True)

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace")

    def access_entries(self) -> list[dict]:
        """The access log's JSON lines so far."""
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line]


def read_response(sock: socket.socket, deadline: float) -> tuple[int, dict, bytes]:
    """One response with a Content-Length (or closed after its body): status, lower-cased
    headers, body. Raises TimeoutError at `deadline` (time.monotonic())."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock, deadline)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        body += chunk
    return int(status_line.split(" ")[1]), headers, body


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no whole response in time")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def exchange(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict, bytes]:
    """Send raw bytes on a new connection and read the one response. What the server does not
    read (it answered early and closed) is not an error."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_response(sock, deadline)


@pytest.fixture
def start_api(app, database_url, tmp_path):
    """`python wsgi.py` replicas on the test database (`app` made its tables), trusting one
    proxy; options as ServerProcess takes them. All stopped after the test, and a process that
    a restart replaced must have exited 0."""
    servers = []

    def start(**options) -> ServerProcess:
        log = tmp_path / f"server-{len(servers)}.log"
        server = ServerProcess(log, DATABASE_URL=database_url, TRUSTED_PROXIES="1", **options)
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_nginx(tmp_path):
    """The shipped nginx in front of the given upstream port(s) (see Nginx); stopped after."""
    proxies = []

    def start(upstream_ports: int | list[int], hosts: Path | None = None) -> Nginx:
        proxies.append(Nginx(tmp_path, upstream_ports, hosts=hosts).start())
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()
