"""API keys: format and checksum, shown once and stored hashed, list and revoke, the scopes
(default deny), every way a key is refused, last use without a write per request, the key's own
rate limit, never a key from the URL, and a key through a real server."""

import hashlib
import inspect
import json
from datetime import timedelta
from importlib import metadata

import flask_jwt_extended.view_decorators as jwt_views
import pytest
from sqlalchemy import event, select, text, update

from bookshelf.auth import api_keys
from bookshelf.extensions import db
from bookshelf.models import ApiKey, User
from bookshelf.models.base import utcnow
from tests.processes import call
from tests.support import Auth, assert_error, bearer

KEYS = "/api/v1/auth/api-keys"
ME = "/api/v1/auth/me"
BOOKS = "/api/v1/books"
ALL_SCOPES = ["books:read", "books:write", "profile:read"]


def create_key(client, headers, scopes=ALL_SCOPES, days=30, name="ci"):
    response = client.post(
        KEYS, json={"name": name, "scopes": scopes, "expires_in_days": days}, headers=headers
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["data"]


def key_headers(key: str) -> dict:
    return bearer(key)


def stored(app, key_id: int) -> ApiKey:
    with app.app_context():
        row = db.session.get(ApiKey, key_id)
        db.session.expunge(row)
        return row


def set_column(app, key_id: int, **values) -> None:
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


@pytest.fixture
def owner(auth):
    return auth.user()


@pytest.fixture
def book(client, owner):
    response = client.post(BOOKS, json={"title": "Dune", "author": "Herbert"}, headers=owner[1])
    assert response.status_code == 201
    return response.get_json()["data"]


# -- the key's form -------------------------------------------------------------------------


def test_a_key_has_the_prefix_random_characters_and_a_checksum():
    keys = {api_keys.generate() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert len(key) == 46 and key.startswith("bks_")
        assert api_keys.is_well_formed(key)
        random_part, check = key[4:40], key[40:]
        assert check == api_keys.checksum(random_part)
    # 36 base62 characters: over 160 bits of randomness
    assert 36 * 5.95 > 160


def test_a_typo_fails_the_checksum():
    key = api_keys.generate()
    for position in (4, 20, 39, 40, 45):
        flipped = "1" if key[position] != "1" else "2"
        typo = key[:position] + flipped + key[position + 1 :]
        assert not api_keys.is_well_formed(typo), position
    assert not api_keys.is_well_formed(key[:-1])
    assert not api_keys.is_well_formed(key + "A")
    assert not api_keys.is_well_formed("bks_" + "-" * 42)
    assert not api_keys.is_well_formed("ghp_" + key[4:])


# -- create, shown once, stored hashed ------------------------------------------------------


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(app, client, owner):
    response = client.post(
        KEYS,
        json={"name": "backup job", "scopes": ["books:read"], "expires_in_days": 90},
        headers=owner[1],
    )
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    data = response.get_json()["data"]
    key = data["key"]
    assert api_keys.is_well_formed(key)
    assert response.headers["Location"].endswith(f"{KEYS}/{data['id']}")
    assert data["name"] == "backup job" and data["scopes"] == ["books:read"]
    assert data["prefix"] == key[:12]
    assert data["last_used_at"] is None and data["last_used_ip"] is None
    created, expires = data["created_at"], data["expires_at"]
    assert created.endswith("Z") and expires > created

    with app.app_context(), db.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_keys")).mappings().one()
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert all(key not in str(value) for value in row.values())  # the key itself: nowhere
    saved = stored(app, data["id"])
    assert saved.expires_at - saved.created_at == timedelta(days=90)

    listed = client.get(KEYS, headers=owner[1]).get_json()["data"]
    one = client.get(f"{KEYS}/{data['id']}", headers=owner[1]).get_json()["data"]
    for shown in (listed[0], one):
        assert "key" not in shown and key not in json.dumps(shown)
        assert shown == {k: v for k, v in data.items() if k != "key"}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "x", "scopes": ["books:read"]}, "expires_in_days"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": 366}, "expires_in_days"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": -1}, "expires_in_days"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": "30"}, "expires_in_days"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": True}, "expires_in_days"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": 30.5}, "expires_in_days"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": None}, "expires_in_days"),
        ({"name": "x", "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": [], "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": "books:read", "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": ["admin"], "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": ["books:read", "books:read"], "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": [["books:read"]], "expires_in_days": 30}, "scopes"),
        ({"name": "x", "scopes": None, "expires_in_days": 30}, "scopes"),
        ({"scopes": ["books:read"], "expires_in_days": 30}, "name"),
        ({"name": "", "scopes": ["books:read"], "expires_in_days": 30}, "name"),
        ({"name": "x" * 101, "scopes": ["books:read"], "expires_in_days": 30}, "name"),
        ({"name": "x", "scopes": ["books:read"], "expires_in_days": 30, "key": "k"}, "key"),
    ],
)
def test_creation_validates_every_field(client, owner, body, field):
    error = assert_error(client.post(KEYS, json=body, headers=owner[1]), 422, "VALIDATION_ERROR")
    assert field in error["details"]


