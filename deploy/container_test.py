"""`make container-test`: build the image with podman, run it on PostgreSQL, check it from outside.

Checks: /health and /health/ready answer, a register-login-create-read flow works, the image's
HEALTHCHECK passes, the server runs as a non-root user, `podman stop` ends it cleanly and early
while the requests under way still get their answers, and a rebuild after a code change takes the
dependency layer from the cache. Prints the image size, the start-up time and the stop time.

Needs the PostgreSQL on 127.0.0.1:5432 with trust auth; its database `bookshelf_container` is
dropped and created again. Run as root where podman is missing, it installs it from Debian's
packages; where no registry answers, it builds a stand-in for the base image from Debian's
packages (bookworm ships Python 3.11). It skips, saying why, only where podman cannot start a
container at all. Standard library only.
"""

import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/bookshelf:container-test"
CONTAINER = f"bookshelf-container-test-{os.getpid()}"
DATABASE = "bookshelf_container"
PG = ["-h", "127.0.0.1", "-p", "5432"]
# podman's defaults need two changes on some hosts: no default ulimits (raising them can be
# refused), and runc as the runtime (crun refuses hybrid cgroups).
PODMAN = ["podman", "--runtime", "runc"]
CONTAINERS_CONF = "[containers]\ndefault_ulimits = []\n"
STOP_TIMEOUT = 10  # what docker and podman give a container between SIGTERM and SIGKILL
PASSWORD = "container test password"


class Failed(Exception):
    pass


class Skip(Exception):
    """This machine cannot start a container at all."""


passed = 0


def say(message: str) -> None:
    sys.stdout.write(f"container-test: {message}\n")
    sys.stdout.flush()


def expect(condition, what: str, container: str | None = None) -> None:
    global passed
    if not condition:
        if container:
            logs = run("podman", "logs", "--tail", "40", container, check=False)
            what += f"\n--- the container's last log lines:\n{logs.stdout}{logs.stderr}"
        raise Failed(what)
    passed += 1
    say(f"ok: {what}")


def run(*args, check=True, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise Failed(f"{' '.join(args)} exited {result.returncode}:\n{output}")
    return result


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Failed(f"install {', '.join(packages)} first (as root this test does it)")
    say(f"installing {', '.join(packages)} from Debian's packages")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env, timeout=900)
    run("apt-get", "install", "-y", "-qq", *packages, env=env, timeout=1800)


def ensure_base_image() -> None:
    if run(*PODMAN, "image", "exists", BASE, check=False).returncode == 0:
        return
    say(f"pulling {BASE}")
    pulled = run(*PODMAN, "pull", "--quiet", BASE, check=False, timeout=600)
    if pulled.returncode == 0:
        return
    say(f"no registry answers: {pulled.stderr.strip().splitlines()[-1]}")
    say(f"so: a stand-in for {BASE} from Debian's bookworm packages (about a minute)")
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    with tempfile.TemporaryDirectory(prefix="bookshelf-rootfs-") as rootfs:
        run(
            "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
            "bookworm", rootfs,
            timeout=1800,
        )  # fmt: skip
        # The host's CA bundle, so that pip in the build trusts what the host trusts.
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", f"{rootfs}/etc/ssl/certs/")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(f"{rootfs}/{cache}", ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                *PODMAN, "import",
                "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change", "ENV LANG=C.UTF-8",
                "--change", 'CMD ["python3"]',
                "-", BASE,
            ],
            stdin=tar.stdout, capture_output=True, text=True, check=False,
        )  # fmt: skip
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise Failed(f"podman import of the stand-in: {imported.stderr}")


def check_podman_can_run() -> None:
    result = run(*PODMAN, "run", "--rm", "--network=host", BASE, "true", check=False, timeout=120)
    if result.returncode != 0:
        raise Skip(f"podman cannot start a container here: {result.stderr.strip()[-500:]}")


def fresh_database() -> str:
    if run("pg_isready", *PG, "-q", check=False).returncode != 0:
        raise Failed("no PostgreSQL answers on 127.0.0.1:5432")
    run("dropdb", *PG, "-U", "postgres", "--if-exists", "--force", DATABASE)
    run("createdb", *PG, "-U", "postgres", DATABASE)
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"


