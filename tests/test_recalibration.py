"""Intervals that hold after deployment: the deployment protocol through the CLI (ingest
the history, train once, then each day ingest that day's observations and forecast)
scores every matured point and recalibrates the intervals on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from streamcast.backtest import conformal_quantile, tracked_quantile
from streamcast.cli import app
from streamcast.config import Settings
from streamcast.forecasting import MIN_LIVE_POINTS
from streamcast.store import Store

runner = CliRunner()
HISTORY_DAYS, LIVE_DAYS = 36, 8


def _series(days: int, noise: float, start: pd.Timestamp, seed: int) -> pd.DataFrame:
    """One meter: a daily cycle plus white noise of standard deviation ``noise``."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=24 * days, freq="h", tz="UTC")
    load = 50 + 10 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24) + rng.normal(0, noise, len(ts))
    return pd.DataFrame({"ts": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "load": load})


def _cli(*args: str) -> str:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _coverage(store: Store, days: slice) -> float:
    """Share of the matured points forecast for ``days`` (of the live period) that fell
    inside the interval they were issued with."""
    scored = store.recent_residuals("load", "1", 100_000)
    issued = store.forecasts_between(scored["ts"].min(), scored["ts"].max())
    both = scored.merge(issued[["forecast_id", "step", "lo", "hi"]], on=["forecast_id", "step"])
    day = ((both["ts"] - both["ts"].min()) / pd.Timedelta(days=1)).astype(int)
    both = both[day.isin(range(LIVE_DAYS)[days])]
    return float(((both["actual"] >= both["lo"]) & (both["actual"] <= both["hi"])).mean())


@pytest.mark.slow
def test_deployed_intervals_follow_the_matured_points(settings: Settings, data_dir: Path) -> None:
    start = pd.Timestamp("2024-03-01", tz="UTC")
    history = _series(HISTORY_DAYS, noise=1.0, start=start, seed=1)
    history.to_csv(data_dir / "history.csv", index=False)
    _cli("ingest", "--source", "csv", "--path", str(data_dir / "history.csv"), "--series-id", "meter")
    _cli("train", "--target", "load", "--models", "seasonal_naive", "--folds", "5")
    _cli("forecast", "--target", "load")
    with Store(settings.database_url) as store:
        validation_width = float((store.latest_forecasts(target="load").eval("hi - yhat")).iloc[0])

    # After deployment the noise triples: intervals fixed on the validation slice would
    # cover well under half of the actuals.
    live = _series(LIVE_DAYS, noise=3.0, start=start + pd.Timedelta(days=HISTORY_DAYS), seed=2)
    widths, scored = [], []
    for day in range(LIVE_DAYS):
        path = data_dir / f"day{day}.csv"
        live.iloc[24 * day : 24 * (day + 1)].to_csv(path, index=False)
        _cli("ingest", "--source", "csv", "--path", str(path), "--series-id", "meter")
        _cli("forecast", "--target", "load")
        with Store(settings.database_url) as store:
            latest = store.latest_forecasts(target="load")
            widths.append(float((latest["hi"] - latest["yhat"]).iloc[0]))
            scored.append(len(store.recent_residuals("load", str(latest["model_version"].iloc[0]), 100_000)))

    # Every forecast's 24 points are scored the day their actuals arrive, once.
    assert scored == [24 * (d + 1) for d in range(LIVE_DAYS)]
    # Until enough points have matured the validation widths stand; then they widen.
    first_live = MIN_LIVE_POINTS // 24
    assert widths[: first_live - 1] == pytest.approx([validation_width] * (first_live - 1))
    assert min(widths[first_live:]) > 2 * validation_width
    with Store(settings.database_url) as store:
        before, after = _coverage(store, slice(0, 2)), _coverage(store, slice(4, None))
    assert before < 0.7 and after >= 0.8, (before, after)


def _track(scores: np.ndarray, per_time: int, rate: float, window: int) -> np.ndarray:
    """Coverage of each time's points under the level tracked over the ``window`` points
    before it (what the next forecast would be issued with)."""
    times = np.repeat(np.arange(len(scores) // per_time), per_time)
    hits = []
    for t in range(10, times[-1] + 1):
        past = slice(max(0, t * per_time - window), t * per_time)
        q = tracked_quantile(scores[past], times[past], 0.9, rate, conformal_quantile(scores[past], 0.9))
        hits.append(np.mean(scores[times == t] <= q))
    return np.array(hits)


def test_tracked_level_follows_a_change_the_window_still_averages_over() -> None:
    # Three series' absolute errors, in units of the validation width; from t=200 they triple.
    rng = np.random.default_rng(0)
    scale = np.where(np.arange(400) < 200, 1.0, 3.0)
    scores = np.abs(rng.normal(0, 1, (400, 3)) * scale[:, None]).ravel() / 1.645
    window = 2000  # a plain conformal quantile over the same window takes ~220 times to follow
    plain = np.array(
        [
            np.mean(scores[t * 3 : t * 3 + 3] <= conformal_quantile(scores[max(0, t * 3 - window) : t * 3], 0.9))
            for t in range(10, 400)
        ]
    )
    tracked = _track(scores, 3, rate=Settings().interval_rate / 24, window=window)
    after = slice(200 - 10 + 24, 200 - 10 + 96)  # the three days after the first one of the change
    assert plain[after].mean() < 0.75
    assert 0.85 <= tracked[after].mean() <= 0.95
    # Before the change it holds as well as the plain quantile does.
    assert abs(tracked[:190].mean() - 0.9) < 0.04


def test_tracked_level_misses_at_the_nominal_rate_over_any_sequence() -> None:
    # An adversarial sequence (scores jump between regimes every few steps): the long-run
    # share of misses still approaches 1 - level, within the tracker's bound.
    rng = np.random.default_rng(1)
    n, rate = 3000, 0.1
    scores = np.abs(rng.standard_cauchy(n)) * np.where((np.arange(n) // 7) % 2 == 0, 1.0, 20.0)
    log_q, misses = 0.0, 0
    for t in range(n):
        if t in (0, 1, 10, 1000, n - 1):  # the same level as this one-pass tracker
            assert np.isclose(np.log(tracked_quantile(scores[:t], np.arange(t), 0.9, rate, 1.0)), log_q)
        miss = scores[t] > np.exp(log_q)
        misses += miss
        log_q += rate * (miss - 0.1)
    bound = (abs(log_q) + rate) / (rate * n)
    assert abs(misses / n - 0.1) <= bound
