"""/auth: register, login, refresh, logout, me."""

from flask import url_for
from flask_jwt_extended import current_user, get_jwt, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..http import created, item, no_content
from ..idempotency import idempotent
from ..models import User
from ..openapi import Operation
from ..ratelimit import limit_failed_logins
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
    docs = {
        "post": Operation(
            "Create an account",
            body=register_parser,
            status=201,
            output=USER_FIELDS,
            model=User,
            location=True,
            idempotent=True,
            errors=(409,),
        )
    }

    def post(self):
        user = auth.create_user(**v.parse_body(register_parser))
        return created(marshal(user, USER_FIELDS), url_for("user", user_id=user.id))


class Login(Resource):
    decorators = [limit_failed_logins]
    docs = {
        "post": Operation(
            "Log in: an access token and a refresh token",
            body=login_parser,
            output="Tokens",
            errors=(401,),
            description="Unknown email and wrong password give the same 401. Failed logins are "
            "rate limited per client address and per email.",
        )
    }

    def post(self):
        return item(token_body(auth.login(**v.parse_body(login_parser))))


class Refresh(Resource):
    # Revocation is checked by the rotation itself, which must also see spent tokens.
    method_decorators = [jwt_required(refresh=True, skip_revocation_check=True)]
    docs = {
        "post": Operation(
            "Trade a refresh token for a new pair (send the refresh token as the bearer token)",
            auth="refresh",
            body=no_fields,
            output="Tokens",
            description="The refresh token sent is spent. Presenting a spent one again revokes "
            "every refresh token of its login.",
        )
    }

    def post(self):
        v.parse_body(no_fields)
        return item(token_body(auth.refresh(get_jwt())))


class Logout(Resource):
    method_decorators = [jwt_required()]
    docs = {
        "post": Operation(
            "Revoke the access token, and the refresh token if sent",
            auth="access",
            body=logout_parser,
            status=204,
        )
    }

    def post(self):
        fields = v.parse_body(logout_parser)
        auth.logout(
            access_payload=get_jwt(), refresh_token=fields.get("refresh_token"), user=current_user
        )
        return no_content()


class Me(Resource):
    method_decorators = [jwt_required()]
    docs = {
        "get": Operation(
            "The current user", auth="access", output=USER_FIELDS, model=User, etag=True
        )
    }

    def get(self):
        return item(marshal(current_user, USER_FIELDS), etag=True)