def test_expiry_bounds_are_inclusive(client, owner):
    assert create_key(client, owner[1], days=1)
    assert create_key(client, owner[1], days=365)


def test_an_expired_key_is_listed_but_refused(app, client, owner):
    data = create_key(client, owner[1])
    set_column(app, data["id"], expires_at=utcnow() - timedelta(seconds=1))
    assert_error(client.get(ME, headers=key_headers(data["key"])), 401, "TOKEN_EXPIRED")
    assert [k["id"] for k in client.get(KEYS, headers=owner[1]).get_json()["data"]] == [data["id"]]


# -- list and revoke ------------------------------------------------------------------------


def test_the_list_holds_the_callers_keys_only_newest_first(client, auth, owner):
    first = create_key(client, owner[1], name="first")
    second = create_key(client, owner[1], name="second")
    _other, other_headers = auth.user()
    create_key(client, other_headers, name="theirs")
    response = client.get(KEYS, headers=owner[1])
    body = response.get_json()
    assert [k["id"] for k in body["data"]] == [second["id"], first["id"]]
    assert body["meta"]["total"] == 2
    page = client.get(f"{KEYS}?per_page=1&page=2", headers=owner[1]).get_json()
    assert [k["id"] for k in page["data"]] == [first["id"]]


def test_a_revoked_key_is_refused_at_once_and_leaves_the_list(app, client, owner):
    data = create_key(client, owner[1])
    headers = key_headers(data["key"])
    assert client.get(ME, headers=headers).status_code == 200
    assert client.delete(f"{KEYS}/{data['id']}", headers=owner[1]).status_code == 204
    assert_error(client.get(ME, headers=headers), 401, "TOKEN_REVOKED")
    assert_error(client.get(BOOKS, headers=headers), 401, "TOKEN_REVOKED")
    assert client.get(KEYS, headers=owner[1]).get_json()["data"] == []
    assert stored(app, data["id"]).revoked_at is not None
    assert_error(client.delete(f"{KEYS}/{data['id']}", headers=owner[1]), 404, "NOT_FOUND")
    assert_error(client.get(f"{KEYS}/{data['id']}", headers=owner[1]), 404, "NOT_FOUND")


def test_another_users_key_is_not_found(client, auth, owner):
    theirs = create_key(client, auth.user()[1])
    for method in ("get", "delete"):
        response = getattr(client, method)(f"{KEYS}/{theirs['id']}", headers=owner[1])
        assert_error(response, 404, "NOT_FOUND")
    assert_error(client.delete(f"{KEYS}/999999", headers=owner[1]), 404, "NOT_FOUND")
    assert client.get(ME, headers=key_headers(theirs["key"])).status_code == 200


def test_managing_keys_needs_a_login(client, owner):
    assert_error(client.get(KEYS), 401, "UNAUTHORIZED")
    body = {"name": "x", "scopes": ["books:read"], "expires_in_days": 1}
    assert_error(client.post(KEYS, json=body), 401, "UNAUTHORIZED")


