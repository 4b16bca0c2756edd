"""`make compose-test`: docker-compose.yml brought up with podman-compose and checked from outside.

Checks: the services start in the order and under the conditions of depends_on (each only once
what it depends on is healthy, or has completed successfully); the migrations are applied once,
by the `migrate` job, and the replicas find them applied; two `api` replicas, both named `api` on
the network and both answering through nginx; a replica whose main process is killed (SIGKILL,
as a crash or the OOM killer would) is avoided by nginx while requests keep succeeding, and its
restart policy brings it back; the data survive `down` and `up`; a third replica (`up --scale
api=3`) gets requests once deploy/nginx-follow-replicas.sh, which runs nginx, has reloaded it.
Ends with `down --volumes --remove-orphans`. Prints how long each part took.

What stands in here for a Docker host (podman 4.3 from Debian, no systemd, no registry):
- podman-compose, a pinned release from PyPI in a virtual environment of its own (Debian's 1.0.3
  ignores deploy.replicas and the conditions of depends_on).
- The start order. podman 4.3 cannot wait for a container to become healthy (`podman wait
  --condition=healthy` came with podman 4.6: podman-compose skips such conditions, saying so),
  and the `--requires` links podman-compose puts between the containers make podman 4.3 refuse
  to start `api` ("not found in input list", fixed in podman 5.6). So this test starts the
  services wave by wave with `podman-compose up --no-deps`, in the order and under the
  conditions that the file's depends_on gives.
- Health checks. podman runs them from systemd timers, and there is no systemd here: while it
  waits for a service to become healthy, this test runs `podman healthcheck run` itself, once a
  second rather than at the configured interval.
- Images. Where no registry answers, the images the file names are stand-ins built from Debian's
  packages (deploy/standins/, on the Python stand-in of deploy/container_test.py), kept between
  runs and built again when their recipe changes.

Run as root where podman is missing, it installs it (with netavark and aardvark-dns, which give
the containers each other's names) from Debian's packages. It skips, saying why, only where podman
cannot start a container at all. Standard library only; podman-compose's environment brings
PyYAML, which reads the compose file.
"""

import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import container_test as ct  # noqa: E402  (podman helpers and the Python base image)

ROOT = ct.ROOT
COMPOSE_FILE = ROOT / "docker-compose.yml"
STANDINS = ROOT / "deploy" / "standins"
# 1.6.0: deploy.replicas (with `mode: replicated`, see docker-compose.yml), CMD health checks run
# as given (1.5.0), depends_on conditions (1.3.0), and `up` re-creates only what changed.
PODMAN_COMPOSE = ["podman-compose==1.6.0", "PyYAML==6.0.4", "python-dotenv==1.2.4"]
VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bookshelf-podman-compose"
PROJECT = f"bookshelf-compose-test-{os.getpid()}"
RECIPE_LABEL = "org.bookshelf.standin-recipe"
# container_test's settings, plus runc and netavark for every podman that podman-compose starts
# (and for the `podman container cleanup` that conmon runs when a container exits, which applies
# the restart policy).
CONTAINERS_CONF = ct.CONTAINERS_CONF + (
    '[engine]\nruntime = "runc"\n[network]\nnetwork_backend = "netavark"\n'
)
HEALTHY_WITHIN = 120  # seconds for a service to become healthy (the api's start period is 30 s)
COMPLETED_WITHIN = 180  # seconds for the migrations
RESTARTED_WITHIN = 60  # seconds for a killed replica to be running and healthy again
PASSWORD = secrets.token_urlsafe(24)

passed = 0
timings: dict[str, float] = {}


def say(message: str) -> None:
    sys.stdout.write(f"compose-test: {message}\n")
    sys.stdout.flush()


def expect(condition, what: str, *containers: str) -> None:
    global passed
    if not condition:
        for name in containers:
            logs = podman("logs", "--tail", "30", name, check=False)
            what += f"\n--- the last log lines of {name}:\n{logs.stdout}{logs.stderr}"
        raise ct.Failed(what)
    passed += 1
    say(f"ok: {what}")


