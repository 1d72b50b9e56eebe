"""What a streamed hour writes, on PostgreSQL: one statement of arrays against a statement
per row, side by side on one store.

A store of N synthetic hourly series (two variables; ``bench/scale.py``'s generator,
``--days`` of history) ingested in process, then one hour at a time what the stream
writes at N series when every series' observation of the hour arrives:

- observations: the hour's 2N observations (``upsert_observations``: their new rows and
  the ``series_stats`` update of their series);
- forecast points: a 24-step forecast per series (``write_forecast_columns``, 24N points);
- scores: 24N matured points (``write_score_columns``, with their per-time totals).

Hours alternate between the two ways of the driver insert: arrays (``INSERT ... SELECT FROM
unnest(...)`` of binary arrays, what it does) and rows (``executemany``, a statement per row,
what it did; ``ARRAY_INSERT_DIALECTS`` emptied). Each hour's writes are new keys, as a
stream's are. The table gives each write's median milliseconds and the ratio.

    python bench/writes.py --postgres URL [--series 1000] [--days 7] [--hours 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section
from scale import fresh_database, panel

from streamcast.config import Settings
from streamcast.ingestion import ingest_frame
from streamcast.store import Store, engine

STEPS = 24
WRITES = ("observations", "forecast points", "scores")


def forecast_columns(series: list[str], origin: datetime, issued: datetime) -> dict[str, list[Any]]:
    """A 24-step forecast per series from ``origin``, in the stream's driver types."""
    n = len(series)
    times = [origin + timedelta(hours=h) for h in range(1, STEPS + 1)]
    return {
        "forecast_id": [f"{s}|temp|{origin.isoformat()}|3" for s in series for _ in range(STEPS)],
        "series_id": [s for s in series for _ in range(STEPS)],
        "target": ["temp"] * (n * STEPS),
        "issued_at": [issued] * (n * STEPS),
        "origin_ts": [origin] * (n * STEPS),
        "ts": times * n,
        "step": list(range(1, STEPS + 1)) * n,
        "yhat": [10.0 + 0.01 * i for i in range(n * STEPS)],
        "lo": [9.0 + 0.01 * i for i in range(n * STEPS)],
        "hi": [11.0 + 0.01 * i for i in range(n * STEPS)],
        "model_name": ["esn"] * (n * STEPS),
        "model_version": ["3"] * (n * STEPS),
        "run_id": ["0123456789abcdef0123456789abcdef"] * (n * STEPS),
    }


def score_columns(series: list[str], at: datetime, scored: datetime) -> dict[str, list[Any]]:
    """The points maturing at ``at``: one per series and step (issued ``step`` hours before)."""
    n = len(series)
    origins = [at - timedelta(hours=h) for h in range(1, STEPS + 1)]
    yhat = [10.0 + 0.01 * i for i in range(n * STEPS)]
    return {
        "forecast_id": [f"{s}|temp|{o.isoformat()}|3" for s in series for o in origins],
        "series_id": [s for s in series for _ in range(STEPS)],
        "target": ["temp"] * (n * STEPS),
        "step": list(range(1, STEPS + 1)) * n,
        "ts": [at] * (n * STEPS),
        "yhat": yhat,
        "actual": [10.5] * (n * STEPS),
        "abs_error": [abs(10.5 - y) for y in yhat],
        "scaled_error": [abs(10.5 - y) / 1.3 for y in yhat],
        "model_name": ["esn"] * (n * STEPS),
        "model_version": ["3"] * (n * STEPS),
        "scored_at": [scored] * (n * STEPS),
        "lo": [y - 1.0 for y in yhat],
        "hi": [y + 1.0 for y in yhat],
    }


def run(url: str, data: Path, n: int, days: int, hours: int) -> dict[str, dict[str, float]]:
    frame = panel(n, 24 * days + hours)
    cut = frame["ts"].min() + pd.Timedelta(days=days)
    history, later = frame[frame["ts"] < cut], frame[frame["ts"] >= cut]
    times: dict[str, dict[str, list[float]]] = {way: {w: [] for w in WRITES} for way in ("arrays", "rows")}
    with Store(url) as store:
        wide = history.assign(ts=history["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        ingest_frame(store, wide, source="csv", source_ref=None, series_col="station", settings=Settings(data_dir=data))
        series = sorted(history["station"].unique().tolist())
        long = later.melt(id_vars=["station", "ts"], var_name="variable", value_name="value")
        long = long.rename(columns={"station": "series_id"})[["series_id", "variable", "ts", "value"]]
        for k, (at, hour) in enumerate(long.groupby("ts", sort=True)):
            way = ("arrays", "rows")[k % 2]
            engine.ARRAY_INSERT_DIALECTS = frozenset({"postgresql"}) if way == "arrays" else frozenset()
            now = at.to_pydatetime() + timedelta(minutes=5)
            with store.transaction() as tr:
                batch = tr.start_batch("bench", None, None)
                t0 = time.perf_counter()
                tr.upsert_observations(hour, batch)
                times[way]["observations"].append(time.perf_counter() - t0)
            points = forecast_columns(series, at.to_pydatetime(), now)
            t0 = time.perf_counter()
            assert store.write_forecast_columns(points) == n * STEPS
            times[way]["forecast points"].append(time.perf_counter() - t0)
            matured = score_columns(series, at.to_pydatetime(), now)
            t0 = time.perf_counter()
            assert store.write_score_columns(matured) == n * STEPS
            times[way]["scores"].append(time.perf_counter() - t0)
        engine.ARRAY_INSERT_DIALECTS = frozenset({"postgresql"})
        counts = store.table_counts()
        assert counts["forecasts"] == counts["scores"] == hours * n * STEPS, counts
        pd.testing.assert_frame_equal(store.series_summary(), store.series_summary(scan=True), check_dtype=False)
    return {way: {w: statistics.median(v) for w, v in got.items()} for way, got in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--postgres", metavar="URL", required=True, help="a fresh database beside URL's holds the store")
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--days", type=int, default=7, help="days of hourly history ingested first")
    ap.add_argument("--hours", type=int, default=16, help="hours written, alternating the two ways")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamcast-writes-") as tmp, fresh_database(args.postgres) as url:
        r = run(url, Path(tmp), args.series, args.days, args.hours)
    print(r, flush=True)
    rows = [
        [w, f"{r['arrays'][w] * 1000:.1f}", f"{r['rows'][w] * 1000:.1f}", f"{r['rows'][w] / r['arrays'][w]:.2f}"]
        for w in WRITES
    ]
    total = {way: sum(r[way].values()) for way in r}
    ratio = total["rows"] / total["arrays"]
    rows.append(["the hour", f"{total['arrays'] * 1000:.1f}", f"{total['rows'] * 1000:.1f}", f"{ratio:.2f}"])
    body = (
        f"{args.series:,} synthetic hourly series (two variables, {args.days} days of history) on PostgreSQL; "
        f"{args.hours} hours written in process, alternating the two ways of the driver insert; median ms per "
        f"hour of each write ({args.series * STEPS:,} forecast points, as many scores, "
        f"{2 * args.series:,} observations).\n\n"
        + markdown_table(["write", "one statement of arrays ms", "a statement per row ms", "ratio"], rows)
    )
    print(body)
    write_section("A streamed hour's writes (PostgreSQL)", body)


if __name__ == "__main__":
    main()
