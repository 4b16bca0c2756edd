"""Alembic environment for Flask-Migrate: the app's engine and models' metadata.

Logging is the application's (JSON lines); no logging configuration is applied here.
"""

import logging

import click
from alembic import context
from flask import current_app

from bookshelf.schema import WAITING, lock_for_migrations

config = context.config
logger = logging.getLogger("alembic.env")
database = current_app.extensions["migrate"].db


def run_migrations_offline():
    """Emit SQL for a URL (`flask db upgrade --sql`) without connecting."""
    url = database.engine.url.render_as_string(hide_password=False)
    context.configure(url=url, target_metadata=database.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    def skip_empty_autogenerate(context, revision, directives):
        """`flask db migrate` with no model change writes no empty revision."""
        if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected.")

    configure_args = current_app.extensions["migrate"].configure_args
    configure_args.setdefault("process_revision_directives", skip_empty_autogenerate)
    with database.engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=database.metadata, **configure_args
        )
        with context.begin_transaction():
            # One process migrates at a time; the others wait here, then find the schema at head.
            lock_for_migrations(connection, waiting=lambda: click.echo(WAITING))
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
