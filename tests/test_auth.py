"""SPEC 3, Auth: registration, login, token rotation and revocation, and hostile tokens."""

import base64
import json
import time
from datetime import timedelta

import jwt as pyjwt
import pytest

from bookshelf.auth import verified
from tests.support import PASSWORD, Auth, assert_error, bearer

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"


def register(client, **fields):
    body = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD} | fields
    return client.post(REGISTER, json=body)


# Registration


def test_register_returns_the_user_and_its_location(client):
    response = register(client, email="  Ann@Example.COM ")
    assert response.status_code == 201
    user = response.get_json()["data"]
    assert response.headers["Location"] == f"http://localhost/api/v1/users/{user['id']}"
    assert set(user) == {
        "id",
        "name",
        "email",
        "role",
        "email_verified",
        "created_at",
        "updated_at",
    }
    assert user["email"] == "ann@example.com"
    assert user["email_verified"] is False
    assert user["role"] == "user"
    assert user["created_at"].endswith("Z")
    assert "password" not in response.get_data(as_text=True)


def test_the_password_is_stored_as_an_argon2id_hash(app, client):
    from bookshelf.extensions import db
    from bookshelf.models import User

    register(client)
    with app.app_context():
        stored = db.session.get(User, 1).password_hash
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


@pytest.mark.parametrize("email", ["ann@example.com", "ANN@EXAMPLE.COM", " ann@example.com"])
def test_a_duplicate_email_is_409_whatever_its_case(client, email):
    register(client)
    error = assert_error(register(client, email=email), 409, "CONFLICT")
    assert error["details"] == {"email": "is already registered"}


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"password": "short7!"}, "password"),
        ({"password": "x" * 129}, "password"),
        ({"password": 12345678}, "password"),
        ({"email": "not-an-email"}, "email"),
        ({"email": ["ann@example.com"]}, "email"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": True}, "name"),
        ({"role": "admin"}, "role"),
        ({"is_admin": True}, "is_admin"),
    ],
)
def test_invalid_registrations_are_422_naming_the_field(client, fields, bad):
    error = assert_error(register(client, **fields), 422, "VALIDATION_ERROR")
    assert list(error["details"]) == [bad]


def test_missing_fields_are_all_reported(client):
    error = assert_error(client.post(REGISTER, json={}), 422, "VALIDATION_ERROR")
    assert error["details"] == dict.fromkeys(("name", "email", "password"), "is required")


def test_an_empty_body_is_treated_as_no_fields(client):
    error = assert_error(client.post(REGISTER), 422, "VALIDATION_ERROR")
    assert set(error["details"]) == {"name", "email", "password"}


def test_passwords_of_8_and_128_characters_are_accepted(client):
    assert register(client, password="zq7.vb3!").status_code == 201
    long = ("tangerine quokka " * 8)[:128]
    assert register(client, email="b@example.com", password=long).status_code == 201


# Login


def test_login_returns_a_token_pair_and_the_user(client):
    register(client)
    response = client.post(LOGIN, json={"email": "ANN@example.com", "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()["data"]
    assert set(body) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "user",
        "device_token",
    }
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["user"]["email"] == "ann@example.com"
    assert client.get(ME, headers=bearer(body["access_token"])).status_code == 200


def test_unknown_email_and_wrong_password_get_the_same_answer(app, client, monkeypatch):
    from bookshelf.services import auth as auth_service

    register(client)
    checks = []
    real_verify = auth_service.verify_password
    monkeypatch.setattr(
        auth_service, "verify_password", lambda h, p: checks.append(h) or real_verify(h, p)
    )
    wrong = client.post(LOGIN, json={"email": "ann@example.com", "password": "wrong-password"})
    unknown = client.post(LOGIN, json={"email": "bob@example.com", "password": "wrong-password"})
    for response in (wrong, unknown):
        assert_error(response, 401, "INVALID_CREDENTIALS")
    assert wrong.get_json()["error"] == unknown.get_json()["error"]
    # Both paths pay for one hash verification, so their timing is alike.
    assert len(checks) == 2 and checks[1] is None


def test_login_with_missing_fields_is_422(client):
    error = assert_error(
        client.post(LOGIN, json={"email": "a@example.com"}), 422, "VALIDATION_ERROR"
    )
    assert error["details"] == {"password": "is required"}


# Tokens


def test_me_returns_the_current_user(client, auth):
    user, headers = auth.user()
    response = client.get(ME, headers=headers)
    assert response.get_json()["data"] == user


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "UNAUTHORIZED"),
        ({"Authorization": "Bearer"}, "TOKEN_INVALID"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "UNAUTHORIZED"),
        ({"Authorization": "Bearer garbage"}, "TOKEN_INVALID"),
        ({"Authorization": "Bearer a.b.c"}, "TOKEN_INVALID"),
        ({"Authorization": "Bearer " + "x" * 5000}, "TOKEN_INVALID"),
    ],
)
def test_missing_or_malformed_tokens_are_401(client, headers, code):
    response = client.get(ME, headers=headers)
    assert_error(response, 401, code)
    assert response.headers["WWW-Authenticate"] == "Bearer"