# -- scopes ---------------------------------------------------------------------------------


# (scope, method, path, body, status) of each route a scope opens: {me} is the key's owner,
# {other} another user, {book} a book of the owner's.
ROUTES = [
    ("books:read", "GET", BOOKS, None, 200),
    ("books:read", "HEAD", BOOKS, None, 200),
    ("books:read", "GET", BOOKS + "/{book}", None, 200),
    ("books:read", "GET", BOOKS + "/changes", None, 200),
    ("books:read", "GET", "/api/v1/users/{other}/books", None, 200),
    ("books:write", "POST", BOOKS, {"title": "New", "author": "A"}, 201),
    ("books:write", "PATCH", BOOKS + "/{book}", {"genre": "SF"}, 200),
    ("books:write", "PUT", BOOKS + "/{book}", {"title": "Dune", "author": "F"}, 200),
    ("books:write", "DELETE", BOOKS + "/{book}", None, 204),
    ("profile:read", "GET", ME, None, 200),
    ("profile:read", "GET", "/api/v1/users/{me}", None, 200),
]


@pytest.mark.parametrize("scope", ALL_SCOPES)
@pytest.mark.parametrize(
    "opens, method, path, body, status", ROUTES, ids=[f"{r[1]} {r[2]}" for r in ROUTES]
)
def test_each_scope_opens_exactly_its_routes(
    client, auth, owner, book, scope, opens, method, path, body, status
):
    other, _ = auth.user()
    path = path.format(me=owner[0]["id"], other=other["id"], book=book["id"])
    key = create_key(client, owner[1], scopes=[scope])["key"]
    response = client.open(path, method=method, json=body, headers=key_headers(key))
    if opens == scope:
        assert response.status_code == status, (method, path, response.get_json())
    elif method == "HEAD":  # no body
        assert response.status_code == 403
    else:
        error = assert_error(response, 403, "INSUFFICIENT_SCOPE")
        assert error["details"] == {"scope": opens}, (method, path)


def test_every_route_a_key_may_call_is_in_the_table(app):
    """The table names real endpoints and methods, and no others are open (default deny)."""
    rules = {(r.endpoint, m) for r in app.url_map.iter_rules() for m in r.methods}
    assert set(api_keys.REQUIRED_SCOPE) <= rules
    assert set(api_keys.REQUIRED_SCOPE.values()) == set(ALL_SCOPES) | {None}


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/api/v1/auth/sessions", None),
        ("DELETE", "/api/v1/auth/sessions", None),
        ("DELETE", "/api/v1/auth/sessions/some-session", None),
        ("GET", KEYS, None),
        ("POST", KEYS, {"name": "x", "scopes": ["books:read"], "expires_in_days": 1}),
        ("GET", f"{KEYS}/1", None),
        ("DELETE", f"{KEYS}/1", None),
        ("POST", "/api/v1/auth/logout", None),
        ("POST", "/api/v1/auth/refresh", None),
        ("PUT", "/api/v1/users/1", {"name": "N", "email": "n@example.com"}),
        ("PATCH", "/api/v1/users/1", {"name": "N"}),
        ("DELETE", "/api/v1/users/1", None),
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/auth/register", {"name": "N", "email": "x@example.com"}),
        ("POST", "/api/v1/auth/login", {"email": "x@example.com", "password": "x"}),
    ],
)
def test_a_key_cannot_manage_keys_sessions_or_the_account(app, client, owner, method, path, body):
    key = create_key(client, owner[1])  # every scope
    assert key["id"] == 1 and owner[0]["id"] == 1
    response = client.open(path, method=method, json=body, headers=key_headers(key["key"]))
    error = assert_error(response, 403, "INSUFFICIENT_SCOPE")
    assert error["details"] == {}
    with app.app_context():  # nothing changed
        user = db.session.get(User, 1)
        assert user.name == owner[0]["name"] and not user.is_deleted
        assert db.session.get(ApiKey, 1).revoked_at is None


