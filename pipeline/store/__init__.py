"""The store: the only package that speaks SQL.

SQLAlchemy 2 Core over SQLite (default, WAL mode) or PostgreSQL. Observations are
keyed ``(series_id, variable, ts)`` with ``ts`` in UTC; writes are batched upserts so
ingesting the same input twice changes nothing.

Open a :class:`Store`, use it, close it (it is a context manager); its schema is made
or upgraded once, when it opens. Reads and single writes each run in their own
transaction; :meth:`Store.transaction` is a unit of work whose writes commit together
or not at all. Callers never see SQLAlchemy connections. The tables live in
``schema.py``; each family of them has its own module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from streamcast.errors import InputError, UnavailableError
from streamcast.store import migrate
from streamcast.store.engine import (
    WalCheckpointer,
    as_utc,
    data_source,
    make_engine,
    optional_float,
    redact_url,
    utcnow,
)
from streamcast.store.forecasts import POINT_COLUMNS, ForecastTables
from streamcast.store.ingest_log import IngestLog
from streamcast.store.observations import ObservationTables, UpsertCounts
from streamcast.store.runs import RunLog
from streamcast.store.schema import (
    forecast_totals,
    forecasts,
    ingest_batches,
    observations,
    quarantine,
    score_totals,
    scores,
    series_stats,
)


class _Tables(ObservationTables, IngestLog, ForecastTables, RunLog):
    """Every table family's reads and writes, on one binding."""


class Transaction(_Tables):
    """A unit of work: every read and write made through it commits together."""


@contextmanager
def _reachable(url: str) -> Iterator[None]:
    """A URL that is no database URL, or a database that does not answer, as one line."""
    try:
        yield
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError):
        raise InputError(
            "the store URL (STREAMCAST_DB_URL) is not a database URL streamcast can use; "
            "expected e.g. postgresql+psycopg://user@host/db or sqlite:///path/to/streamcast.db"
        ) from None
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
        raise UnavailableError(f"cannot reach the store at {redact_url(url)}: {reason}") from None


class Store(_Tables):
    """Reads and writes streamcast's tables."""

    def __init__(self, url: str, *, read_only: bool = False, background_checkpoint: bool = False) -> None:
        """Open the store at ``url``. Writers create it, or upgrade it when it is from an
        older streamcast; ``read_only`` opens (status, queries, the API) create and change
        nothing and raise :class:`NotFoundError` / :class:`SchemaError` instead.
        ``background_checkpoint``: a SQLite file's write-ahead log is checkpointed on a
        thread, not in commits (a long-running writer whose commit latency counts: the stream)."""
        self.url = url
        with _reachable(url):
            parsed = sa.engine.make_url(url)
            backend = parsed.get_backend_name()
            path = parsed.database if backend == "sqlite" else None
            background = background_checkpoint and bool(path) and path != ":memory:"
            if backend not in ("sqlite", "postgresql"):
                raise InputError(f"the store must be SQLite or PostgreSQL; STREAMCAST_DB_URL names {backend!r}")
            if read_only:
                migrate.refuse_missing_file(url)
            self._engine = make_engine(url, checkpoint_in_commit=not background)
        super().__init__(self._engine)
        self._checkpointer: WalCheckpointer | None = None
        try:
            with _reachable(url):
                if read_only:
                    migrate.check_readable(self._engine)
                else:
                    migrate.ensure_current(self._engine)
        except BaseException:
            self._engine.dispose()
            raise
        if background:
            assert path is not None
            self._checkpointer = WalCheckpointer(path)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.dispose()

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self._engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Everything done through the yielded transaction commits together or not at all."""
        with self._engine.begin() as conn:
            yield Transaction(conn)

    def table_counts(self, scan: bool = False) -> dict[str, int]:
        """Rows of observations, quarantine, ingest_batches, forecasts and scores. The three
        that grow with every streamed hour are summed from what their writes keep
        (``series_stats``, ``forecast_totals``, ``score_totals``: a few rows per series or
        hour), not counted: ``GET /health`` answers this on every call. ``scan``: count
        every row (the same numbers, at the cost of reading them)."""
        kept = {
            "observations": sa.select(sa.func.sum(series_stats.c.n)),
            "forecasts": sa.select(sa.func.sum(forecast_totals.c.points)),
            "scores": sa.select(sa.func.sum(score_totals.c.n)),
        }
        with self._conn() as conn:
            counts = {}
            for t in (observations, quarantine, ingest_batches, forecasts, scores):
                query = kept[t.name] if t.name in kept and not scan else sa.select(sa.func.count()).select_from(t)
                counts[t.name] = int(conn.execute(query).scalar_one() or 0)
            return counts


def upgrade_store(url: str) -> tuple[str | None, str]:
    """Create the store at ``url`` or bring it to this streamcast's schema (holding the
    schema lock); returns the revision before (None: new; "legacy": before migrations) and after."""
    engine = make_engine(url)
    try:
        return migrate.upgrade(engine)
    finally:
        engine.dispose()


__all__ = [
    "POINT_COLUMNS",
    "Store",
    "Transaction",
    "UpsertCounts",
    "as_utc",
    "data_source",
    "optional_float",
    "redact_url",
    "upgrade_store",
    "utcnow",
]
