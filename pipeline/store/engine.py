"""Engines, time conversions and the connection binding every table family shares."""

from __future__ import annotations

import logging
import operator
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _set_sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (API, status) run while an ingest writes.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def make_engine(url: str, *, checkpoint_in_commit: bool = True) -> Engine:
    """Create an engine; SQLite gets WAL mode and its parent folder is created. Without
    ``checkpoint_in_commit`` its connections leave the log to a :class:`WalCheckpointer`."""
    if url.startswith("sqlite"):
        db_path = sa.engine.make_url(url).database
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _set_sqlite_pragmas)
        if not checkpoint_in_commit:
            sa.event.listen(engine, "connect", _no_autocheckpoint)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class WalCheckpointer:
    """Moves a SQLite store's write-ahead log into the database on a thread of its own.

    SQLite otherwise checkpoints inside the commit that takes the log past 1,000 pages:
    a stream of 1,000 series writes that much every hour (24,000 forecast points and as
    many scores), and the checkpoint (with its fsync) was a fifth of each batch's time.
    Here a passive checkpoint runs every ``every`` seconds beside the writer (it never
    blocks a reader or the writer; the sqlite3 module releases the GIL while it copies)."""

    def __init__(self, path: str, every: float = 0.25) -> None:
        self.path, self.every = path, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamcast-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            while True:
                stopping = self._stop.wait(self.every)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # a busy or locked moment: the next round tries again
                    log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
                if stopping:
                    return
        finally:
            conn.close()

    def stop(self) -> None:
        """A last checkpoint, then the thread ends."""
        self._stop.set()
        self._thread.join()


def redact_url(url: str) -> str:
    """A database URL fit to print: the password hidden."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def data_source(url: str) -> str:
    """Where stored data comes from, for provenance records: a SQLite store's file, else
    the database URL without user name or password."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(Path(parsed.database or "").resolve())
    return parsed.set(username=None, password=None).render_as_string(hide_password=True)


def optional_float(value: Any) -> float | None:
    """A value for a nullable float column: NaN and NA become NULL."""
    return None if value is None or pd.isna(value) else float(value)


def as_utc(value: datetime) -> datetime:
    """A datetime read back from the store as UTC-aware (SQLite returns naive ones; all writes are UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (the store's resolution)."""
    return (value - _EPOCH) // _MICROSECOND


