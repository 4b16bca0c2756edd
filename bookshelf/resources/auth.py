"""/auth: register, login, refresh, logout, me, and the caller's sessions."""

from flask import request, url_for
from flask_jwt_extended import current_user, get_jwt, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..auth import device_tokens
from ..http import created, item, no_content, page
from ..idempotency import idempotent
from ..models import User, UserSession
from ..openapi import Operation
from ..ratelimit import limit_failed_logins
from ..services import auth, sessions
from .fields import SESSION_FIELDS, USER_FIELDS
from .pagination import page_arguments

register_parser = v.json_parser(
    Argument("name", type=v.text(1, 100), required=True, nullable=False),
    Argument("email", type=v.email, required=True, nullable=False),
    Argument("password", type=v.password, required=True, nullable=False),
)
device_token_text = v.text(1, device_tokens.MAX_LENGTH, strip=False)
device_token_text.schema = device_token_text.schema | {
    "description": "The `device_token` of this device's latest login to this account, if any: "
    "failed logins from a known device are limited on their own, not with unknown devices'. "
    "One that is not valid for this email (expired, tampered, another account's) is ignored."
}
login_parser = v.json_parser(
    Argument("email", type=v.text(1, 254), required=True, nullable=False),
    Argument("password", type=v.text(1, 1024, strip=False), required=True, nullable=False),
    Argument("device_name", type=v.text(1, 100), nullable=False),
    Argument("device_token", type=device_token_text, nullable=False),
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
            "Log in: an access token, a refresh token and a device token",
            body=login_parser,
            output="LoginTokens",
            errors=(401,),
            description="Unknown email and wrong password give the same 401. Failed logins are "
            "rate limited per client address, and per email from unknown devices; with a valid "
            "`device_token` of the email, per device instead of per email, so that others' "
            "failures cannot lock the owner out. Keep the `device_token` of each login.",
        )
    }

    def post(self):
        fields = v.parse_body(login_parser)
        fields.pop("device_token", None)  # read by limit_failed_logins
        device = sessions.device_name(fields.pop("device_name", None), request.user_agent.string)
        return item(token_body(auth.login(**fields, device=device, address=request.remote_addr)))


class Refresh(Resource):
    # Revocation is checked by the rotation itself, which must also see spent tokens.
    method_decorators = [jwt_required(refresh=True, skip_revocation_check=True)]
    docs = {
        "post": Operation(
            "Trade a refresh token for a new pair (send the refresh token as the bearer token)",
            auth="refresh",
            output="Tokens",
            # No body is taken; one sent anyway must be an empty JSON object.
            errors=(400, 413, 415, 422),
            description="Send no body. The refresh token sent is spent. Presented again within "
            "REFRESH_REUSE_GRACE seconds (10 by default), it gets the same new refresh token "
            "back, with a fresh access token: parallel refreshes of one app all succeed. "
            "Presented again later, it ends its session (401 TOKEN_REVOKED). The answer has no "
            "`user` and no `device_token` (those come with a login).",
        )
    }

    def post(self):
        v.parse_body(no_fields)
        return item(token_body(auth.refresh(get_jwt(), address=request.remote_addr)))


class Logout(Resource):
    method_decorators = [jwt_required()]
    docs = {
        "post": Operation(
            "End the current session: its access and refresh tokens are refused from now on",
            auth="access",
            body=logout_parser,
            optional_body=True,
            status=204,
            description="The body is optional: send the session's `refresh_token` to have it "
            "refused at once as well (it is refused anyway, with its session).",
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


sessions_parser = v.query_parser(*page_arguments())


def _current_session() -> str | None:
    return get_jwt().get("sid")


class SessionList(Resource):
    method_decorators = [jwt_required()]
    docs = {
        "get": Operation(
            "The caller's live sessions, one per login on a device (the current one marked)",
            auth="access",
            query=sessions_parser,
            output=SESSION_FIELDS,
            model=UserSession,
            many=True,
            description="Most recently used first. `last_used_at` and `last_ip` are those of "
            "the session's login or latest refresh.",
        ),
        "delete": Operation(
            "End every session of the caller but the current one (log out other devices)",
            auth="access",
            status=204,
        ),
    }

    def get(self):
        query = v.parse_query(sessions_parser)
        rows, total = sessions.live_sessions(
            current_user.id, page=query["page"], per_page=query["per_page"]
        )
        current = _current_session()
        data = [marshal({"current": s.id == current, **vars(s)}, SESSION_FIELDS) for s in rows]
        return page(data, page=query["page"], per_page=query["per_page"], total=total)

    def delete(self):
        sessions.end_others(current_user.id, keep=_current_session())
        return no_content()


class SessionResource(Resource):
    method_decorators = [jwt_required()]
    docs = {
        "delete": Operation(
            "End one of the caller's sessions: its tokens are refused from now on",
            auth="access",
            status=204,
            errors=(404,),
        )
    }

    def delete(self, session_id):
        sessions.end_one(current_user.id, session_id)
        return no_content()
