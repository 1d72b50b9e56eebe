"""Ingest throughput (observations/s) on SQLite and PostgreSQL, side by side.

Ingests the bundled nyc-weather frame (26,115 rows, 211,060 observations) into an
empty store, then again (all unchanged), then a copy shifted one year (all new on
a non-empty store). Validation is included in the timing; loading the dataset is not.

    python bench/ingest.py [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from _results import markdown_table, write_section

from streamcast.config import Settings
from streamcast.ingestion import ingest_frame
from streamcast.sources.bundled import load_dataset
from streamcast.store import Store


def run(store: Store, settings: Settings, frame: pd.DataFrame, options: dict) -> list[tuple[str, int, float]]:
    shifted = frame.copy()
    shifted["time_hour"] = (pd.to_datetime(shifted["time_hour"]) + pd.DateOffset(years=1)).dt.strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    out = []
    for label, f in (
        ("empty store, all new", frame),
        ("same input again, all unchanged", frame),
        ("next year, all new on 211k rows", shifted),
    ):
        t0 = time.perf_counter()
        s = ingest_frame(store, f, source="bench", source_ref=label, settings=settings, **options)
        out.append((label, s.observations_read, time.perf_counter() - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    frame, options = load_dataset("nyc-weather")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        stores = [("SQLite (WAL)", Store(settings.database_url), None)]
        admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        dbname = f"streamcast_bench_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{dbname}"'))
            pg_url = sa.engine.make_url(args.pg_url).set(database=dbname).render_as_string(hide_password=False)
            stores.append(("PostgreSQL", Store(pg_url), dbname))
        except Exception as exc:  # noqa: BLE001
            print(f"PostgreSQL skipped: {exc}")
        for name, store, _ in stores:
            for label, n, secs in run(store, settings, frame, options):
                rows.append([name, label, f"{n:,}", f"{secs:.2f}", f"{n / secs:,.0f}"])
                print(f"{name:14s} {label:34s} {n:>9,} obs {secs:6.2f} s {n / secs:>10,.0f} obs/s")
            store.dispose()
        for _, _, db in stores:
            if db:
                with admin.connect() as c:
                    c.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
    body = markdown_table(["store", "run", "observations", "seconds", "observations/s"], rows)
    body += "\nTarget: at least 50,000 observations/s on SQLite (batched upserts through the driver).\n"
    write_section("Ingest throughput", body)


if __name__ == "__main__":
    main()