def _claims(client, auth):
    user, headers = auth.user()
    token = headers["Authorization"].split()[1]
    return pyjwt.decode(token, options={"verify_signature": False})


def test_a_token_signed_with_another_key_is_401(client, auth):
    claims = _claims(client, auth)
    forged = pyjwt.encode(claims, "another-key-that-is-long-enough-0123456789", algorithm="HS256")
    assert_error(client.get(ME, headers=bearer(forged)), 401, "TOKEN_INVALID")


def test_a_remembered_token_vouches_for_no_lookalike(client, auth):
    """A verified token's claims are kept (bookshelf.auth.verified), under the exact string."""
    _, headers = auth.user()
    token = headers["Authorization"].split()[1]
    assert client.get(ME, headers=headers).status_code == 200
    header, payload, signature = token.split(".")
    claims = pyjwt.decode(token, options={"verify_signature": False})
    other_subject = _b64(claims | {"sub": str(int(claims["sub"]) + 1)})
    lookalikes = [
        f"{header}.{payload}.{signature[:-2]}{'BB' if signature.endswith('AA') else 'AA'}",
        f"{header}.{payload}.{signature[:-4]}",
        f"{header}.{other_subject}.{signature}",
        f"{header}.{payload}.",
        f"{header}.{payload}",
    ]
    for lookalike in lookalikes:
        assert_error(client.get(ME, headers=bearer(lookalike)), 401, "TOKEN_INVALID")
    assert client.get(ME, headers=headers).status_code == 200


def test_remembered_tokens_are_bounded_and_expire(monkeypatch):
    monkeypatch.setattr(verified, "MAX_TOKENS", 3)
    tokens = verified.VerifiedTokens()
    soon = time.time() + 60
    for i in range(5):
        tokens.add(f"t{i}", {"sub": str(i), "exp": soon})
    assert [tokens.get(f"t{i}") for i in range(5)][:2] == [None, None]
    assert [tokens.get(f"t{i}")["sub"] for i in range(2, 5)] == ["2", "3", "4"]
    tokens.add("old", {"sub": "9", "exp": time.time() - 1})
    assert tokens.get("old") is None


def _b64(data) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_401(client, auth):
    claims = _claims(client, auth)

    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    assert_error(client.get(ME, headers=bearer(unsigned)), 401, "TOKEN_INVALID")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_another_algorithm_with_the_right_key_is_401(app, client, auth):
    claims = _claims(client, auth)
    token = pyjwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS512")
    assert_error(client.get(ME, headers=bearer(token)), 401, "TOKEN_INVALID")


@pytest.mark.parametrize("propagate", [False, True])
def test_an_expired_token_is_401_not_500(make_app, propagate):
    """Flask-RESTful must not turn Flask-JWT-Extended's errors into 500s in production."""
    app = make_app(JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=1), PROPAGATE_EXCEPTIONS=propagate)
    client = app.test_client()
    register(client)
    tokens = client.post(LOGIN, json={"email": "ann@example.com", "password": PASSWORD})
    token = tokens.get_json()["data"]["access_token"]
    assert client.get(ME, headers=bearer(token)).status_code == 200  # verified, and remembered
    time.sleep(2)
    assert_error(client.get(ME, headers=bearer(token)), 401, "TOKEN_EXPIRED")
    assert_error(client.post("/api/v1/books", headers=bearer(token), json={}), 401, "TOKEN_EXPIRED")


def test_a_refresh_token_is_not_an_access_token(client, auth):
    user = auth.register()
    tokens = auth.login(user["email"])
    error = assert_error(
        client.get(ME, headers=bearer(tokens["refresh_token"])), 401, "TOKEN_INVALID"
    )
    assert error["message"]


def test_an_access_token_is_not_a_refresh_token(client, auth):
    user = auth.register()
    tokens = auth.login(user["email"])
    assert_error(client.post(REFRESH, headers=bearer(tokens["access_token"])), 401, "TOKEN_INVALID")


