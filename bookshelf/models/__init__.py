"""SQLAlchemy models: the tables and the rules that belong to a single row."""

from .account_token import AccountToken
from .api_key import ApiKey
from .book import Book
from .idempotency import IdempotencyKey
from .outbox import OutboxMail
from .session import UserSession
from .sync import SyncClock
from .token import RefreshToken, RevokedAccessToken
from .user import User

__all__ = [
    "AccountToken",
    "ApiKey",
    "Book",
    "IdempotencyKey",
    "OutboxMail",
    "RefreshToken",
    "RevokedAccessToken",
    "SyncClock",
    "User",
    "UserSession",
]
