"""/auth: register, login, refresh, logout, me."""

from flask import url_for
from flask_jwt_extended import current_user, get_jwt, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..http import created, item, no_content
from ..idempotency import idempotent
from ..ratelimit import login_limits
from ..services import auth
from .fields import USER_FIELDS

register_parser = v.json_parser(
    Argument("name", type=v.text(1, 100), required=True, nullable=False),
    Argument("email", type=v.email, required=True, nullable=False),
    Argument("password", type=v.password, required=True, nullable=False),
)
login_parser = v.json_parser(
    Argument("email", type=v.text(1, 254), required=True, nullable=False),
    Argument("password", type=v.text(1, 1024, strip=False), required=True, nullable=False),
)
logout_parser = v.json_parser(Argument("refresh_token", type=v.text(1, 4096), nullable=False))
no_fields = v.json_parser()


def token_body(tokens: dict) -> dict:
    body = {k: v for k, v in tokens.items() if k != "user"}
    if "user" in tokens:
        body["user"] = marshal(tokens["user"], USER_FIELDS)
    return body


class Register(Resource):
    method_decorators = [idempotent]

    def post(self):
        user = auth.create_user(**v.parse_body(register_parser))
        return created(marshal(user, USER_FIELDS), url_for("user", user_id=user.id))


class Login(Resource):
    decorators = login_limits

    def post(self):
        return item(token_body(auth.login(**v.parse_body(login_parser))))


class Refresh(Resource):
    # Revocation is checked by the rotation itself, which must also see spent tokens.
    method_decorators = [jwt_required(refresh=True, skip_revocation_check=True)]

    def post(self):
        v.parse_body(no_fields)
        return item(token_body(auth.refresh(get_jwt())))


class Logout(Resource):
    method_decorators = [jwt_required()]

    def post(self):
        fields = v.parse_body(logout_parser)
        auth.logout(
            access_payload=get_jwt(), refresh_token=fields.get("refresh_token"), user=current_user
        )
        return no_content()


class Me(Resource):
    method_decorators = [jwt_required()]

    def get(self):
        return item(marshal(current_user, USER_FIELDS), etag=True)
