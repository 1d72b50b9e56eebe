"""Alembic's entry point: migrations run on the connection streamcast hands in (inside
its lock and transaction), never on a URL from a config file."""

from alembic import context

from streamcast.store.migrate import VERSION_TABLE
from streamcast.store.schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
