"""No targeted lockout (OWASP's device cookies, for an API): a login answers a device token; a
later login for the same email presenting it counts its failures against that device's own
limit, not against the email's, which unknown devices share. In this process, and through real
`python wsgi.py` processes (concurrency; Redis shared by processes)."""

import base64
import json
import time

import pytest
from itsdangerous import TimestampSigner

from bookshelf.config import ConfigError, from_environment
from tests.processes import call
from tests.support import PASSWORD, assert_error
from tests.test_ratelimit import at_once, redis_prefix, servers, statuses_of, storage  # noqa: F401

LOGIN = "/api/v1/auth/login"
ANN, BOB = "ann@example.com", "bob@example.com"


def login(client, email, password="wrong password", address="10.0.0.1", device_token=None):
    body = {"email": email, "password": password}
    if device_token is not None:
        body["device_token"] = device_token
    return client.post(LOGIN, json=body, environ_base={"REMOTE_ADDR": address})


def register(client, email):
    body = {"name": email.split("@")[0], "email": email, "password": PASSWORD}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201


def device_token(client, email=ANN):
    """The device token of a successful login for `email` (from an address of its own)."""
    response = login(client, email, PASSWORD, address="10.1.1.1")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]["device_token"]


def assert_limited(response):
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) > 0


@pytest.fixture
def app(make_app):
    """3 failures per email, 2 per device, and a per-address limit out of the way."""
    return make_app(
        LOGIN_FAILURE_LIMIT="50 per minute",
        LOGIN_FAILURE_LIMIT_PER_EMAIL="3 per minute",
        LOGIN_FAILURE_LIMIT_PER_DEVICE="2 per minute",
    )


@pytest.fixture
def client(app):
    client = app.test_client()
    register(client, ANN)
    register(client, BOB)
    return client


def test_a_login_answers_a_new_device_token_each_time(client):
    first = device_token(client)
    assert isinstance(first, str) and first
    response = login(client, ANN, PASSWORD, device_token=first)
    assert response.status_code == 200
    second = response.get_json()["data"]["device_token"]
    assert isinstance(second, str) and second not in ("", first)
    for wrong in (123, None, "", ["x"], "x" * 1025):  # the type and length are checked
        body = {"email": ANN, "password": PASSWORD, "device_token": wrong}
        response = client.post(LOGIN, json=body)
        assert set(assert_error(response, 422, "VALIDATION_ERROR")["details"]) == {"device_token"}


def test_failures_by_others_do_not_lock_the_owner_out_of_her_device(client):
    token = device_token(client)
    for i in range(3):  # an attacker, from anywhere
        response = login(client, ANN, address=f"203.0.113.{i}")
        assert_error(response, 401, "INVALID_CREDENTIALS")
    # Unknown devices are locked out, the right password too ...
    assert_limited(login(client, ANN, PASSWORD))
    assert_limited(login(client, ANN, address="203.0.113.9"))
    # ... but not ann's device (however she types her email), again and again.
    for email in (ANN, " Ann@Example.COM "):
        response = login(client, email, PASSWORD, device_token=token)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["data"]["user"]["email"] == ANN
    # The token is the device's, whoever holds it: it still lets no one in without the password.
    assert_error(login(client, ANN, device_token=token), 401, "INVALID_CREDENTIALS")


def test_failures_from_a_known_device_count_against_its_own_limit(client):
    phone, tablet = device_token(client), device_token(client)
    for _ in range(2):
        assert_error(login(client, ANN, device_token=phone), 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, ANN, PASSWORD, device_token=phone))  # this device is locked out
    # Its failures took nothing from the email's limit: unknown devices still have all 3.
    assert login(client, ANN, PASSWORD, address="10.0.0.2").status_code == 200
    for _ in range(3):
        assert_error(login(client, ANN, address="10.0.0.2"), 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, ANN, PASSWORD, address="10.0.0.2"))
    # Nor from her other devices'.
    assert login(client, ANN, PASSWORD, device_token=tablet).status_code == 200


def test_successes_from_a_known_device_give_their_places_back(client):
    token = device_token(client)
    assert_error(login(client, ANN, device_token=token), 401, "INVALID_CREDENTIALS")
    for _ in range(5):
        assert login(client, ANN, PASSWORD, device_token=token).status_code == 200
    assert_error(login(client, ANN, device_token=token), 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, ANN, device_token=token))


