"""`make container-test`: build the image with podman, run it on PostgreSQL, check it from outside.

Checks: /health and /health/ready answer, a register-login-create-read flow works, the image's
HEALTHCHECK passes, the server runs as a non-root user, `podman stop` ends it cleanly and early
while the requests under way still get their answers, and a rebuild after a code change takes the
dependency layer from the cache. Then deploy/kubernetes with `podman kube play`: the migration
Job's pod, two replicas of the Deployment serving on one database, `podman kube down`. Prints the
image size, the start-up time and the stop time.

Needs the PostgreSQL on 127.0.0.1:5432 with trust auth; its databases `bookshelf_container` and
`bookshelf_kube` are dropped and created again. Run as root where podman is missing, it installs
it from Debian's packages; where no registry answers, it builds a stand-in for the base image from
Debian's packages (bookworm ships Python 3.11). It skips, saying why, only where podman cannot
start a container at all. Standard library only; the manifests are read by an interpreter that has
PyYAML (this one, or the project's .venv: `make .venv/.installed-dev`).
"""

import base64
import copy
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
from typing import NamedTuple

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
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBE_DATABASE = "bookshelf_kube"
KUBE_NAME = f"bookshelf-kube-{os.getpid()}"  # pods, volumes and the secret of the kube play step
# The Host a kubelet's probe sends: the pod's address (192.0.2.0/24 is for documentation; it only
# appears in a header here, nothing is sent to it).
KUBELET_HOST = "192.0.2.10:8000"


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


def fresh_database(name: str = DATABASE) -> str:
    if run("pg_isready", *PG, "-q", check=False).returncode != 0:
        raise Failed("no PostgreSQL answers on 127.0.0.1:5432")
    run("dropdb", *PG, "-U", "postgres", "--if-exists", "--force", name)
    run("createdb", *PG, "-U", "postgres", name)
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


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


def call(port, method, path, body=None, token=None, timeout=30, host=None):
    """One request on its own connection: (status, headers, parsed JSON body or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if host:
            headers["Host"] = host
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
    expect(
        re.search(r"/bookshelf\0serve\0", status) is not None,
        "PID 1 is the server itself (bookshelf serve), so it gets SIGTERM",
    )


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
        shutil.copytree(ROOT / "requirements", Path(context, "requirements"))
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


# deploy/kubernetes through `podman kube play` (podman 4.3, Debian bookworm's). What the played
# copy changes, and why:
# - hostNetwork and no `ports`: the pods reach the PostgreSQL of 127.0.0.1 and the test reaches
#   them on 127.0.0.1 (podman 4.3 publishes every containerPort on the host, which it refuses
#   with host networking).
# - replicas: podman 4.3 honours them (pods NAME-pod-0, NAME-pod-1...), but on the host network
#   both replicas would listen on one port. So the Deployment is played twice, a replica each,
#   under two names and with two PORTs: one pod template, two pods.
# - the probes: podman 4.3 ignores readinessProbe, and makes an httpGet livenessProbe a `curl`
#   in the container (the image has none) on the port's number (0 for a named port). The test
#   calls both paths itself, with the pod's address as Host, as a kubelet does.
# - podman ignores lifecycle.preStop and terminationGracePeriodSeconds: the test stops a replica
#   as a kubelet does, running the hook and then `podman pod stop` with the rest of the grace
#   period. `kube down` itself stops pods with a timeout of 0 s: SIGKILL right after SIGTERM.
# - the Service, the PDB and the HPA mean nothing to podman (tests/test_kubernetes.py checks them).
# - the Job: podman 4.3 plays no Job. Its pod template is played as a Pod, as the Job controller
#   would create it, and must exit 0.
# - the Secret: podman 4.3's secretRef reads a podman secret that holds a JSON map of base64
#   values, but its own play of a Secret stores the whole object, which secretRef cannot read. So
#   the test creates that podman secret: secret.yaml's keys, values of its own.
# - emptyDir: podman 4.3 makes it a volume named as in the manifest, shared by every pod on the
#   machine that names one so: here each pod's has a name of its own.
# - the image, the names, and the ConfigMap's values for this machine: PUBLIC_URL, and memory://
#   for the rate limits (no Redis here).


def read_manifests() -> dict[str, dict]:
    """deploy/kubernetes's objects by kind, read by an interpreter that has PyYAML."""
    paths = sorted(str(path) for path in KUBERNETES.glob("*.yaml"))
    script = (
        "import json, sys, yaml; "
        "json.dump([d for p in sys.argv[1:] for d in yaml.safe_load_all(open(p)) if d], sys.stdout)"
    )
    for python in (sys.executable, str(ROOT / ".venv" / "bin" / "python")):
        if Path(python).exists() and run(python, "-c", "import yaml", check=False).returncode == 0:
            documents = json.loads(run(python, "-c", script, *paths).stdout)
            return {document["kind"]: document for document in documents}
    raise Failed("reading deploy/kubernetes needs PyYAML: make .venv/.installed-dev")


