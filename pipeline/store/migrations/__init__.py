"""Versioned schema migrations (Alembic). A new schema change is a new file in
``versions/`` whose ``down_revision`` is the previous head; ``streamcast db upgrade``
(and every writer, on opening the store) applies what a store lacks."""
