"""Helpers shared by the tests: accounts made through the API or the services, and the error
checks (of the envelope, and of a service's exception)."""

import os
import re
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select

from bookshelf.auth.jwt import Actor
from bookshelf.errors import APIError
from bookshelf.extensions import db
from bookshelf.models import OutboxMail
from bookshelf.services.auth import create_user

PASSWORD = "correct horse battery"


class Auth:
    """Accounts created through the real endpoints, with their bearer headers."""

    def __init__(self, app, client):
        self.app, self.client = app, client
        self._count = 0

    def register(self, name=None, email=None, password=PASSWORD):
        self._count += 1
        email = email or f"user{self._count}@example.com"
        response = self.client.post(
            "/api/v1/auth/register",
            json={"name": name or f"User {self._count}", "email": email, "password": password},
        )
        assert response.status_code == 201, response.get_json()
        return response.get_json()["data"]

    def login(self, email, password=PASSWORD):
        response = self.client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]

    def user(self, **kwargs):
        """A new user: (user dict, headers with its access token)."""
        user = self.register(**kwargs)
        tokens = self.login(user["email"], kwargs.get("password", PASSWORD))
        return user, bearer(tokens["access_token"])

    def admin(self):
        self._count += 1
        email = f"admin{self._count}@example.com"
        with self.app.app_context():
            create_user(name="Admin", email=email, password=PASSWORD, role="admin", verified=True)
        tokens = self.login(email)
        return tokens["user"], bearer(tokens["access_token"])

    def mailed_token(self, recipient, link="verify-email"):
        """The token of the newest `link` (verify-email or reset-password) mailed to
        `recipient`: the suite sends no mail (no SMTP_URL), so it waits in the outbox."""
        with self.app.app_context():
            return mailed_token(recipient, link)

    def verify(self, email, link="verify-email"):
        """Follow the newest verification link mailed to `email`: the updated user."""
        token = self.mailed_token(email, link)
        response = self.client.post("/api/v1/auth/verify-email", json={"token": token})
        assert response.status_code == 200, response.get_json()
        return response.get_json()["data"]


def mailed_token(recipient, link="verify-email"):
    """`Auth.mailed_token` within an app context."""
    bodies = db.session.scalars(
        select(OutboxMail.text_body)
        .where(OutboxMail.recipient == recipient)
        .order_by(OutboxMail.id.desc())
    )
    for body in bodies:
        found = re.search(rf"/{link}\?token=([A-Za-z0-9_-]+)", body)
        if found:
            return found.group(1)
    raise AssertionError(f"no {link} mail to {recipient} in the outbox")


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_error(response, status, code):
    """The contract's error envelope, with the request id echoed in header and body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error", "meta"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    return body["error"]


# Redis for the tests that need one: TEST_REDIS_URL's host and port, and its database number as
# the first of the few the suite uses (each file adds its own offset). Never database 0, which
# other programs on the machine likely use.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/12"


def redis_for_tests(given: str = TEST_REDIS_URL) -> tuple[str, int, int]:
    """(host, port, first database number) of TEST_REDIS_URL."""
    url = urlsplit(given)
    number = int(url.path.strip("/") or 0)
    if url.scheme != "redis" or number == 0:
        raise ValueError(f"TEST_REDIS_URL must be redis://HOST:PORT/N with N > 0, got {given}")
    return url.hostname or "127.0.0.1", url.port or 6379, number


def make_user(role: str = "user") -> Actor:
    """A new account made by the services, as the `Actor` a verified token would give them."""
    user = create_user(
        name="Reader", email=f"{uuid.uuid4().hex[:12]}@example.com", password=PASSWORD, role=role
    )
    columns = ("id", "name", "email", "role", "email_verified", "created_at", "updated_at")
    return Actor(**{column: getattr(user, column) for column in columns})


@contextmanager
def refused(error: type[APIError], status: int, code: str):
    """The block raises the contract's error; the transaction is then rolled back, as the end
    of a request does, so what follows sees only what was committed."""
    with pytest.raises(error) as caught:
        yield caught
    assert (caught.value.status, caught.value.code) == (status, code)
    db.session.rollback()