def micros_array(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy().astype("datetime64[us]").astype(np.int64)


def to_utc_index(values: Iterable[Any]) -> pd.DatetimeIndex:
    """Timestamps read from the store as a UTC DatetimeIndex (SQLite returns naive ones)."""
    values = list(values) if not isinstance(values, pd.Series) else values
    # SQLite returns ISO text (or naive datetimes); PostgreSQL aware datetimes.
    idx = pd.DatetimeIndex(pd.to_datetime(values, format="ISO8601") if _is_text(values) else pd.to_datetime(values))
    return idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")


def _is_text(values: Any) -> bool:
    first = values.iloc[0] if isinstance(values, pd.Series) else (values[0] if len(values) else None)
    return isinstance(first, str)


def utc_columns(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Convert timestamp columns of a frame read from the store to UTC, in place."""
    for c in columns:
        frame[c] = to_utc_index(frame[c]) if not frame.empty else pd.DatetimeIndex([], tz="UTC")
    return frame


def key_pairs(table: str, first: str, second: str, where: str = "TRUE") -> str:
    """``WITH RECURSIVE p(sid, var)``: the distinct (``first``, ``second``) pairs of the rows
    of ``table`` matching ``where`` (on alias ``x``), found by walking an index led by those
    two columns from one pair to the next ("loose index scan"): one probe per pair, not a
    scan of every row. The last row of ``p`` has ``sid`` NULL."""
    nxt2 = f"(SELECT min(x.{second}) FROM {table} x WHERE {where} AND x.{first} = p.sid AND x.{second} > p.var)"
    nxt1 = f"(SELECT min(x.{first}) FROM {table} x WHERE {where} AND x.{first} > p.sid)"
    return f"""
    WITH RECURSIVE p(sid, var) AS (
        SELECT f.sid, (SELECT min(x.{second}) FROM {table} x WHERE {where} AND x.{first} = f.sid)
        FROM (SELECT min(x.{first}) AS sid FROM {table} x WHERE {where}) f
        UNION ALL
        SELECT CASE WHEN {nxt2} IS NOT NULL THEN p.sid ELSE {nxt1} END,
               COALESCE({nxt2}, (SELECT min(x.{second}) FROM {table} x WHERE {where} AND x.{first} = {nxt1}))
        FROM p WHERE p.sid IS NOT NULL
    )"""


def py_datetime(value: datetime | pd.Timestamp) -> datetime:
    return pd.Timestamp(value).to_pydatetime()


# SQLAlchemy's SQLite DateTime stores this text (naive; every write here is UTC) and compares it as text.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
DRIVER_PLACEHOLDER = {"sqlite": "?", "postgresql": "%s"}  # the drivers' parameter style
ARRAY_INSERT_DIALECTS = frozenset({"postgresql"})  # whose column inserts go as one statement of arrays


def array_inserts(dialect: str) -> bool:
    """Whether batched inserts on ``dialect`` go as one statement of arrays (read at each call:
    ``bench/writes.py`` empties :data:`ARRAY_INSERT_DIALECTS` to time a statement per row)."""
    return dialect in ARRAY_INSERT_DIALECTS


def driver_times(times: pd.DatetimeIndex, dialect: str) -> np.ndarray:
    """UTC times as the driver takes them: on SQLite the text SQLAlchemy's DateTime writes
    and compares (:data:`SQLITE_TIME_FORMAT`), on PostgreSQL aware datetimes."""
    if dialect == "sqlite":
        return np.asarray(times.tz_convert("UTC").strftime(SQLITE_TIME_FORMAT))
    if dialect == "postgresql":
        return np.asarray(times.tz_convert("UTC").to_pydatetime())
    raise NotImplementedError(dialect)  # pragma: no cover - guarded by Bound._insert


def driver_insert_columns(
    conn: Connection,
    table: sa.Table,
    columns: Mapping[str, Sequence[Any]],
    keys: Sequence[str],
    update: Sequence[str] | Mapping[str, str] = (),
    count: bool = False,
) -> int:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING`` (or ``DO UPDATE`` of ``update``: columns
    set to the new row's, or column -> SQL expression of the stored row, named by its table,
    and ``excluded``) of rows given as columns of one length (name -> values), through the
    driver, not SQLAlchemy, whose per-row parameter processing costs several times the
    database's work at tens of thousands of points per forecast (a stream hour at 1,000
    series inserts 24,000 forecast points and scores as many). Aware datetimes in DateTime
    columns are written as SQLAlchemy writes them (UTC; text on SQLite).

    On SQLite each time column's distinct values are converted once and the rows zipped in
    C for the driver's executemany; on PostgreSQL the columns go as one statement of binary
    arrays (``INSERT ... SELECT FROM unnest(...)``), where a statement per row cost half as
    much again (``bench/writes.py``). With ``count``: how many rows the database inserted
    or updated (not those it kept as they were)."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    if not n:
        return 0
    sets = update if isinstance(update, Mapping) else {c: f'excluded."{c}"' for c in update}
    action = "DO UPDATE SET " + ", ".join(f'"{c}" = {expr}' for c, expr in sets.items()) if sets else "DO NOTHING"
    quoted = ", ".join(f'"{c}"' for c in names)
    head = f'INSERT INTO "{table.name}" ({quoted}) '
    conflict = "ON CONFLICT (" + ", ".join(f'"{c}"' for c in keys) + f") {action}"
    dialect = conn.dialect.name
    # One statement cannot update a key twice: rows repeating a key go one at a time, in order.
    if array_inserts(dialect) and not (sets and _repeats_key(columns, keys, n)):
        result = conn.exec_driver_sql(*_unnest_insert(conn, table, columns, n, conflict))
        return result.rowcount if count else n
    values: list[Sequence[Any]] = []
    for c in names:
        col = columns[c]
        if dialect == "sqlite" and isinstance(table.c[c].type, sa.DateTime):
            text = {v: _sqlite_time(v) for v in set(col) if v is not None}
            values.append([None if v is None else text[v] for v in col])
        elif isinstance(table.c[c].type, sa.Integer):  # sqlite3 binds a numpy integer as a blob
            values.append(_typed(col, table.c[c].type))
        else:
            values.append(col)
    rows = list(zip(*values, strict=True))
    if not table.dialect_options["sqlite"]["with_rowid"]:
        # A table stored in its key's order takes the rows in that order, each then landing
        # beside the one before: in the order given, a stream hour's 24,000 scores (each
        # forecast's key random within its hour) split pages all over the hour's part of the
        # tree (bench/sqlite_floor.py: 303 -> 211 ms). The sort is stable, so of rows that
        # repeat a key the same one wins as unsorted (the first kept, or the last updating).
        rows.sort(key=operator.itemgetter(*(names.index(k) for k in keys)))
    placeholders = ", ".join([DRIVER_PLACEHOLDER[dialect]] * len(names))
    result = conn.exec_driver_sql(f"{head}VALUES ({placeholders}) {conflict}", rows)
    return result.rowcount if count else n  # both drivers sum an executemany's rows


def _unnest_insert(
    conn: Connection, table: sa.Table, columns: Mapping[str, Sequence[Any]], n: int, conflict: str
) -> tuple[str, tuple[Any, ...]]:
    """``INSERT ... SELECT FROM unnest(...)`` of ``columns`` as binary arrays, and its
    parameters; a column of one value (a stream hour's target, model, issue time) goes
    once, as a scalar: psycopg dumps about 0.2 us an element, whatever its type."""
    typed = {c: _typed(columns[c], table.c[c].type) for c in columns}
    arrays = [c for c, v in typed.items() if v.count(v[0]) < n] or list(typed)[:1]
    scalars = [c for c in typed if c not in arrays]
    # Strings as text: a cast to varchar(n) would cut a longer value where the insert refuses it.
    sql_type = {c: _array_type(table.c[c].type, conn) for c in typed}
    names = ", ".join(f'"{c}"' for c in (*arrays, *scalars))
    select = ", ".join(["u.*", *(f"%b::{sql_type[c]}" for c in scalars)])
    unnest = ", ".join(f"%b::{sql_type[c]}[]" for c in arrays)
    sql = f'INSERT INTO "{table.name}" ({names}) SELECT {select} FROM unnest({unnest}) AS u {conflict}'
    return sql, (*(typed[c][0] for c in scalars), *(typed[c] for c in arrays))


def _array_type(type_: sa.types.TypeEngine[Any], conn: Connection) -> str:
    return "text" if isinstance(type_, sa.String) else type_.compile(dialect=conn.dialect)


def _repeats_key(columns: Mapping[str, Sequence[Any]], keys: Sequence[str], n: int) -> bool:
    return len(set(zip(*(columns[k] for k in keys), strict=True))) < n


def _typed(values: Sequence[Any], type_: sa.types.TypeEngine[Any]) -> list[Any]:
    """``values`` as the column's Python type (one pass over them only where some are not).
    A statement of arrays takes its element type from the values and refuses a mix (an int
    among floats, a numpy integer among ints); SQLite stores a numpy integer as a blob."""
    values = list(values)
    kind = type_.python_type
    if {type(v) for v in values} <= {kind, type(None)}:
        return values
    if kind is datetime:
        return [None if v is None else py_datetime(v) for v in values]
    return [None if v is None else kind(v) for v in values]


def _sqlite_time(value: datetime) -> str:
    """An aware datetime as SQLAlchemy's SQLite DateTime stores it (naive UTC text)."""
    return as_utc(value).strftime(SQLITE_TIME_FORMAT)


class Bound:
    """What every table family needs: a connection to work in and the dialect's insert.

    Bound to an engine, each call runs in its own transaction; bound to a connection
    (a :class:`~streamcast.store.Transaction`), every call joins that transaction.
    """

    def __init__(self, bind: Engine | Connection) -> None:
        self._bind = bind

    @property
    def dialect(self) -> str:
        return self._bind.dialect.name

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        if isinstance(self._bind, Connection):
            yield self._bind
            return
        with self._bind.begin() as conn:
            yield conn

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        if self.dialect == "sqlite":
            return sqlite.insert(table)
        raise NotImplementedError(f"unsupported database dialect: {self.dialect}")

    def _frame(self, query: Any, columns: list[str] | None = None) -> pd.DataFrame:
        """Run a select and return its rows as a frame (columns named by the query)."""
        with self._conn() as conn:
            res = conn.execute(query)
            return pd.DataFrame(res.all(), columns=columns or list(res.keys()))
