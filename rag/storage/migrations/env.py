"""Alembic's environment: migrations run on the connection the store hands in (see ``upgrade``), inside the
transaction the store began."""

from alembic import context

context.configure(connection=context.config.attributes["connection"])
with context.begin_transaction():
    context.run_migrations()
