"""Rate limits (Flask-Limiter): a generous limit per client address on every route, and a tight
one on failed logins, per address and per email, that successful logins do not count against."""

from flask import current_app
from flask_limiter.util import get_remote_address

from .extensions import limiter
from .http import json_body


def _failed(response) -> bool:
    return response.status_code == 401


def _email_key() -> str:
    email = json_body().get("email")
    if isinstance(email, str):
        return "email:" + email.strip().lower()
    return "address:" + get_remote_address()


def _login_failure_limit() -> str:
    return current_app.config["LOGIN_FAILURE_LIMIT"]


def _login_failure_limit_per_email() -> str:
    return current_app.config["LOGIN_FAILURE_LIMIT_PER_EMAIL"]


login_limits = [
    limiter.limit(
        _login_failure_limit,
        key_func=get_remote_address,
        deduct_when=_failed,
        scope="login-failures-address",
    ),
    limiter.limit(
        _login_failure_limit_per_email,
        key_func=_email_key,
        deduct_when=_failed,
        scope="login-failures-email",
    ),
]
