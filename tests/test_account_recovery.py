"""Email verification and password reset: the single-use tokens mailed to an account's address,
the mails they travel in (read from the outbox: the suite sets no SMTP_URL, so mails wait there;
tests/test_mail_delivery.py sends them through a real SMTP server), and the hostile cases."""

import hashlib
import statistics
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bookshelf.extensions import db
from bookshelf.models import AccountToken, OutboxMail, User
from bookshelf.models.base import utcnow
from bookshelf.services import account_recovery
from tests.conftest import POSTGRES_URL
from tests.processes import call
from tests.support import PASSWORD, assert_error, bearer
from tests.test_mail_delivery import smtp_server  # noqa: F401 (a fixture)

VERIFY = "/api/v1/auth/verify-email"
RESEND = "/api/v1/auth/verify-email/resend"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
ME = "/api/v1/auth/me"
BOOKS = "/api/v1/books"
NEW_PASSWORD = "a brand new secret"
UNUSABLE = {"token": account_recovery.UNUSABLE}


def outbox(app, recipient=None) -> list[OutboxMail]:
    with app.app_context():
        query = select(OutboxMail).order_by(OutboxMail.id)
        if recipient is not None:
            query = query.where(OutboxMail.recipient == recipient)
        mails = db.session.scalars(query).all()
        db.session.expunge_all()
        return list(mails)