def test_an_admins_key_is_not_an_admin(client, auth):
    admin, admin_headers = auth.admin()
    other, other_headers = auth.user()
    theirs = client.post(BOOKS, json={"title": "T", "author": "A"}, headers=other_headers)
    book_id = theirs.get_json()["data"]["id"]
    key = key_headers(create_key(client, admin_headers)["key"])
    assert client.get(f"/api/v1/users/{other['id']}", headers=admin_headers).status_code == 200
    assert_error(client.get(f"/api/v1/users/{other['id']}", headers=key), 403, "FORBIDDEN")
    assert_error(client.delete(f"{BOOKS}/{book_id}", headers=key), 403, "FORBIDDEN")
    assert_error(client.get("/api/v1/users", headers=key), 403, "INSUFFICIENT_SCOPE")
    me = client.get(ME, headers=key).get_json()["data"]
    assert me["id"] == admin["id"] and me["role"] == "admin"  # the owner's account, as it is


def test_a_key_acts_as_its_owner(client, owner):
    key = key_headers(create_key(client, owner[1])["key"])
    created = client.post(BOOKS, json={"title": "Mine", "author": "Me"}, headers=key)
    assert created.status_code == 201
    assert created.get_json()["data"]["owner_id"] == owner[0]["id"]
    assert client.get(ME, headers=key).get_json()["data"]["id"] == owner[0]["id"]


def test_any_key_may_read_the_api_document(client, owner):
    key = key_headers(create_key(client, owner[1], scopes=["profile:read"])["key"])
    assert client.get("/api/v1/openapi.json", headers=key).status_code == 200


def test_token_callers_are_unaffected(client, owner):
    assert client.get("/api/v1/auth/sessions", headers=owner[1]).status_code == 200
    assert client.get(ME, headers=owner[1]).status_code == 200


# -- refused keys ---------------------------------------------------------------------------


@pytest.fixture
def no_key_reads(monkeypatch):
    """Fail the test if a key is looked up in the database."""

    def refuse(**params):
        raise AssertionError("the database was read")

    monkeypatch.setattr(api_keys._KEY_AND_OWNER, "rows", refuse)


@pytest.mark.parametrize(
    "credentials",
    [
        "bks_",
        "bks_short",
        "bks_" + "A" * 43,
        "bks_" + "A" * 41,
        "bks_" + "A" * 36 + "!" * 6,
        "bks_" + "A" * 42,  # the right form, a wrong checksum
    ],
)
def test_a_malformed_key_is_401_without_a_database_read(client, no_key_reads, credentials):
    for path in (ME, BOOKS):
        error = assert_error(client.get(path, headers=bearer(credentials)), 401, "TOKEN_INVALID")
        assert error["details"] == {"reason": "malformed API key"}


def test_a_key_with_a_flipped_character_is_401_without_a_database_read(client, owner, monkeypatch):
    key = create_key(client, owner[1])["key"]
    monkeypatch.setattr(api_keys._KEY_AND_OWNER, "rows", pytest.fail)
    for position in (10, 30, 42):
        flipped = "1" if key[position] != "1" else "2"
        typo = key[:position] + flipped + key[position + 1 :]
        response = client.get(ME, headers=bearer(typo))
        assert_error(response, 401, "TOKEN_INVALID")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_an_unknown_well_formed_key_is_401(client):
    assert_error(client.get(ME, headers=bearer(api_keys.generate())), 401, "TOKEN_INVALID")


def test_an_expired_key_is_401(app, client, owner):
    data = create_key(client, owner[1], days=1)
    headers = key_headers(data["key"])
    set_column(app, data["id"], expires_at=utcnow() + timedelta(seconds=30))
    assert client.get(ME, headers=headers).status_code == 200
    set_column(app, data["id"], expires_at=utcnow())
    assert_error(client.get(ME, headers=headers), 401, "TOKEN_EXPIRED")
    assert_error(client.get(BOOKS, headers=headers), 401, "TOKEN_EXPIRED")


