"""What a streamed hour's writes cost on SQLite, and how much of it is SQLite's own floor.

At N series an ESN stream stores, every hour, a 24-step forecast per series (24N points)
and scores 24N matured points. This writes them hour after hour, in process, four ways,
each into its own database (WAL, ``synchronous=NORMAL``, checkpointed between hours as the
stream's checkpoint thread does), the ways alternating within each hour:

- store: ``write_forecast_columns`` and ``write_score_columns`` in one transaction, into a
  store made by the migrations (keys, indexes, kept totals: what the stream does);
- keys only: the same rows by ``executemany`` into the same tables without their
  secondary indexes (times already converted to the store's text);
- no keys: into tables of the same columns without a key or index;
- memory: into a keyless table of an in-memory database (the driver binding the rows,
  nearly nothing else).

The table gives each way's median milliseconds over the later half of the hours.

    python bench/sqlite_floor.py [--series 1000] [--hours 40]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import writes
from _results import markdown_table, write_section

from streamcast.forecasting import forecast_id
from streamcast.store import Store
from streamcast.store.engine import SQLITE_TIME_FORMAT

STEPS = writes.STEPS
WAYS = ("store", "keys only", "no keys", "memory")
TABLES = ("forecasts", "scores")
HEADERS = ["way", "forecast points ms", "scores ms", "the hour's writes ms", "share of the store's"]
START = datetime(2024, 3, 1, tzinfo=UTC)


def forecast_columns(series: list[str], origin: datetime, issued: datetime) -> dict[str, list[Any]]:
    """``bench/writes.py``'s forecast columns with the stream's forecast ids (their origin,
    then a hash: random within the hour)."""
    columns = writes.forecast_columns(series, origin, issued)
    columns["forecast_id"] = [forecast_id(s, "temp", origin, "3") for s in series for _ in range(STEPS)]
    return columns


def score_columns(series: list[str], at: datetime, scored: datetime) -> dict[str, list[Any]]:
    """The points maturing at ``at`` (``bench/writes.py``'s) with the ids of the stream's
    forecasts issued ``step`` hours before."""
    columns = writes.score_columns(series, at, scored)
    ids = [forecast_id(s, "temp", at - timedelta(hours=h), "3") for s in series for h in range(1, STEPS + 1)]
    columns["forecast_id"] = ids
    return columns


def as_rows(columns: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    """The columns' rows as the driver takes them (times as the store's text)."""
    values = []
    for col in columns.values():
        if isinstance(col[0], datetime):
            text = {v: v.astimezone(UTC).strftime(SQLITE_TIME_FORMAT) for v in set(col)}
            values.append([text[v] for v in col])
        else:
            values.append(col)
    return list(zip(*values, strict=True))


def insert_sql(table: str, columns: dict[str, list[Any]]) -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def schemas(folder: Path) -> dict[str, Any]:
    """The four ways' targets: a store, and connections to the other three's tables."""
    paths = {way: folder / f"{way.replace(' ', '_')}.db" for way in WAYS[:3]}
    for way in WAYS[:3]:
        Store(f"sqlite:///{paths[way]}").dispose()  # the migrations' tables
    # The store as the stream opens it: its log checkpointed by a thread of its own.
    out: dict[str, Any] = {"store": Store(f"sqlite:///{paths['store']}", background_checkpoint=True)}
    keys = connect(str(paths["keys only"]))
    for (name,) in keys.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('forecasts', 'scores') "
        "AND name NOT LIKE 'sqlite_autoindex%'"
    ).fetchall():
        keys.execute(f'DROP INDEX "{name}"')
    out["keys only"] = keys
    bare = connect(str(paths["no keys"]))
    memory = sqlite3.connect(":memory:", isolation_level=None)
    for table in TABLES:
        bare.execute(f"ALTER TABLE {table} RENAME TO {table}_keyed")
        bare.execute(f"CREATE TABLE {table} AS SELECT * FROM {table}_keyed WHERE 0")
        memory.execute(f"ATTACH DATABASE '{paths['no keys']}' AS src")
        memory.execute(f"CREATE TABLE {table} AS SELECT * FROM src.{table} WHERE 0")
        memory.execute("DETACH DATABASE src")
    out["no keys"], out["memory"] = bare, memory
    return out


def run(n: int, hours: int) -> dict[str, dict[str, float]]:
    series = [f"station-{i:04d}" for i in range(n)]
    times: dict[str, dict[str, list[float]]] = {way: {t: [] for t in TABLES} for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="streamcast-sqlite-floor-") as tmp:
        targets = schemas(Path(tmp))
        store: Store = targets["store"]
        for hour in range(hours):
            at = START + timedelta(hours=hour)
            now = at + timedelta(minutes=5)
            columns = {"forecasts": forecast_columns(series, at, now), "scores": score_columns(series, at, now)}
            rows = {t: as_rows(c) for t, c in columns.items()}
            order = WAYS if hour % 2 else WAYS[::-1]
            for way in order:
                if way == "store":
                    with store.transaction() as tx:
                        t0 = time.perf_counter()
                        tx.write_forecast_columns(columns["forecasts"])
                        t1 = time.perf_counter()
                        tx.write_score_columns(columns["scores"])
                    t3 = time.perf_counter()  # the commit is billed to the scores
                    times[way]["forecasts"].append(t1 - t0)
                    times[way]["scores"].append(t3 - t1)
                    continue
                conn = targets[way]
                conn.execute("BEGIN")
                t0 = time.perf_counter()
                conn.executemany(insert_sql("forecasts", columns["forecasts"]), rows["forecasts"])
                t1 = time.perf_counter()
                conn.executemany(insert_sql("scores", columns["scores"]), rows["scores"])
                conn.execute("COMMIT")
                t3 = time.perf_counter()
                times[way]["forecasts"].append(t1 - t0)
                times[way]["scores"].append(t3 - t1)
            for way in WAYS[1:3]:  # between hours, as the stream's checkpoint thread does
                targets[way].execute("PRAGMA wal_checkpoint(PASSIVE)")
        counts = store.table_counts(scan=True)
        assert counts["forecasts"] == counts["scores"] == hours * n * STEPS, counts
        store.dispose()
        for way in WAYS[1:]:
            targets[way].close()
    later = slice(hours // 2, None)
    return {way: {t: statistics.median(v[later]) for t, v in got.items()} for way, got in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=40)
    args = ap.parse_args()
    r = run(args.series, args.hours)
    print(r, flush=True)
    total = {way: sum(r[way].values()) for way in WAYS}
    rows = [
        [way, f"{r[way]['forecasts'] * 1000:.1f}", f"{r[way]['scores'] * 1000:.1f}", f"{total[way] * 1000:.1f}",
         f"{total[way] / total['store']:.2f}"]
        for way in WAYS
    ]  # fmt: skip
    body = (
        f"{args.series:,} series: every hour {args.series * STEPS:,} forecast points and as many scores, "
        f"{args.hours} hours in process, the four ways alternating within each hour; median ms of the later "
        f"{args.hours - args.hours // 2} hours (the commit billed to the scores).\n\n" + markdown_table(HEADERS, rows)
    )
    print(body)
    write_section("A streamed hour's writes: SQLite's floor", body)


if __name__ == "__main__":
    main()
