"""Server processes for the benchmark: start on a free 127.0.0.1 port, wait until ready, read
their memory, stop them (and everything they started) whatever happens."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from progress import log

HOST = "127.0.0.1"  # the only address the benchmark ever targets
READY_TIMEOUT_S = 60
STOP_TIMEOUT_S = 12  # Bookshelf drains for up to 7 s on SIGTERM


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def clean_env(**variables: str) -> dict:
    """A minimal environment (so settings in the caller's shell do not leak into a server)."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


class Server:
    """One server process in a process group of its own."""

    running: list["Server"] = []  # everything started and not yet stopped

    def __init__(
        self, name: str, argv: list[str], env: dict, cwd: Path, log_dir: Path, port: int = 0
    ):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.port = port or int(env["PORT"])  # a server that takes no PORT is told its own
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> "Server":
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "wb") as stderr:
            # stdout (the per-request log lines) goes nowhere; stderr is kept for failures.
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: Ctrl-C reaches us, not it
            )
        Server.running.append(self)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the port accepts a connection; fails early if the process dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before listening:\n"
                    + self.stderr_tail()
                )
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not listening on {self.port} after {timeout:.0f} s")

    def pids(self) -> list[int]:
        """The processes whose CPU time is the server's."""
        return [self.proc.pid]

    def rss_kib(self) -> int:
        """VmRSS of the server process (/proc/PID/status), in KiB."""
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for {self.name}")

    def stderr_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after a while."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                # The group id is the server's pid, safe to signal while it is not reaped.
                _signal_group(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log(f"{self.name} ignored SIGTERM, killing it")
                    _signal_group(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            if self in Server.running:
                Server.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for server in list(cls.running):
            try:
                server.stop()
            except Exception as exc:  # keep stopping the others
                log(f"could not stop {server.name}: {exc}")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
