"""Slow salted password hashes (argon2id), with parameters from the app's configuration.

Each hash takes PASSWORD_HASH_MEMORY_KIB (19 MiB by default) while it runs, so a burst of logins
on every worker thread at once would take that many times as much: at most
PASSWORD_HASH_SLOTS hashes run at once in a process, the others wait for a slot.

Passwords are hashed and checked in their NFKC form (bookshelf.auth.password_policy.normalize).
"""

import secrets
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app

from .password_policy import normalize


class SlottedHasher(PasswordHasher):
    """argon2-cffi's hasher, computing at most `slots` hashes at once."""

    def __init__(self, *, slots: int, **parameters):
        super().__init__(**parameters)
        self.slots = threading.BoundedSemaphore(slots)

    def hash(self, password, *, salt=None):
        with self.slots:
            return super().hash(password, salt=salt)

    def verify(self, hash, password):  # noqa: A002 (argon2-cffi's name)
        with self.slots:
            return super().verify(hash, password)


_creating = threading.Lock()


def _hasher() -> SlottedHasher:
    ext = current_app.extensions
    if "password_hasher" in ext:
        return ext["password_hasher"]
    with _creating:  # one hasher, so one set of slots, per app
        cfg = current_app.config
        ext.setdefault(
            "password_hasher",
            SlottedHasher(
                slots=cfg["PASSWORD_HASH_SLOTS"],
                time_cost=cfg["PASSWORD_HASH_TIME_COST"],
                memory_cost=cfg["PASSWORD_HASH_MEMORY_KIB"],
                parallelism=cfg["PASSWORD_HASH_PARALLELISM"],
            ),
        )
    return ext["password_hasher"]


def hash_password(password: str) -> str:
    return _hasher().hash(normalize(password))


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; with no hash (unknown user) still spend the time of a real check."""
    hasher = _hasher()
    known_user = password_hash is not None
    if not known_user:
        ext = current_app.extensions
        if "dummy_password_hash" not in ext:
            ext["dummy_password_hash"] = hasher.hash(secrets.token_hex(16))
        password_hash = ext["dummy_password_hash"]
    normalized = normalize(password)
    # A hash made before passwords were normalised holds the text as it was typed; the second
    # check depends on the input alone, so known and unknown users still take the same time.
    candidates = (normalized,) if normalized == password else (normalized, password)
    return any(_matches(hasher, password_hash, c) for c in candidates) and known_user


def _matches(hasher: SlottedHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
