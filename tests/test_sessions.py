"""Sessions for mobile apps: the refresh grace, one session per login on a device, ending
sessions (one, all others, by logout, by a password change, with the account), and
re-authentication for changing one's own password or email."""

import time

import pytest
from flask_jwt_extended import create_access_token

from bookshelf.services import sessions
from tests.support import PASSWORD, Auth, assert_error, bearer

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/auth/me"
SESSIONS = "/api/v1/auth/sessions"


def login(client, email, device=None, user_agent=None):
    body = {"email": email, "password": PASSWORD} | ({"device_name": device} if device else {})
    headers = {"User-Agent": user_agent} if user_agent else {}
    response = client.post(LOGIN, json=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def refresh(client, refresh_token):
    return client.post(REFRESH, headers=bearer(refresh_token))


def works(client, tokens) -> bool:
    return client.get(ME, headers=bearer(tokens["access_token"])).status_code == 200


def listed(client, tokens) -> list[dict]:
    response = client.get(SESSIONS, headers=bearer(tokens["access_token"]))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


# --- the refresh grace -----------------------------------------------------------------------


def test_a_refresh_token_presented_again_within_the_grace_gets_the_same_successor(client, auth):
    user = auth.register()
    tokens = login(client, user["email"])
    first = refresh(client, tokens["refresh_token"]).get_json()["data"]
    again = refresh(client, tokens["refresh_token"])
    assert again.status_code == 200
    second = again.get_json()["data"]
    assert second["refresh_token"] == first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert works(client, first) and works(client, second)
    # The successor then rotates as usual.
    assert refresh(client, first["refresh_token"]).status_code == 200


def test_within_the_grace_a_later_rotation_is_followed_to_the_live_token(client, auth):
    user = auth.register()
    tokens = login(client, user["email"])
    first = refresh(client, tokens["refresh_token"]).get_json()["data"]
    second = refresh(client, first["refresh_token"]).get_json()["data"]
    late = refresh(client, tokens["refresh_token"])
    assert late.status_code == 200
    assert late.get_json()["data"]["refresh_token"] == second["refresh_token"]


def test_after_the_grace_reuse_ends_the_session_and_only_it(make_app):
    app = make_app(REFRESH_REUSE_GRACE=1)
    client = app.test_client()
    user = Auth(app, client).register()
    tokens, other = login(client, user["email"]), login(client, user["email"])
    successor = refresh(client, tokens["refresh_token"]).get_json()["data"]
    time.sleep(2.1)
    assert_error(refresh(client, tokens["refresh_token"]), 401, "TOKEN_REVOKED")
    assert_error(refresh(client, successor["refresh_token"]), 401, "TOKEN_REVOKED")
    assert not works(client, successor) and not works(client, tokens)
    assert works(client, other) and refresh(client, other["refresh_token"]).status_code == 200


# --- listing and ending sessions ------------------------------------------------------------


def test_each_login_is_a_session_listed_with_its_device(client, auth):
    user = auth.register()
    phone = login(client, user["email"], device="Ann's iPhone")
    browser = login(client, user["email"], user_agent="Mozilla/5.0 (X11; Linux)\x01 Firefox/140")
    login(client, user["email"])  # no name: the test client's own User-Agent
    time.sleep(0.01)
    refresh(client, phone["refresh_token"])  # the phone was used last
    found = listed(client, browser)
    names = [s["device_name"] for s in found]
    assert names[0] == "Ann's iPhone"
    assert names[1:] in (
        ["Mozilla/5.0 (X11; Linux)  Firefox/140", names[2]],
        [names[1], "Mozilla/5.0 (X11; Linux)  Firefox/140"],
    )
    assert any(name.startswith("Werkzeug/") for name in names)
    assert [s["current"] for s in found].count(True) == 1
    assert next(s for s in found if s["current"])["device_name"].startswith("Mozilla/5.0")
    for session in found:
        assert set(session) == {
            "id",
            "device_name",
            "created_at",
            "last_used_at",
            "last_ip",
            "current",
        }
        assert session["last_ip"] == "127.0.0.1"
        assert session["created_at"] <= session["last_used_at"]
    assert found[0]["last_used_at"] > found[0]["created_at"]  # the phone's refresh


def test_sessions_are_paged_and_need_a_token(client, auth):
    user = auth.register()
    for _ in range(3):
        tokens = login(client, user["email"])
    response = client.get(SESSIONS + "?per_page=2", headers=bearer(tokens["access_token"]))
    assert len(response.get_json()["data"]) == 2
    assert response.get_json()["meta"]["total"] == 3
    assert_error(client.get(SESSIONS), 401, "UNAUTHORIZED")


def test_ending_one_session_refuses_all_its_tokens_at_once(client, auth):
    user = auth.register()
    lost_phone, laptop = login(client, user["email"]), login(client, user["email"])
    refreshed = refresh(client, lost_phone["refresh_token"]).get_json()["data"]
    phone_id = next(s["id"] for s in listed(client, laptop) if not s["current"])
    response = client.delete(f"{SESSIONS}/{phone_id}", headers=bearer(laptop["access_token"]))
    assert response.status_code == 204 and response.get_data() == b""
    for tokens in (lost_phone, refreshed):
        assert_error(client.get(ME, headers=bearer(tokens["access_token"])), 401, "TOKEN_REVOKED")
    assert_error(refresh(client, refreshed["refresh_token"]), 401, "TOKEN_REVOKED")
    assert works(client, laptop)
    assert [s["current"] for s in listed(client, laptop)] == [True]
    again = client.delete(f"{SESSIONS}/{phone_id}", headers=bearer(laptop["access_token"]))
    assert_error(again, 404, "NOT_FOUND")


@pytest.mark.parametrize("session_id", ["someone-elses", "not-a-session", "0" * 36])
def test_another_users_or_an_unknown_session_is_404(client, auth, session_id):
    ann, bob = auth.register(), auth.register()
    ann_tokens, bob_tokens = login(client, ann["email"]), login(client, bob["email"])
    if session_id == "someone-elses":
        session_id = listed(client, bob_tokens)[0]["id"]
    response = client.delete(f"{SESSIONS}/{session_id}", headers=bearer(ann_tokens["access_token"]))
    assert_error(response, 404, "NOT_FOUND")
    assert works(client, bob_tokens)


def test_log_out_other_devices_keeps_only_the_current_session(client, auth):
    user = auth.register()
    others = [login(client, user["email"]) for _ in range(3)]
    this = login(client, user["email"])
    stranger = login(client, auth.register()["email"])
    response = client.delete(SESSIONS, headers=bearer(this["access_token"]))
    assert response.status_code == 204
    for tokens in others:
        assert not works(client, tokens)
        assert_error(refresh(client, tokens["refresh_token"]), 401, "TOKEN_REVOKED")
    assert works(client, this) and works(client, stranger)
    assert len(listed(client, this)) == 1


def test_logout_ends_the_current_session(client, auth):
    user = auth.register()
    this, other = login(client, user["email"]), login(client, user["email"])
    assert client.post(LOGOUT, headers=bearer(this["access_token"])).status_code == 204
    assert not works(client, this)
    assert_error(refresh(client, this["refresh_token"]), 401, "TOKEN_REVOKED")
    assert len(listed(client, other)) == 1


def test_an_access_token_from_before_sessions_still_works(app, client, auth):
    user = auth.register()
    with app.app_context():
        old_token = create_access_token(identity=str(user["id"]))
    assert client.get(ME, headers=bearer(old_token)).status_code == 200
    assert client.post(LOGOUT, headers=bearer(old_token)).status_code == 204
    assert_error(client.get(ME, headers=bearer(old_token)), 401, "TOKEN_REVOKED")


def test_deleting_the_account_ends_every_session(client, auth):
    user = auth.register()
    sessions_ = [login(client, user["email"]) for _ in range(2)]
    url = f"/api/v1/users/{user['id']}"
    assert client.delete(url, headers=bearer(sessions_[0]["access_token"])).status_code == 204
    for tokens in sessions_:
        assert client.get(ME, headers=bearer(tokens["access_token"])).status_code == 401
        assert refresh(client, tokens["refresh_token"]).status_code == 401


def test_an_admin_setting_a_password_ends_every_session_of_the_account(client, auth):
    _, admin_headers = auth.admin()
    user = auth.register()
    tokens = login(client, user["email"])
    body = {"password": "a brand new secret"}
    response = client.patch(f"/api/v1/users/{user['id']}", headers=admin_headers, json=body)
    assert response.status_code == 200
    assert not works(client, tokens)


# --- re-authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [{"password": "a brand new secret"}, {"email": "new@example.com"}],
    ids=["password", "email"],
)
def test_changing_ones_own_password_or_email_needs_the_current_password(client, auth, body):
    user = auth.register()
    tokens = login(client, user["email"])
    url, headers = f"/api/v1/users/{user['id']}", bearer(tokens["access_token"])
    error = assert_error(client.patch(url, headers=headers, json=body), 422, "VALIDATION_ERROR")
    assert set(error["details"]) == {"current_password"}
    wrong = body | {"current_password": "not my password"}
    assert_error(client.patch(url, headers=headers, json=wrong), 401, "INVALID_CREDENTIALS")
    assert works(client, tokens), "a wrong current password ends nothing"
    right = client.patch(url, headers=headers, json=body | {"current_password": PASSWORD})
    assert right.status_code == 200


