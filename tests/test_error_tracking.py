"""Error tracking: with SENTRY_DSN, an unhandled error reaches Sentry once, tagged with its request
id and without secrets; read back as the envelopes sentry-sdk really sends, from a local endpoint
standing in for Sentry."""

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import NotFound

from bookshelf.config import from_environment
from bookshelf.error_tracking import FILTERED, before_send
from bookshelf.errors import APIError, ServiceUnavailable, ValidationError
from bookshelf.extensions import db
from tests.processes import ROOT, call
from tests.support import PASSWORD

NEW_PASSWORD = "a brand new passphrase 4417"
COOKIE_SECRET = "cookie-secret-5d1c0a9e"
QUERY_TOKEN = "query-token-77e0b3c2"
# Written over a user's created_at: a row the code cannot read (SQLite: not a time at all;
# PostgreSQL: a timestamp Python's datetime cannot hold). Its every token then fails with a 500.
UNREADABLE_TIME = {"sqlite": "not a time", "postgresql": "infinity"}


class Sentry:
    """A local stand-in for Sentry's envelope endpoint: keeps each envelope's raw bytes."""

    def __init__(self):
        self.envelopes: list[bytes] = []
        received = self.envelopes

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "br":
                    body = brotli.decompress(body)
                if self.path == "/api/1/envelope/":
                    received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [
            json.loads(payload)
            for envelope in list(self.envelopes)
            for kind, payload in items(envelope)
            if kind == "event"
        ]

    def wait_for_events(self, timeout=10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while not self.events() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.events()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def items(envelope: bytes) -> list[tuple[str, bytes]]:
    """An envelope's items, (type, payload): a header line, then per item a header line and a
    payload of the header's `length`, else up to the next newline."""
    _header, _, rest = envelope.partition(b"\n")
    found = []
    while rest.strip():
        item_header, _, rest = rest.partition(b"\n")
        item = json.loads(item_header)
        if "length" in item:
            payload, rest = rest[: item["length"]], rest[item["length"] + 1 :]
        else:
            payload, _, rest = rest.partition(b"\n")
        found.append((item["type"], payload))
    return found


@pytest.fixture
def sentry():
    server = Sentry()
    yield server
    server.stop()


def make_unreadable(app, user_id: int) -> None:
    with app.app_context(), db.engine.begin() as conn:
        value = UNREADABLE_TIME[conn.dialect.name]
        conn.execute(
            text("UPDATE users SET created_at = :v WHERE id = :id"), {"v": value, "id": user_id}
        )


def test_an_unhandled_error_reaches_sentry_once_tagged_and_without_secrets(
    app, auth, start_api, sentry
):
    user, headers = auth.user()
    token = headers["Authorization"].removeprefix("Bearer ")
    server = start_api(SENTRY_DSN=sentry.dsn)
    # Errors the API answers on purpose send nothing.
    assert call(server.port, "GET", "/api/v1/books/999999", headers=headers)[0] == 404
    assert call(server.port, "POST", "/api/v1/auth/register", body={"email": "no"})[0] == 422

    make_unreadable(app, user["id"])
    status, response_headers, body = call(
        server.port,
        "PATCH",
        f"/api/v1/users/{user['id']}?page=1&access_token={QUERY_TOKEN}",
        body={"current_password": PASSWORD, "password": NEW_PASSWORD},
        headers=headers | {"Cookie": f"session={COOKIE_SECRET}", "X-Api-Key": COOKIE_SECRET},
    )
    assert status == 500 and body["error"]["code"] == "INTERNAL_ERROR"
    request_id = response_headers["x-request-id"]
    assert body["meta"]["request_id"] == request_id

    [event] = sentry.wait_for_events()
    server.stop()  # sentry-sdk sends what it still holds as the process exits
    assert len(sentry.events()) == 1, "one error, one event"
    assert event["tags"]["request_id"] == request_id
    assert event["environment"] == "testing"
    [exception] = event["exception"]["values"][-1:]
    assert exception["type"] in {"ValueError", "DataError"}
    assert event["request"]["method"] == "PATCH"
    assert "data" not in event["request"] and "cookies" not in event["request"]
    assert {"authorization", "cookie", "x-api-key"}.isdisjoint(
        name.lower() for name in event["request"]["headers"]
    )
    raw = b"".join(sentry.envelopes)
    for secret in (token, PASSWORD, NEW_PASSWORD, COOKIE_SECRET, QUERY_TOKEN):
        assert secret.encode() not in raw, secret


def test_an_error_of_a_plain_flask_route_is_captured_too(sentry, database_url):
    """A route outside Flask-RESTful; an error line logged on the way is a breadcrumb, not an
    event of its own. In a process of its own, as sentry-sdk's client is global."""
    script = (
        "import logging, sentry_sdk\n"
        "from bookshelf import create_app\n"
        "app = create_app({'APP_ENV': 'testing'}, commands=False)\n"
        "@app.get('/boom')\n"
        "def boom():\n"
        "    logging.getLogger('bookshelf').error('an error line, no exception')\n"
        "    raise KeyError('plain route')\n"
        "response = app.test_client().get('/boom', headers={'X-Request-ID': 'plain-1'})\n"
        "assert response.status_code == 500, response.status_code\n"
        "sentry_sdk.flush(5)\n"
    )
    run(script, SENTRY_DSN=sentry.dsn, DATABASE_URL=database_url)  # returns once sent
    [event] = sentry.events()
    assert event["tags"]["request_id"] == "plain-1"
    assert event["exception"]["values"][-1]["type"] == "KeyError"


def test_without_a_dsn_sentry_sdk_is_not_even_imported(database_url):
    script = (
        "import sys\n"
        "from bookshelf import create_app\n"
        "app = create_app({'APP_ENV': 'testing'}, commands=False)\n"
        "@app.get('/boom')\n"
        "def boom():\n"
        "    raise KeyError('no dsn')\n"
        "assert app.test_client().get('/boom').status_code == 500\n"
        "print('sentry_sdk' in sys.modules)\n"
    )
    assert run(script, DATABASE_URL=database_url) == "False"


def run(script: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"} | env
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def test_the_dsn_is_read_from_the_environment():
    assert from_environment({"SENTRY_DSN": "http://k@h/1"})["SENTRY_DSN"] == "http://k@h/1"
    assert "SENTRY_DSN" not in from_environment({"SENTRY_DSN": ""})


@pytest.mark.parametrize(
    "exc",
    [
        NotFound(),
        ValidationError(),
        APIError("a 500 the API chose to answer"),
        ServiceUnavailable(),
        OperationalError("SELECT 1", {}, Exception("connection refused")),
        PoolTimeout(),
    ],
)
def test_errors_answered_on_purpose_are_not_sent(app, exc):
    with app.test_request_context("/"):
        assert (
            before_send({"exception": {"values": []}}, {"exc_info": (type(exc), exc, None)}) is None
        )


def test_an_event_is_scrubbed_of_secrets(app):
    secret_body = {"email": "a@example.com", "password": PASSWORD, "refresh_token": "r" * 40}
    headers = {
        "Authorization": "Bearer header.token.value",
        "Cookie": f"session={COOKIE_SECRET}",
        "X-Device-Token": "device-token-value",
        "X-Request-ID": "req-scrub",
    }
    event = {
        "request": {
            "url": f"http://localhost/api/v1/books?access_token={QUERY_TOKEN}",
            "method": "POST",
            "query_string": f"page=2&access_token={QUERY_TOKEN}",
            "headers": headers | {"User-Agent": "tests"},
            "data": secret_body,
            "cookies": {"session": COOKIE_SECRET},
            "env": {"REMOTE_ADDR": "10.0.0.1"},
        },
        "user": {"ip_address": "10.0.0.1"},
        "exception": {
            "values": [
                {
                    "type": "DataError",
                    "value": f"boom {PASSWORD}\n[SQL: SELECT 1]\n[parameters: ('jti-secret',)]\n"
                    "(Background on this error at: https://sqlalche.me/e/20/9h9h)",
                    "stacktrace": {"frames": [{"function": "f", "vars": {"password": "x"}}]},
                }
            ]
        },
        "breadcrumbs": {"values": [{"message": "m", "data": {"token": "t", "status": 500}}]},
    }
    url = f"/api/v1/books?access_token={QUERY_TOKEN}"
    with app.test_request_context(url, method="POST", json=secret_body, headers=headers):
        sent = before_send(event, {"exc_info": (RuntimeError, RuntimeError("bug"), None)})
    assert sent["tags"]["request_id"] == "req-scrub"
    assert sent["request"]["headers"] == {"X-Request-ID": "req-scrub", "User-Agent": "tests"}
    assert sent["request"]["query_string"] == f"page=2&access_token={FILTERED}"
    assert sent["request"]["url"] == f"http://localhost/api/v1/books?access_token={FILTERED}"
    assert set(sent["request"]) == {"url", "method", "query_string", "headers"}
    assert "user" not in sent
    [exception] = sent["exception"]["values"]
    assert "jti-secret" not in exception["value"] and "[SQL: SELECT 1]" in exception["value"]
    assert "vars" not in exception["stacktrace"]["frames"][0]
    assert sent["breadcrumbs"]["values"][0]["data"] == {"token": FILTERED, "status": 500}
    dumped = json.dumps(sent)
    for secret in (PASSWORD, "header.token.value", COOKIE_SECRET, QUERY_TOKEN, "r" * 40):
        assert secret not in dumped, secret
