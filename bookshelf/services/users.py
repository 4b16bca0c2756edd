"""User accounts: who may see and change which account, and how."""

from collections.abc import Callable

from sqlalchemy import func, select

from ..auth import password_policy
from ..auth.jwt import Actor
from ..auth.passwords import hash_password
from ..auth.permissions import ensure_may_set_role, ensure_self_or_admin
from ..errors import Conflict, NotFound
from ..extensions import db
from ..models import User
from . import commit
from .auth import DUPLICATE_EMAIL, find_live_user_by_email, revoke_refresh_tokens_of

Precondition = Callable[[User], None]


def get_user(actor: Actor, user_id: int, *, for_update: bool = False) -> User:
    """Self or admin; a non-admin gets 403 for any other id, existing or not (no enumeration).
    `for_update` locks the row until commit (see services.books.get_book)."""
    ensure_self_or_admin(actor, user_id)
    user = db.session.get(User, user_id, with_for_update=for_update, populate_existing=for_update)
    if user is None or user.is_deleted:
        raise NotFound("No user with this id.")
    return user


def list_users(*, page: int, per_page: int) -> tuple[list[User], int]:
    live = select(User).where(User.deleted_at.is_(None))
    total = db.session.scalar(select(func.count()).select_from(live.subquery()))
    users = db.session.scalars(
        live.order_by(User.id).limit(per_page).offset((page - 1) * per_page)
    ).all()
    return list(users), total


def update_user(actor: Actor, user_id: int, fields: dict, precondition: Precondition) -> User:
    """PUT (name and email, both required by the parser) and PATCH (any subset) alike."""
    user = get_user(actor, user_id, for_update=True)
    ensure_may_set_role(actor, fields)
    if "password" in fields:  # checked against the email the account will have
        password_policy.check(fields["password"], email=fields.get("email", user.email))
    precondition(user)
    if "email" in fields and fields["email"] != user.email:
        other = find_live_user_by_email(fields["email"])
        if other is not None:
            raise Conflict(DUPLICATE_EMAIL, {"email": "is already registered"})
    if "password" in fields:
        user.password_hash = hash_password(fields.pop("password"))
        revoke_refresh_tokens_of(user)
    for name, value in fields.items():
        setattr(user, name, value)
    commit(DUPLICATE_EMAIL)
    return user


def delete_user(actor: Actor, user_id: int, precondition: Precondition) -> None:
    user = get_user(actor, user_id, for_update=True)
    precondition(user)
    user.soft_delete()
    revoke_refresh_tokens_of(user)
    commit()
