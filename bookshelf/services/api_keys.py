"""API keys: create one (shown once), list and revoke the caller's own. How a key authenticates
a request is bookshelf.auth.api_keys'."""

from datetime import timedelta

from sqlalchemy import func, select, update

from .. import metrics
from ..audit import audit
from ..auth import api_keys
from ..auth.jwt import Actor
from ..errors import Conflict, NotFound, TokenInvalid
from ..extensions import db
from ..models import ApiKey
from ..models.base import utcnow
from . import commit
from .sessions import lock_live_user

MAX_DAYS = 365  # a key's longest life
MAX_LIVE_KEYS = 100  # per account: unrevoked and unexpired


def _live(user_id: int) -> tuple:
    return ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None), ApiKey.expires_at > utcnow()


def create_key(actor: Actor, *, name: str, scopes: list[str], expires_in_days: int):
    """A new key of the actor's: (its row, the key itself, which is never seen again)."""
    if lock_live_user(actor.id) is None:  # queues behind a deletion of the account
        raise TokenInvalid("The token's user no longer exists.")
    live = db.session.scalar(select(func.count()).select_from(ApiKey).where(*_live(actor.id)))
    if live >= MAX_LIVE_KEYS:
        raise Conflict(f"An account has at most {MAX_LIVE_KEYS} live API keys; revoke one first.")
    key = api_keys.generate()
    now = utcnow()
    row = ApiKey(
        user_id=actor.id,
        name=name,
        prefix=api_keys.display_prefix(key),
        key_hash=api_keys.digest(key),
        scope=" ".join(sorted(set(scopes))),
        created_at=now,
        expires_at=now + timedelta(days=expires_in_days),
    )
    db.session.add(row)
    commit()
    audit(
        "api_key_created",
        actor_id=actor.id,
        subject_id=actor.id,
        api_key_id=row.id,
        api_key_prefix=row.prefix,
        scopes=row.scopes,
        expires_at=row.expires_at.isoformat(timespec="milliseconds") + "Z",
    )
    metrics.count_auth_event("api_key_created")
    return row, key


def list_keys(actor: Actor, *, page: int, per_page: int) -> tuple[list[ApiKey], int]:
    """A page of the actor's unrevoked keys (expired ones included), the newest first."""
    mine = (ApiKey.user_id == actor.id, ApiKey.revoked_at.is_(None))
    total = db.session.scalar(select(func.count()).select_from(ApiKey).where(*mine))
    rows = db.session.scalars(
        select(ApiKey)
        .where(*mine)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    return list(rows), total


def get_key(actor: Actor, key_id: int, *, for_update: bool = False) -> ApiKey:
    """One of the actor's unrevoked keys; 404 for anything else (another user's included)."""
    query = select(ApiKey).where(
        ApiKey.id == key_id, ApiKey.user_id == actor.id, ApiKey.revoked_at.is_(None)
    )
    row = db.session.scalar(query.with_for_update() if for_update else query)
    if row is None:
        raise NotFound("No API key with this id.")
    return row


def revoke_key(actor: Actor, key_id: int) -> None:
    row = get_key(actor, key_id, for_update=True)
    row.revoked_at = utcnow()
    commit()
    audit(
        "api_key_revoked",
        actor_id=actor.id,
        subject_id=actor.id,
        api_key_id=row.id,
        api_key_prefix=row.prefix,
        reason="revoked",
    )
    metrics.count_auth_event("api_key_revoked")


def revoke_all(user_id: int) -> None:
    """Revoke every key of the user (the account is being deleted); the caller commits."""
    db.session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