def playable(template: dict, name: str, port: int | None = None) -> dict:
    """A copy of a pod template that podman 4.3 plays here (see above)."""
    template = copy.deepcopy(template)
    spec = template["spec"]
    spec["hostNetwork"] = True
    for volume in spec.get("volumes", []):
        volume["name"] = f"{name}-{volume['name']}"
    for container in spec["containers"]:
        container["image"] = IMAGE
        for probe in ("ports", "livenessProbe", "readinessProbe", "startupProbe"):
            container.pop(probe, None)
        for mount in container.get("volumeMounts", []):
            mount["name"] = f"{name}-{mount['name']}"
        for source in container.get("envFrom", []):
            for reference in source.values():
                reference["name"] = KUBE_NAME
        if port is not None:
            env = {variable["name"]: variable for variable in container.get("env", [])}
            if "PORT" not in env:
                raise Failed("deployment.yaml sets no PORT: the test cannot give each replica one")
            env["PORT"]["value"] = str(port)
    return template


class KubePlay:
    """The pods, volumes and secret of one run: each file played, then all of it taken down."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="bookshelf-kube-"))
        self.files: list[Path] = []
        self.secret = False

    def create_secret(self, manifest: dict, values: dict[str, str]) -> None:
        keys = set(manifest.get("stringData", {})) | set(manifest.get("data", {}))
        if keys - set(values):
            raise Failed(f"secret.yaml has keys the test gives no value: {keys - set(values)}")
        path = self.folder / "secret.json"
        data = {key: base64.b64encode(values[key].encode()).decode() for key in sorted(keys)}
        path.write_text(json.dumps(data))
        run(*PODMAN, "secret", "create", KUBE_NAME, str(path))
        self.secret = True
        path.unlink()

    def play(self, name: str, *documents: dict) -> None:
        path = self.folder / f"{name}.yaml"
        path.write_text("---\n".join(json.dumps(document) + "\n" for document in documents))
        self.files.append(path)
        run(*PODMAN, "kube", "play", str(path), timeout=120)

    def down(self, path: Path) -> None:
        run(*PODMAN, "kube", "down", str(path), timeout=60)
        self.files.remove(path)

    def clean_up(self) -> None:
        for path in self.files:
            run(*PODMAN, "kube", "down", str(path), check=False, timeout=60)
        if self.secret:
            run(*PODMAN, "secret", "rm", KUBE_NAME, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


class Replica(NamedTuple):
    pod: str  # as podman names a Deployment's first pod: DEPLOYMENT-pod-0
    name: str  # of the API's container: POD-CONTAINER
    port: int
    manifest: dict  # the Deployment as played for this replica


def replica(deployment: dict, letter: str) -> Replica:
    name, port = f"{KUBE_NAME}-{letter}", free_port()
    manifest = copy.deepcopy(deployment)
    manifest["metadata"]["name"] = name
    manifest["spec"]["replicas"] = 1
    manifest["spec"]["template"] = playable(deployment["spec"]["template"], name, port)
    container = deployment["spec"]["template"]["spec"]["containers"][0]["name"]
    return Replica(f"{name}-pod-0", f"{name}-pod-0-{container}", port, manifest)


def job_pod(job: dict) -> tuple[dict, str]:
    """The Job's pod template as a Pod, and the name of the container podman makes of it."""
    name = f"{KUBE_NAME}-migrate"
    template = playable(job["spec"]["template"], name)
    metadata = template.get("metadata", {}) | {"name": name}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}
    return pod, f"{name}-{template['spec']['containers'][0]['name']}"


def inspect(container: str, template: str) -> str:
    return run("podman", "inspect", "--format", template, container).stdout.strip()


def answers(port: int, path: str, host: str | None = None) -> int | None:
    try:
        return call(port, "GET", path, timeout=2, host=host)[0]
    except OSError:
        return None