def test_other_changes_need_no_current_password(client, auth):
    user, headers = auth.user()
    url = f"/api/v1/users/{user['id']}"
    assert client.patch(url, headers=headers, json={"name": "Renamed"}).status_code == 200
    body = {"name": "Again", "email": user["email"].upper()}  # PUT with the same email
    assert client.put(url, headers=headers, json=body).status_code == 200


def test_an_admin_changing_another_account_needs_no_current_password(client, auth):
    _, admin_headers = auth.admin()
    user = auth.register()
    url = f"/api/v1/users/{user['id']}"
    body = {"email": "moved@example.com", "password": "set by the admin"}
    assert client.patch(url, headers=admin_headers, json=body).status_code == 200


def test_an_admin_changing_their_own_password_needs_it(client, auth):
    admin, admin_headers = auth.admin()
    url = f"/api/v1/users/{admin['id']}"
    response = client.patch(url, headers=admin_headers, json={"password": "a brand new secret"})
    assert set(assert_error(response, 422, "VALIDATION_ERROR")["details"]) == {"current_password"}


def test_wrong_current_passwords_count_against_the_sessions_own_limit(make_app):
    """Like a known device's login: the session's limit stands in for the email's."""
    app = make_app(LOGIN_FAILURE_LIMIT_PER_DEVICE="2 per minute")
    client = app.test_client()
    auth = Auth(app, client)
    user, headers = auth.user()
    url = f"/api/v1/users/{user['id']}"
    wrong = {"password": "a brand new secret", "current_password": "guess"}
    statuses = [client.patch(url, headers=headers, json=wrong).status_code for _ in range(3)]
    assert statuses == [401, 401, 429]
    assert_error(client.patch(url, headers=headers, json=wrong), 429, "RATE_LIMITED")
    other_session = auth.login(user["email"])  # another device of hers is not limited
    other_headers = {"Authorization": f"Bearer {other_session['access_token']}"}
    assert client.patch(url, headers=other_headers, json=wrong).status_code == 401


