"""The shipped nginx in front of several real replicas (`python wsgi.py`): connections to them
kept open, a quick rolling restart that shuts no replica out, replicas followed to new addresses,
and a rolling restart of three replicas under a mixed read/write load that fails no request."""

import http.client
import json
import random
import threading
import time

import pytest

from tests.conftest import POSTGRES_URL
from tests.nginx import nginx_binary
from tests.processes import TcpProxy, call, free_port
from tests.support import PASSWORD

pytestmark = pytest.mark.skipif(
    nginx_binary() is None, reason="nginx is not installed (apt-get install nginx)"
)

# The load the rolling restart must carry without a single failure (issue: "0 of >= 30,000").
ROLLING_RESTART_REQUESTS = 30_000
# The load comes from one address.
NO_LIMIT = {"RATELIMIT_DEFAULT": "1000000 per minute"}


class Load:
    """Clients sending a mixed load through nginx, each on a kept-alive connection of its own:
    70% one book, 20% a page of the list, 10% a new book. Every answer but the expected one, and
    every connection error, is a failure."""

    def __init__(self, port: int, token: str, book_ids: list[int], clients=6):
        self.port, self.book_ids = port, book_ids
        self.headers = {"Authorization": f"Bearer {token}", "Host": "127.0.0.1"}
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def wait_for(self, requests: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.done < requests and time.monotonic() < deadline:
            time.sleep(0.1)

    def _run(self, client: int) -> None:
        rng = random.Random(client)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        n = 0
        while not self.stop.is_set():
            n += 1
            draw = rng.random()
            if draw < 0.1:
                book = {"title": f"c{client}-{n}", "author": "Load"}
                request = ("POST", "/api/v1/books", json.dumps(book), 201)
            elif draw < 0.3:
                request = ("GET", "/api/v1/books?per_page=5", None, 200)
            else:
                request = ("GET", f"/api/v1/books/{rng.choice(self.book_ids)}", None, 200)
            method, path, body, expected = request
            headers = self.headers | ({"Content-Type": "application/json"} if body else {})
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                outcome = None if response.status == expected else f"{response.status} {data!r}"
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                outcome = repr(exc)
            with self.lock:
                self.done += 1
                if outcome is not None:
                    self.failures.append(f"{method} {path}: {outcome}"[:300])
        conn.close()


def seed(port: int, books=20) -> tuple[str, list[int]]:
    """A user's access token and the ids of `books` books, made through `port`."""
    account = {"name": "Load", "email": "load@example.com", "password": PASSWORD}
    assert call(port, "POST", "/api/v1/auth/register", account)[0] == 201
    login = {"email": account["email"], "password": PASSWORD}
    token = call(port, "POST", "/api/v1/auth/login", login)[2]["data"]["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    ids = [
        call(port, "POST", "/api/v1/books", {"title": f"Seed {i}", "author": "A"}, headers)[2][
            "data"
        ]["id"]
        for i in range(books)
    ]
    return token, ids


def test_nginx_keeps_its_connections_to_a_replica_open(start_api, start_nginx):
    replica = start_api(**NO_LIMIT)
    counter = TcpProxy(("127.0.0.1", replica.port)).start()  # counts what nginx opens
    try:
        nginx = start_nginx(counter.port)
        statuses = [call(nginx.port, "GET", "/health")[0] for _ in range(200)]
        assert statuses == [200] * 200
        # At most a connection or two per nginx worker, not one per request.
        assert counter.accepted <= 8, f"{counter.accepted} connections for 200 requests"
    finally:
        counter.stop()


def test_a_stopping_replica_tells_nginx_to_close_and_loses_nothing(start_api, start_nginx):
    """SIGTERM while nginx holds kept-alive connections to the replica: answers under way and
    after say `Connection: close`, idle connections are left for nginx to close (before the
    replica would), and the process still exits 0 within its grace period."""
    replica = start_api(**NO_LIMIT)
    nginx = start_nginx(replica.port)
    for _ in range(20):
        assert call(nginx.port, "GET", "/health")[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=10)
    conn.request("GET", "/health", headers={"Host": "127.0.0.1"})
    conn.getresponse().read()  # a direct kept-alive connection, idle from now on
    replica.process.terminate()
    time.sleep(0.5)
    conn.request("GET", "/health", headers={"Host": "127.0.0.1"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    assert response.getheader("Connection") == "close"
    started = time.monotonic()
    assert replica.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 7.5  # wsgi.py's DRAIN_SECONDS, and a margin


def test_a_quick_rolling_restart_of_two_replicas_shuts_neither_out(start_api, start_nginx):
    """Each replica is restarted as soon as the other is back. nginx passes over a replica
    that refused a connection, but never over all of them: requests keep being answered."""
    replicas = [start_api(**NO_LIMIT), start_api(**NO_LIMIT)]
    nginx = start_nginx([r.port for r in replicas])
    token, ids = seed(nginx.port)
    with Load(nginx.port, token, ids, clients=4) as load:
        time.sleep(0.5)
        for replica in replicas * 2:
            replica.restart()
        time.sleep(0.5)
    assert load.done > 200
    assert load.failures == [], f"{len(load.failures)} of {load.done}: {load.failures[:5]}"


def test_nginx_follows_the_replicas_to_new_addresses(start_api, start_nginx, tmp_path):
    """compose re-creates a replica with another address, or adds one: nginx, run by
    deploy/nginx-follow-replicas.sh, sends requests to the addresses the name has now."""
    port = free_port()
    first = start_api(host="127.0.0.2", port=port)
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.2 api\n")
    nginx = start_nginx(port, hosts=hosts)

    def upstreams(requests=40) -> set[str]:
        tag = f"probe-{time.monotonic_ns()}"
        for n in range(requests):
            headers = {"X-Request-ID": f"{tag}-{n}"}
            assert call(nginx.port, "GET", "/health", headers=headers)[0] == 200
        return {
            entry["upstream"]
            for entry in nginx.access_entries()
            if entry["request_id"].startswith(tag)
        }

    def settles(expected: set[str], timeout=10.0) -> set[str]:
        deadline = time.monotonic() + timeout
        while (seen := upstreams()) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        return seen

    assert upstreams() == {f"127.0.0.2:{port}"}
    second = start_api(host="127.0.0.3", port=port)
    hosts.write_text("127.0.0.2 api\n127.0.0.3 api\n")  # in place: the bind mount follows it
    assert settles({f"127.0.0.2:{port}", f"127.0.0.3:{port}"}) == {
        f"127.0.0.2:{port}",
        f"127.0.0.3:{port}",
    }
    hosts.write_text("127.0.0.3 api\n")
    first.stop()
    assert settles({f"127.0.0.3:{port}"}) == {f"127.0.0.3:{port}"}
    assert second.process.poll() is None
    assert "reloading nginx" in nginx.errors()


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL")
def test_a_rolling_restart_of_three_replicas_under_load_fails_no_request(start_api, start_nginx):
    """Three replicas on PostgreSQL behind nginx, each restarted in turn (SIGTERM, then a new
    process on its port) again and again while clients read and write through nginx."""
    replicas = [start_api(**NO_LIMIT), start_api(**NO_LIMIT), start_api(**NO_LIMIT)]
    nginx = start_nginx([r.port for r in replicas])
    token, ids = seed(nginx.port)
    restarts = 0
    with Load(nginx.port, token, ids) as load:
        deadline = time.monotonic() + 180
        while load.done < ROLLING_RESTART_REQUESTS and time.monotonic() < deadline:
            replicas[restarts % 3].restart()
            restarts += 1
            time.sleep(1.0)
    assert load.done >= ROLLING_RESTART_REQUESTS, f"only {load.done} requests in 180 s"
    assert restarts >= 6, "every replica restarted at least twice"
    assert load.failures == [], f"{len(load.failures)} of {load.done}: {load.failures[:5]}"
