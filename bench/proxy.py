"""The shipped deploy/nginx.conf, run by the real nginx in front of Bookshelf processes.

The configuration is the one the tests run (tests/nginx.py's `substituted()`): the shipped file
with only its upstream's server lines pointed at the processes and `listen 8000;` at a free
127.0.0.1 port; it is written beside the logs. Like the tests, nginx's command line sets what a
deployment sets outside the file: the prefix (a fresh directory), the pid file, the foreground,
and the error log (stderr, kept in the log directory). The access log goes to nginx's stdout as
shipped, which the benchmark sends to /dev/null like the servers' request logs.
"""

import importlib
import shutil
import sys
import tempfile
from pathlib import Path

from servers import Server, clean_env, free_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "deploy" / "nginx.conf"


def _harness():
    """tests/nginx.py: the project root is not on the path of a script under bench/."""
    if str(ROOT) not in sys.path:
        sys.path.append(str(ROOT))
    return importlib.import_module("tests.nginx")


def unavailable() -> str:
    """Why nginx cannot run here, or ''."""
    try:
        harness = _harness()
    except ImportError as exc:  # tests/nginx.py needs the dev dependencies (pytest)
        return f"tests/nginx.py cannot be imported: {exc}"
    if harness.nginx_binary() is None:
        return "nginx is not installed (apt-get install nginx)"
    return ""


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (/proc/PID/stat: the field after the state)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            after_name = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(after_name[1]) == parent:
            found.append(int(entry.name))
    return found


class Nginx(Server):
    """nginx in the foreground in a process group of its own, in front of `upstreams`."""

    def __init__(self, name: str, upstreams: list[Server], log_dir: Path):
        super().__init__(name, [], clean_env(), ROOT, log_dir, port=free_port())
        self.upstreams = upstreams
        self.config = log_dir / f"{name}.conf"
        self.prefix: Path | None = None

    def start(self) -> "Nginx":
        harness = _harness()
        self.config.parent.mkdir(parents=True, exist_ok=True)
        ports = [upstream.port for upstream in self.upstreams]
        self.config.write_text(harness.substituted(SHIPPED.read_text(), ports, self.port))
        self.prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self.prefix.chmod(0o755)  # started by root, the workers run as an unprivileged user
        self.argv = [harness.nginx_binary(), "-p", f"{self.prefix}/", "-e", "stderr"]
        self.argv += ["-c", str(self.config), "-g", f"daemon off; pid {self.prefix}/nginx.pid;"]
        return super().start()

    def pids(self) -> list[int]:
        """The master and its workers (their CPU time is not the master's until they exit)."""
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if self.prefix is not None:
                shutil.rmtree(self.prefix, ignore_errors=True)
                self.prefix = None