def test_strangers_failed_logins_do_not_block_the_owners_password_change(make_app):
    app = make_app(LOGIN_FAILURE_LIMIT_PER_EMAIL="2 per minute")
    client = app.test_client()
    user, headers = Auth(app, client).user()
    for _ in range(3):  # from anywhere, for her email
        client.post(LOGIN, json={"email": user["email"], "password": "guess"})
    failed_login = client.post(LOGIN, json={"email": user["email"], "password": "guess"})
    assert_error(failed_login, 429, "RATE_LIMITED")
    body = {"password": "a brand new secret", "current_password": PASSWORD}
    response = client.patch(f"/api/v1/users/{user['id']}", headers=headers, json=body)
    assert response.status_code == 200, response.get_json()


# --- the service layer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "user_agent", "name"),
    [
        ("Ann's iPhone", "okhttp/4.12", "Ann's iPhone"),
        (None, "Bookshelf/2.1 (iPhone; iOS 18.1)", "Bookshelf/2.1 (iPhone; iOS 18.1)"),
        (None, "a\r\nb\x00c", "a b c"),
        (None, "x" * 300, "x" * 100),
        (None, "", "Unknown device"),
        (None, None, "Unknown device"),
        (None, " \t ", "Unknown device"),
    ],
)
def test_the_device_name_comes_from_the_app_else_its_user_agent(given, user_agent, name):
    assert sessions.device_name(given, user_agent) == name
