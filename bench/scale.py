"""How each step grows with the number of series, through the CLI as a user runs it.

Synthetic hourly panels (two variables, 90 days; a daily cycle, a per-series level and
AR(1) noise) of N series; for each N, in a fresh data folder, one `streamcast` process
per step: ingest the CSV, train (`--models naive,seasonal_naive,esn --folds 5`),
forecast, `predictions latest`, then a stream through Redis of the next hours (N
entries an hour, one batch an hour): the first hour includes loading the champion and
warming every series' state; the steady hours come after the first 24, once every hour
scores a full horizon of matured points per series. Wall time and peak resident memory (the process and its
children, sampled every 50 ms) per step; ratios to the smallest N, measured in one run.

    python bench/scale.py [--series 10,100,1000] [--hours 30] [--models naive,seasonal_naive,esn] [--redis-url URL]
                          [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/test] [--until ingest]

``--postgres URL`` keeps the store in a fresh PostgreSQL database per N, created (and
dropped afterwards) beside the database of URL, instead of SQLite in the data folder.

``--until STEP`` stops each N after that step (``ingest``: the ingest alone, for sizes whose
training would take most of the run).

``--models`` changes the candidates trained, and so the champion streamed (``naive,cnn``:
a window-model champion, re-predicting every series' window each hour).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import markdown_table, write_section

from streamcast.sources.redis_stream import publish_rows

STREAMCAST = str(Path(sys.executable).parent / "streamcast")
DAYS = 90
STEPS = [
    "ingest",
    "train",
    "forecast",
    "predictions latest",
    "first streamed hour",
    "later streamed hours",
    "steady streamed hours",
]
HORIZON = 24  # the default forecast horizon: a stream's hour scores this many points per series once it has run as long


def panel(n: int, hours: int, seed: int = 0) -> pd.DataFrame:
    """n series x hours, wide: station, ts, temp, humid."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC")
    hour = ts.hour.to_numpy()
    noise = np.zeros((n, hours))
    shocks = rng.normal(0, 1.0, (n, hours))
    for t in range(1, hours):
        noise[:, t] = 0.8 * noise[:, t - 1] + shocks[:, t]
    level = rng.normal(50, 10, (n, 1))
    temp = level + 8 * np.sin(2 * np.pi * (hour - 9) / 24)[None, :] + noise
    humid = np.clip(70 - 0.8 * (temp - level) + rng.normal(0, 3, (n, hours)), 0, 100)
    return pd.DataFrame(
        {
            "station": np.repeat([f"s{k:05d}" for k in range(n)], hours),
            "ts": np.tile(ts, n),
            "temp": temp.ravel().round(2),
            "humid": humid.ravel().round(1),
        }
    )


def history_and_live(n: int, hours: int, csv: Path) -> pd.DataFrame:
    """A panel of ``n`` series: its history (:data:`DAYS` days) written to ``csv`` for
    ingesting, and the ``hours`` after it returned as stream entries (series_id, ts,
    variables), in the order they arrive."""
    frame = panel(n, 24 * DAYS + hours)
    cut = frame["ts"].max() - pd.Timedelta(hours=hours)
    frame[frame["ts"] <= cut].to_csv(csv, index=False)
    return frame[frame["ts"] > cut].rename(columns={"station": "series_id"}).sort_values(["ts", "series_id"])


