"""/users: admin listing; self-or-admin read, replace, update and soft delete."""

from functools import partial

from flask_jwt_extended import current_user, get_jwt, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..auth.permissions import admin_required, ensure_may_set_role
from ..conditional import if_match
from ..http import item, no_content, page
from ..models import User
from ..models.user import ROLES
from ..openapi import Operation
from ..ratelimit import email_key, password_failures_counted
from ..services import users
from .fields import USER_FIELDS
from .pagination import page_arguments

READ_ONLY = frozenset({"id", "created_at", "updated_at"})


def _user_arguments(*, with_password: bool) -> list[Argument]:
    arguments = [
        Argument("name", type=v.text(1, 100), required=True, nullable=False),
        Argument("email", type=v.email, required=True, nullable=False),
        Argument("role", type=v.choice(*ROLES), nullable=False),
    ]
    if with_password:
        arguments.append(Argument("password", type=v.password, nullable=False))
    # Needed to change one's own password or email (not an admin changing another account).
    arguments.append(
        Argument("current_password", type=v.text(1, 1024, strip=False), nullable=False)
    )
    return arguments


replace_parser = v.json_parser(*_user_arguments(with_password=False))
update_parser = v.json_parser(*_user_arguments(with_password=True))  # PATCH: none required
list_parser = v.query_parser(*page_arguments())
ROLE_RULE = "A non-admin who sends `role`, whatever its value, gets 403 before the body is checked."
REAUTH_RULE = (
    " Changing one's own email or password needs `current_password` (422 without it, 401 "
    "INVALID_CREDENTIALS when wrong, counted by the failed-login limits); an admin changing "
    "another account needs none. A new password ends every other session of the account."
    " One's own new email takes effect when the link mailed to it is followed (POST "
    "/auth/verify-email): until then the answer, and the account, keep the old one. An admin's "
    "change of another account's email is at once, unverified."
)


def _parse(parser, *, partial=False) -> dict:
    """The body's fields, typed; `role` from a non-admin is refused before any of them is read."""
    ensure_may_set_role(current_user, v.json_body())
    return v.parse_body(parser, partial=partial, read_only=READ_ONLY)


class UserList(Resource):
    method_decorators = [admin_required]
    docs = {
        "get": Operation(
            "List users (admin)",
            auth="admin",
            query=list_parser,
            output=USER_FIELDS,
            model=User,
            many=True,
            etag=True,
        )
    }

    def get(self):
        args = v.parse_query(list_parser)
        found, total = users.list_users(**args)
        return page(marshal(found, USER_FIELDS), total=total, **args)


class UserResource(Resource):
    method_decorators = [jwt_required()]
    _write = {
        "auth": "access",
        "output": USER_FIELDS,
        "model": User,
        "if_match": True,
        "read_only": READ_ONLY,
        "errors": (403, 404, 409),
    }
    docs = {
        "get": Operation(
            "One user (self or admin)",
            auth="access",
            output=USER_FIELDS,
            model=User,
            etag=True,
            errors=(403, 404),
        ),
        "put": Operation(
            "Replace name and email (self or admin; role: admin only)",
            body=replace_parser,
            description=ROLE_RULE + REAUTH_RULE,
            **_write,
        ),
        "patch": Operation(
            "Change some fields (self or admin; role: admin only)",
            body=update_parser,
            partial=True,
            description=ROLE_RULE + " A new password must pass the rules of its schema, "
            "checked against the email the account will have." + REAUTH_RULE,
            **_write,
        ),
        "delete": Operation(
            "Delete the account (self or admin)",
            auth="access",
            status=204,
            if_match=True,
            errors=(403, 404),
        ),
    }

    def get(self, user_id):
        return item(marshal(users.get_user(current_user, user_id), USER_FIELDS), etag=True)

    def put(self, user_id):
        return self._update(user_id, _parse(replace_parser))

    def patch(self, user_id):
        return self._update(user_id, _parse(update_parser, partial=True))

    def delete(self, user_id):
        users.delete_user(current_user, user_id, if_match(USER_FIELDS))
        return no_content()

    @staticmethod
    def _update(user_id, fields):
        session_id = get_jwt().get("sid")
        update = partial(
            users.update_user,
            current_user,
            user_id,
            fields,
            if_match(USER_FIELDS),
            current_session=session_id,
        )
        if "current_password" in fields and user_id == current_user.id:
            # From a session, its own limit stands in for the email's, as a known device's does
            # at login: strangers' failed logins for the email cannot block the owner's change.
            device = f"session:{session_id}" if session_id else None
            with password_failures_counted(email_key(current_user.email), device=device):
                user = update()
        else:
            user = update()
        return item(marshal(user, USER_FIELDS), etag=True)
