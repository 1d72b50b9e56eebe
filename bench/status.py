"""What the store holds per series (``streamcast status``, ``GET /series``): kept as it is
written against aggregated from every observation, side by side, as the history grows.

For each history length, a fresh store of N synthetic hourly series (two variables;
``bench/scale.py``'s generator) ingested in process, then, alternating:

- kept: ``series_summary`` read from ``series_stats`` and the revised keys' index (what
  it does, migration 0012);
- every observation: the same columns aggregated from every observation (``scan=True``;
  what it read before).

Both give the same frame (the bench checks it). Then ``streamcast status --json`` and
``streamcast status`` (the table: past 20 series, a row per variable and the 20 rows
furthest behind) through the CLI (start-up included), and what keeping the rows costs a stream: the
``series_stats`` update of one hour's observations of every series (N x 2 new keys), against
that hour's whole write of observations.

    python bench/status.py [--series 1000] [--days 90,360] [--rounds 5] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section
from scale import STREAMCAST, cli_env, fresh_database, panel

from streamcast.config import Settings
from streamcast.ingestion import ingest_frame
from streamcast.store import Store


def run(url: str, data: Path, n: int, days: int, rounds: int) -> dict[str, float]:
    frame = panel(n, 24 * days + 1)
    hour = frame[frame["ts"] == frame["ts"].max()]
    history = frame[frame["ts"] < frame["ts"].max()]
    settings = Settings(data_dir=data)
    out: dict[str, list[float]] = {"kept": [], "scan": [], "cli": [], "table": [], "stats": [], "write": []}
    with Store(url) as store:
        wide = history.assign(ts=history["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        ingest_frame(store, wide, source="csv", source_ref=None, series_col="station", settings=settings)
        del wide, history, frame
        observations = store.table_counts()["observations"]
        for _ in range(rounds):
            for how, read in (("kept", store.series_summary), ("scan", lambda: store.series_summary(scan=True))):
                t0 = time.perf_counter()
                got = read()
                out[how].append(time.perf_counter() - t0)
            pd.testing.assert_frame_equal(store.series_summary(), store.series_summary(scan=True), check_dtype=False)
        env = cli_env(data)
        env["STREAMCAST_DB_URL"] = url
        for _ in range(rounds):
            for how, args in (("cli", ["status", "--json"]), ("table", ["status"])):
                t0 = time.perf_counter()
                subprocess.run([STREAMCAST, *args], env=env, check=True, capture_output=True)
                out[how].append(time.perf_counter() - t0)
        # A stream hour's observations of every series: the stats update alone, then the whole write.
        long = hour.melt(id_vars=["station", "ts"], var_name="variable", value_name="value")
        long = long.rename(columns={"station": "series_id"})[["series_id", "variable", "ts", "value"]]
        for k in range(rounds):
            later = long.assign(ts=long["ts"] + pd.Timedelta(hours=k))
            with store._engine.connect() as conn, conn.begin() as tx:
                t0 = time.perf_counter()
                store._count_new(conn, later)
                out["stats"].append(time.perf_counter() - t0)
                tx.rollback()
            with store.transaction() as tr:
                batch = tr.start_batch("bench", None, None)
                t0 = time.perf_counter()
                tr.upsert_observations(later, batch)
                out["write"].append(time.perf_counter() - t0)
        assert len(got) == 2 * n
    med = {k: statistics.median(v) for k, v in out.items()}
    med["observations"] = observations
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--days", default="90,360", help="history lengths, days of hourly observations")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--postgres", metavar="URL", help="the store in a fresh PostgreSQL database beside URL's")
    args = ap.parse_args()
    rows = []
    for days in [int(d) for d in args.days.split(",")]:
        with tempfile.TemporaryDirectory(prefix="streamcast-status-") as tmp:
            if args.postgres:
                with fresh_database(args.postgres) as url:
                    r = run(url, Path(tmp), args.series, days, args.rounds)
            else:
                r = run(f"sqlite:///{tmp}/streamcast.db", Path(tmp), args.series, days, args.rounds)
        print(days, r, flush=True)
        rows.append(
            [
                str(days),
                f"{r['observations']:,.0f}",
                f"{r['kept']:.3f}",
                f"{r['scan']:.3f}",
                f"{r['scan'] / r['kept']:.0f}x",
                f"{r['cli']:.2f}",
                f"{r['table']:.2f}",
                f"{r['stats'] * 1000:.1f} of {r['write'] * 1000:.1f}",
            ]
        )
    body = (
        f"{args.series:,} synthetic hourly series, two variables, ingested in process; median of {args.rounds} "
        "alternating reads each way, of `streamcast status --json` and `streamcast status` runs, and of one "
        f"hour's write of every series' observations. Store: {'PostgreSQL' if args.postgres else 'SQLite'}.\n\n"
        + markdown_table(
            [
                "days",
                "observations",
                "series summary, kept s",
                "every observation aggregated (before 0012) s",
                "ratio",
                "`status --json` s",
                "`status` s",
                "an hour's stats update ms (of its whole write)",
            ],
            rows,
        )
    )
    print(body)
    write_section("Store status by length of history" + (" (PostgreSQL)" if args.postgres else ""), body)


if __name__ == "__main__":
    main()
