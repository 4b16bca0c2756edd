"""/auth/verify-email and /auth/password-reset: the links mailed to an account's address."""

from flask import make_response
from flask_jwt_extended import current_user, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..http import item, no_content
from ..models import User
from ..openapi import Operation
from ..ratelimit import check_password_reset_limits, check_verify_email_resend_limit
from ..services import account_recovery
from .fields import USER_FIELDS

token_text = v.text(1, 200, strip=False)
token_text.schema = token_text.schema | {"description": "The token of the link in the mail."}
verify_parser = v.json_parser(Argument("token", type=token_text, required=True, nullable=False))
reset_parser = v.json_parser(Argument("email", type=v.text(1, 254), required=True, nullable=False))
confirm_parser = v.json_parser(
    Argument("token", type=token_text, required=True, nullable=False),
    Argument("new_password", type=v.password, required=True, nullable=False),
)
no_fields = v.json_parser()
ACCEPTED = "If an account has this email, a mail with a link to reset its password is on its way."


class VerifyEmail(Resource):
    docs = {
        "post": Operation(
            "Verify an email address with the token mailed to it",
            body=verify_parser,
            output=USER_FIELDS,
            model=User,
            errors=(409,),
            description="The token comes from the link mailed at registration, on a change of "
            "email, or on request (/auth/verify-email/resend). It works once, for "
            "EMAIL_VERIFICATION_TTL (24 hours). For a change of email, the new address becomes "
            "the account's now (409 if another account has taken it meanwhile). A token that is "
            "unknown, expired, used or superseded by a newer one is 422 naming `token`. No "
            "bearer token is needed: the mailed token is the proof.",
        )
    }

    def post(self):
        user = account_recovery.verify_email(v.parse_body(verify_parser)["token"])
        return item(marshal(user, USER_FIELDS))


class VerifyEmailResend(Resource):
    method_decorators = [jwt_required()]
    docs = {
        "post": Operation(
            "Mail the caller's address another verification link",
            auth="access",
            optional_body=True,
            status=202,
            output="Accepted",
            description="Nothing is sent when the address is verified already. Rate limited per "
            "account (VERIFY_EMAIL_RESEND_LIMIT). The earlier links stop working.",
        )
    }

    def post(self):
        v.parse_body(no_fields)
        check_verify_email_resend_limit(current_user.id)
        account_recovery.resend_verification(current_user.id)
        return _accepted("If the address is not verified yet, a new link is on its way.")


class PasswordReset(Resource):
    docs = {
        "post": Operation(
            "Ask for a password-reset link by mail",
            body=reset_parser,
            status=202,
            output="Accepted",
            description="202 whether or not an account has this email, in similar time: the "
            "answer tells nothing about who has an account. The link works once, for "
            "PASSWORD_RESET_TTL (30 minutes); a newer one voids it. Rate limited per client "
            "address (PASSWORD_RESET_LIMIT) and per email (PASSWORD_RESET_LIMIT_PER_EMAIL).",
        )
    }

    def post(self):
        email = v.parse_body(reset_parser)["email"]
        check_password_reset_limits(User.normalize_email(email))
        account_recovery.request_password_reset(email)
        return _accepted(ACCEPTED)


class PasswordResetConfirm(Resource):
    docs = {
        "post": Operation(
            "Set a new password with the token of a password-reset mail",
            body=confirm_parser,
            status=204,
            description="The password rules apply (422 naming `new_password`). Every session of "
            "the account ends: log in with the new password. A token that is unknown, expired, "
            "used or superseded is 422 naming `token`. Following the link also verifies the "
            "account's email.",
        )
    }

    def post(self):
        account_recovery.reset_password(**v.parse_body(confirm_parser))
        return no_content()


def _accepted(message: str):
    return make_response(*item({"message": message}, 202))