def test_refresh_rotates_the_pair(client, auth):
    user = auth.register()
    first = auth.login(user["email"])
    response = client.post(REFRESH, headers=bearer(first["refresh_token"]))
    assert response.status_code == 200
    second = response.get_json()["data"]
    assert set(second) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get(ME, headers=bearer(second["access_token"])).status_code == 200
    assert client.post(REFRESH, headers=bearer(second["refresh_token"])).status_code == 200


def test_a_spent_refresh_token_reused_after_the_grace_ends_its_session(make_app):
    app = make_app(REFRESH_REUSE_GRACE=0)
    client, auth = app.test_client(), Auth(app, app.test_client())
    user = auth.register()
    first = auth.login(user["email"])
    other_login = auth.login(user["email"])
    second = client.post(REFRESH, headers=bearer(first["refresh_token"])).get_json()["data"]
    time.sleep(1.1)  # past a grace of 0 s, to the second
    # The first token is replayed (stolen): 401, and its whole session ends with it.
    assert_error(client.post(REFRESH, headers=bearer(first["refresh_token"])), 401, "TOKEN_REVOKED")
    assert_error(
        client.post(REFRESH, headers=bearer(second["refresh_token"])), 401, "TOKEN_REVOKED"
    )
    assert_error(client.get(ME, headers=bearer(second["access_token"])), 401, "TOKEN_REVOKED")
    # Other logins are untouched.
    assert client.post(REFRESH, headers=bearer(other_login["refresh_token"])).status_code == 200


def test_refresh_takes_no_body_fields(client, auth):
    user = auth.register()
    tokens = auth.login(user["email"])
    response = client.post(REFRESH, headers=bearer(tokens["refresh_token"]), json={"x": 1})
    assert assert_error(response, 422, "VALIDATION_ERROR")["details"] == {
        "x": "is not a known field"
    }


def test_logout_revokes_the_access_token_and_the_refresh_token(client, auth):
    user = auth.register()
    tokens = auth.login(user["email"])
    response = client.post(
        LOGOUT,
        headers=bearer(tokens["access_token"]),
        json={"refresh_token": tokens["refresh_token"]},
    )
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_error(client.get(ME, headers=bearer(tokens["access_token"])), 401, "TOKEN_REVOKED")
    assert_error(
        client.post(REFRESH, headers=bearer(tokens["refresh_token"])), 401, "TOKEN_REVOKED"
    )


def test_logout_without_a_body_ends_the_whole_session(client, auth):
    user = auth.register()
    tokens = auth.login(user["email"])
    refreshed = client.post(REFRESH, headers=bearer(tokens["refresh_token"])).get_json()["data"]
    assert client.post(LOGOUT, headers=bearer(tokens["access_token"])).status_code == 204
    for access_token in (tokens["access_token"], refreshed["access_token"]):
        assert_error(client.get(ME, headers=bearer(access_token)), 401, "TOKEN_REVOKED")
    assert_error(
        client.post(REFRESH, headers=bearer(refreshed["refresh_token"])), 401, "TOKEN_REVOKED"
    )


def test_logout_refuses_someone_elses_refresh_token(client, auth):
    ann = auth.login(auth.register()["email"])
    bob = auth.login(auth.register()["email"])
    response = client.post(
        LOGOUT, headers=bearer(ann["access_token"]), json={"refresh_token": bob["refresh_token"]}
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert set(error["details"]) == {"refresh_token"}
    assert client.post(REFRESH, headers=bearer(bob["refresh_token"])).status_code == 200
    # Nothing was committed: Ann's access token still works.
    assert client.get(ME, headers=bearer(ann["access_token"])).status_code == 200


def test_revocation_holds_across_app_instances(make_app, client, auth):
    """Revocation lives in the database, not in one process's memory."""
    user = auth.register()
    tokens = auth.login(user["email"])
    client.post(LOGOUT, headers=bearer(tokens["access_token"]))
    other_process = make_app().test_client()
    assert_error(
        other_process.get(ME, headers=bearer(tokens["access_token"])), 401, "TOKEN_REVOKED"
    )


def test_auth_responses_are_never_html(client):
    response = client.get(ME, headers={"Accept": "text/html"})
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("sub", ["99999999999999999999", "-1", "0", "2147483648"])
def test_a_signed_token_for_an_impossible_user_id_is_401(app, client, auth, sub):
    """Even with the right key (a leaked secret, a bug elsewhere), a subject no row can have is
    an unknown user, never a driver overflow turned into a 500."""
    claims = _claims(client, auth) | {"sub": sub}
    token = pyjwt.encode(claims, app.config["JWT_SECRET_KEY"], algorithm="HS256")
    error = assert_error(client.get(ME, headers=bearer(token)), 401, "TOKEN_INVALID")
    assert error["message"] == "The token's user no longer exists."