def podman(*args, check=True, timeout=120) -> subprocess.CompletedProcess:
    return ct.run("podman", *args, check=check, timeout=timeout)


def inspect(name: str, template: str) -> str:
    return podman("inspect", "--format", template, name).stdout.strip()


# Tools: podman and the network stack, podman-compose.


def ensure_podman() -> None:
    wanted = {
        "podman": shutil.which("podman"),
        "runc": shutil.which("runc"),
        "netavark": Path("/usr/lib/podman/netavark").exists(),
        "aardvark-dns": Path("/usr/lib/podman/aardvark-dns").exists(),
    }
    missing = [package for package, present in wanted.items() if not present]
    if missing:
        ct.apt_install(*missing)
    conf = VENV.parent / "bookshelf-compose-test-containers.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)


def ensure_podman_compose() -> Path:
    """podman-compose at its pinned version, in a virtual environment kept between runs."""
    executable, stamp = VENV / "bin" / "podman-compose", VENV / "requirements.txt"
    wanted = "\n".join(PODMAN_COMPOSE) + "\n"
    if not (executable.exists() and stamp.exists() and stamp.read_text() == wanted):
        say(f"installing {', '.join(PODMAN_COMPOSE)} into {VENV}")
        ct.run(sys.executable, "-m", "venv", "--clear", str(VENV))
        ct.run(str(VENV / "bin" / "pip"), "install", "--quiet", *PODMAN_COMPOSE, timeout=600)
        stamp.write_text(wanted)
    version = ct.run(str(executable), "--version").stdout.strip().replace("\n", "; ")
    say(version)
    return executable


def read_compose_file() -> dict:
    script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"
    return json.loads(ct.run(str(VENV / "bin" / "python"), "-c", script, str(COMPOSE_FILE)).stdout)


# Images: the real ones where a registry answers, else stand-ins from Debian's packages.


def recipe_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_image(image: str) -> str:
    """The image present under its name: how it got there."""
    reference = f"docker.io/library/{image}"
    recipe = STANDINS / image.partition(":")[0]  # for postgres:16, deploy/standins/postgres
    digest = recipe.is_dir() and recipe_digest(recipe)
    if podman("image", "exists", reference, check=False).returncode == 0:
        label = inspect(reference, f'{{{{index .Config.Labels "{RECIPE_LABEL}"}}}}')
        if label in ("", "<no value>"):
            return "present"
        if label == digest:
            return "stand-in, cached"
    elif podman("pull", "--quiet", reference, check=False, timeout=600).returncode == 0:
        return "pulled"
    if not digest:
        raise ct.Failed(f"{image} cannot be pulled and has no stand-in in {STANDINS}")
    ct.ensure_base_image()
    started = time.monotonic()
    podman(
        "build", "--pull=never", "--format", "docker", "--label", f"{RECIPE_LABEL}={digest}",
        "--tag", reference, str(recipe),
        timeout=1800,
    )  # fmt: skip
    return f"stand-in from Debian's packages, built in {time.monotonic() - started:.0f} s"


# The stack: podman-compose, and the start order of depends_on.