def expire(app, token):
    with app.app_context():
        digest = hashlib.sha256(token.encode()).hexdigest()
        db.session.execute(
            update(AccountToken)
            .where(AccountToken.token_hash == digest)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()


def verify(client, token):
    return client.post(VERIFY, json={"token": token})


def confirm(client, token, password=NEW_PASSWORD):
    return client.post(CONFIRM, json={"token": token, "new_password": password})


def login(client, email, password=PASSWORD):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def flipped(token: str) -> str:
    return ("A" if token[0] != "A" else "B") + token[1:]


# --- the mails -------------------------------------------------------------------------------


def test_registration_mails_a_verification_link_in_text_and_html(make_app):
    app = make_app(
        VERIFY_URL_TEMPLATE="myapp://verify?token={token}&from=mail", PRODUCT_NAME="Shelfie"
    )
    client = app.test_client()
    body = {"name": "<b>Ann</b>", "email": "ann@example.com", "password": PASSWORD}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    [mail] = outbox(app)
    assert mail.recipient == "ann@example.com"
    assert mail.subject == "Confirm your email address for Shelfie"
    token = mail.text_body.split("myapp://verify?token=")[1].split("&from=mail")[0]
    assert len(token) >= 43  # 32 random bytes
    link = f"myapp://verify?token={token}&from=mail"
    assert link in mail.text_body and "Shelfie" in mail.text_body and "24 hours" in mail.text_body
    assert "<b>Ann</b>" in mail.text_body  # plain text is not escaped
    assert f'href="{link.replace("&", "&amp;")}"' in mail.html_body
    assert "&lt;b&gt;Ann&lt;/b&gt;" in mail.html_body and "<b>Ann</b>" not in mail.html_body
    assert verify(client, token).get_json()["data"]["email_verified"] is True


def test_a_duplicate_registration_is_rolled_back_with_its_mail(client, auth):
    auth.register(email="ann@example.com")
    assert_error(
        auth.client.post(
            "/api/v1/auth/register",
            json={"name": "Ann", "email": "ANN@example.com", "password": PASSWORD},
        ),
        409,
        "CONFLICT",
    )
    assert len(outbox(auth.app, "ann@example.com")) == 1


def test_without_link_templates_the_mails_give_the_token_as_a_code(make_app):
    """Production has no link templates unless set: the app is then given the token to enter."""
    app = make_app(VERIFY_URL_TEMPLATE=None, RESET_URL_TEMPLATE=None)
    client = app.test_client()
    body = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    assert client.post("/api/v1/auth/register", json=body).status_code == 201
    assert client.post(RESET, json={"email": "ann@example.com"}).status_code == 202
    welcome, reset = outbox(app)
    for mail, lifetime in ((welcome, "24 hours"), (reset, "30 minutes")):
        assert "enter this code in the app" in mail.text_body.lower().replace("\n", " ")
        assert "http" not in mail.text_body and "href" not in mail.html_body
        assert f"The code works once, for {lifetime}." in mail.text_body
    code = welcome.text_body.split("\n\n")[2].strip()
    assert f"<code>{code}</code>" in welcome.html_body
    assert verify(client, code).get_json()["data"]["email_verified"] is True
    code = reset.text_body.split("\n\n")[2].strip()
    assert confirm(client, code).status_code == 204


def test_tokens_are_stored_only_as_their_sha256(app, auth):
    user = auth.register(email="ann@example.com")
    token = auth.mailed_token("ann@example.com")
    with app.app_context():
        [row] = db.session.scalars(select(AccountToken)).all()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert (row.user_id, row.purpose, row.email) == (user["id"], "verify_email", user["email"])
        assert row.expires_at - row.created_at == timedelta(hours=24)
        assert token not in {str(value) for value in vars(row).values()}


def test_the_link_templates_must_hold_the_token(make_app):
    from bookshelf.config import ConfigError

    with pytest.raises(ConfigError, match="VERIFY_URL_TEMPLATE must contain"):
        make_app(VERIFY_URL_TEMPLATE="https://app.example.com/verify")
    with pytest.raises(ConfigError, match="SMTP_URL must start with"):
        make_app(SMTP_URL="http://127.0.0.1:25")


# --- email verification ----------------------------------------------------------------------


def test_verifying_spends_the_token_and_marks_the_account(client, auth):
    user, headers = auth.user(email="ann@example.com")
    assert client.get(ME, headers=headers).get_json()["data"]["email_verified"] is False
    token = auth.mailed_token("ann@example.com")
    response = verify(client, token)
    assert response.status_code == 200
    assert response.get_json()["data"] | {"updated_at": None} == user | {
        "email_verified": True,
        "updated_at": None,
    }
    assert client.get(ME, headers=headers).get_json()["data"]["email_verified"] is True
    assert_error(verify(client, token), 422, "VALIDATION_ERROR")  # once only
    assert verify(client, token).get_json()["error"]["details"] == UNUSABLE


@pytest.mark.parametrize(
    "body",
    [{}, {"token": ""}, {"token": 12345}, {"token": None}, {"token": "x" * 201}],
    ids=["missing", "empty", "number", "null", "too long"],
)
def test_a_malformed_verification_body_is_422_naming_the_token(client, body):
    response = client.post(VERIFY, json=body)
    assert_error(response, 422, "VALIDATION_ERROR")
    assert set(response.get_json()["error"]["details"]) == {"token"}


def test_an_unknown_expired_flipped_or_other_purpose_token_is_refused(app, client, auth):
    auth.register(email="ann@example.com")
    token = auth.mailed_token("ann@example.com")
    for bad in ("not-a-token", flipped(token), token + "A"):
        response = verify(client, bad)
        assert_error(response, 422, "VALIDATION_ERROR")
        assert response.get_json()["error"]["details"] == UNUSABLE
    assert client.post(RESET, json={"email": "ann@example.com"}).status_code == 202
    reset_token = auth.mailed_token("ann@example.com", "reset-password")
    assert_error(verify(client, reset_token), 422, "VALIDATION_ERROR")
    expire(app, token)
    assert_error(verify(client, token), 422, "VALIDATION_ERROR")


def test_another_users_token_verifies_that_user_only(client, auth):
    ann = auth.register(email="ann@example.com")
    bob, bob_headers = auth.user(email="bob@example.com")
    response = client.post(
        VERIFY, json={"token": auth.mailed_token("ann@example.com")}, headers=bob_headers
    )
    assert response.get_json()["data"]["id"] == ann["id"]
    assert client.get(ME, headers=bob_headers).get_json()["data"]["email_verified"] is False


def test_resend_voids_the_earlier_link_and_is_rate_limited(make_app):
    app = make_app(VERIFY_EMAIL_RESEND_LIMIT="2 per hour")
    client = app.test_client()
    from tests.support import Auth

    auth = Auth(app, client)
    _, headers = auth.user(email="ann@example.com")
    first = auth.mailed_token("ann@example.com")
    response = client.post(RESEND, headers=headers)
    assert response.status_code == 202
    assert set(response.get_json()["data"]) == {"message"}
    second = auth.mailed_token("ann@example.com")
    assert second != first
    assert_error(verify(client, first), 422, "VALIDATION_ERROR")
    assert client.post(RESEND, headers=headers).status_code == 202
    limited = client.post(RESEND, headers=headers)
    assert_error(limited, 429, "RATE_LIMITED")
    assert int(limited.headers["Retry-After"]) > 0
    assert verify(client, auth.mailed_token("ann@example.com")).status_code == 200


def test_resend_needs_a_token_and_sends_nothing_once_verified(client, auth):
    assert_error(client.post(RESEND), 401, "UNAUTHORIZED")
    _, headers = auth.user(email="ann@example.com")
    auth.verify("ann@example.com")
    assert client.post(RESEND, headers=headers).status_code == 202
    assert len(outbox(auth.app, "ann@example.com")) == 1


def test_ones_own_email_change_waits_for_the_new_address(client, auth):
    user, headers = auth.user(email="ann@example.com")
    auth.verify("ann@example.com")
    response = client.patch(
        f"/api/v1/users/{user['id']}",
        headers=headers,
        json={"email": "ann@new.example", "current_password": PASSWORD},
    )
    assert response.get_json()["data"]["email"] == "ann@example.com"
    [mail] = outbox(auth.app, "ann@new.example")
    assert "ann@new.example" in mail.text_body
    assert login(client, "ann@example.com").status_code == 200  # the old one until verified
    changed = auth.verify("ann@new.example")
    assert (changed["email"], changed["email_verified"]) == ("ann@new.example", True)
    assert login(client, "ann@new.example").status_code == 200
    assert_error(login(client, "ann@example.com"), 401, "INVALID_CREDENTIALS")


def test_an_address_taken_before_the_link_is_followed_is_409(client, auth):
    user, headers = auth.user(email="ann@example.com")
    client.patch(
        f"/api/v1/users/{user['id']}",
        headers=headers,
        json={"email": "wanted@example.com", "current_password": PASSWORD},
    )
    token = auth.mailed_token("wanted@example.com")
    auth.register(email="wanted@example.com")
    assert_error(verify(client, token), 409, "CONFLICT")
    assert client.get(ME, headers=headers).get_json()["data"]["email"] == "ann@example.com"


def test_an_admins_change_of_an_email_is_at_once_and_unverified(client, auth):
    user = auth.register(email="ann@example.com")
    auth.verify("ann@example.com")
    _, admin_headers = auth.admin()
    response = client.patch(
        f"/api/v1/users/{user['id']}", headers=admin_headers, json={"email": "ann@new.example"}
    )
    data = response.get_json()["data"]
    assert (data["email"], data["email_verified"]) == ("ann@new.example", False)
    assert auth.verify("ann@new.example")["email_verified"] is True


def test_require_verified_email_holds_writes_until_verified(make_app):
    app = make_app(REQUIRE_VERIFIED_EMAIL=True)
    client = app.test_client()
    from tests.support import Auth

    auth = Auth(app, client)
    user, headers = auth.user(email="ann@example.com")
    book = {"title": "Dune", "author": "Frank Herbert"}
    response = client.post(BOOKS, json=book, headers=headers)
    assert_error(response, 403, "EMAIL_NOT_VERIFIED")
    key = {"name": "ci", "scopes": ["books:read"], "expires_in_days": 30}
    assert_error(
        client.post("/api/v1/auth/api-keys", json=key, headers=headers), 403, "EMAIL_NOT_VERIFIED"
    )
    assert client.get(BOOKS, headers=headers).status_code == 200  # reads are not held
    assert (
        client.patch(  # nor the account: a wrong address can be fixed
            f"/api/v1/users/{user['id']}", json={"name": "Ann B."}, headers=headers
        ).status_code
        == 200
    )
    auth.verify("ann@example.com")
    assert client.post(BOOKS, json=book, headers=headers).status_code == 201


# --- password reset --------------------------------------------------------------------------


def test_a_reset_request_is_202_alike_for_known_and_unknown_emails(app, client, auth):
    auth.register(email="ann@example.com")
    known = client.post(RESET, json={"email": " ANN@example.com "})
    unknown = client.post(RESET, json={"email": "nobody@example.com"})
    assert known.status_code == unknown.status_code == 202
    assert known.get_json()["data"] == unknown.get_json()["data"]
    [mail] = outbox(app, "ann@example.com")[1:]  # after the verification mail
    assert mail.subject == "Reset your Bookshelf password"
    assert "http://localhost:3000/reset-password?token=" in mail.text_body
    assert "30 minutes" in mail.text_body and "30 minutes" in mail.html_body
    assert outbox(app, "nobody@example.com") == []


def test_a_reset_request_takes_similar_time_whether_or_not_the_account_exists(make_app):
    app = make_app(
        PASSWORD_RESET_LIMIT="100 per minute", PASSWORD_RESET_LIMIT_PER_EMAIL="100 per minute"
    )
    client = app.test_client()
    client.post(
        "/api/v1/auth/register",
        json={"name": "Ann", "email": "ann@example.com", "password": PASSWORD},
    )

    def took(email):
        started = time.perf_counter()
        assert client.post(RESET, json={"email": email}).status_code == 202
        return time.perf_counter() - started

    known = statistics.median(took("ann@example.com") for _ in range(9))
    unknown = statistics.median(took("nobody@example.com") for _ in range(9))
    # Unpadded, the known email took 8.5 ms and the unknown 2.2 ms (SQLite).
    assert abs(known - unknown) < 0.005
    assert min(known, unknown) >= account_recovery.RESET_REQUEST_SECONDS


def test_reset_requests_are_limited_per_email_and_per_address(make_app):
    app = make_app(PASSWORD_RESET_LIMIT="4 per hour", PASSWORD_RESET_LIMIT_PER_EMAIL="2 per hour")
    client = app.test_client()
    for _ in range(2):
        assert client.post(RESET, json={"email": "nobody@example.com"}).status_code == 202
    per_email = client.post(RESET, json={"email": "NOBODY@example.com"})
    assert_error(per_email, 429, "RATE_LIMITED")
    assert int(per_email.headers["Retry-After"]) > 0
    assert client.post(RESET, json={"email": "other@example.com"}).status_code == 202
    # The refused one counted for the address too: 4 requests from it so far.
    assert_error(client.post(RESET, json={"email": "third@example.com"}), 429, "RATE_LIMITED")


@pytest.mark.parametrize(
    "body",
    [{}, {"email": ""}, {"email": 5}, {"email": ["a@b.c"]}],
    ids=["missing", "empty", "number", "list"],
)
def test_a_malformed_reset_request_is_422(client, body):
    response = client.post(RESET, json=body)
    assert_error(response, 422, "VALIDATION_ERROR")
    assert set(response.get_json()["error"]["details"]) == {"email"}


def test_confirming_sets_the_password_ends_every_session_and_spends_the_token(client, auth):
    user, headers = auth.user(email="ann@example.com")
    tokens = auth.login("ann@example.com")
    client.post(RESET, json={"email": "ann@example.com"})
    token = auth.mailed_token("ann@example.com", "reset-password")
    response = confirm(client, token)
    assert response.status_code == 204 and response.data == b""
    assert_error(client.get(ME, headers=headers), 401, "TOKEN_REVOKED")
    refreshed = client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    assert_error(refreshed, 401, "TOKEN_REVOKED")
    assert_error(login(client, "ann@example.com"), 401, "INVALID_CREDENTIALS")
    fresh = login(client, "ann@example.com", NEW_PASSWORD)
    assert fresh.get_json()["data"]["user"]["email_verified"] is True  # the mail proved it
    assert_error(confirm(client, token, "another new secret"), 422, "VALIDATION_ERROR")
    assert login(client, "ann@example.com", NEW_PASSWORD).status_code == 200


def test_a_refused_new_password_leaves_the_token_usable(client, auth):
    auth.register(email="ann@example.com")
    client.post(RESET, json={"email": "ann@example.com"})
    token = auth.mailed_token("ann@example.com", "reset-password")
    for refused, message in (("password", "common"), ("ann-is-me-2024", "@")):
        response = confirm(client, token, refused)
        assert_error(response, 422, "VALIDATION_ERROR")
        assert message in response.get_json()["error"]["details"]["new_password"]
    assert confirm(client, token).status_code == 204


def test_hostile_reset_tokens_are_refused_and_change_nothing(app, client, auth):
    auth.register(email="ann@example.com")
    client.post(RESET, json={"email": "ann@example.com"})
    token = auth.mailed_token("ann@example.com", "reset-password")
    verify_token = auth.mailed_token("ann@example.com")
    for bad in (flipped(token), verify_token, "x", token[:-1]):
        response = confirm(client, bad)
        assert_error(response, 422, "VALIDATION_ERROR")
        assert response.get_json()["error"]["details"] == UNUSABLE
    client.post(RESET, json={"email": "ann@example.com"})  # a newer link voids this one
    assert_error(confirm(client, token), 422, "VALIDATION_ERROR")
    newest = auth.mailed_token("ann@example.com", "reset-password")
    expire(app, newest)
    assert_error(confirm(client, newest), 422, "VALIDATION_ERROR")
    assert login(client, "ann@example.com").status_code == 200  # unchanged


def test_a_reset_link_dies_with_the_account_or_its_address(client, auth):
    user, headers = auth.user(email="ann@example.com")
    client.post(RESET, json={"email": "ann@example.com"})
    token = auth.mailed_token("ann@example.com", "reset-password")
    client.patch(
        f"/api/v1/users/{user['id']}",
        headers=headers,
        json={"email": "ann@new.example", "current_password": PASSWORD},
    )
    auth.verify("ann@new.example")
    assert_error(confirm(client, token), 422, "VALIDATION_ERROR")
    headers = bearer(auth.login("ann@new.example")["access_token"])
    client.post(RESET, json={"email": "ann@new.example"})
    token = auth.mailed_token("ann@new.example", "reset-password")
    assert client.delete(f"/api/v1/users/{user['id']}", headers=headers).status_code == 204
    assert_error(confirm(client, token), 422, "VALIDATION_ERROR")


def test_parallel_confirms_with_one_token_through_a_real_server_spend_it_once(app, auth, start_api):
    port = start_api().port
    body = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    assert call(port, "POST", "/api/v1/auth/register", body)[0] == 201
    assert call(port, "POST", RESET, {"email": "ann@example.com"})[0] == 202
    token = auth.mailed_token("ann@example.com", "reset-password")
    from tests.test_sessions_processes import at_once

    passwords = [f"new secret number {n}" for n in range(6)]
    results = at_once(
        *[
            (lambda p=p: call(port, "POST", CONFIRM, {"token": token, "new_password": p}))
            for p in passwords
        ]
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [204] + [422] * 5, results
    [winner] = [p for p, (status, _, _) in zip(passwords, results, strict=True) if status == 204]
    again = {"email": "ann@example.com", "password": winner}
    assert call(port, "POST", "/api/v1/auth/login", again)[0] == 200
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_verification_and_reset_through_a_real_server_and_a_real_smtp_server(
    app,
    start_api,
    smtp_server,  # noqa: F811 (the fixture imported above)
):
    """The whole way: the server writes each mail with its change, sends it after the commit
    to an SMTP server, and the links in the mails work."""
    inbox = smtp_server()
    port = start_api(
        SMTP_URL=f"smtp://127.0.0.1:{inbox.port}",
        MAIL_FROM="Shelfie <no-reply@shelfie.example>",
        PRODUCT_NAME="Shelfie",
        VERIFY_URL_TEMPLATE="myapp://verify?token={token}",
        RESET_URL_TEMPLATE="https://app.shelfie.example/reset#{token}",
    ).port
    body = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    assert call(port, "POST", "/api/v1/auth/register", body)[0] == 201
    [welcome] = inbox.wait_for(1)
    assert (welcome["To"], welcome["From"]) == (
        "ann@example.com",
        "Shelfie <no-reply@shelfie.example>",
    )
    assert welcome["Subject"] == "Confirm your email address for Shelfie"
    text = welcome.get_body(("plain",)).get_content()
    html = welcome.get_body(("html",)).get_content()
    token = text.split("myapp://verify?token=")[1].split()[0]
    assert f'href="myapp://verify?token={token}"' in html
    status, _, verified = call(port, "POST", VERIFY, {"token": token})
    assert status == 200 and verified["data"]["email_verified"] is True

    assert call(port, "POST", RESET, {"email": "ann@example.com"})[0] == 202
    reset = inbox.wait_for(2)[1]
    assert reset["Subject"] == "Reset your Shelfie password"
    token = reset.get_body(("plain",)).get_content().split("/reset#")[1].split()[0]
    assert call(port, "POST", CONFIRM, {"token": token, "new_password": NEW_PASSWORD})[0] == 204
    again = {"email": "ann@example.com", "password": NEW_PASSWORD}
    assert call(port, "POST", "/api/v1/auth/login", again)[0] == 200
    assert outbox(app) == []  # sent mails leave the database, links and all


@pytest.mark.skipif(not POSTGRES_URL, reason="row locks: needs PostgreSQL (TEST_DATABASE_URL)")
def test_an_email_change_racing_the_verification_of_the_last_one_never_deadlocks(auth, start_api):
    """Both take the account's row first: a new change voids the link being followed, or comes
    after it. Either way both answer, with no deadlock (PostgreSQL would abort one: a 500)."""
    from tests.test_sessions_processes import at_once

    port = start_api().port
    body = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}
    user = call(port, "POST", "/api/v1/auth/register", body)[2]["data"]
    tokens = call(
        port, "POST", "/api/v1/auth/login", {"email": body["email"], "password": PASSWORD}
    )
    headers = bearer(tokens[2]["data"]["access_token"])

    def change(email):
        change = {"email": email, "current_password": PASSWORD}
        return call(port, "PATCH", f"/api/v1/users/{user['id']}", change, headers=headers)

    for n in range(10):
        assert change(f"first{n}@example.com")[0] == 200
        token = auth.mailed_token(f"first{n}@example.com")
        (changed, _, _), (verified, _, answer) = at_once(
            lambda n=n: change(f"second{n}@example.com"),
            lambda token=token: call(port, "POST", VERIFY, {"token": token}),
        )
        assert changed == 200
        assert verified in (200, 422), answer


def test_prune_deletes_expired_mailed_tokens_only(app, auth):
    auth.register(email="ann@example.com")
    auth.register(email="bob@example.com")
    expire(app, auth.mailed_token("ann@example.com"))
    result = app.test_cli_runner().invoke(args=["prune"])
    assert result.exit_code == 0 and "account_tokens: 1 deleted" in result.output
    assert verify(auth.client, auth.mailed_token("bob@example.com")).status_code == 200
