"""Device tokens: OWASP's "device cookies" for an API client. A successful login answers one; a
later login for the same email that presents it comes from a known device, whose failed logins
are limited on their own instead of with every unknown device's (bookshelf.ratelimit), so that
strangers' failures cannot lock the owner out.

A token holds the normalised email and a random nonce, with its time of issue, signed with
SECRET_KEY under a salt of its own (itsdangerous 2.2); it is good for DEVICE_TOKEN_TTL seconds.
Nothing is stored: the nonce names the device's limit. A token grants nothing by itself.
"""

import secrets

from flask import current_app
from itsdangerous import BadData, URLSafeTimedSerializer

SALT = "bookshelf.device-token"
MAX_LENGTH = 1024  # characters; a token of a 254-character email is about 450


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt=SALT)


def _normalize(email: str) -> str:
    return email.strip().lower()  # as User.normalize_email


def issue(email: str) -> str:
    """A new device token for `email`."""
    return _serializer().dumps({"email": _normalize(email), "nonce": secrets.token_urlsafe(16)})


def known_device(token, email) -> str | None:
    """The device's nonce, if `token` is a device token of `email` within its lifetime; else
    None: the login comes from an unknown device (a forged, tampered, expired or other
    account's token is no error, as OWASP has it)."""
    if not isinstance(token, str) or not isinstance(email, str) or len(token) > MAX_LENGTH:
        return None
    try:
        payload = _serializer().loads(token, max_age=current_app.config["DEVICE_TOKEN_TTL"])
    except BadData:  # bad signature or payload, expired, or issued in the future
        return None
    if not isinstance(payload, dict) or payload.get("email") != _normalize(email):
        return None
    nonce = payload.get("nonce")
    return nonce if isinstance(nonce, str) and nonce else None