class Stack:
    def __init__(self, executable: Path, services: dict, port: int):
        self.executable, self.services, self.port = executable, services, port
        # Every variable the file reads, so that a developer's .env changes nothing here.
        self.env = os.environ | {
            "SECRET_KEY": secrets.token_urlsafe(48),
            "POSTGRES_PASSWORD": secrets.token_hex(24),
            "PORT": f"127.0.0.1:{port}",  # published on the loopback address only
            "PUBLIC_URL": "",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "INFO",
            "CORS_ORIGINS": "",
        }
        self.met: dict[tuple[str, str], float] = {}  # (service, condition): when it was met

    def compose(self, *args: str, timeout=300, check=True) -> subprocess.CompletedProcess:
        return ct.run(
            str(self.executable), "--file", str(COMPOSE_FILE), "--project-name", PROJECT, *args,
            env=self.env, timeout=timeout, check=check,
        )  # fmt: skip

    def containers(self, service: str | None = None) -> list[str]:
        filters = ["--filter", f"label=com.docker.compose.project={PROJECT}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        names = podman("ps", "--all", *filters, "--format", "{{.Names}}").stdout.split()
        return sorted(names)

    def depends_on(self, service: str) -> dict[str, str]:
        deps = self.services[service].get("depends_on", {})
        if isinstance(deps, list):
            return dict.fromkeys(deps, "service_started")
        return {name: dep.get("condition", "service_started") for name, dep in deps.items()}

    def waves(self) -> list[list[str]]:
        """The services in groups: each group depends only on the groups before it."""
        waves, placed = [], set()
        while len(placed) < len(self.services):
            wave = sorted(
                name for name in self.services
                if name not in placed and set(self.depends_on(name)) <= placed
            )  # fmt: skip
            if not wave:
                raise ct.Failed(f"depends_on has a cycle among {set(self.services) - placed}")
            waves.append(wave)
            placed.update(wave)
        return waves

    def up(self) -> float:
        """`up` as depends_on orders it: a wave starts once its conditions are met."""
        started = time.monotonic()
        self.met.clear()
        for wave in self.waves():
            for service in wave:
                for dep, condition in self.depends_on(service).items():
                    if (dep, condition) not in self.met:
                        seconds = self.wait(dep, condition)
                        self.met[dep, condition] = time.time()
                        say(f"{dep}: {condition} ({seconds:.1f} s)")
            self.compose("up", "--detach", "--no-deps", *wave)
            say(f"up: {', '.join(wave)}")
        return time.monotonic() - started

    def wait(self, service: str, condition: str) -> float:
        waits = {
            "service_healthy": self.wait_healthy,
            "service_completed_successfully": self.wait_completed,
            "service_started": self.wait_running,
        }
        started = time.monotonic()
        waits[condition](self.containers(service))
        return time.monotonic() - started

    def wait_healthy(self, names: list[str], within=HEALTHY_WITHIN) -> None:
        """Runs each container's health check (as systemd's timer would) until it passes."""
        if not names:
            expect(False, "the service has containers to check")
        deadline, waiting = time.monotonic() + within, set(names)
        while waiting and time.monotonic() < deadline:
            for name in sorted(waiting):
                if podman("healthcheck", "run", name, check=False).returncode == 0:
                    waiting.discard(name)
                elif inspect(name, "{{.State.Status}}") != "running":
                    expect(False, f"{name} stays running while it starts", name)
            if waiting:
                time.sleep(1)
        expect(not waiting, f"{', '.join(names)}: healthy within {within} s", *waiting)

    def wait_completed(self, names: list[str], within=COMPLETED_WITHIN) -> None:
        deadline = time.monotonic() + within
        for name in names:
            while inspect(name, "{{.State.Status}}") not in ("exited", "stopped"):
                if time.monotonic() > deadline:
                    expect(False, f"{name}: completed within {within} s", name)
                time.sleep(0.5)
            code = inspect(name, "{{.State.ExitCode}}")
            expect(code == "0", f"{name}: completed successfully (exit code {code})", name)

    def wait_running(self, names: list[str], within=HEALTHY_WITHIN) -> None:
        deadline = time.monotonic() + within
        for name in names:
            while inspect(name, "{{.State.Status}}") != "running":
                if time.monotonic() > deadline:
                    expect(False, f"{name}: running within {within} s", name)
                time.sleep(0.5)


# Requests through nginx.


def request(port, method, path, body=None, token=None, request_id=None, timeout=15):
    """One request on its own connection: (status, parsed JSON body or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"X-Request-ID": request_id} if request_id else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        is_json = response.getheader("Content-Type", "").startswith("application/json")
        return response.status, json.loads(data) if data and is_json else None
    finally:
        conn.close()


def wait_answering(stack: Stack, within=30) -> None:
    deadline, answer = time.monotonic() + within, None
    while time.monotonic() < deadline:
        try:
            answer = request(stack.port, "GET", "/health/ready", timeout=3)
            if answer[0] == 200:
                return
        except OSError as exc:
            answer = repr(exc)
        time.sleep(0.3)
    what = f"nginx answers /health/ready on port {stack.port} within {within} s (last: {answer})"
    expect(False, what, *stack.containers("proxy"), *stack.containers("api"))


def request_ids(container: str) -> set[str]:
    """The request ids in a container's JSON log lines."""
    logs = podman("logs", container).stdout
    return {line.get("request_id") for line in ct.json_lines(logs)} - {None}


# The checks.


def check_start_order(stack: Stack) -> None:
    """podman's own start times against the moments the conditions were seen met."""
    for service in stack.services:
        for dep, condition in stack.depends_on(service).items():
            for name in stack.containers(service):
                started = int(inspect(name, "{{.State.StartedAt.UnixNano}}")) / 1e9
                if condition == "service_completed_successfully":
                    ready = max(
                        int(inspect(d, "{{.State.FinishedAt.UnixNano}}")) / 1e9
                        for d in stack.containers(dep)
                    )  # fmt: skip
                else:
                    ready = stack.met[dep, condition]
                expect(started >= ready, f"{name} started after {dep}: {condition}")


def check_migrations_once(stack: Stack, first_start: bool) -> None:
    jobs = stack.containers("migrate")
    expect(len(jobs) == 1, f"one migrate job ({jobs})")
    applied = podman("logs", jobs[0]).stdout.count("Running upgrade")
    if first_start:
        expect(applied > 0, f"migrate applied the migrations ({applied} revisions)", jobs[0])
    else:
        expect(applied == 0, "migrate found the schema at head: nothing to apply", jobs[0])
    for name in stack.containers("api"):
        logs = podman("logs", name).stdout
        expect("Running upgrade" not in logs, f"{name} applied no migration itself", name)


def check_replicas(stack: Stack) -> list[str]:
    replicas = stack.containers("api")
    expect(len(replicas) == 2, f"two api replicas: {', '.join(replicas)}")
    addresses = {address(name).removesuffix(":8000") for name in replicas}
    (proxy,) = stack.containers("proxy")
    resolved = podman("exec", proxy, "getent", "ahostsv4", "api").stdout.splitlines()
    named = {line.split()[0] for line in resolved if line.strip()}
    expect(named == addresses, f"the name api gives nginx both replicas: {sorted(named)}")
    sent = [f"compose-test-{uuid.uuid4().hex}" for _ in range(20)]
    statuses = [request(stack.port, "GET", "/health/ready", request_id=rid)[0] for rid in sent]
    expect(statuses == [200] * len(sent), f"{len(sent)} requests through nginx: all 200")
    served = {name: request_ids(name) & set(sent) for name in replicas}
    counts = ", ".join(f"{name} {len(ids)}" for name, ids in served.items())
    expect(all(served.values()), f"both replicas answered through nginx ({counts})")
    expect(set().union(*served.values()) == set(sent), "each request reached a replica's log")
    return replicas


def check_flow(stack: Stack) -> tuple[dict, str]:
    """Register, log in, create a book: (the user, the book's path)."""
    port = stack.port
    user = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    status, body = request(port, "POST", "/api/v1/auth/register", user)
    what = f"register through nginx: {status}" + ("" if status == 201 else f" {body}")
    expect(status == 201, what, *stack.containers("api"))
    token = login(port, user)
    book = {"title": "Dune", "author": "Frank Herbert", "published_year": 1965}
    status, body = request(port, "POST", "/api/v1/books", book, token=token)
    expect(status == 201, f"create a book: {status}")
    path = f"/api/v1/books/{body['data']['id']}"
    status, body = request(port, "GET", path)
    expect(status == 200 and body["data"]["title"] == "Dune", f"read it back: {status}")
    return user, path


def login(port: int, user: dict) -> str:
    credentials = {"email": user["email"], "password": user["password"]}
    status, body = request(port, "POST", "/api/v1/auth/login", credentials)
    expect(status == 200, f"log in as {user['email']}: {status}")
    return body["data"]["access_token"]


class Traffic:
    """Clients sending GETs through nginx until stopped, each request recorded."""

    def __init__(self, port: int, paths: list[str], clients=4, pause=0.1, limit=90):
        self.port, self.paths, self.pause, self.limit = port, paths, pause, limit
        self.results: list[tuple[float, float, object, str]] = []  # start, seconds, status, id
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.client, args=(i,)) for i in range(clients)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def client(self, number: int) -> None:
        deadline, sent = time.monotonic() + self.limit, 0
        while not self.stopping.is_set() and time.monotonic() < deadline:
            path = self.paths[(number + sent) % len(self.paths)]
            rid, started = f"compose-test-{uuid.uuid4().hex}", time.time()
            try:
                status = request(self.port, "GET", path, request_id=rid)[0]
            except OSError as exc:
                status = repr(exc)
            self.results.append((started, time.time() - started, status, rid))
            sent += 1
            self.stopping.wait(self.pause)