def test_a_deleted_owners_keys_die_with_the_account(app, client, owner):
    data = create_key(client, owner[1])
    headers = key_headers(data["key"])
    assert client.get(ME, headers=headers).status_code == 200
    response = client.delete(f"/api/v1/users/{owner[0]['id']}", headers=owner[1])
    assert response.status_code == 204
    assert client.get(ME, headers=headers).status_code == 401
    assert stored(app, data["id"]).revoked_at is not None


def test_a_key_needs_a_live_owner_even_if_not_revoked(app, client, owner):
    data = create_key(client, owner[1])
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(update(User).where(User.id == owner[0]["id"]).values(deleted_at=utcnow()))
    assert_error(client.get(ME, headers=key_headers(data["key"])), 401, "TOKEN_INVALID")


# -- never in the URL -----------------------------------------------------------------------


@pytest.mark.parametrize("parameter", ["api_key", "access_token", "key", "token"])
def test_a_key_in_the_url_authenticates_nothing(app, client, owner, parameter):
    data = create_key(client, owner[1])
    response = client.get(f"{ME}?{parameter}={data['key']}")
    assert_error(response, 401, "UNAUTHORIZED")
    response = client.get(f"{BOOKS}?{parameter}={data['key']}")
    assert parameter in assert_error(response, 422, "VALIDATION_ERROR")["details"]
    assert stored(app, data["id"]).last_used_at is None  # never used


def test_a_key_is_read_from_the_bearer_scheme_only(client, owner):
    key = create_key(client, owner[1])["key"]
    assert_error(client.get(ME, headers={"Authorization": key}), 401, "UNAUTHORIZED")
    assert_error(client.get(ME, headers={"X-Api-Key": key}), 401, "UNAUTHORIZED")


@pytest.mark.parametrize(
    "header, status, code",
    [
        ("Bearer {key}", 200, None),
        (" Bearer \t {key} ,", 200, None),
        ("Basic dXNlcjpwYXNz, Bearer {key}", 200, None),
        ("bearer {key}", 401, "UNAUTHORIZED"),
        ("Bearer {key}, Bearer {key}", 401, "UNAUTHORIZED"),
        ("Bearer {key} extra", 401, "TOKEN_INVALID"),
    ],
)
def test_the_authorization_header_is_read_as_for_a_token(client, owner, header, status, code):
    key = create_key(client, owner[1])["key"]
    response = client.get(ME, headers={"Authorization": header.format(key=key)})
    if code is None:
        assert response.status_code == status
    else:
        assert_error(response, status, code)


# -- last use -------------------------------------------------------------------------------


