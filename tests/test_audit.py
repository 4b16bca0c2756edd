"""Audit events: one JSON line on "bookshelf.audit" per security event, with actor, subject,
request id and client address, and never a password or token."""

import json
import time

from tests.support import PASSWORD, Auth, bearer

VERIFY = "/api/v1/auth/verify-email"
RESET = "/api/v1/auth/password-reset"
CONFIRM = "/api/v1/auth/password-reset/confirm"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
SESSIONS = "/api/v1/auth/sessions"
ADDRESS = "203.0.113.7"
NEW_PASSWORD = "a brand new secret"


def audit_lines(capsys) -> list[dict]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    return [line for line in lines if line.get("logger") == "bookshelf.audit"]


def call(client, method, path, request_id, **kwargs):
    """A request from ADDRESS with the given request id."""
    environ = {"REMOTE_ADDR": ADDRESS}
    headers = kwargs.pop("headers", {}) | {"X-Request-ID": request_id}
    return client.open(path, method=method, headers=headers, environ_base=environ, **kwargs)


def login(client, email, password=PASSWORD, request_id="req-login"):
    return call(client, "POST", LOGIN, request_id, json={"email": email, "password": password})


def assert_event(line, event, *, actor_id, subject_id, request_id, **fields):
    assert line["event"] == event
    assert line["level"] == "INFO" and line["message"] == "audit"
    assert line["actor_id"] == actor_id and line["subject_id"] == subject_id
    assert line["request_id"] == request_id
    assert line["remote_addr"] == ADDRESS
    for name, value in fields.items():
        assert line[name] == value, name


def assert_no_secrets(lines, *secrets):
    text = json.dumps(lines)
    for secret in secrets:
        assert secret not in text
    assert 'password"' not in text and 'token"' not in text


def test_login_succeeded_and_failed(client, auth, capsys):
    user = auth.register()
    capsys.readouterr()
    tokens = login(client, user["email"], request_id="req-ok").get_json()["data"]
    assert login(client, user["email"], "wrong password!", request_id="req-bad").status_code == 401
    assert login(client, "nobody@example.com", request_id="req-none").status_code == 401
    ok, bad, unknown = lines = audit_lines(capsys)
    assert_event(
        ok, "login_succeeded", actor_id=user["id"], subject_id=user["id"], request_id="req-ok"
    )
    assert isinstance(ok["session_id"], str)
    assert_event(
        bad,
        "login_failed",
        actor_id=None,
        subject_id=user["id"],
        request_id="req-bad",
        email=user["email"],
    )
    assert_event(
        unknown,
        "login_failed",
        actor_id=None,
        subject_id=None,
        request_id="req-none",
        email="nobody@example.com",
    )
    assert_no_secrets(
        lines,
        PASSWORD,
        "wrong password!",
        tokens["access_token"],
        tokens["refresh_token"],
        tokens["device_token"],
    )


def test_refresh_reuse_is_audited(make_app, capsys):
    app = make_app(REFRESH_REUSE_GRACE=1)
    client = app.test_client()
    user = Auth(app, client).register()
    tokens = login(client, user["email"]).get_json()["data"]
    assert client.post(REFRESH, headers=bearer(tokens["refresh_token"])).status_code == 200
    time.sleep(2.1)
    capsys.readouterr()
    reused = call(client, "POST", REFRESH, "req-reuse", headers=bearer(tokens["refresh_token"]))
    assert reused.status_code == 401
    [line] = lines = audit_lines(capsys)
    assert_event(
        line, "refresh_reused", actor_id=user["id"], subject_id=user["id"], request_id="req-reuse"
    )
    assert isinstance(line["session_id"], str)
    assert_no_secrets(lines, tokens["refresh_token"])


