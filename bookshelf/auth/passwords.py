"""Slow salted password hashes (argon2id), with parameters from the app's configuration."""

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app


def _hasher() -> PasswordHasher:
    ext = current_app.extensions
    if "password_hasher" not in ext:
        cfg = current_app.config
        ext["password_hasher"] = PasswordHasher(
            time_cost=cfg["PASSWORD_HASH_TIME_COST"],
            memory_cost=cfg["PASSWORD_HASH_MEMORY_KIB"],
            parallelism=cfg["PASSWORD_HASH_PARALLELISM"],
        )
    return ext["password_hasher"]


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; with no hash (unknown user) still spend the time of a real check."""
    hasher = _hasher()
    known_user = password_hash is not None
    if not known_user:
        ext = current_app.extensions
        if "dummy_password_hash" not in ext:
            ext["dummy_password_hash"] = hasher.hash(secrets.token_hex(16))
        password_hash = ext["dummy_password_hash"]
    try:
        return hasher.verify(password_hash, password) and known_user
    except (VerificationError, InvalidHashError):
        return False
