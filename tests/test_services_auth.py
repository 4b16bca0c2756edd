"""The auth and session services' rules, called directly on the suite's real database (no HTTP).

Covered: login starts a session with a refresh token stored in it; refresh rotates the token
(spent, with its successor recorded); a spent token presented again within REFRESH_REUSE_GRACE
gets the same successor, and after the grace (the stored rotation time is moved back, no
sleeping) ends its session, so later refreshes of that family fail with 401 TOKEN_REVOKED while
other sessions live on; logout and ending sessions; a password change ends the other sessions.
"""

from datetime import timedelta

from flask import current_app
from flask_jwt_extended import decode_token
from sqlalchemy import func, select

from bookshelf.auth.jwt import Actor
from bookshelf.errors import (
    InvalidCredentials,
    NotFound,
    TokenRevoked,
    ValidationError,
)
from bookshelf.extensions import db
from bookshelf.models import RefreshToken, RevokedAccessToken, User, UserSession
from bookshelf.models.base import utcnow
from bookshelf.services import auth, sessions, users
from tests.support import PASSWORD, make_user, refused

NEW_PASSWORD = "a different long passphrase 42"


# --- helpers ---------------------------------------------------------------------------------


def login(user: Actor, password: str = PASSWORD) -> dict:
    return auth.login(email=user.email, password=password, device="Phone", address="192.0.2.1")


def refresh(refresh_token: str) -> dict:
    """What the refresh endpoint does with the bearer token's verified claims."""
    return auth.refresh(claims(refresh_token), address="192.0.2.2")


def claims(token: str) -> dict:
    return decode_token(token)


def row(token: str) -> RefreshToken:
    """The refresh token's row as the database has it now."""
    db.session.expire_all()
    return db.session.get(RefreshToken, claims(token)["jti"])


def session_of(tokens: dict) -> UserSession:
    db.session.expire_all()
    return db.session.get(UserSession, claims(tokens["access_token"])["sid"])


def refresh_tokens_count() -> int:
    return db.session.scalar(select(func.count()).select_from(RefreshToken))


def age_rotation(token: str, seconds: float) -> None:
    """Move the token's rotation `seconds` into the past, as if that much time had gone by."""
    spent = row(token)
    spent.revoked_at -= timedelta(seconds=seconds)
    db.session.commit()


def past_the_grace() -> float:
    return current_app.config["REFRESH_REUSE_GRACE"] + 1


def no_precondition(user: User) -> None:
    """No If-Match header was sent."""


# --- login and rotation ----------------------------------------------------------------------


def test_login_starts_a_session_holding_a_live_refresh_token(ctx):
    user = make_user()
    tokens = login(user)
    assert claims(tokens["refresh_token"])["type"] == "refresh"
    session = session_of(tokens)
    assert (session.user_id, session.device_name, session.ended_at) == (user.id, "Phone", None)
    token = row(tokens["refresh_token"])
    assert (token.family_id, token.user_id) == (session.id, user.id)
    assert (token.revoked_at, token.successor_jti) == (None, None)


def test_a_wrong_password_starts_no_session(ctx):
    user = make_user()
    with refused(InvalidCredentials, 401, "INVALID_CREDENTIALS"):
        login(user, password="not the password at all")
    assert db.session.scalar(select(func.count()).select_from(UserSession)) == 0


def test_refresh_spends_the_token_and_records_its_successor(ctx):
    tokens = login(make_user())
    rotated = refresh(tokens["refresh_token"])
    assert rotated["refresh_token"] != tokens["refresh_token"]
    spent, successor = row(tokens["refresh_token"]), row(rotated["refresh_token"])
    assert spent.revoked_at is not None
    assert spent.successor_jti == successor.jti
    assert (successor.revoked_at, successor.family_id) == (None, spent.family_id)
    assert claims(rotated["access_token"])["sid"] == spent.family_id
    # The successor rotates in its turn.
    assert refresh(rotated["refresh_token"])["refresh_token"] != rotated["refresh_token"]


def test_within_the_grace_a_spent_token_gets_the_same_successor(ctx):
    tokens = login(make_user())
    rotated = refresh(tokens["refresh_token"])
    issued = refresh_tokens_count()
    again = refresh(tokens["refresh_token"])
    assert again["refresh_token"] == rotated["refresh_token"]
    assert refresh_tokens_count() == issued  # nothing new issued
    assert row(rotated["refresh_token"]).revoked_at is None
    assert session_of(tokens).ended_at is None


def test_just_inside_the_grace_is_still_a_retry(ctx):
    tokens = login(make_user())
    rotated = refresh(tokens["refresh_token"])
    age_rotation(tokens["refresh_token"], current_app.config["REFRESH_REUSE_GRACE"] - 1)
    assert refresh(tokens["refresh_token"])["refresh_token"] == rotated["refresh_token"]


def test_after_the_grace_reuse_ends_the_session_and_its_whole_family(ctx):
    user = make_user()
    tokens = login(user)
    rotated = refresh(tokens["refresh_token"])
    newest = refresh(rotated["refresh_token"])
    age_rotation(tokens["refresh_token"], past_the_grace())

    with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
        refresh(tokens["refresh_token"])

    session = session_of(tokens)
    assert session.ended_at is not None
    family = db.session.scalars(
        select(RefreshToken).where(RefreshToken.family_id == session.id)
    ).all()
    assert len(family) == 3
    assert all(token.revoked_at is not None for token in family)
    # The thief's (or the owner's) newest token dies with it, and the old one stays dead.
    for token in (newest["refresh_token"], rotated["refresh_token"], tokens["refresh_token"]):
        with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
            refresh(token)