def check_crash_and_restart(stack: Stack, replicas: list[str], book_path: str) -> None:
    """SIGKILL to a replica's main process, from outside podman, with requests under way."""
    victim = replicas[0]
    pid, restarts = inspect(victim, "{{.State.Pid}}"), inspect(victim, "{{.RestartCount}}")
    # Mostly /health/ready (it reads the database and is exempt from the global rate limit, which
    # this many requests from one address would reach), and the book now and then.
    paths = ["/health/ready"] * 4 + [book_path]
    with Traffic(stack.port, paths) as traffic:
        time.sleep(1)
        killed = time.time()
        # Not `podman kill`: podman records that as a stop by the user, after which no restart
        # policy restarts the container. A crash is the process dying on its own.
        os.kill(int(pid), signal.SIGKILL)
        wait_restarted(victim, int(restarts), killed)
        stack.wait_healthy([victim], within=RESTARTED_WITHIN)
        healthy = time.time()
        back, deadline = False, healthy + 30
        while not back and time.time() < deadline:
            time.sleep(1)
            after = {rid for started, _, _, rid in list(traffic.results) if started > healthy}
            back = bool(request_ids(victim) & after)
    expect(back, f"{victim} answers requests through nginx again after its restart")
    outage = [r for r in traffic.results if killed <= r[0] <= healthy]
    failed = [r for r in traffic.results if r[2] != 200]
    slowest = max(seconds for _, seconds, _, _ in traffic.results)
    expect(
        not failed,
        f"{len(traffic.results)} GETs through nginx, {len(outage)} of them while {victim} was "
        f"down or starting: all 200 (slowest {slowest:.2f} s)"
        + (f"; failed: {failed[:5]}" if failed else ""),
    )  # fmt: skip
    check_passed_on(stack, victim, {rid for _, _, _, rid in outage})
    timings["kill to healthy again"] = healthy - killed


