"""Bringing a store's schema to this streamcast's version.

Versioned Alembic migrations (``migrations/versions``), serialised across processes (a
PostgreSQL advisory lock; a lock file beside a SQLite database) and checked once per
process and store. A store made before migrations existed (no version table) is first
brought to the baseline by adding what it lacks, then stamped and upgraded.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

from streamcast.errors import NotFoundError, SchemaError
from streamcast.store.engine import redact_url
from streamcast.store.schema import metadata

VERSION_TABLE = "streamcast_schema_version"  # not alembic_version: MLflow may share the database
BASELINE = "0001"
AFTER_BASELINE = {
    "variables",
    "stream_checkpoints",
    "score_totals",
    "score_marks",
    "series_stats",
    "forecast_totals",
}  # tables later migrations create (0002, 0003, 0009, 0010, 0012, 0013)
_LOCK_KEY = 0x57C457  # the advisory lock every streamcast process takes to change the schema
_current: set[str] = set()  # stores this process has seen at head


def _config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The revision this streamcast's schema is at."""
    rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert rev is not None
    return rev


def revision(conn: Connection) -> str | None:
    """The store's revision: None when it has no version table (new, or older than migrations)."""
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Apply what the store lacks, holding the schema lock; returns (before, after), with
    before None for a new store and ``"legacy"`` for one made before migrations."""
    with _exclusive(engine) as conn:
        before = revision(conn)
        if before is None and sa.inspect(conn).has_table("observations"):
            _adopt_legacy(conn)
            command.stamp(_config(conn), BASELINE)
            before = "legacy"
        command.upgrade(_config(conn), "head")
    _current.add(str(engine.url))
    return before, head()


def ensure_current(engine: Engine) -> None:
    """For writers: upgrade the store when it is behind (once per process and store)."""
    if str(engine.url) in _current:
        return
    with engine.connect() as conn:
        at = revision(conn)
    if at == head():
        _current.add(str(engine.url))
        return
    upgrade(engine)


def check_readable(engine: Engine) -> None:
    """For readers, which never create or change a store: refuse one that does not exist
    or is not at this version, saying what to do."""
    if str(engine.url) in _current:
        return
    where = redact_url(str(engine.url))
    with engine.connect() as conn:
        at = revision(conn)
        exists = at is not None or sa.inspect(conn).has_table("observations")
    if not exists:
        raise NotFoundError(f"no streamcast store at {where}: {_HOW_TO_POINT}")
    if at != head():
        older = at is None or at < head()
        raise SchemaError(
            f"the store at {where} is from an {'older' if older else 'newer'} streamcast (schema {at or 'legacy'}, "
            f"this version {head()}): " + ("run `streamcast db upgrade`" if older else "upgrade streamcast")
        )
    _current.add(str(engine.url))


_HOW_TO_POINT = (
    "run `streamcast ingest` to create it, or point data_dir or db_url in streamcast.toml "
    "(or STREAMCAST_DATA_DIR, STREAMCAST_DB_URL) at your store"
)


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names, when it does not exist (None for other databases)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def refuse_missing_file(url: str) -> None:
    path = missing_sqlite_file(url)
    if path is not None:
        raise NotFoundError(f"no streamcast store at {path.resolve()}: {_HOW_TO_POINT}")


@contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    """One transaction that only one streamcast process at a time holds for schema changes."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            yield conn
        return
    database = engine.url.database
    if not database or database == ":memory:":
        with engine.begin() as conn:
            yield conn
        return
    with open(f"{database}.schema-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _adopt_legacy(conn: Connection) -> None:
    """Bring a store from before migrations to the baseline: create missing tables and add
    missing nullable columns; a missing required column stops with what is missing."""
    baseline = [t for t in metadata.sorted_tables if t.name not in AFTER_BASELINE]
    metadata.create_all(conn, tables=baseline)
    inspector = sa.inspect(conn)
    for table in baseline:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            if not column.nullable:
                raise SchemaError(
                    f"{table.name}.{column.name} is missing from the store at {redact_url(str(conn.engine.url))} "
                    "and cannot be added to existing rows; point STREAMCAST_DB_URL at a new database"
                )
            col_type = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {col_type}')
