"""Sessions under real concurrency, through real `python wsgi.py` servers: an app's parallel
refreshes with one token (in one process and across two), and a login or a refresh racing a
password change (20 rounds each, on SQLite and PostgreSQL)."""

import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from tests.conftest import POSTGRES_URL
from tests.processes import call
from tests.support import PASSWORD

ROUNDS = 20
NEW_PASSWORD = "a brand new secret"


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def account(port, n) -> tuple[dict, dict]:
    """A new user and one login of it: (user, tokens)."""
    body = {"name": "Ann", "email": f"ann{n}@example.com", "password": PASSWORD}
    status, _, registered = call(port, "POST", "/api/v1/auth/register", body)
    assert status == 201, registered
    return registered["data"], login(port, body["email"])[2]["data"]


def login(port, email, password=PASSWORD):
    return call(port, "POST", "/api/v1/auth/login", {"email": email, "password": password})


def refresh(port, refresh_token):
    return call(port, "POST", "/api/v1/auth/refresh", headers=bearer(refresh_token))


def alive(port, tokens) -> bool:
    """Whether any token of the session still works."""
    me = call(port, "GET", "/api/v1/auth/me", headers=bearer(tokens["access_token"]))[0]
    return me == 200 or refresh(port, tokens["refresh_token"])[0] == 200


def at_once(*calls):
    """Run the calls on threads released together; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(fn):
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def parallel_refreshes(ports, refresh_token, n=10):
    results = at_once(*[partial(refresh, ports[i % len(ports)], refresh_token) for i in range(n)])
    assert [status for status, _, _ in results] == [200] * n, results
    return {body["data"]["refresh_token"] for _, _, body in results}


def test_ten_parallel_refreshes_with_one_token_all_succeed_with_one_successor(start_api):
    port = start_api().port
    _, tokens = account(port, 1)
    successors = parallel_refreshes([port], tokens["refresh_token"])
    assert len(successors) == 1
    status, _, body = refresh(port, successors.pop())
    assert status == 200 and body["data"]["refresh_token"] not in successors


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL: set TEST_DATABASE_URL")
def test_parallel_refreshes_across_two_processes_share_one_successor(start_api):
    ports = [start_api().port, start_api().port]
    _, tokens = account(ports[0], 1)
    successors = parallel_refreshes(ports, tokens["refresh_token"])
    assert len(successors) == 1
    assert refresh(ports[1], successors.pop())[0] == 200


def change_password(port, user, tokens):
    body = {"password": NEW_PASSWORD, "current_password": PASSWORD}
    url = f"/api/v1/users/{user['id']}"
    return call(port, "PATCH", url, body, headers=bearer(tokens["access_token"]))


def test_a_login_racing_a_password_change_never_outlives_it(start_api):
    """The old password's login either fails or starts a session the change ends."""
    port = start_api(WAITRESS_THREADS="4").port
    outcomes = []
    for n in range(ROUNDS):
        user, tokens = account(port, n)
        changed, logged_in = at_once(
            partial(change_password, port, user, tokens), partial(login, port, user["email"])
        )
        assert changed[0] == 200, changed
        assert logged_in[0] in (200, 401), logged_in
        if logged_in[0] == 200:
            assert not alive(port, logged_in[2]["data"]), f"round {n}: the login outlived it"
        assert alive(port, tokens), "the session that changed the password keeps working"
        outcomes.append(logged_in[0])
    assert len(outcomes) == ROUNDS


def test_a_refresh_racing_a_password_change_never_outlives_it_nor_deadlocks(start_api):
    """Another device refreshing while the password changes: its refresh fails, or its new
    tokens die with the change; never a 503 from two requests waiting on each other."""
    port = start_api(WAITRESS_THREADS="4").port
    for n in range(ROUNDS):
        user, this_device = account(port, n)
        other_device = login(port, user["email"])[2]["data"]
        changed, refreshed = at_once(
            partial(change_password, port, user, this_device),
            partial(refresh, port, other_device["refresh_token"]),
        )
        assert changed[0] == 200, changed
        assert refreshed[0] in (200, 401), refreshed
        if refreshed[0] == 200:
            assert not alive(port, refreshed[2]["data"]), f"round {n}: the refresh outlived it"
        assert not alive(port, other_device)