def wait_restarted(victim: str, restarts: int, killed: float) -> None:
    """Until the restart policy has started the container again (it dies first)."""
    deadline = time.monotonic() + RESTARTED_WITHIN
    state = f"{restarts} running"
    while state == f"{restarts} running" or not state.endswith(" running"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
        state = inspect(victim, "{{.RestartCount}} {{.State.Status}}")
    expect(
        state == f"{restarts + 1} running",
        f"{victim} restarted by its restart policy {time.time() - killed:.1f} s after the kill "
        f"(restart count and state: {state})",
        victim,
    )  # fmt: skip


def check_passed_on(stack: Stack, victim: str, outage: set[str]) -> None:
    """nginx's access log: requests that met the killed replica were passed on to the other."""
    (proxy,) = stack.containers("proxy")
    down = address(victim)
    lines = [
        e for e in ct.json_lines(podman("logs", proxy).stdout) if e.get("request_id") in outage
    ]
    tried = [[a.strip() for a in e.get("upstream", "").split(",")] for e in lines]
    passed_on = [addresses for addresses in tried if down in addresses[:-1]]
    elsewhere = [addresses for addresses in tried if down not in addresses]
    expect(
        passed_on,
        f"nginx found {victim} down ({down}) and passed {len(passed_on)} requests on; "
        f"{len(elsewhere)} went straight to the other replica",
        proxy,
    )  # fmt: skip


def address(container: str) -> str:
    """The container's address and port 8000, as nginx's log writes the upstream."""
    ip = inspect(container, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
    return f"{ip}:8000"


def check_a_new_replica_gets_requests(stack: Stack) -> None:
    """`up --scale api=3`: nginx, under deploy/nginx-follow-replicas.sh, takes the third in."""
    (proxy,) = stack.containers("proxy")
    main = podman("exec", proxy, "cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    expect("nginx-follow-replicas.sh" in main, f"nginx runs under the follow script ({main})")
    stack.compose("up", "--detach", "--no-deps", "--scale", "api=3", "api")
    replicas = stack.containers("api")
    expect(len(replicas) == 3, f"up --scale api=3: {', '.join(replicas)}")
    stack.wait_healthy(replicas[2:])
    added, sent, deadline = replicas[2], set(), time.monotonic() + 30
    while time.monotonic() < deadline and not request_ids(added) & sent:
        for _ in range(6):
            rid = f"compose-test-{uuid.uuid4().hex}"
            sent.add(rid)
            request(stack.port, "GET", "/health/ready", request_id=rid)
        time.sleep(1)
    expect(request_ids(added) & sent, f"{added} gets requests through nginx")
    logs = podman("logs", proxy)
    reloaded = "reloading nginx" in logs.stdout + logs.stderr
    expect(reloaded, "the follow script saw the new address and reloaded nginx", proxy)


def check_data_survives(stack: Stack, user: dict, book_path: str) -> None:
    stack.compose("down")
    expect(stack.containers() == [], "podman-compose down: no container of the project left")
    volume = f"{PROJECT}_db-data"
    kept = podman("volume", "exists", volume, check=False).returncode == 0
    expect(kept, f"the named volume {volume} is kept")
    timings["up again"] = stack.up()
    wait_answering(stack)
    check_migrations_once(stack, first_start=False)
    login(stack.port, user)
    status, body = request(stack.port, "GET", book_path)
    title = body and body["data"]["title"]
    expect(status == 200 and title == "Dune", f"after down and up: the book is there ({status})")


def tear_down(stack: Stack) -> None:
    # --remove-orphans: podman-compose's down takes only the containers the file lists, and so
    # would leave the third replica of `up --scale api=3`.
    result = stack.compose("down", "--volumes", "--remove-orphans", check=False, timeout=180)
    left = stack.containers()
    volumes = podman(
        "volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"
    )
    if result.returncode != 0 or left or volumes.stdout.strip():
        say(f"cleanup incomplete: containers {left}, volumes {volumes.stdout.split()}")
        say((result.stdout + result.stderr)[-2000:])
    else:
        say(f"down --volumes: project {PROJECT} removed")


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still cleans up
    ensure_podman()
    executable = ensure_podman_compose()
    services = read_compose_file()["services"]
    ct.ensure_base_image()
    ct.check_podman_can_run()
    for image in sorted({s["image"] for s in services.values() if "build" not in s}):
        say(f"{image}: {ensure_image(image)}")

    stack = Stack(executable, services, ct.free_port())
    started = time.monotonic()
    # The image's HEALTHCHECK survives only in the docker format (podman's default is OCI).
    stack.compose("--podman-build-args=--format docker --pull=never", "build", "api", timeout=1800)
    timings["build"] = time.monotonic() - started
    try:
        timings["up in order"] = stack.up()
        wait_answering(stack)
        check_start_order(stack)
        check_migrations_once(stack, first_start=True)
        replicas = check_replicas(stack)
        user, book_path = check_flow(stack)
        check_crash_and_restart(stack, replicas, book_path)
        check_data_survives(stack, user, book_path)
        check_a_new_replica_gets_requests(stack)
    finally:
        tear_down(stack)
    for what, seconds in timings.items():
        say(f"{what}: {seconds:.1f} s")


if __name__ == "__main__":
    began = time.monotonic()
    try:
        main()
    except ct.Skip as exc:
        say(f"SKIP: {exc}")
        say(f"{passed} passed, 0 failed, 1 skipped")
    except ct.Failed as exc:
        say(f"FAILED: {exc}")
        say(f"{passed} passed, 1 failed")
        sys.exit(1)
    else:
        say(f"the whole test: {time.monotonic() - began:.0f} s")
        say(f"{passed} passed, 0 failed")