def test_ending_sessions_is_audited(client, auth, capsys):
    user = auth.register()
    first, second, third = (login(client, user["email"]).get_json()["data"] for _ in range(3))
    sessions = client.get(SESSIONS, headers=bearer(first["access_token"])).get_json()["data"]
    session_ids = {s["id"] for s in sessions}
    capsys.readouterr()
    headers = bearer(first["access_token"])
    assert (
        call(
            client, "POST", LOGOUT, "req-logout", headers=bearer(third["access_token"])
        ).status_code
        == 204
    )
    [other] = [
        s for s in client.get(SESSIONS, headers=headers).get_json()["data"] if not s.get("current")
    ]
    assert (
        call(client, "DELETE", f"{SESSIONS}/{other['id']}", "req-one", headers=headers).status_code
        == 204
    )
    assert call(client, "DELETE", SESSIONS, "req-others", headers=headers).status_code == 204
    logout, one, others = lines = audit_lines(capsys)
    ids = {"actor_id": user["id"], "subject_id": user["id"]}
    assert_event(logout, "session_ended", **ids, request_id="req-logout", reason="logout")
    assert_event(
        one, "session_ended", **ids, request_id="req-one", reason="ended", session_id=other["id"]
    )
    assert_event(
        others,
        "session_ended",
        **ids,
        request_id="req-others",
        reason="others_ended",
        session_id=None,
    )
    assert {logout["session_id"], one["session_id"], others["kept_session_id"]} == session_ids
    assert_no_secrets(lines, first["access_token"], second["refresh_token"], third["access_token"])


def test_password_email_role_and_deletion_are_audited(client, auth, capsys):
    user, headers = auth.user()
    admin, admin_headers = auth.admin()
    url = f"/api/v1/users/{user['id']}"
    capsys.readouterr()
    body = {"password": NEW_PASSWORD, "email": "moved@example.com", "current_password": PASSWORD}
    assert call(client, "PATCH", url, "req-self", headers=headers, json=body).status_code == 200
    role = call(client, "PATCH", url, "req-role", headers=admin_headers, json={"role": "admin"})
    assert role.status_code == 200
    same = call(client, "PATCH", url, "req-same", headers=admin_headers, json={"role": "admin"})
    assert same.status_code == 200
    assert call(client, "DELETE", url, "req-delete", headers=admin_headers).status_code == 204
    password, email, role, deleted = lines = audit_lines(capsys)
    own = {"actor_id": user["id"], "subject_id": user["id"], "request_id": "req-self"}
    assert_event(password, "password_changed", **own)
    assert_event(email, "email_change_requested", **own)  # changed once verified
    by_admin = {"actor_id": admin["id"], "subject_id": user["id"]}
    assert_event(
        role, "role_changed", **by_admin, request_id="req-role", old_role="user", new_role="admin"
    )
    assert_event(deleted, "account_deleted", **by_admin, request_id="req-delete")
    assert_no_secrets(lines, PASSWORD, NEW_PASSWORD)


def test_verification_and_password_reset_are_audited_without_their_tokens(client, auth, capsys):
    user = auth.register(email="ann@example.com")
    verify_token = auth.mailed_token("ann@example.com")
    capsys.readouterr()
    verify = {"token": verify_token}
    assert call(client, "POST", VERIFY, "req-verify", json=verify).status_code == 200
    for email, request_id in (("ann@example.com", "req-known"), ("no@example.com", "req-none")):
        reset = call(client, "POST", RESET, request_id, json={"email": email})
        assert reset.status_code == 202
    reset_token = auth.mailed_token("ann@example.com", "reset-password")
    body = {"token": reset_token, "new_password": NEW_PASSWORD}
    assert call(client, "POST", CONFIRM, "req-confirm", json=body).status_code == 204
    verified, known, unknown, reset = lines = audit_lines(capsys)
    own = {"actor_id": user["id"], "subject_id": user["id"]}
    assert_event(verified, "email_verified", **own, request_id="req-verify")
    assert_event(
        known,
        "password_reset_requested",
        actor_id=None,
        subject_id=user["id"],
        request_id="req-known",
    )
    assert_event(
        unknown, "password_reset_requested", actor_id=None, subject_id=None, request_id="req-none"
    )
    assert_event(reset, "password_reset", **own, request_id="req-confirm")
    assert_no_secrets(lines, verify_token, reset_token, NEW_PASSWORD)