def wait_until(what: str, done, seconds: float, container: str) -> None:
    """Until done() is true; fails after `seconds`, or as soon as the container is not running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return
        state = inspect(container, "{{.State.Status}}")
        if state not in {"created", "configured", "initialized", "running"}:
            expect(False, f"{what}: the container stays up (it is {state})", container)
        time.sleep(0.1)
    expect(False, f"{what} within {seconds:.0f} s", container)


def exit_code(container: str, seconds: float) -> str:
    """The container's exit code once it has exited; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state, code = inspect(container, "{{.State.Status}} {{.State.ExitCode}}").split()
        if state == "exited":
            return code
        time.sleep(0.2)
    expect(False, f"{container} exits within {seconds:.0f} s", container)


def check_kubernetes() -> tuple[float, float]:
    """deploy/kubernetes through podman kube play: seconds from the Job's start to two ready
    replicas, and seconds that a replica's stop took after its preStop hook."""
    manifests = read_manifests()
    api = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    live, ready = api["livenessProbe"]["httpGet"]["path"], api["readinessProbe"]["httpGet"]["path"]
    configmap = copy.deepcopy(manifests["ConfigMap"])
    configmap["metadata"]["name"] = KUBE_NAME
    configmap["data"] |= {"PUBLIC_URL": "http://127.0.0.1", "RATELIMIT_STORAGE_URI": "memory://"}
    a, b = replica(manifests["Deployment"], "a"), replica(manifests["Deployment"], "b")
    kube = KubePlay()
    try:
        database_url = fresh_database(KUBE_DATABASE)
        secret = {"SECRET_KEY": secrets.token_urlsafe(48), "DATABASE_URL": database_url}
        kube.create_secret(manifests["Secret"], secret)

        # Before the Job, on a database with no tables: alive, not ready.
        kube.play("replica-a", configmap, a.manifest)
        wait_until(
            f"replica a: {live} answers 200", lambda: answers(a.port, live) == 200, 60, a.name
        )
        status, _, body = call(a.port, "GET", ready)
        expect(
            status == 503 and "migration" in body["error"]["message"],
            f"before the Job: replica a is alive, but {ready} is {status} (the Deployment's "
            "command migrates nothing)",
            a.name,
        )

        started = time.monotonic()
        pod, container = job_pod(manifests["Job"])
        kube.play("migrate-job", configmap, pod)
        command = " ".join(pod["spec"]["containers"][0]["command"])
        code = exit_code(container, 120)
        expect(code == "0", f"the Job's pod ({command}) exits {code}", container)
        wait_until(f"replica a: {ready} 200", lambda: answers(a.port, ready) == 200, 30, a.name)
        kube.play("replica-b", configmap, b.manifest)
        wait_until(f"replica b: {ready} 200", lambda: answers(b.port, ready) == 200, 60, b.name)
        ready_seconds = time.monotonic() - started
        expect(True, f"2 replicas ready {ready_seconds:.1f} s after the Job's pod started")

        limit = api["resources"]["limits"]["memory"]
        for letter, each in (("a", a), ("b", b)):
            check_replica(letter, each, (live, ready), limit)
        check_shared_state(a, b)
        check_memory(a, limit)
        stop_seconds = check_pod_stop(a, b, manifests["Deployment"]["spec"]["template"]["spec"])

        for path in list(kube.files):
            kube.down(path)
        pods = (a.pod, b.pod, pod["metadata"]["name"])
        left = [
            name
            for name in pods
            if run(*PODMAN, "pod", "exists", name, check=False).returncode == 0
        ]
        expect(not left, f"podman kube down: the 3 pods are gone {left}")
        return ready_seconds, stop_seconds
    finally:
        kube.clean_up()


def check_replica(letter: str, replica: Replica, probes: tuple[str, str], limit: str) -> None:
    """The probes answer a kubelet, and the pod runs as the manifest says."""
    for path in probes:
        status = answers(replica.port, path, host=KUBELET_HOST)
        expect(status == 200, f"replica {letter}: {path} {status}, Host the pod's address")
    status = call(replica.port, "GET", "/api/v1/books", host=KUBELET_HOST)[0]
    expect(status == 400, f"replica {letter}: the API with that Host: {status}", replica.name)
    status = run("podman", "exec", replica.name, "cat", "/proc/1/status").stdout
    uids = set(re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split())
    read_only = inspect(replica.name, "{{.HostConfig.ReadonlyRootfs}}")
    memory = int(inspect(replica.name, "{{.HostConfig.Memory}}"))
    expect(
        uids == {"10001"} and read_only == "true" and memory == mebibytes(limit) * 2**20,
        f"replica {letter}: uid {uids}, read-only root {read_only}, memory limit {limit}",
        replica.name,
    )


