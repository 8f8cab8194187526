"""Alembic environment: always driven programmatically by `llmops.store.migrate` with a live connection."""

from alembic import context

from llmops.store.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
context.run_migrations()
