"""Who may do what: the ownership and role rules, in one place."""

from functools import wraps

from flask import current_app
from flask_jwt_extended import current_user, jwt_required

from ..errors import EmailNotVerified, Forbidden


def admin_required(view):
    """A valid token of an admin, else 401 (no token) or 403 (not an admin)."""

    @wraps(view)
    @jwt_required()
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            raise Forbidden("Only an admin may do this.")
        return view(*args, **kwargs)

    return wrapper


def verified_email_required(view):
    """With REQUIRE_VERIFIED_EMAIL, a write waits for the caller's email to be verified (403
    EMAIL_NOT_VERIFIED). Goes after (runs after) jwt_required."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if current_app.config["REQUIRE_VERIFIED_EMAIL"] and not current_user.email_verified:
            raise EmailNotVerified()
        return view(*args, **kwargs)

    return wrapper


def ensure_self_or_admin(actor, user_id: int) -> None:
    if actor.id != user_id and not actor.is_admin:
        raise Forbidden("You may only act on your own account.")


def ensure_owner_or_admin(actor, book) -> None:
    if book.owner_id != actor.id and not actor.is_admin:
        raise Forbidden("Only the book's owner or an admin may change it.")


def ensure_may_set_role(actor, fields: dict) -> None:
    if "role" in fields and not actor.is_admin:
        raise Forbidden("Only an admin may change a role.", {"role": "admin only"})