def test_reuse_ends_only_the_session_it_belongs_to(ctx):
    user = make_user()
    stolen, other_device = login(user), login(user)
    refresh(stolen["refresh_token"])
    age_rotation(stolen["refresh_token"], past_the_grace())
    with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
        refresh(stolen["refresh_token"])
    assert session_of(other_device).ended_at is None
    assert refresh(other_device["refresh_token"])["refresh_token"]


def test_reuse_after_the_grace_is_refused_even_with_a_long_grace_setting(make_app):
    """The grace is read from the configuration, not fixed in the code."""
    app = make_app(REFRESH_REUSE_GRACE=3600)
    with app.app_context():
        tokens = login(make_user())
        rotated = refresh(tokens["refresh_token"])
        age_rotation(tokens["refresh_token"], 3000)
        assert refresh(tokens["refresh_token"])["refresh_token"] == rotated["refresh_token"]
        age_rotation(tokens["refresh_token"], 601)
        with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
            refresh(tokens["refresh_token"])


def test_an_expired_session_cannot_refresh(ctx):
    tokens = login(make_user())
    session = session_of(tokens)
    session.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
        refresh(tokens["refresh_token"])


def test_a_deleted_account_cannot_refresh(ctx):
    user = make_user()
    tokens = login(user)
    users.delete_user(user, user.id, no_precondition)
    with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
        refresh(tokens["refresh_token"])
    assert session_of(tokens).ended_at is not None


# --- logout and ending sessions --------------------------------------------------------------


def test_logout_ends_the_session_and_revokes_the_access_token(ctx):
    user = make_user()
    tokens = login(user)
    access = claims(tokens["access_token"])
    auth.logout(access_payload=access, refresh_token=None, user=user)
    assert db.session.get(RevokedAccessToken, access["jti"]) is not None
    assert session_of(tokens).ended_at is not None
    assert row(tokens["refresh_token"]).revoked_at is not None
    with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
        refresh(tokens["refresh_token"])


def test_logout_refuses_someone_elses_refresh_token(ctx):
    user, other = make_user(), make_user()
    tokens, others = login(user), login(other)
    with refused(ValidationError, 422, "VALIDATION_ERROR") as caught:
        auth.logout(
            access_payload=claims(tokens["access_token"]),
            refresh_token=others["refresh_token"],
            user=user,
        )
    assert set(caught.value.details) == {"refresh_token"}
    # Nothing was ended: neither the caller's session nor the other user's.
    assert session_of(tokens).ended_at is None
    assert row(others["refresh_token"]).revoked_at is None


def test_ending_one_session_spends_its_tokens_only(ctx):
    user = make_user()
    ended, kept = login(user), login(user)
    sessions.end_one(user.id, session_of(ended).id)
    assert session_of(ended).ended_at is not None
    assert row(ended["refresh_token"]).revoked_at is not None
    assert (session_of(kept).ended_at, row(kept["refresh_token"]).revoked_at) == (None, None)


def test_another_users_session_is_404_and_stays_live(ctx):
    owner, other = make_user(), make_user()
    tokens = login(owner)
    with refused(NotFound, 404, "NOT_FOUND"):
        sessions.end_one(other.id, session_of(tokens).id)
    assert session_of(tokens).ended_at is None


def test_ending_the_other_sessions_keeps_the_current_one(ctx):
    user = make_user()
    current, first, second = login(user), login(user), login(user)
    sessions.end_others(user.id, keep=session_of(current).id)
    assert session_of(current).ended_at is None
    assert session_of(first).ended_at is not None and session_of(second).ended_at is not None
    _, total = sessions.live_sessions(user.id, page=1, per_page=10)
    assert total == 1


# --- password changes ------------------------------------------------------------------------


def change_password(actor: Actor, user_id: int, current: dict | None, **fields) -> None:
    users.update_user(
        actor,
        user_id,
        {"password": NEW_PASSWORD} | fields,
        no_precondition,
        current_session=claims(current["access_token"])["sid"] if current else None,
    )


def test_a_password_change_ends_every_other_session(ctx):
    user = make_user()
    current, other = login(user), login(user)
    change_password(user, user.id, current, current_password=PASSWORD)
    assert session_of(current).ended_at is None
    assert session_of(other).ended_at is not None
    with refused(TokenRevoked, 401, "TOKEN_REVOKED"):
        refresh(other["refresh_token"])
    assert refresh(current["refresh_token"])["refresh_token"]
    # The old password is gone, the new one works.
    with refused(InvalidCredentials, 401, "INVALID_CREDENTIALS"):
        login(user)
    assert login(user, password=NEW_PASSWORD)["refresh_token"]


def test_changing_ones_own_password_needs_the_current_one(ctx):
    user = make_user()
    tokens = login(user)
    with refused(ValidationError, 422, "VALIDATION_ERROR") as caught:
        change_password(user, user.id, tokens)
    assert set(caught.value.details) == {"current_password"}
    with refused(InvalidCredentials, 401, "INVALID_CREDENTIALS"):
        change_password(user, user.id, tokens, current_password="not the password at all")
    # Neither attempt changed anything.
    assert session_of(tokens).ended_at is None
    assert login(user)["refresh_token"]


def test_an_admin_setting_a_password_ends_every_session_of_the_account(ctx):
    user, admin = make_user(), make_user(role="admin")
    first, second = login(user), login(user)
    change_password(admin, user.id, None)
    assert session_of(first).ended_at is not None
    assert session_of(second).ended_at is not None
