"""Where a streamed hour's time goes, part by part, at N series (in process).

``bench/scale.py`` times a streamed hour through the CLI and Redis as a whole; this
times its parts. For each N: a synthetic panel (``scale.panel``: N series x 90 days, two
variables) ingested and trained through the CLI (``--models naive,esn --folds 2``: an
ESN champion) in a fresh data folder, unless ``--data`` names one built before (its
``live.parquet`` holds the hours to stream); then a copy of that store is streamed
``--hours`` hours through one :class:`~streamcast.streaming.StreamProcessor`, a batch of N
entries an hour. Each part is timed by a wrapper around the function doing it:

- parse: validating the batch's entries;
- load: loading the champion and warming every series' state (first hour only);
- advance: every series' new observation through its stream and the fresh forecasts
  (ESN: reservoir step, readout update and forecast);
- store read: the stored points the stream scores after a start (its first day);
- score: matching every arrived actual with the points forecast for it (store read included);
- observations, forecast points, scores: the batch's writes (one transaction);
- gc: the garbage collector's passes, wherever they fell.

The first hour, and the median of the later ones, per N; ratios to the smallest N.

    python bench/stream_parts.py [--series 1000,10000] [--hours 30] [--data N=DIR,...]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale
from _results import markdown_table, write_section

PARTS = {
    "parse": "parse",
    "load": "load",
    "advance": "advance",
    "  of which ESN steps": "esn",
    "store read": "ffor",
    "score": "score",
    "observations": "obs",
    "forecast points": "w_fc",
    "scores": "w_sc",
    "gc": "gc",
}


def build(n: int, hours: int, data: Path) -> None:
    """A store of ``n`` series trained through the CLI in ``data``, and the hours after it."""
    data.mkdir(parents=True, exist_ok=True)
    scale.history_and_live(n, hours, data / "panel.csv").to_parquet(data / "live.parquet")
    env = scale.cli_env(data)
    scale.ingest_csv(data / "panel.csv", env)
    train = [scale.STREAMCAST, "train", "--target", "temp", "--models", "naive,esn", "--folds", "2"]
    scale.measure(train, env)
    scale.measure([scale.STREAMCAST, "forecast", "--target", "temp"], env)
    (data / "panel.csv").unlink()


class Timers:
    """Seconds spent in each wrapped function (and in the collector), per label."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)
        self._gc_start = 0.0

    def wrap(self, owner: Any, name: str, label: str) -> None:
        raw = owner.__dict__[name]
        is_class = isinstance(raw, classmethod)
        fn: Callable[..., Any] = raw.__func__ if is_class else raw

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[label] += time.perf_counter() - t0

        setattr(owner, name, classmethod(timed) if is_class else timed)

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.spent["gc"] += time.perf_counter() - self._gc_start

    def take(self) -> dict[str, float]:
        out, self.spent = dict(self.spent), defaultdict(float)
        return out


TIMERS = Timers()


def instrument() -> None:
    """Wrap the functions doing each part (once per process: a second wrapper would count twice)."""
    import streamcast.streaming as streaming
    from streamcast.models.esn import ESNStream
    from streamcast.store.forecasts import ForecastTables
    from streamcast.store.observations import ObservationTables

    P = streaming.StreamProcessor
    for owner, name, label in [
        (streaming, "parse_entries", "parse"),
        (P, "_load", "load"),
        (P, "_advance_all", "advance"),
        (P, "_score", "score"),
        (ForecastTables, "forecasts_for_times", "ffor"),
        (ObservationTables, "upsert_observations", "obs"),
        (ForecastTables, "write_forecast_columns", "w_fc"),
        (ForecastTables, "write_score_columns", "w_sc"),
        (ESNStream, "advance_all", "esn"),
    ]:
        TIMERS.wrap(owner, name, label)


def stream(data: Path, hours: int) -> tuple[dict[str, float], dict[str, float]]:
    """The first hour's and the later hours' median milliseconds, by part and in all."""
    with tempfile.TemporaryDirectory(prefix="streamcast-parts-") as tmp:
        work = Path(tmp)
        for name in ("streamcast.db", "mlflow.db"):
            shutil.copy(data / name, work / name)
        os.environ["STREAMCAST_DATA_DIR"] = str(work)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"  # its artifacts stay in data
        from streamcast.config import Settings
        from streamcast.sources.stream import StreamBatch
        from streamcast.streaming import StreamProcessor

        gc.callbacks.append(TIMERS.on_gc)
        try:
            live = pd.read_parquet(data / "live.parquet")
            # No drift checks: each hour's own work only.
            proc = StreamProcessor(Settings(data_dir=work), target="temp", check_every=10**9)
            rows: list[dict[str, float]] = []
            for i, (_, batch) in enumerate(live.groupby("ts", sort=True)):
                if i >= hours:
                    break
                TIMERS.take()
                t0 = time.perf_counter()
                proc.process(StreamBatch(frame=batch.reset_index(drop=True), received_at=t0))
                total = time.perf_counter() - t0
                rows.append({**TIMERS.take(), "hour": total})
            proc.close()
        finally:
            gc.callbacks.remove(TIMERS.on_gc)
    keys = [*PARTS.values(), "hour"]
    first = {k: rows[0].get(k, 0.0) * 1000 for k in keys}
    later = {k: statistics.median(r.get(k, 0.0) for r in rows[1:]) * 1000 for k in keys}
    return first, later


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default="1000,10000")
    ap.add_argument("--hours", type=int, default=30)
    ap.add_argument("--data", default="", help="N=DIR,...: a data folder this bench built before, per N")
    args = ap.parse_args()
    sizes = [int(s) for s in args.series.split(",")]
    given = dict(item.split("=", 1) for item in args.data.split(",") if item)
    instrument()
    results = {}
    for n in sizes:
        print(f"N={n} ...", flush=True)
        if str(n) in given:
            results[n] = stream(Path(given[str(n)]), args.hours)
        else:
            with tempfile.TemporaryDirectory(prefix="streamcast-parts-data-") as tmp:
                build(n, args.hours, Path(tmp))
                results[n] = stream(Path(tmp), args.hours)
        print(f"  first {results[n][0]['hour']:.0f} ms, later {results[n][1]['hour']:.0f} ms", flush=True)
    base = sizes[0]
    headers = ["part", *(f"{w} N={n:,} ms" for w in ("first hour", "later hours") for n in sizes)]
    headers += [f"later N={n:,} / N={base:,}" for n in sizes[1:]]
    table = []
    for title, key in [*PARTS.items(), ("the hour", "hour")]:
        firsts = [f"{results[n][0][key]:,.0f}" for n in sizes]
        laters = [results[n][1][key] for n in sizes]
        ratios = [f"{v / laters[0]:.1f}" if laters[0] > 0 else "-" for v in laters[1:]]
        table.append([title, *firsts, *(f"{v:,.0f}" for v in laters), *ratios])
    body = (
        f"Synthetic hourly panels (N series x {scale.DAYS} days, two variables), ingested and trained through the CLI "
        "(`--models naive,esn --folds 2`: an ESN champion, adapting), then streamed in process through one "
        f"StreamProcessor, {args.hours} hours of N entries, a batch an hour; parts timed by wrappers around the "
        "functions doing them (score includes the store read; advance includes the ESN's steps; gc wherever its "
        "passes fell, so also inside the other parts). Later hours: medians over hours 2 to "
        f"{args.hours}, most of them in the stream's first day (each scores one more point per series than the "
        "last).\n\n" + markdown_table(headers, table)
    )
    print(body)
    write_section("A streamed hour's parts by number of series", body)


if __name__ == "__main__":
    main()