def test_last_use_is_written_at_most_once_per_interval(app, client, owner):
    data = create_key(client, owner[1])
    headers = key_headers(data["key"])
    writes = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            writes.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for _ in range(5):
            assert client.get(ME, headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(writes) == 1
    first = stored(app, data["id"])
    assert first.last_used_ip == "203.0.113.9"
    assert utcnow() - first.last_used_at < timedelta(seconds=5)

    # Within the interval (60 s): not written again; past it, written.
    recent = utcnow() - timedelta(seconds=50)
    set_column(app, data["id"], last_used_at=recent)
    client.get(ME, headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.10"})
    assert stored(app, data["id"]).last_used_at == recent
    set_column(app, data["id"], last_used_at=utcnow() - timedelta(seconds=61))
    client.get(ME, headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.10"})
    after = stored(app, data["id"])
    assert after.last_used_ip == "203.0.113.10"
    assert utcnow() - after.last_used_at < timedelta(seconds=5)
    listed = client.get(KEYS, headers=owner[1]).get_json()["data"][0]
    assert listed["last_used_ip"] == "203.0.113.10" and listed["last_used_at"].endswith("Z")


def test_the_interval_is_a_setting(make_app):
    app = make_app(API_KEY_LAST_USED_INTERVAL=3600)
    client = app.test_client()
    _user, headers = Auth(app, client).user()
    data = create_key(client, headers)
    set_column(app, data["id"], last_used_at=utcnow() - timedelta(seconds=120))
    before = stored(app, data["id"]).last_used_at
    client.get(ME, headers=key_headers(data["key"]))
    assert stored(app, data["id"]).last_used_at == before


def test_the_last_use_update_is_conditional(app, client, owner):
    """A request that read a stale time but lost the race to another writes nothing."""
    data = create_key(client, owner[1])
    won = utcnow()
    set_column(app, data["id"], last_used_at=won)
    with app.test_request_context(environ_base={"REMOTE_ADDR": "198.51.100.1"}):
        stale = api_keys.Caller(data["id"], None, won - timedelta(seconds=120))
        api_keys._touch(stale)
    row = stored(app, data["id"])
    assert row.last_used_at == won and row.last_used_ip is None


# -- rate limit -----------------------------------------------------------------------------


def test_a_key_has_its_own_rate_limit(make_app):
    app = make_app(API_KEY_RATE_LIMIT="3 per minute")
    client = app.test_client()
    _user, headers = Auth(app, client).user()
    first = key_headers(create_key(client, headers)["key"])
    second = key_headers(create_key(client, headers)["key"])
    for _ in range(3):
        assert client.get(ME, headers=first).status_code == 200
    response = client.get(ME, headers=first)
    assert_error(response, 429, "RATE_LIMITED")
    assert int(response.headers["Retry-After"]) >= 1
    assert_error(client.get(BOOKS, headers=first), 429, "RATE_LIMITED")
    # Another key of the same owner, and the owner's token, from the same address: unaffected.
    assert client.get(ME, headers=second).status_code == 200
    assert client.get(ME, headers=headers).status_code == 200
    # From another address, the key is still over its limit.
    response = client.get(ME, headers=first, environ_base={"REMOTE_ADDR": "198.51.100.2"})
    assert_error(response, 429, "RATE_LIMITED")


# -- audit, document, upstream --------------------------------------------------------------


def test_creating_and_revoking_are_audited_without_the_key(client, owner, capsys):
    capsys.readouterr()
    data = create_key(client, owner[1], scopes=["books:read"])
    client.delete(f"{KEYS}/{data['id']}", headers=owner[1])
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line]
    events = [line for line in lines if line.get("logger") == "bookshelf.audit"]
    assert [e["event"] for e in events] == ["api_key_created", "api_key_revoked"]
    for line in events:
        assert line["actor_id"] == line["subject_id"] == owner[0]["id"]
        assert line["api_key_id"] == data["id"] and line["api_key_prefix"] == data["prefix"]
    assert events[0]["scopes"] == ["books:read"]
    assert data["key"] not in out


def test_key_events_and_limits_are_counted(make_app):
    from tests.test_metrics import SCRAPE, TOKEN, scrape, value

    app = make_app(METRICS_TOKEN=TOKEN, API_KEY_RATE_LIMIT="1 per minute")
    client = app.test_client()
    _user, headers = Auth(app, client).user()
    data = create_key(client, headers)
    assert client.get(ME, headers=key_headers(data["key"])).status_code == 200
    assert client.get(ME, headers=key_headers(data["key"])).status_code == 429
    assert client.get(ME, headers=bearer("bks_nope")).status_code == 401
    assert client.get("/metrics", headers=SCRAPE).status_code == 200  # its bearer is no key
    client.delete(f"{KEYS}/{data['id']}", headers=headers)
    assert client.get(ME, headers=key_headers(data["key"])).status_code == 401
    families = scrape(client)
    counted = {
        name: value(families, "bookshelf_auth_events_total", event=name)
        for name in ("api_key_created", "api_key_revoked", "api_key_refused")
    }
    assert counted == {"api_key_created": 1, "api_key_revoked": 1, "api_key_refused": 2}
    assert value(families, "bookshelf_rate_limit_rejections_total", limit="api-key") == 1


def test_the_document_describes_keys(client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert (
        "INSUFFICIENT_SCOPE"
        in (
            document["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
                "enum"
            ]
        )
    )
    assert set(document["paths"][KEYS]) == {"get", "post"}
    assert set(document["paths"][KEYS + "/{key_id}"]) - {"parameters"} == {"get", "delete"}
    post = document["paths"][KEYS]["post"]
    body = document["components"]["schemas"]["ApiKeyListPostBody"]
    assert body["required"] == ["expires_in_days", "name", "scopes"]
    assert body["properties"]["expires_in_days"]["maximum"] == 365
    assert body["properties"]["scopes"]["items"]["enum"] == ALL_SCOPES
    assert "403" in post["responses"] and "403" in document["paths"][ME]["get"]["responses"]
    scheme = document["components"]["securitySchemes"]["bearerAuth"]["description"]
    assert "bks_" in scheme and "INSUFFICIENT_SCOPE" in scheme


def test_the_flask_jwt_extended_internals_the_keys_rely_on():
    """bookshelf.auth.api_keys wraps `_decode_jwt_from_request` of Flask-JWT-Extended 4.7.4: if
    upstream renames it, changes its arguments or stops calling it, this fails."""
    assert metadata.version("flask-jwt-extended") == "4.7.4"
    wrapper = jwt_views._decode_jwt_from_request
    assert getattr(wrapper, "bookshelf_api_keys", False)  # installed by create_app
    upstream = wrapper.__wrapped__
    assert list(inspect.signature(upstream).parameters) == [
        "locations",
        "fresh",
        "refresh",
        "verify_type",
        "skip_revocation_check",
    ]
    # verify_jwt_in_request looks it up by name in its module, and sets the user from it.
    source = inspect.getsource(jwt_views.verify_jwt_in_request)
    assert "jwt_data, jwt_header, jwt_location = _decode_jwt_from_request(" in source
    assert "_load_user(jwt_header, jwt_data)" in source
    assert jwt_views.verify_jwt_in_request.__globals__ is vars(jwt_views)


def test_a_jwt_still_goes_through_upstream(app, client, owner):
    with app.test_request_context(headers=owner[1]):
        claims, header, location = jwt_views._decode_jwt_from_request(None, False)
    assert claims["type"] == "access" and header["alg"] == "HS256" and location == "headers"


# -- through a real server ------------------------------------------------------------------


def test_a_key_through_a_real_server(app, client, owner, start_api):
    data = create_key(client, owner[1], scopes=["books:read", "profile:read"])
    server = start_api()
    headers = key_headers(data["key"])
    status, _, body = call(server.port, "GET", ME, headers=headers)
    assert status == 200 and body["data"]["id"] == owner[0]["id"]
    status, _, body = call(
        server.port, "POST", BOOKS, body={"title": "T", "author": "A"}, headers=headers
    )
    assert status == 403 and body["error"]["code"] == "INSUFFICIENT_SCOPE"
    status, _, body = call(server.port, "GET", f"{ME}?api_key={data['key']}")
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    client.delete(f"{KEYS}/{data['id']}", headers=owner[1])
    status, response_headers, body = call(server.port, "GET", ME, headers=headers)
    assert status == 401 and body["error"]["code"] == "TOKEN_REVOKED"
    assert response_headers["www-authenticate"] == "Bearer"
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        assert row.last_used_at is not None


def test_prune_deletes_keys_revoked_or_expired_30_days_ago(app, client, owner):
    keys = [create_key(client, owner[1], name=f"k{n}")["id"] for n in range(5)]
    long_ago, lately = utcnow() - timedelta(days=31), utcnow() - timedelta(days=29)
    set_column(app, keys[0], revoked_at=long_ago)
    set_column(app, keys[1], expires_at=long_ago)
    set_column(app, keys[2], revoked_at=lately)
    set_column(app, keys[3], expires_at=lately)  # still listed, as expired
    result = app.test_cli_runner().invoke(args=["prune"])
    assert result.exit_code == 0 and "api_keys: 2 deleted" in result.output
    with app.app_context():
        assert set(db.session.scalars(select(ApiKey.id))) == set(keys[2:])
