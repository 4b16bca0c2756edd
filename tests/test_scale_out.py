"""Two `python wsgi.py` processes behind the shipped nginx, on one PostgreSQL and one Redis: what
one process does holds on the other, and a process killed under writes loses no write it had
acknowledged."""

import contextlib
import http.client
import os
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import redis

from tests.conftest import POSTGRES_URL
from tests.nginx import Nginx
from tests.processes import ServerProcess, call
from tests.support import PASSWORD, redis_for_tests

# This file's own Redis database: TEST_REDIS_URL's (12 by default; tests/test_ratelimit.py takes
# the next two).
REDIS_HOST, REDIS_PORT, REDIS_DB = redis_for_tests()


def redis_client():
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError:
        return None
    return client


pytestmark = [
    pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL"),
    pytest.mark.skipif(redis_client() is None, reason=f"needs Redis on {REDIS_HOST}:{REDIS_PORT}"),
]


@pytest.fixture
def cluster(app, tmp_path):
    """(process A, process B, nginx in front of both), sharing PostgreSQL and Redis."""
    prefix = f"scale-{uuid.uuid4().hex[:8]}"
    env = {
        "DATABASE_URL": POSTGRES_URL,
        "RATELIMIT_STORAGE_URI": f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}",
        "RATELIMIT_KEY_PREFIX": prefix,
        "TRUSTED_PROXIES": "1",
        "RATELIMIT_DEFAULT": "100000 per minute",  # the writers below are one address
    }
    processes = [ServerProcess(tmp_path / f"api-{name}.log", **env) for name in "ab"]
    nginx = None
    try:
        for process in processes:
            process.start()
        nginx = Nginx(tmp_path, [p.port for p in processes]).start()
        yield processes[0], processes[1], nginx
    finally:
        if nginx is not None:
            nginx.stop()
        for process in processes:
            process.stop()
        client = redis_client()
        if client is not None:
            keys = list(client.scan_iter(f"{prefix}*"))
            if keys:
                client.delete(*keys)


def token(port, email="ann@example.com"):
    body = {"name": "Ann", "email": email, "password": PASSWORD}
    call(port, "POST", "/api/v1/auth/register", body)
    _, _, login = call(port, "POST", "/api/v1/auth/login", {"email": email, "password": PASSWORD})
    return login["data"]


def bearer(tokens):
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def test_a_logout_on_one_process_is_refused_by_the_other(cluster):
    a, b, _ = cluster
    tokens = token(a.port)
    assert call(b.port, "GET", "/api/v1/auth/me", headers=bearer(tokens))[0] == 200
    assert call(a.port, "POST", "/api/v1/auth/logout", headers=bearer(tokens))[0] == 204
    status, _, body = call(b.port, "GET", "/api/v1/auth/me", headers=bearer(tokens))
    assert status == 401 and body["error"]["code"] == "TOKEN_REVOKED"


def test_an_idempotent_retry_on_the_other_process_replays(cluster):
    a, b, _ = cluster
    headers = bearer(token(a.port)) | {"Idempotency-Key": "one-book"}
    book = {"title": "Dune", "author": "Frank Herbert"}
    status, _, first = call(a.port, "POST", "/api/v1/books", book, headers)
    assert status == 201
    status, head, again = call(b.port, "POST", "/api/v1/books", book, headers)
    assert status == 201 and head["idempotent-replayed"] == "true"
    assert again["data"]["id"] == first["data"]["id"]
    _, _, listing = call(b.port, "GET", "/api/v1/books")
    assert listing["meta"]["total"] == 1


def test_failed_logins_are_counted_across_processes(cluster):
    a, b, _ = cluster
    token(a.port)
    wrong = {"email": "ann@example.com", "password": "not the password"}
    statuses = [call(p.port, "POST", "/api/v1/auth/login", wrong)[0] for p in (a, b) * 3]
    assert statuses == [401] * 5 + [429]  # the per-email limit, 5 a minute, over both


def test_one_if_match_wins_across_processes(cluster):
    a, b, _ = cluster
    headers = bearer(token(a.port))
    _, head, _ = call(a.port, "POST", "/api/v1/books", {"title": "v1", "author": "A"}, headers)
    path, etag = urlsplit(head["location"]).path, head["etag"]
    barrier = threading.Barrier(8)

    def patch(i):
        barrier.wait()
        port = (a, b)[i % 2].port
        return call(port, "PATCH", path, {"title": f"v2 by {i}"}, headers | {"If-Match": etag})[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(patch, range(8))) == [200] + [412] * 7


def test_no_acknowledged_write_is_lost_when_a_process_is_killed(cluster):
    """Writers create books through nginx; process A is killed with SIGKILL among them. Every
    book that was answered 201 exists afterwards."""
    a, b, nginx = cluster
    headers = bearer(token(b.port))
    acknowledged, stop = [], threading.Event()

    def write(worker):
        n = 0
        while not stop.is_set():
            n += 1
            book = {"title": f"w{worker}-{n}", "author": "Writer"}
            with contextlib.suppress(OSError, http.client.HTTPException):  # cut off by the kill
                status, _, body = call(
                    nginx.port, "POST", "/api/v1/books", book, headers, timeout=10
                )
                if status == 201:
                    acknowledged.append(body["data"]["id"])

    writers = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(8)]
    for writer in writers:
        writer.start()
    threading.Event().wait(1.5)
    os.kill(a.process.pid, signal.SIGKILL)
    threading.Event().wait(1.5)
    stop.set()
    for writer in writers:
        writer.join(timeout=15)
    assert len(acknowledged) > 20
    missing = [
        book_id
        for book_id in acknowledged
        if call(b.port, "GET", f"/api/v1/books/{book_id}")[0] != 200
    ]
    assert missing == []