def test_a_full_device_limit_takes_nothing_from_the_address_limit(make_app):
    client = make_app(
        LOGIN_FAILURE_LIMIT="3 per minute", LOGIN_FAILURE_LIMIT_PER_DEVICE="2 per minute"
    ).test_client()
    register(client, ANN)
    token = device_token(client)
    for _ in range(2):
        assert_error(login(client, ANN, device_token=token), 401, "INVALID_CREDENTIALS")
    for _ in range(3):  # refused by the device's limit: the address's is not used up
        assert_limited(login(client, ANN, device_token=token))
    assert_error(login(client, BOB), 401, "INVALID_CREDENTIALS")  # the address's third
    assert_limited(login(client, BOB))
    # Refused by the address's limit, a known device's attempt takes nothing from its own.
    other = device_token(client)
    for _ in range(2):
        assert_limited(login(client, ANN, device_token=other))
    for _ in range(2):
        response = login(client, ANN, device_token=other, address="10.0.0.2")
        assert_error(response, 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, ANN, device_token=other, address="10.0.0.3"))


def _forged(client, make_app, monkeypatch):
    return "not-a-device-token"


def _tampered(client, make_app, monkeypatch):
    """Bob's token, its payload rewritten to name ann (the signature is bob's)."""
    payload, timestamp, signature = device_token(client, BOB).split(".")
    claims = {"email": ANN, "nonce": "x" * 22}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{payload}.{timestamp}.{signature}"


def _expired(client, make_app, monkeypatch):
    """Issued a second more than DEVICE_TOKEN_TTL ago: itsdangerous reads the time of issue
    through TimestampSigner.get_timestamp, its documented hook."""
    ttl = client.application.config["DEVICE_TOKEN_TTL"]
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - ttl - 1)
        return device_token(client)


def _other_email(client, make_app, monkeypatch):
    return device_token(client, BOB)


def _other_secret(client, make_app, monkeypatch):
    """Ann's token from a deployment with another SECRET_KEY (or before the key was changed)."""
    other = make_app(SECRET_KEY="another-secret-that-is-long-enough-0123456789").test_client()
    return device_token(other)


@pytest.mark.parametrize(
    "make_token",
    [_forged, _tampered, _expired, _other_email, _other_secret],
    ids=lambda f: f.__name__[1:],
)
def test_a_device_token_that_is_not_valid_for_the_email_is_an_unknown_device(
    client, make_app, monkeypatch, make_token
):
    good = device_token(client)
    bad = make_token(client, make_app, monkeypatch)
    for _ in range(3):  # counted against the email's limit (3), not a device's (2)
        assert_error(login(client, ANN, device_token=bad), 401, "INVALID_CREDENTIALS")
    assert_limited(login(client, ANN, PASSWORD, device_token=bad))
    assert login(client, ANN, PASSWORD, device_token=good).status_code == 200


def test_the_device_settings_and_their_defaults(make_app):
    config = make_app().config
    assert config["LOGIN_FAILURE_LIMIT_PER_DEVICE"] == "5 per minute"
    assert config["DEVICE_TOKEN_TTL"] == 365 * 24 * 3600
    environ = {"LOGIN_FAILURE_LIMIT_PER_DEVICE": "3 per minute", "DEVICE_TOKEN_TTL": "86400"}
    assert from_environment(environ) == {
        "LOGIN_FAILURE_LIMIT_PER_DEVICE": "3 per minute",
        "DEVICE_TOKEN_TTL": 86400,
    }
    with pytest.raises(ConfigError, match="DEVICE_TOKEN_TTL"):
        from_environment({"DEVICE_TOKEN_TTL": "0"})


# Through real `python wsgi.py` processes --------------------------------------------------------


def test_concurrent_failures_from_a_known_device_get_exactly_its_limit(servers, storage):  # noqa: F811
    """Memory in one process, or Redis shared by two: 20 wrong passwords at once from ann's
    phone give the default 5 per device; then 20 at once from unknown devices, the default 5 per
    email, untouched by the phone's; and her tablet still logs in, on every process."""
    count, env = storage
    ports = [server.port for server in servers(count, **env)]
    ann = {"email": ANN, "password": PASSWORD}
    assert call(ports[0], "POST", "/api/v1/auth/register", ann | {"name": "Ann"})[0] == 201
    phone, tablet = (call(ports[-1], "POST", LOGIN, ann)[2]["data"]["device_token"] for _ in "12")

    def wrong_passwords(device_token):
        body = {"email": ANN, "password": "wrong password"}
        if device_token:
            body["device_token"] = device_token
        return lambda i: call(ports[i % count], "POST", LOGIN, body, source=f"127.0.0.{2 + i}")

    assert statuses_of(at_once(20, wrong_passwords(phone))) == {401: 5, 429: 15}
    assert statuses_of(at_once(20, wrong_passwords(None))) == {401: 5, 429: 15}
    for port in ports:
        assert call(port, "POST", LOGIN, ann | {"device_token": tablet})[0] == 200