def build(context: Path, tag: str) -> tuple[float, str]:
    started = time.monotonic()
    result = run(
        *PODMAN, "build", "--pull=never", "--format", "docker", "-t", tag, str(context),
        timeout=1800,
    )  # fmt: skip
    return time.monotonic() - started, result.stdout + result.stderr


def image_size(image: str) -> int:
    return int(run(*PODMAN, "image", "inspect", "--format", "{{.Size}}", image).stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(port, method, path, body=None, token=None, timeout=30):
    """One request on its own connection: (status, headers, parsed JSON body or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data) if data else None
    finally:
        conn.close()


def start(port: int, database_url: str) -> float:
    """`podman run` the image; seconds until /health/ready answers 200."""
    started = time.monotonic()
    run(
        *PODMAN, "run", "--detach", "--name", CONTAINER, "--network=host",
        "--env", f"PORT={port}",
        "--env", f"DATABASE_URL={database_url}",
        "--env", f"SECRET_KEY={secrets.token_urlsafe(48)}",
        "--env", "ALLOWED_HOSTS=127.0.0.1,localhost",
        # Slow password hashing, so that registrations are still under way when the stop comes.
        "--env", "PASSWORD_HASH_TIME_COST=12",
        IMAGE,
    )  # fmt: skip
    while time.monotonic() - started < 90:
        try:
            if call(port, "GET", "/health/ready", timeout=2)[0] == 200:
                return time.monotonic() - started
        except OSError:
            pass
        state = run("podman", "inspect", "--format", "{{.State.Status}}", CONTAINER).stdout.strip()
        if state != "running":
            expect(False, f"the container stays up (it is {state})", CONTAINER)
        time.sleep(0.05)
    expect(False, "/health/ready answers 200 within 90 s", CONTAINER)


def check_flow(port: int) -> None:
    status, _, body = call(port, "GET", "/health")
    expect(status == 200 and body == {"status": "ok"}, f"/health answers 200 {body}", CONTAINER)
    status, _, body = call(port, "GET", "/health/ready")
    expect(status == 200, f"/health/ready answers 200 {body}", CONTAINER)
    user = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    status, _, body = call(port, "POST", "/api/v1/auth/register", user)
    expect(status == 201 and body["data"]["email"] == user["email"], "register: 201", CONTAINER)
    login = {"email": user["email"], "password": PASSWORD}
    status, _, body = call(port, "POST", "/api/v1/auth/login", login)
    expect(status == 200 and body["data"]["access_token"], "login: 200 with a token", CONTAINER)
    token = body["data"]["access_token"]
    book = {"title": "Dune", "author": "Frank Herbert", "published_year": 1965}
    status, headers, body = call(port, "POST", "/api/v1/books", book, token=token)
    expect(status == 201 and headers.get("Location"), "create a book: 201, Location", CONTAINER)
    status, _, body = call(port, "GET", headers["Location"])
    expect(status == 200 and body["data"]["title"] == "Dune", "read it back: 200", CONTAINER)


def check_healthcheck_and_user() -> None:
    result = run("podman", "healthcheck", "run", CONTAINER, check=False)
    expect(result.returncode == 0, "podman healthcheck run: the image's HEALTHCHECK passes")
    status = run("podman", "exec", CONTAINER, "cat", "/proc/1/status", "/proc/1/cmdline").stdout
    uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
    expect("0" not in uids, f"the server (PID 1) runs as uid {uids[0]}, not root")
    expect("wsgi.py" in status, "PID 1 is the server itself (python wsgi.py), so it gets SIGTERM")


def json_lines(text: str) -> list[dict]:
    """The JSON log lines of a container's output (anything else is skipped)."""
    lines = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def check_stop(port: int, requests=12) -> float:
    """`podman stop` with registrations under way: each must still get its 201."""
    answers, sent = [], threading.Semaphore(0)

    def register(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            user = {"name": "Stop", "email": f"stop{i}@example.com", "password": PASSWORD}
            conn.request(
                "POST", "/api/v1/auth/register", json.dumps(user),
                {"Content-Type": "application/json"},
            )  # fmt: skip
            sent.release()
            answers.append(conn.getresponse().status)
        except OSError as exc:
            answers.append(repr(exc))
            sent.release()
        finally:
            conn.close()

    threads = [threading.Thread(target=register, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    for _ in threads:
        sent.acquire()
    time.sleep(0.2)  # for the last ones to arrive
    started = time.monotonic()
    run("podman", "stop", "--time", str(STOP_TIMEOUT), CONTAINER, timeout=60)
    seconds = time.monotonic() - started
    for thread in threads:
        thread.join()
    expect(answers == [201] * requests, f"{requests} requests under way at the stop: all 201")
    logs = run("podman", "logs", CONTAINER).stdout.partition('"SIGTERM: stopping"')[2]
    late = sum(line.get("path") == "/api/v1/auth/register" for line in json_lines(logs))
    expect(late > 0, f"{late} of them answered after SIGTERM, while the server was stopping")
    code = run("podman", "inspect", "--format", "{{.State.ExitCode}}", CONTAINER).stdout.strip()
    expect(code == "0", f"the server exited 0 on SIGTERM (exit code {code})")
    expect(seconds < STOP_TIMEOUT - 1, f"podman stop: {seconds:.1f} s, not its {STOP_TIMEOUT} s")
    return seconds


def check_code_change_keeps_dependencies() -> float:
    """Build again from a copy of the build context with one .py file changed."""
    tag = f"{IMAGE}-code-change"
    with tempfile.TemporaryDirectory(prefix="bookshelf-context-") as context:
        for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "wsgi.py"):
            shutil.copy2(ROOT / name, context)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "bookshelf", Path(context, "bookshelf"), ignore=ignore)
        with open(Path(context, "bookshelf", "__init__.py"), "a") as module:
            module.write("# a code change\n")
        seconds, output = build(Path(context), tag)
    run(*PODMAN, "rmi", tag)
    steps = re.split(r"^(?=(?:\[\d+/\d+\] )?STEP \d+)", output, flags=re.M)
    installs = [s for s in steps if "--requirement /tmp/runtime.txt" in s.partition("\n")[0]]
    cached = len(installs) == 1 and "Using cache" in installs[0]
    expect(cached, f"after a code change the dependencies' layer is cached ({seconds:.0f} s build)")
    return seconds


def main() -> None:
    if shutil.which("podman") is None or shutil.which("runc") is None:
        apt_install("podman", "runc")
    conf = Path(tempfile.mkdtemp(prefix="bookshelf-podman-")) / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    ensure_base_image()
    check_podman_can_run()

    database_url = fresh_database()
    build_seconds, _ = build(ROOT, IMAGE)
    size, base_size = image_size(IMAGE), image_size(BASE)
    say(f"built {IMAGE} in {build_seconds:.0f} s")
    port = free_port()
    try:
        ready_seconds = start(port, database_url)
        say(f"/health/ready answered 200 {ready_seconds:.2f} s after podman run")
        check_flow(port)
        check_healthcheck_and_user()
        stop_seconds = check_stop(port)
    finally:
        run("podman", "rm", "--force", "--ignore", CONTAINER, check=False)
    rebuild_seconds = check_code_change_keeps_dependencies()

    say(f"image: {size / 1e6:.0f} MB, of which {(size - base_size) / 1e6:.0f} MB above {BASE}")
    say(f"podman run to a ready /health/ready: {ready_seconds:.2f} s")
    say(f"podman stop with requests under way: {stop_seconds:.2f} s")
    say(f"build: {build_seconds:.0f} s; build after a code change: {rebuild_seconds:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except Skip as exc:
        say(f"SKIP: {exc}")
        say(f"{passed} passed, 0 failed, 1 skipped")
    except Failed as exc:
        say(f"FAILED: {exc}")
        say(f"{passed} passed, 1 failed")
        sys.exit(1)
    else:
        say(f"{passed} passed, 0 failed")
