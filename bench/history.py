"""Costs that grow with the history of forecasts: each way side by side, on one store.

A store that an hourly forecast flow fed for ``--hours`` hours holds that many forecasts
per series (24 points each). Each hour here ingests the next hour's observations (N
series), then scores, alternating:

- marked: from the earliest to the latest observation written since the last run
  (``score_matured`` with its mark, what ``streamcast forecast`` does);
- everything: every point of the history the forecast loads (``score_matured`` without a
  mark, what it did before migration 0010).

Both find and store the same new scores (one hour of points per series and origin).
Before each hour, the batches written so far are dated an hour back, as in a flow run
hourly. Then the latest forecast of every series (``/forecasts/latest``, ``predictions
latest``), alternating:

- walked: one probe of the latest-forecast index per series (what it does);
- ranked: every forecast of every series ranked by issue time (the same query for the
  series given by name, what it did for all of them before).

Last, the drift check's live MASE (``GET /drift``, ``streamcast scores``, the pipeline
flow's retrain decision) since a training a day before the newest score, every score
dated as scored an hour after its time (as an hourly flow scores them), alternating:

- by version: one range of the version-and-scoring-time index per version (what it does,
  migration 0011);
- every score: every score of the target filtered on when it was scored (what it did).

Then the rows of observations, forecasts and scores (``streamcast status``' last line,
``GET /health`` on every call), alternating:

- kept: summed from ``series_stats``, ``forecast_totals`` and ``score_totals`` (what it
  does, migration 0013);
- counted: ``count(*)`` of each table (what it did).

The table gives each one's median seconds.

    python bench/history.py [--series 1000] [--hours 48] [--rounds 6] [--postgres URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section
from scale import fresh_database, panel

from streamcast.config import Settings
from streamcast.features import prepare_panel
from streamcast.forecasting import forecast_id, score_matured
from streamcast.ingestion import ingest_frame
from streamcast.store import Store
from streamcast.store.schema import ingest_batches

HORIZON = 24
HISTORY_DAYS = 30  # what the forecast loads (the champion's history) for the MASE scales
WAYS = {
    "marked": ("scoring a new hour", "marked"),
    "everything": ("scoring a new hour", "everything (before 0010)"),
    "walked": ("latest forecast of every series", "index walked"),
    "ranked": ("latest forecast of every series", "every forecast ranked (before)"),
    "by version": ("live MASE since a training a day ago", "scored since, by version"),
    "every score": ("live MASE since a training a day ago", "every score filtered (before 0011)"),
    "kept": ("table counts (`status`, GET /health)", "summed from the kept totals"),
    "counted": ("table counts (`status`, GET /health)", "every row counted (before 0013)"),
}
FIRST_WAY = {"everything": "marked", "ranked": "walked", "every score": "by version", "counted": "kept"}
DRIFT_WINDOW = 72  # the default drift window (points per series)


def live_mase_before_0011(store: Store, since: datetime, window: int) -> float | None:
    """``recent_live_mase`` as it read before migration 0011: every score of the target,
    filtered on ``scored_at`` (not indexed)."""
    from streamcast.store.schema import scores as s

    ranked = (
        sa.select(
            s.c.scaled_error,
            sa.func.row_number().over(partition_by=s.c.series_id, order_by=s.c.ts.desc()).label("rn"),
        )
        .where(s.c.target == "temp", s.c.scored_at >= since, s.c.scaled_error.is_not(None))
        .subquery()
    )
    with store._engine.connect() as conn:
        row = conn.execute(
            sa.select(sa.func.avg(ranked.c.scaled_error), sa.func.count()).where(ranked.c.rn <= window)
        ).one()
    return None if row[1] < window else float(row[0])


def forecasts_at(series: list[str], origin: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """One hourly forecast flow's run: every series' H points from ``origin``."""
    n = len(series)
    yhat = 50 + rng.normal(0, 5, n * HORIZON)
    return pd.DataFrame(
        {
            "forecast_id": np.repeat([forecast_id(s, "temp", origin, "1") for s in series], HORIZON),
            "series_id": np.repeat(series, HORIZON),
            "target": "temp",
            "issued_at": origin + pd.Timedelta(minutes=5),
            "origin_ts": origin,
            "ts": np.tile(pd.date_range(origin + pd.Timedelta(hours=1), periods=HORIZON, freq="h"), n),
            "step": np.tile(np.arange(1, HORIZON + 1), n),
            "yhat": yhat,
            "lo": yhat - 5,
            "hi": yhat + 5,
            "model_name": "esn",
            "model_version": "1",
            "run_id": None,
        }
    )


def run(url: str, n: int, hours: int, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[int]], int]:
    settings = Settings()
    frame = panel(n, 24 * HISTORY_DAYS + hours + 2 * rounds + 1)
    times = sorted(frame["ts"].unique())
    first = len(times) - hours - 2 * rounds - 1  # forecasts from here on; then the rounds' hours
    rng = np.random.default_rng(0)
    series = sorted(frame["station"].unique())
    seconds: dict[str, list[float]] = {how: [] for how in WAYS}
    scored: dict[str, list[int]] = {how: [] for how in WAYS}
    with Store(url) as store:

        def ingest(part: pd.DataFrame) -> None:
            wide = part.assign(ts=part["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
            ingest_frame(store, wide, source="csv", source_ref=None, series_col="station", settings=settings)

        ingest(frame[frame["ts"] <= times[first]])
        for k in range(first, first + hours):  # an hourly forecast flow: forecast, then the next hour arrives
            store.write_forecasts(forecasts_at(series, pd.Timestamp(times[k]), rng))
            ingest(frame[frame["ts"] == times[k + 1]])
        points = store.table_counts()["forecasts"]

        def score(marked: bool) -> tuple[int, float]:
            checked_at = pd.Timestamp.now(tz="UTC")
            wide = store.load_wide(start=pd.Timestamp(times[-1]) - pd.Timedelta(days=HISTORY_DAYS))
            loaded = prepare_panel(wide)
            t0 = time.perf_counter()
            count = score_matured(store, "temp", loaded, 24, checked_at if marked else None)
            return count, time.perf_counter() - t0

        score(True)  # the history's matured points; the mark is set
        engine = sa.create_engine(url)

        def an_hour_ago() -> None:
            """Date the batches written so far an hour back: the flow's runs are an hour apart
            (here seconds, within the margin a mark gives batches still committing)."""
            with engine.begin() as conn:
                b = ingest_batches
                conn.execute(b.update().values(finished_at=datetime.now(UTC) - timedelta(hours=1)))

        k = first + hours
        for r in range(2 * rounds):
            an_hour_ago()
            store.write_forecasts(forecasts_at(series, pd.Timestamp(times[k]), rng))
            ingest(frame[frame["ts"] == times[k + 1]])
            k += 1
            how = "marked" if r % 2 == 0 else "everything"
            count, took = score(how == "marked")
            scored[how].append(count)
            seconds[how].append(took)
        for _ in range(rounds):
            for how, given in (("walked", None), ("ranked", series)):
                t0 = time.perf_counter()
                latest = store.latest_forecasts(target="temp", series_ids=given)
                seconds[how].append(time.perf_counter() - t0)
                scored[how].append(len(latest))
        with engine.begin() as conn:  # every score as scored an hour after its time
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("UPDATE scores SET scored_at = strftime('%Y-%m-%d %H:%M:%f000', ts, '+1 hour')")
            else:
                conn.exec_driver_sql("UPDATE scores SET scored_at = ts + interval '1 hour'")
            newest = conn.execute(sa.select(sa.func.max(sa.column("ts"))).select_from(sa.table("scores"))).scalar()
        engine.dispose()
        since = pd.Timestamp(newest).tz_localize("UTC") if pd.Timestamp(newest).tzinfo is None else pd.Timestamp(newest)
        since = (since - pd.Timedelta(days=1)).to_pydatetime()
        values, stored = {}, store.table_counts()["scores"]
        for _ in range(rounds):
            for how in ("by version", "every score"):
                t0 = time.perf_counter()
                if how == "by version":
                    values[how] = store.recent_live_mase("temp", since, DRIFT_WINDOW)
                else:
                    values[how] = live_mase_before_0011(store, since, DRIFT_WINDOW)
                seconds[how].append(time.perf_counter() - t0)
                scored[how].append(stored)
        if values["by version"] != values["every score"]:
            raise AssertionError(f"the two reads disagree: {values}")
        counts = {}
        for _ in range(rounds):
            for how in ("kept", "counted"):
                t0 = time.perf_counter()
                counts[how] = store.table_counts(scan=how == "counted")
                seconds[how].append(time.perf_counter() - t0)
                scored[how].append(sum(counts[how][t] for t in ("observations", "forecasts", "scores")))
        if counts["kept"] != counts["counted"]:
            raise AssertionError(f"the two counts disagree: {counts}")
    return seconds, scored, points


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--hours", type=int, default=48, help="hours of hourly forecasts stored before the rounds")
    ap.add_argument("--rounds", type=int, default=6, help="hours scored each way")
    ap.add_argument("--postgres", metavar="URL", help="the store in a fresh PostgreSQL database beside URL's")
    args = ap.parse_args()
    if args.postgres:
        with fresh_database(args.postgres) as url:
            seconds, scored, points = run(url, args.series, args.hours, args.rounds)
    else:
        with tempfile.TemporaryDirectory(prefix="streamcast-scoring-") as tmp:
            seconds, scored, points = run(f"sqlite:///{tmp}/streamcast.db", args.series, args.hours, args.rounds)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    rows = []
    for how, (step, way) in WAYS.items():
        first = FIRST_WAY.get(how, how)
        rows.append(
            [step, way, f"{med[how]:.3f}", f"{statistics.median(scored[how]):,.0f}", f"{med[how] / med[first]:.1f}"]
        )
    body = (
        f"{args.series:,} series; {args.hours} hours of hourly forecasts (24 points each) stored before, "
        f"{points:,} forecast points in all; then {2 * args.rounds} hours, each ingested and scored, alternating "
        f"the two ways ({args.rounds} each; median seconds of `score_matured`, given the "
        f"{HISTORY_DAYS} days of history the forecast loads), then `latest_forecasts(target=...)` "
        f"{args.rounds} times each way, alternating, then the drift check's live MASE {args.rounds} times each way "
        f"(points: the scores stored), then the table counts {args.rounds} times each way, alternating (points: "
        f"the rows of observations, forecasts and scores). Store: {'PostgreSQL' if args.postgres else 'SQLite'}.\n\n"
        + markdown_table(["step", "way", "seconds", "points", "x the first way"], rows)
    )
    print(body)
    title = f"Costs that grow with the history of forecasts ({args.hours} hours)"
    if args.postgres:
        title += " (PostgreSQL)"
    write_section(title, body)


if __name__ == "__main__":
    main()
