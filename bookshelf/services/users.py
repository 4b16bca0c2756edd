"""User accounts: who may see and change which account, and how."""

from collections.abc import Callable

from sqlalchemy import func, select

from ..audit import audit
from ..auth import password_policy
from ..auth.jwt import Actor
from ..auth.passwords import hash_password, verify_password
from ..auth.permissions import ensure_may_set_role, ensure_self_or_admin
from ..errors import InvalidCredentials, NotFound, ValidationError
from ..extensions import db
from ..models import User
from . import account_recovery, api_keys, commit, sessions
from .emails import DUPLICATE_EMAIL, ensure_email_free

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


def update_user(
    actor: Actor,
    user_id: int,
    fields: dict,
    precondition: Precondition,
    *,
    current_session: str | None = None,
) -> User:
    """PUT (name and email, both required by the parser) and PATCH (any subset) alike.

    Changing one's own password or email needs `current_password`: a stolen access token alone
    cannot take the account over. An admin changing another account is exempt. A new email is
    mailed a verification link: one's own takes effect when the link is followed; an admin's
    change of another account takes effect at once, unverified. A new password
    ends every other session of the account (every session, when an admin sets it); the slow
    hashing happens before the account's row is locked."""
    current_password = fields.pop("current_password", None)
    ensure_may_set_role(actor, fields)
    checked_hash = new_hash = None
    if "password" in fields or "email" in fields:
        account = get_user(actor, user_id)  # unlocked: to check and hash before the lock
        email = fields.get("email", account.email)
        if actor.id == user_id and ("password" in fields or email != account.email):
            if current_password is None:
                raise ValidationError(
                    details={"current_password": "is required to change your password or email"}
                )
            checked_hash = account.password_hash
        db.session.rollback()
        if "password" in fields:  # checked against the email the account will have
            password_policy.check(fields["password"], email=email)
        if checked_hash is not None and not verify_password(checked_hash, current_password):
            raise InvalidCredentials("The current password is incorrect.")
        if "password" in fields:
            new_hash = hash_password(fields.pop("password"))
    user = get_user(actor, user_id, for_update=True)
    if checked_hash is not None and user.password_hash != checked_hash:
        raise InvalidCredentials("The current password is incorrect.")  # changed meanwhile
    precondition(user)
    new_email = User.normalize_email(fields.pop("email", user.email))
    if new_email != user.email:
        ensure_email_free(new_email)
        account_recovery.send_verification(user, new_email)
    if new_hash is not None:
        user.password_hash = new_hash
        sessions.end_sessions(user.id, keep=current_session if actor.id == user_id else None)
    at_once = actor.id != user_id
    events = _audit_events(user, fields, password_changed=new_hash is not None)
    if new_email != user.email:
        events.append(("email_changed" if at_once else "email_change_requested", {}))
        if at_once:
            user.email, user.email_verified = new_email, False
    for name, value in fields.items():
        setattr(user, name, value)
    commit(DUPLICATE_EMAIL)
    for event, details in events:
        audit(event, actor_id=actor.id, subject_id=user.id, **details)
    return user


def _audit_events(user: User, fields: dict, *, password_changed: bool) -> list[tuple[str, dict]]:
    """The security events of this change, read before it is applied (the old values)."""
    events = [("password_changed", {})] if password_changed else []
    if "role" in fields and fields["role"] != user.role:
        events.append(("role_changed", {"old_role": user.role, "new_role": fields["role"]}))
    return events


def delete_user(actor: Actor, user_id: int, precondition: Precondition) -> None:
    user = get_user(actor, user_id, for_update=True)
    precondition(user)
    user.soft_delete()
    sessions.end_sessions(user.id)
    api_keys.revoke_all(user.id)  # refused already: a key works for a live owner only
    commit()
    audit("account_deleted", actor_id=actor.id, subject_id=user.id)