def measure(
    args: list[str], env: dict[str, str], timeline: list[tuple[float, float]] | None = None
) -> tuple[float, float, str]:
    """Run one CLI command; (wall seconds, peak RSS MB of it and its children, stdout).
    ``timeline``: gets every sample, (seconds since the start, RSS MB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        parent = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [parent, *parent.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs) / 2**20
                peak = max(peak, rss)
                if timeline is not None:
                    timeline.append((time.perf_counter() - t0, rss))
            except psutil.Error:
                pass
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[1:])} failed ({proc.returncode}): {err.strip()[-2000:]}")
    return elapsed, peak, out


def cli_env(data: Path) -> dict[str, str]:
    """The environment of a CLI step: the data folder ``data`` holds its store and MLflow
    database (a store URL set outside is dropped)."""
    env = {
        **os.environ,
        "STREAMCAST_DATA_DIR": str(data),
        "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop("STREAMCAST_DB_URL", None)
    return env


def ingest_csv(path: Path, env: dict[str, str]) -> tuple[float, float, str]:
    """`streamcast ingest` of a panel written by :func:`panel` (series in its ``station`` column)."""
    return measure([STREAMCAST, "ingest", "--source", "csv", "--path", str(path), "--series-col", "station"], env)


DEFAULT_MODELS = "naive,seasonal_naive,esn"


def run(
    n: int,
    hours: int,
    redis_url: str,
    models: str = DEFAULT_MODELS,
    store_url: str | None = None,
    until: str = "stream",
) -> tuple[dict[str, tuple[float, float]], str]:
    """Each step's (seconds, peak RSS MB) at ``n`` series up to ``until``, and the champion
    trained (the store at ``store_url``, default SQLite in the data folder)."""
    with tempfile.TemporaryDirectory(prefix="streamcast-scale-") as tmp:
        data = Path(tmp)
        env = cli_env(data)
        if store_url is not None:
            env["STREAMCAST_DB_URL"] = store_url
        live = history_and_live(n, hours, data / "panel.csv")
        sc = [STREAMCAST]
        out: dict[str, tuple[float, float]] = {}
        out["ingest"] = ingest_csv(data / "panel.csv", env)[:2]
        if until == "ingest":
            return out, "-"
        wall, peak, trained = measure([*sc, "train", "--target", "temp", "--models", models, "--folds", "5"], env)
        out["train"] = (wall, peak)
        won = re.search(r"winner: (\S+)", trained)
        champion = won.group(1) if won else "?"
        out["forecast"] = measure([*sc, "forecast", "--target", "temp"], env)[:2]
        out["predictions latest"] = measure([*sc, "predictions", "latest", "--target", "temp", "--format", "csv"], env)[
            :2
        ]
        stream = f"streamcast-scale-{uuid.uuid4().hex[:8]}"
        publish_rows(redis_url, stream, live)
        idle = 1.0
        wall, peak, printed = measure(
            [*sc, "stream", "--source", "redis", "--stream", stream, "--redis-url", redis_url,
             "--batch-size", str(n), "--stop-after-idle", str(idle), "--target", "temp"],
            env,
        )  # fmt: skip
        import redis

        redis.Redis.from_url(redis_url).delete(stream)
        # The stream's summary: the first batch's latency on its own, then p50 of the later ones.
        text = " ".join(printed.split())
        first = re.search(r"first batch ([\d.]+) ms", text)
        p50 = re.search(r"latency p50 ([\d.]+) ms", text)
        out["first streamed hour"] = (float(first.group(1)) / 1000 if first else wall - idle, peak)
        out["later streamed hours"] = (float(p50.group(1)) / 1000 if p50 else float("nan"), peak)
        out["steady streamed hours"] = (steady_hour(store_url or f"sqlite:///{data / 'streamcast.db'}", HORIZON), peak)
        return out, champion


def steady_hour(store_url: str, horizon: int) -> float:
    """The median time between consecutive stream commits once a full horizon of the
    stream's own forecasts has matured (every hour then scores H points per series):
    all hours were queued before the stream started, so each gap is one hour's work."""
    engine = sa.create_engine(store_url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT finished_at FROM ingest_batches WHERE source = 'stream' ORDER BY id"
        ).fetchall()
    engine.dispose()
    done = pd.to_datetime([r[0] for r in rows], utc=True).asi8 / 1e9
    gaps = np.diff(done)[horizon:]
    return float(np.median(gaps)) if len(gaps) else float("nan")


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database on the server of ``url`` (dropped afterwards)."""
    name = f"streamcast_scale_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default="10,100,1000")
    ap.add_argument("--hours", type=int, default=HORIZON + 6, help="hours streamed after the ingested history")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="candidates trained (the best is the champion streamed)")
    ap.add_argument("--postgres", metavar="URL", help="the store in a fresh PostgreSQL database per N, beside URL's")
    ap.add_argument("--until", choices=["ingest", "stream"], default="stream", help="the last step run per N")
    args = ap.parse_args()
    steps = ["ingest"] if args.until == "ingest" else STEPS
    sizes = [int(s) for s in args.series.split(",")]
    results, champions = {}, {}
    for n in sizes:
        print(f"N={n} ...", flush=True)
        if args.postgres:
            with fresh_database(args.postgres) as url:
                results[n], champions[n] = run(n, args.hours, args.redis_url, args.models, url, args.until)
        else:
            results[n], champions[n] = run(n, args.hours, args.redis_url, args.models, until=args.until)
        print("  " + ", ".join(f"{k} {v[0]:.2f}s" for k, v in results[n].items()), flush=True)
    base = sizes[0]
    headers = [
        "step",
        *(f"N={n:,} s" for n in sizes),
        *(f"N={n:,} / N={base:,}" for n in sizes[1:]),
        "peak RSS MB (largest N)",
    ]
    rows = []
    for step in steps:
        secs = [results[n][step][0] for n in sizes]
        ratios = [f"{s / secs[0]:.1f}" if secs[0] > 0 else "-" for s in secs[1:]]
        rows.append([step, *(f"{s:.2f}" for s in secs), *ratios, f"{results[sizes[-1]][step][1]:,.0f}"])
    if args.until == "ingest":
        what = "`streamcast ingest` of the panel's CSV (one process per N, wall time including its start-up). "
    else:
        what = (
            f"one `streamcast` process per step, wall time including its start-up; training `--models {args.models} "
            f"--folds 5`; streamed hours through Redis ({args.hours} hours of N entries, `--batch-size N`): the first "
            "includes loading the champion and warming every series' state; later hours are the stream's p50 batch "
            f"latency over all the others; steady hours the median hour after the first {HORIZON} (each then scores "
            f"{HORIZON} matured points per series: the stream's cost from its second day on). "
            f"Champion streamed: {', '.join(f'{champions[n]} (N={n:,})' for n in sizes)}. "
        )
    body = (
        f"Synthetic hourly panels: N series x {DAYS} days, two variables (temp, humid); "
        + what
        + "Peak RSS: the process and its children. "
        + ("Store: a fresh PostgreSQL database per N (the same server). " if args.postgres else "")
        + "\n\n"
        + markdown_table(headers, rows)
    )
    print(body)
    title = "Scale: steps by number of series"
    if args.series != "10,100,1000":  # another set of sizes is another table, not a replacement
        title += f" (N = {', '.join(f'{n:,}' for n in sizes)})"
    if args.models != DEFAULT_MODELS:  # and so is another champion
        title += f" (--models {args.models})"
    if args.postgres:
        title += " (PostgreSQL)"
    if args.until == "ingest":
        title += " (ingest)"
    write_section(title, body)


if __name__ == "__main__":
    main()