def check_shared_state(a: Replica, b: Replica) -> None:
    user = {"name": "Kube", "email": "kube@example.com", "password": PASSWORD}
    registered = call(a.port, "POST", "/api/v1/auth/register", user)[0]
    login = {"email": user["email"], "password": PASSWORD}
    status, _, body = call(b.port, "POST", "/api/v1/auth/login", login)
    expect(registered == 201 and status == 200, "registered on replica a, logged in on replica b")
    book = {"title": "Kube", "author": "Pod", "published_year": 2014}
    token = body["data"]["access_token"]
    status, headers, _ = call(b.port, "POST", "/api/v1/books", book, token=token)
    read, _, body = call(a.port, "GET", headers.get("Location", "/"))
    expect(
        status == 201 and read == 200 and body["data"]["title"] == "Kube",
        "a book created on replica b reads back on replica a",
    )


def check_memory(replica: Replica, limit: str, registrations: int = 24) -> None:
    """Registrations at once (each hashes a password with the production argon2 parameters,
    19 MiB apiece) within the memory limit."""
    statuses = []

    def register(i):
        user = {"name": "Kube", "email": f"kube{i}@example.com", "password": PASSWORD}
        try:
            statuses.append(call(replica.port, "POST", "/api/v1/auth/register", user)[0])
        except OSError as exc:
            statuses.append(repr(exc))

    threads = [threading.Thread(target=register, args=(i,)) for i in range(registrations)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    status = run("podman", "exec", replica.name, "cat", "/proc/1/status").stdout
    peak = int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024
    restarts = inspect(replica.name, "{{.RestartCount}}")
    expect(
        statuses == [201] * registrations and peak < mebibytes(limit) and restarts == "0",
        f"{registrations} registrations at once on replica a: all 201, the server's peak "
        f"{peak:.0f} MiB of its {limit} limit, no restart",
        replica.name,
    )


def check_pod_stop(a: Replica, b: Replica, spec: dict) -> float:
    """Replica a stopped as a kubelet stops it: the preStop hook, then SIGTERM with what is left
    of terminationGracePeriodSeconds before SIGKILL. Replica b serves on."""
    hook = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    grace = spec["terminationGracePeriodSeconds"]
    started = time.monotonic()
    hooked = run("podman", "exec", a.name, *hook, check=False, timeout=grace)
    hook_seconds = time.monotonic() - started
    expect(
        hooked.returncode == 0, f"replica a: preStop `{' '.join(hook)}` ran, {hook_seconds:.1f} s"
    )
    left = max(1, int(grace - hook_seconds))
    started = time.monotonic()
    run(*PODMAN, "pod", "stop", "--time", str(left), a.pod, timeout=grace + 30)
    seconds = time.monotonic() - started
    code = inspect(a.name, "{{.State.ExitCode}}")
    expect(
        code == "0" and seconds < left,
        f"replica a: SIGTERM to exit 0 in {seconds:.1f} s, within the {left} s before SIGKILL",
        a.name,
    )
    expect(answers(b.port, "/health/ready") == 200, "replica b is still ready", b.name)
    return seconds


def mebibytes(quantity: str) -> int:
    """A Kubernetes memory quantity (`192Mi`, `1Gi`) in MiB."""
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


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
    kube_ready_seconds, kube_stop_seconds = check_kubernetes()
    rebuild_seconds = check_code_change_keeps_dependencies()

    say(f"image: {size / 1e6:.0f} MB, of which {(size - base_size) / 1e6:.0f} MB above {BASE}")
    say(f"podman run to a ready /health/ready: {ready_seconds:.2f} s")
    say(f"podman stop with requests under way: {stop_seconds:.2f} s")
    say(f"build: {build_seconds:.0f} s; build after a code change: {rebuild_seconds:.0f} s")
    say(f"podman kube play: 2 replicas ready {kube_ready_seconds:.1f} s after the Job's start")
    say(f"a replica's stop after its preStop hook: {kube_stop_seconds:.1f} s")


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
