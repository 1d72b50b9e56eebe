"""The store's schema: created once, upgraded by versioned migrations under a lock, never
created by a reader."""

from __future__ import annotations

import multiprocessing
import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from streamcast.cli import app
from streamcast.store import Store, migrate, upgrade_store
from streamcast.store.schema import metadata
from tests.conftest import _postgres_database

runner = CliRunner()


@pytest.mark.parametrize("command", [["status"], ["predictions", "latest"], ["scores"], ["serve", "--port", "1"]])
def test_read_only_commands_create_nothing_and_say_where_the_store_was_looked_for(
    data_dir: Path, command: list[str]
) -> None:
    res = runner.invoke(app, command)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no streamcast store at" in lines[0] and "STREAMCAST_DATA_DIR" in lines[0]
    assert str(data_dir) in res.output.replace("\n", "")
    assert not (data_dir / "streamcast.db").exists()


def _legacy_store(url: str) -> None:
    """A store as streamcast made it before migrations: tables, no version table, and a
    nullable column added in a later release missing."""
    engine = sa.create_engine(url)
    metadata.create_all(engine, tables=[t for t in metadata.sorted_tables if t.name not in migrate.AFTER_BASELINE])
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE scores DROP COLUMN scaled_error")
        conn.exec_driver_sql(
            "INSERT INTO observations (series_id, variable, ts, value, revisions) "
            "VALUES ('a', 'temp', '2024-01-01 00:00:00+00:00', 1.5, 0)"
        )
    engine.dispose()


def test_a_store_from_before_migrations_is_upgraded_by_one_command_and_keeps_its_data(data_dir: Path) -> None:
    url = f"sqlite:///{data_dir / 'streamcast.db'}"
    _legacy_store(url)
    refused = runner.invoke(app, ["status"])
    assert refused.exit_code == 1 and "streamcast db upgrade" in refused.output
    res = runner.invoke(app, ["db", "upgrade"])
    assert res.exit_code == 0, res.output
    assert f"legacy -> {migrate.head()}" in res.output
    with Store(url, read_only=True) as store:
        assert store.load_observations()["value"].tolist() == [1.5]
    columns = {c["name"] for c in sa.inspect(sa.create_engine(url)).get_columns("scores")}
    assert "scaled_error" in columns
    assert sa.inspect(sa.create_engine(url)).has_table("variables")  # and the later migrations ran
    assert "up to date" in runner.invoke(app, ["db", "upgrade"]).output


def _open_store(url: str) -> str:
    try:
        with Store(url) as store:
            return str(store.table_counts()["observations"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
        return f"{type(exc).__name__}: {exc}"


def test_processes_creating_a_fresh_postgresql_schema_at_once_do_not_race() -> None:
    with contextmanager(_postgres_database)() as url:
        # Fresh processes (spawn): none has seen the store, each must create or wait for the schema.
        with multiprocessing.get_context("spawn").Pool(4) as pool:
            results = pool.map(_open_store, [url] * 8)
        assert results == ["0"] * 8
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert migrate.revision(conn) == migrate.head()
        engine.dispose()


def test_upgrade_of_a_current_store_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert upgrade_store(url) == (None, migrate.head())
    assert upgrade_store(url) == (migrate.head(), migrate.head())
    assert os.path.exists(tmp_path / "s.db.schema-lock")


def test_the_migrations_build_exactly_the_tables_the_code_uses(any_store: Store) -> None:
    """A change to schema.py without a migration (or the reverse) fails here, on both backends."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = sa.create_engine(any_store.url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": migrate.VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    engine.dispose()
