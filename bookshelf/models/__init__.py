"""SQLAlchemy models: the tables and the rules that belong to a single row."""

from .api_key import ApiKey
from .book import Book
from .idempotency import IdempotencyKey
from .session import UserSession
from .sync import SyncClock
from .token import RefreshToken, RevokedAccessToken
from .user import User

__all__ = [
    "ApiKey",
    "Book",
    "IdempotencyKey",
    "RefreshToken",
    "RevokedAccessToken",
    "SyncClock",
    "User",
    "UserSession",
]
