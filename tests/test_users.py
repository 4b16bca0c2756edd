"""/api/v1/users: output shape, admin listing, self-or-admin reads and writes, soft delete."""

import re
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support import PASSWORD, assert_error, bearer

USERS = "/api/v1/users"
USER_FIELDS = {"id", "name", "email", "role", "email_verified", "created_at", "updated_at"}
READ_ONLY = {"id", "created_at", "updated_at"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
# A deleted user's token: revoked or invalid, never "missing" (UNAUTHORIZED).
DEAD_TOKEN_CODES = {"TOKEN_REVOKED", "TOKEN_INVALID"}


# --- helpers ---------------------------------------------------------------------------------


def url(user_id):
    return f"{USERS}/{user_id}"


def assert_no_secrets(response):
    text = response.get_data(as_text=True)
    assert "password" not in text.lower()
    assert "$argon2" not in text
    assert "hash" not in text.lower()


def assert_user_shape(user):
    assert set(user) == USER_FIELDS
    assert type(user["id"]) is int
    assert user["role"] in {"user", "admin"}
    assert TIMESTAMP.fullmatch(user["created_at"]), user["created_at"]
    assert TIMESTAMP.fullmatch(user["updated_at"]), user["updated_at"]


def assert_user(response, status=200):
    """One user in the success envelope, without any secret; returns the user."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert_no_secrets(response)
    body = response.get_json()
    assert set(body) == {"data", "meta"}
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    assert_user_shape(body["data"])
    return body["data"]


def assert_page(response):
    """A list of users in the list envelope; returns (users, meta)."""
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert_no_secrets(response)
    body = response.get_json()
    assert set(body) == {"data", "meta"}
    assert set(body["meta"]) == {"request_id", "page", "per_page", "total", "pages"}
    assert body["meta"]["request_id"] == response.headers["X-Request-ID"]
    for user in body["data"]:
        assert_user_shape(user)
    return body["data"], body["meta"]


def links(response):
    """The RFC 8288 Link header as {rel: {query parameter: value}}."""
    result = {}
    header = response.headers.get("Link", "")
    for part in filter(None, (p.strip() for p in header.split(","))):
        target, rel = re.fullmatch(r'<([^>]*)>\s*;\s*rel="(\w+)"', part).groups()
        split = urlsplit(target)
        assert split.path == USERS
        result[rel] = {k: v[0] for k, v in parse_qs(split.query).items()}
    return result


def assert_token_rejected(response):
    """401 for a token that was valid a moment ago: revoked or invalid, never "missing"."""
    code = response.get_json()["error"]["code"] if response.is_json else None
    assert code in DEAD_TOKEN_CODES, response.get_data(as_text=True)
    assert_error(response, 401, code)
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def when(timestamp):
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def login_status(client, email, password=PASSWORD):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


def make_users(auth, count):
    return [auth.register() for _ in range(count)]


# --- output ------------------------------------------------------------------------------------


def test_a_user_reads_themself_with_exactly_the_public_fields(client, auth):
    user, headers = auth.user(name="Ada Lovelace", email="ada@example.com")
    found = assert_user(client.get(url(user["id"]), headers=headers))
    assert found == user
    assert found["name"] == "Ada Lovelace"
    assert found["email"] == "ada@example.com"
    assert found["role"] == "user"


def test_register_and_login_responses_carry_no_secret(client, auth):
    user = auth.register()
    response = login_status(client, user["email"])
    assert response.status_code == 200
    assert "$argon2" not in response.get_data(as_text=True)
    assert set(response.get_json()["data"]["user"]) == USER_FIELDS


# --- GET /users --------------------------------------------------------------------------------


def test_listing_users_needs_a_token(client):
    error = assert_error(client.get(USERS), 401, "UNAUTHORIZED")
    assert error["message"]


def test_listing_users_is_forbidden_to_a_normal_user(client, auth):
    _, headers = auth.user()
    assert_error(client.get(USERS, headers=headers), 403, "FORBIDDEN")


def test_an_admin_lists_users_with_default_pagination(client, auth):
    admin, headers = auth.admin()
    others = make_users(auth, 3)
    users, meta = assert_page(client.get(USERS, headers=headers))
    assert meta | {"request_id": None} == {
        "request_id": None,
        "page": 1,
        "per_page": 20,
        "total": 4,
        "pages": 1,
    }
    assert {u["id"] for u in users} == {admin["id"], *(u["id"] for u in others)}
    by_id = {u["id"]: u for u in users}
    for other in others:
        assert by_id[other["id"]] == other
    assert links(client.get(USERS, headers=headers)) == {
        "first": {"page": "1"},
        "last": {"page": "1"},
    }


def test_an_admin_pages_through_users_with_link_headers(client, auth):
    admin, headers = auth.admin()
    make_users(auth, 4)  # 5 live users in all

    seen = []
    for number, size in ((1, 2), (2, 2), (3, 1)):
        response = client.get(f"{USERS}?page={number}&per_page=2", headers=headers)
        users, meta = assert_page(response)
        assert len(users) == size
        assert (meta["page"], meta["per_page"], meta["total"], meta["pages"]) == (number, 2, 5, 3)
        seen += [u["id"] for u in users]
    assert len(set(seen)) == 5 and admin["id"] in seen

    middle = links(client.get(f"{USERS}?page=2&per_page=2", headers=headers))
    assert middle == {
        "first": {"page": "1", "per_page": "2"},
        "prev": {"page": "1", "per_page": "2"},
        "next": {"page": "3", "per_page": "2"},
        "last": {"page": "3", "per_page": "2"},
    }
    first = links(client.get(f"{USERS}?per_page=2", headers=headers))
    assert set(first) == {"first", "next", "last"}
    last = links(client.get(f"{USERS}?page=3&per_page=2", headers=headers))
    assert set(last) == {"first", "prev", "last"}


def test_a_page_past_the_last_is_empty_with_the_true_total(client, auth):
    _, headers = auth.admin()
    make_users(auth, 2)
    users, meta = assert_page(client.get(f"{USERS}?page=9", headers=headers))
    assert users == []
    assert (meta["page"], meta["total"], meta["pages"]) == (9, 3, 1)


def test_deleted_users_are_not_listed(client, auth):
    _, headers = auth.admin()
    kept, gone = make_users(auth, 2)
    assert client.delete(url(gone["id"]), headers=headers).status_code == 204
    users, meta = assert_page(client.get(USERS, headers=headers))
    ids = {u["id"] for u in users}
    assert kept["id"] in ids and gone["id"] not in ids
    assert meta["total"] == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=abc", "page"),
        ("page=1.5", "page"),
        ("page=", "page"),
        ("page=1&page=2", "page"),
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("per_page=ten", "per_page"),
        ("per_page=-5", "per_page"),
        ("sort=name", "sort"),
        ("role=admin", "role"),
    ],
)
def test_bad_list_query_parameters_are_422(client, auth, query, field):
    _, headers = auth.admin()
    error = assert_error(client.get(f"{USERS}?{query}", headers=headers), 422, "VALIDATION_ERROR")
    assert field in error["details"]


def test_per_page_100_is_allowed(client, auth):
    _, headers = auth.admin()
    _, meta = assert_page(client.get(f"{USERS}?per_page=100", headers=headers))
    assert meta["per_page"] == 100


@pytest.mark.parametrize("method", ["post", "delete", "put", "patch"])
def test_other_methods_on_the_collection_are_405_with_allow(client, auth, method):
    _, headers = auth.admin()
    response = getattr(client, method)(USERS, headers=headers, json={"name": "x"})
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in response.headers["Allow"]


# --- GET /users/{id} ---------------------------------------------------------------------------


def test_an_admin_reads_any_user(client, auth):
    _, headers = auth.admin()
    other = auth.register()
    assert assert_user(client.get(url(other["id"]), headers=headers)) == other


def test_reading_a_user_needs_a_token(client, auth):
    user = auth.register()
    assert_error(client.get(url(user["id"])), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_a_normal_user_gets_403_for_any_other_id_existing_or_not(client, auth, method):
    _, headers = auth.user()
    other = auth.register()
    body = {"name": "Mallory", "email": "mallory@example.com"}
    send = getattr(client, method)
    kwargs = {"headers": headers} | ({} if method in {"get", "delete"} else {"json": body})
    existing = assert_error(send(url(other["id"]), **kwargs), 403, "FORBIDDEN")
    missing = assert_error(send(url(999_999), **kwargs), 403, "FORBIDDEN")
    assert existing == missing  # nothing tells the two apart


def test_an_admin_gets_404_for_an_unknown_id(client, auth):
    _, headers = auth.admin()
    assert_error(client.get(url(999_999), headers=headers), 404, "NOT_FOUND")


@pytest.mark.parametrize("path", [f"{USERS}/abc", f"{USERS}/0", f"{USERS}/-1", f"{USERS}/1.5"])
def test_a_non_integer_id_is_an_unknown_route(client, auth, path):
    _, headers = auth.admin()
    assert_error(client.get(path, headers=headers), 404, "NOT_FOUND")


# --- PUT /users/{id} ---------------------------------------------------------------------------


def test_put_replaces_name_and_email(client, auth):
    user, headers = auth.user()
    response = client.put(
        url(user["id"]),
        headers=headers,
        json={"name": "New Name", "email": "new@example.com", "current_password": PASSWORD},
    )
    updated = assert_user(response)
    assert updated["id"] == user["id"]
    # The name at once; the email once the link mailed to it is followed.
    assert (updated["name"], updated["email"], updated["role"]) == (
        "New Name",
        user["email"],
        "user",
    )
    assert updated["created_at"] == user["created_at"]
    assert when(updated["updated_at"]) > when(user["updated_at"])
    assert assert_user(client.get(url(user["id"]), headers=headers)) == updated
    verified = auth.verify("new@example.com")
    assert (verified["email"], verified["email_verified"]) == ("new@example.com", True)
    assert assert_user(client.get(url(user["id"]), headers=headers))["email"] == "new@example.com"
    assert login_status(client, "new@example.com").status_code == 200
    assert_error(login_status(client, user["email"]), 401, "INVALID_CREDENTIALS")


def test_put_trims_and_lower_cases_the_email(client, auth):
    user, headers = auth.user()
    response = client.put(
        url(user["id"]),
        headers=headers,
        json={"name": "  Ada  ", "email": "  Ada@Example.COM ", "current_password": PASSWORD},
    )
    assert assert_user(response)["name"] == "Ada"
    assert auth.verify("ada@example.com")["email"] == "ada@example.com"


def test_put_keeping_ones_own_email_in_another_case_is_not_a_conflict(client, auth):
    user, headers = auth.user()
    response = client.put(
        url(user["id"]), headers=headers, json={"name": "Same", "email": user["email"].upper()}
    )
    assert assert_user(response)["email"] == user["email"]


@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_duplicate_email_is_a_conflict_case_insensitively(client, auth, method):
    user, headers = auth.user()
    other = auth.register(email="taken@example.com")
    body = {"email": " TAKEN@Example.com ", "current_password": PASSWORD}
    body |= {"name": "Copycat"} if method == "put" else {}
    response = getattr(client, method)(url(user["id"]), headers=headers, json=body)
    error = assert_error(response, 409, "CONFLICT")
    assert "email" in error["details"]
    assert assert_user(client.get(url(user["id"]), headers=headers)) == user
    assert other["email"] == "taken@example.com"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "only@example.com"}, "name"),
        ({"name": "Only Name"}, "email"),
        ({"name": None, "email": "a@example.com"}, "name"),
        ({"name": "A", "email": None}, "email"),
        ({"name": "", "email": "a@example.com"}, "name"),
        ({"name": "   ", "email": "a@example.com"}, "name"),
        ({"name": "x" * 101, "email": "a@example.com"}, "name"),
        ({"name": 42, "email": "a@example.com"}, "name"),
        ({"name": True, "email": "a@example.com"}, "name"),
        ({"name": ["A"], "email": "a@example.com"}, "name"),
        ({"name": "A", "email": "not-an-email"}, "email"),
        ({"name": "A", "email": "a@b"}, "email"),
        ({"name": "A", "email": ["a@example.com"]}, "email"),
        ({"name": "A", "email": 7}, "email"),
        ({"name": "A", "email": "a@example.com", "id": 99}, "id"),
        (
            {"name": "A", "email": "a@example.com", "created_at": "2000-01-01T00:00:00Z"},
            "created_at",
        ),
        (
            {"name": "A", "email": "a@example.com", "updated_at": "2000-01-01T00:00:00Z"},
            "updated_at",
        ),
        ({"name": "A", "email": "a@example.com", "nickname": "Al"}, "nickname"),
    ],
)
def test_put_validation(client, auth, body, field):
    user, headers = auth.user()
    error = assert_error(
        client.put(url(user["id"]), headers=headers, json=body), 422, "VALIDATION_ERROR"
    )
    assert field in error["details"]
    assert isinstance(error["details"][field], str) and error["details"][field]
    if field in READ_ONLY:  # said as such, not as an unknown field
        assert "read-only" in error["details"][field]
    assert assert_user(client.get(url(user["id"]), headers=headers)) == user


def test_put_reports_every_bad_field_at_once(client, auth):
    user, headers = auth.user()
    error = assert_error(
        client.put(url(user["id"]), headers=headers, json={"id": 1, "nickname": "x"}),
        422,
        "VALIDATION_ERROR",
    )
    assert {"id", "nickname", "name", "email"} <= set(error["details"])


def test_put_on_another_user_is_403_and_changes_nothing(client, auth):
    _, headers = auth.user()
    other, other_headers = auth.user()
    response = client.put(
        url(other["id"]), headers=headers, json={"name": "Hijack", "email": "hijack@example.com"}
    )
    assert_error(response, 403, "FORBIDDEN")
    assert assert_user(client.get(url(other["id"]), headers=other_headers)) == other


def test_an_admin_may_put_another_user(client, auth):
    _, headers = auth.admin()
    other = auth.register()
    response = client.put(
        url(other["id"]), headers=headers, json={"name": "Renamed", "email": "renamed@example.com"}
    )
    updated = assert_user(response)
    assert (updated["name"], updated["email"], updated["role"]) == (
        "Renamed",
        "renamed@example.com",
        "user",
    )


# --- PATCH /users/{id} -------------------------------------------------------------------------


def test_patch_changes_only_the_name(client, auth):
    user, headers = auth.user()
    updated = assert_user(client.patch(url(user["id"]), headers=headers, json={"name": "Grace"}))
    assert updated["name"] == "Grace"
    assert {k: updated[k] for k in ("id", "email", "role", "created_at")} == {
        k: user[k] for k in ("id", "email", "role", "created_at")
    }
    assert when(updated["updated_at"]) > when(user["updated_at"])


def test_patch_changes_only_the_email_trimmed_and_lower_cased(client, auth):
    user, headers = auth.user()
    response = client.patch(
        url(user["id"]),
        headers=headers,
        json={"email": " Grace@Example.ORG", "current_password": PASSWORD},
    )
    assert assert_user(response) == assert_user(client.get(url(user["id"]), headers=headers))
    verified = auth.verify("grace@example.org")
    assert (verified["email"], verified["name"]) == ("grace@example.org", user["name"])
    assert login_status(client, "grace@example.org").status_code == 200


def test_patch_password_replaces_the_old_one(client, auth):
    user, headers = auth.user()
    response = client.patch(
        url(user["id"]),
        headers=headers,
        json={"password": "a brand new secret", "current_password": PASSWORD},
    )
    updated = assert_user(response)
    assert updated["email"] == user["email"] and updated["name"] == user["name"]
    assert_error(login_status(client, user["email"]), 401, "INVALID_CREDENTIALS")
    fresh = login_status(client, user["email"], "a brand new secret")
    assert fresh.status_code == 200
    assert "$argon2" not in fresh.get_data(as_text=True)
    assert fresh.get_json()["data"]["user"]["id"] == user["id"]


def test_a_password_change_ends_the_other_sessions(client, auth):
    """Every token of the other devices dies with the old password; this device keeps its own."""
    user = auth.register()
    other_device = auth.login(user["email"])
    this_device = auth.login(user["email"])
    response = client.patch(
        url(user["id"]),
        headers=bearer(this_device["access_token"]),
        json={"password": "a brand new secret", "current_password": PASSWORD},
    )
    assert response.status_code == 200
    refresh = client.post("/api/v1/auth/refresh", headers=bearer(other_device["refresh_token"]))
    assert_error(refresh, 401, "TOKEN_REVOKED")
    me = client.get("/api/v1/auth/me", headers=bearer(other_device["access_token"]))
    assert_error(me, 401, "TOKEN_REVOKED")
    assert (
        client.get("/api/v1/auth/me", headers=bearer(this_device["access_token"])).status_code
        == 200
    )
    refresh = client.post("/api/v1/auth/refresh", headers=bearer(this_device["refresh_token"]))
    assert refresh.status_code == 200


@pytest.mark.parametrize("length", [8, 128])
def test_patch_password_length_bounds_are_accepted(client, auth, length):
    user, headers = auth.user()
    secret = ("jade walrus umbrella " * 7)[:length]
    assert_user(
        client.patch(
            url(user["id"]),
            headers=headers,
            json={"password": secret, "current_password": PASSWORD},
        )
    )
    assert login_status(client, user["email"], secret).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "p" * 7}, "password"),
        ({"password": "p" * 129}, "password"),
        ({"password": ""}, "password"),
        ({"password": 12345678}, "password"),
        ({"password": None}, "password"),
        ({"password": ["longenough"]}, "password"),
        ({"name": 123}, "name"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": {"first": "A"}}, "name"),
        ({"email": ["a@example.com"]}, "email"),
        ({"email": None}, "email"),
        ({"email": "nobody"}, "email"),
        ({"email": False}, "email"),
        ({"id": 5}, "id"),
        ({"created_at": "2000-01-01T00:00:00Z"}, "created_at"),
        ({"updated_at": "2000-01-01T00:00:00Z"}, "updated_at"),
        ({"nickname": "x"}, "nickname"),
        ({"name": "Fine", "deleted_at": None}, "deleted_at"),
    ],
)
def test_patch_validation(client, auth, body, field):
    user, headers = auth.user()
    error = assert_error(
        client.patch(url(user["id"]), headers=headers, json=body), 422, "VALIDATION_ERROR"
    )
    assert field in error["details"]
    if field in READ_ONLY:
        assert "read-only" in error["details"][field]
    assert assert_user(client.get(url(user["id"]), headers=headers)) == user
    assert login_status(client, user["email"]).status_code == 200  # password untouched


def test_patch_with_an_empty_object_is_422(client, auth):
    user, headers = auth.user()
    assert_error(client.patch(url(user["id"]), headers=headers, json={}), 422, "VALIDATION_ERROR")


def test_patch_without_a_json_content_type_is_415(client, auth):
    user, headers = auth.user()
    response = client.patch(
        url(user["id"]), headers=headers, data='{"name": "x"}', content_type="text/plain"
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize("raw", ['["name"]', '"name"', "{bad json", '{"name": NaN}'])
def test_patch_with_a_body_that_is_not_a_json_object_is_400(client, auth, raw):
    user, headers = auth.user()
    response = client.patch(
        url(user["id"]), headers=headers, data=raw, content_type="application/json"
    )
    assert_error(response, 400, "BAD_REQUEST")


def test_a_user_may_not_change_their_own_role(client, auth):
    user, headers = auth.user()
    response = client.patch(url(user["id"]), headers=headers, json={"role": "admin"})
    assert_error(response, 403, "FORBIDDEN")
    assert assert_user(client.get(url(user["id"]), headers=headers))["role"] == "user"
    assert_error(client.get(USERS, headers=headers), 403, "FORBIDDEN")


def test_a_user_may_not_change_their_role_through_put_either(client, auth):
    user, headers = auth.user()
    body = {"name": user["name"], "email": user["email"], "role": "admin"}
    assert_error(client.put(url(user["id"]), headers=headers, json=body), 403, "FORBIDDEN")
    assert assert_user(client.get(url(user["id"]), headers=headers))["role"] == "user"


@pytest.mark.parametrize("role", ["ADMIN", "superuser", "", None, 1, ["admin"], {"is": "admin"}])
@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_non_admins_role_is_403_whatever_its_value(client, auth, method, role):
    """SPEC 3, Users: only an admin may change a role; a value an admin would get 422 for is
    still 403 from anyone else, and nothing changes."""
    user, headers = auth.user()
    body = {"name": "Renamed", "email": user["email"], "role": role}
    response = getattr(client, method)(url(user["id"]), headers=headers, json=body)
    error = assert_error(response, 403, "FORBIDDEN")
    assert error["details"] == {"role": "admin only"}
    assert assert_user(client.get(url(user["id"]), headers=headers)) == user


def test_a_non_admins_role_is_403_before_the_other_fields_are_checked(client, auth):
    user, headers = auth.user()
    body = {"name": "", "email": "nobody", "id": 7, "role": "ADMIN"}
    response = client.patch(url(user["id"]), headers=headers, json=body)
    assert assert_error(response, 403, "FORBIDDEN")["details"] == {"role": "admin only"}


def test_an_admin_may_promote_a_user_who_can_then_list_users(client, auth):
    _, admin_headers = auth.admin()
    user, headers = auth.user()
    assert_error(client.get(USERS, headers=headers), 403, "FORBIDDEN")
    response = client.patch(url(user["id"]), headers=admin_headers, json={"role": "admin"})
    promoted = assert_user(response)
    assert promoted["role"] == "admin"
    assert promoted["email"] == user["email"]
    assert_page(client.get(USERS, headers=headers))  # the same token, now an admin's


def test_an_admin_may_demote_another_admin(client, auth):
    _, admin_headers = auth.admin()
    other, other_headers = auth.admin()
    response = client.patch(url(other["id"]), headers=admin_headers, json={"role": "user"})
    assert assert_user(response)["role"] == "user"
    assert_error(client.get(USERS, headers=other_headers), 403, "FORBIDDEN")


@pytest.mark.parametrize("role", ["superuser", "Admin", "", None, 1, ["admin"]])
def test_an_invalid_role_is_422(client, auth, role):
    _, admin_headers = auth.admin()
    user = auth.register()
    response = client.patch(url(user["id"]), headers=admin_headers, json={"role": role})
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert "role" in error["details"]
    assert assert_user(client.get(url(user["id"]), headers=admin_headers))["role"] == "user"


def test_an_admin_may_patch_another_users_password(client, auth):
    _, admin_headers = auth.admin()
    user = auth.register()
    response = client.patch(
        url(user["id"]), headers=admin_headers, json={"password": "reset by admin"}
    )
    assert_user(response)
    assert_error(login_status(client, user["email"]), 401, "INVALID_CREDENTIALS")
    assert login_status(client, user["email"], "reset by admin").status_code == 200


def test_patch_on_another_user_is_403_and_changes_nothing(client, auth):
    _, headers = auth.user()
    other, other_headers = auth.user()
    response = client.patch(url(other["id"]), headers=headers, json={"password": "stolen account"})
    assert_error(response, 403, "FORBIDDEN")
    assert login_status(client, other["email"]).status_code == 200
    assert_error(login_status(client, other["email"], "stolen account"), 401, "INVALID_CREDENTIALS")
    assert assert_user(client.get(url(other["id"]), headers=other_headers)) == other


# --- DELETE /users/{id} ------------------------------------------------------------------------


def delete_and_check_gone(client, auth, actor_headers, user, user_headers, tokens):
    """Delete `user` as `actor` and check every consequence the contract names."""
    response = client.delete(url(user["id"]), headers=actor_headers)
    assert response.status_code == 204
    assert response.get_data() == b""
    assert response.headers["X-Request-ID"]

    # no more logins
    assert_error(login_status(client, user["email"]), 401, "INVALID_CREDENTIALS")
    # the access token dies at once, on every route that takes one
    assert_token_rejected(client.get("/api/v1/auth/me", headers=user_headers))
    assert_token_rejected(client.get(url(user["id"]), headers=user_headers))
    assert_token_rejected(client.patch(url(user["id"]), headers=user_headers, json={"name": "X"}))
    # and so does the refresh token
    assert_token_rejected(
        client.post("/api/v1/auth/refresh", headers=bearer(tokens["refresh_token"]))
    )
    # an admin sees it as gone
    _, admin_headers = auth.admin()
    assert_error(client.get(url(user["id"]), headers=admin_headers), 404, "NOT_FOUND")
    # and the email is free again
    again = client.post(
        "/api/v1/auth/register",
        json={"name": "Reborn", "email": user["email"].upper(), "password": PASSWORD},
    )
    reborn = assert_user(again, 201)
    assert reborn["email"] == user["email"] and reborn["id"] != user["id"]
    assert again.headers["Location"].endswith(url(reborn["id"]))
    assert login_status(client, user["email"]).get_json()["data"]["user"]["id"] == reborn["id"]


def test_a_user_deletes_themself(client, auth):
    user = auth.register()
    tokens = auth.login(user["email"])
    headers = bearer(tokens["access_token"])
    delete_and_check_gone(client, auth, headers, user, headers, tokens)


def test_an_admin_deletes_a_user(client, auth):
    _, admin_headers = auth.admin()
    user = auth.register()
    tokens = auth.login(user["email"])
    delete_and_check_gone(client, auth, admin_headers, user, bearer(tokens["access_token"]), tokens)


def test_deleting_another_user_is_403_and_deletes_nothing(client, auth):
    _, headers = auth.user()
    other, other_headers = auth.user()
    assert_error(client.delete(url(other["id"]), headers=headers), 403, "FORBIDDEN")
    assert assert_user(client.get(url(other["id"]), headers=other_headers)) == other
    assert login_status(client, other["email"]).status_code == 200


def test_deleting_needs_a_token(client, auth):
    user = auth.register()
    assert_error(client.delete(url(user["id"])), 401, "UNAUTHORIZED")
    assert login_status(client, user["email"]).status_code == 200


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("get", None),
        ("delete", None),
        ("patch", {"name": "Back"}),
        ("put", {"name": "Back", "email": "back@example.com"}),
    ],
)
def test_a_deleted_user_is_404_to_an_admin_on_every_method(client, auth, method, body):
    _, admin_headers = auth.admin()
    user = auth.register()
    assert client.delete(url(user["id"]), headers=admin_headers).status_code == 204
    kwargs = {"headers": admin_headers} | ({"json": body} if body is not None else {})
    assert_error(getattr(client, method)(url(user["id"]), **kwargs), 404, "NOT_FOUND")


def test_the_email_of_a_deleted_user_may_be_taken_by_an_update(client, auth):
    _, admin_headers = auth.admin()
    gone = auth.register(email="freed@example.com")
    user, headers = auth.user()
    assert client.delete(url(gone["id"]), headers=admin_headers).status_code == 204
    response = client.patch(
        url(user["id"]),
        headers=headers,
        json={"email": "freed@example.com", "current_password": PASSWORD},
    )
    assert assert_user(response)["email"] == user["email"]
    assert auth.verify("freed@example.com")["email"] == "freed@example.com"
