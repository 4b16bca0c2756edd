"""The command line: `bookshelf serve`, `bookshelf init-db` and the other tasks below (also
`flask --app wsgi <command>` in a checkout)."""

import secrets
import sys
from datetime import timedelta

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import delete, func, or_, select

from . import changes
from .auth.passwords import hash_password
from .errors import Conflict, ValidationError
from .extensions import db
from .models import (
    AccountToken,
    ApiKey,
    Book,
    IdempotencyKey,
    RefreshToken,
    RevokedAccessToken,
    User,
)
from .models.base import utcnow
from .schema import WAITING, lock_for_migrations
from .services.auth import create_user
from .validation import email as email_type
from .validation import password as password_type
from .validation import text

DEMO_BOOKS = [
    ("The Left Hand of Darkness", "Ursula K. Le Guin", "Science Fiction", 1969, "9780441478125"),
    ("A Wizard of Earthsea", "Ursula K. Le Guin", "Fantasy", 1968, "9780553383041"),
    ("Dune", "Frank Herbert", "Science Fiction", 1965, "9780441172719"),
    ("Pride and Prejudice", "Jane Austen", "Classic", 1813, None),
    ("Beloved", "Toni Morrison", "Literary Fiction", 1987, "9781400033416"),
    ("The Name of the Rose", "Umberto Eco", "Mystery", 1980, "9780156001311"),
]
DEMO_OWNER_EMAIL = "demo@bookshelf.invalid"


def _checked(parse, value, name):
    try:
        return parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@click.command("create-admin")
@with_appcontext
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
def create_admin(email, name, password):
    """Create an admin account (the only way to make the first admin)."""
    try:
        user = create_user(
            name=_checked(text(1, 100), name, "--name"),
            email=_checked(email_type, email, "--email"),
            password=_checked(password_type, password, "--password"),
            role="admin",
            verified=True,  # typed by the operator: no verification mail
        )
    except Conflict as exc:
        raise click.ClickException(exc.message) from None
    except ValidationError as exc:  # the password rule that needs the email
        field, message = next(iter(exc.details.items()))
        raise click.BadParameter(message, param_hint=f"--{field}") from None
    click.echo(f"admin {user.email} created with id {user.id}")


@click.command("init-db")
@with_appcontext
@click.option("--demo", is_flag=True, help="Load a few demo books into an empty catalog.")
def init_db(demo):
    """Bring the schema up to date (migrations); optionally add demo books to an empty catalog.

    Any number of processes may run it at once on one database: one migrates, the others wait
    (bookshelf.schema.lock_for_migrations, taken by the migrations' transaction and the demo's).
    """
    from flask_migrate import upgrade  # Alembic: only the commands load it, never the server

    upgrade(directory=current_app.extensions["migrate"].directory)
    if demo and load_demo_books():
        click.echo(f"loaded {len(DEMO_BOOKS)} demo books")
    click.echo("database ready")


def load_demo_books() -> bool:
    """Add the demo books, owned by a demo user, if the catalog is empty: in one transaction,
    under the migrations' lock."""
    # Hashed before the transaction, which on SQLite holds the write lock from its first statement.
    password_hash = hash_password(secrets.token_hex(16))
    lock_for_migrations(db.session.connection(), waiting=lambda: click.echo(WAITING))
    if db.session.scalar(select(func.count(Book.id))):
        db.session.rollback()
        return False
    owner = db.session.scalar(select(User).where(User.email == DEMO_OWNER_EMAIL))
    if owner is None:
        owner = User(name="Demo", email=DEMO_OWNER_EMAIL, password_hash=password_hash)
        db.session.add(owner)
        db.session.flush()
    db.session.add_all(
        Book(
            title=title,
            author=author,
            genre=genre,
            published_year=year,
            isbn=isbn,
            owner_id=owner.id,
        )
        for title, author, genre, year, isbn in DEMO_BOOKS
    )
    db.session.commit()
    return True


DEAD_API_KEYS_KEPT = timedelta(days=30)  # listed as expired meanwhile, so they can be replaced


@click.command("prune")
@with_appcontext
def prune():
    """Delete expired rows: idempotency keys, refresh tokens, revoked access tokens, mailed
    account tokens, API keys revoked or expired 30 days ago, and the changes feed's tombstones
    older than SYNC_RETENTION days."""
    now = utcnow()
    counts = {
        model.__tablename__: db.session.execute(
            delete(model).where(model.expires_at <= now)
        ).rowcount
        for model in (IdempotencyKey, RefreshToken, RevokedAccessToken, AccountToken)
    }
    dead_keys = delete(ApiKey).where(
        or_(
            ApiKey.revoked_at <= now - DEAD_API_KEYS_KEPT,
            ApiKey.expires_at <= now - DEAD_API_KEYS_KEPT,
        )
    )
    counts[ApiKey.__tablename__] = db.session.execute(dead_keys).rowcount
    retention = current_app.config["SYNC_RETENTION"]
    counts["book tombstones"] = changes.prune_tombstones(db.session, retention)
    db.session.commit()
    click.echo(", ".join(f"{table}: {n} deleted" for table, n in counts.items()))


@click.command("send-mail")
@with_appcontext
def send_mail():
    """Send every mail of the outbox that is due (for cron): exits 1 if one could not be sent,
    or without SMTP_URL."""
    from .mail import delivery

    if not current_app.config["SMTP_URL"]:  # its form was checked when the app was made
        raise click.ClickException(f"SMTP_URL is not set: none sent ({delivery.waiting()} waiting)")
    sent = failed = 0
    while True:  # until a batch is not full: none due, or the server stopped answering
        batch = delivery.deliver_due()
        sent, failed = sent + batch[0], failed + batch[1]
        if sum(batch) < delivery.BATCH:
            break
    click.echo(f"{sent} sent, {failed} failed ({delivery.waiting()} waiting)")
    if failed:
        sys.exit(1)


commands = [create_admin, init_db, prune, send_mail]


@click.command("serve")
def serve():
    """Serve the API with waitress on HOST:PORT (env); stop gracefully on SIGTERM or SIGINT."""
    from .server import main as serve_forever

    serve_forever()


def _app():
    from .server import build

    return build()


def main() -> None:
    """The `bookshelf` console script: `serve`, and the app's commands (`init-db`,
    `create-admin`, `prune`, `send-mail`, Flask-Migrate's `db`), from any
    directory."""
    cli = FlaskGroup(
        name="bookshelf",
        help="The Bookshelf API: serve it, or run one of its tasks.",
        create_app=_app,
        add_default_commands=False,
        add_version_option=False,
        load_dotenv=False,
        set_debug_flag=False,
    )
    # FlaskGroup's --app, --env-file and --debug: the app here is always this one, configured by
    # the environment alone.
    cli.params = [p for p in cli.params if p.name not in {"app", "env_file", "debug"}]
    cli.add_command(serve)
    cli.main(prog_name="bookshelf")
