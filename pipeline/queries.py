"""The read side: what the CLI, the HTTP API and the flows show, read from the store only.

Nothing here loads a model, MLflow or TensorFlow, so answering a query stays light.
Each function takes an open :class:`Store` (the API keeps one) or opens one from the
settings for the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd

from streamcast.config import DEFAULT_TARGET, Settings, get_settings
from streamcast.errors import NotFoundError
from streamcast.monitoring import DriftCheck, drift_check
from streamcast.store import Store, redact_url


@contextmanager
def opened(store: Store | None, settings: Settings | None) -> Iterator[Store]:
    """``store`` itself, or a store opened from the settings for the duration."""
    if store is not None:
        yield store
        return
    with Store((settings or get_settings()).database_url, read_only=True) as own:
        yield own


def latest_payload(points: pd.DataFrame, units: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Stored forecast points grouped per forecast, in the API's JSON shape, by series
    (``unit``: what the target is measured in, when the store knows)."""
    out = []
    for fid, grp in points.groupby("forecast_id", sort=False):
        g = grp.sort_values("step")
        head = g.iloc[0]
        out.append(
            {
                "series_id": head["series_id"],
                "target": head["target"],
                "unit": (units or {}).get(head["target"]),
                "issued_at": head["issued_at"].isoformat(),
                "origin_ts": head["origin_ts"].isoformat(),
                "forecast_id": fid,
                "model": {"name": head["model_name"], "version": head["model_version"], "run_id": head["run_id"]},
                "points": [
                    {
                        "ts": t.isoformat(),
                        "step": int(s),
                        "yhat": float(y),
                        "lo": None if pd.isna(lo) else float(lo),
                        "hi": None if pd.isna(hi) else float(hi),
                    }
                    for t, s, y, lo, hi in zip(g["ts"], g["step"], g["yhat"], g["lo"], g["hi"], strict=True)
                ],
            }
        )
    return sorted(out, key=lambda d: d["series_id"])


def latest_points(
    target: str = DEFAULT_TARGET,
    series_id: str | None = None,
    *,
    settings: Settings | None = None,
    store: Store | None = None,
) -> pd.DataFrame:
    """The points of the most recent forecast of ``target`` per series (or for one series,
    which must exist: :class:`NotFoundError` otherwise)."""
    with opened(store, settings) as s:
        if series_id is not None and series_id not in s.series_ids():
            raise NotFoundError(f"unknown series {series_id!r}")
        return s.latest_forecasts(series_id=series_id, target=target)


def latest_forecasts(
    target: str = DEFAULT_TARGET,
    series_id: str | None = None,
    *,
    settings: Settings | None = None,
    store: Store | None = None,
) -> list[dict[str, Any]]:
    """The most recent forecast of ``target`` per series, as the API's JSON shape
    (series_id, target, issued_at, origin_ts, model, points); empty before any forecast."""
    with opened(store, settings) as s:
        return latest_payload(latest_points(target, series_id, store=s), s.units())


def units(*, settings: Settings | None = None, store: Store | None = None) -> dict[str, str]:
    """Variable -> unit, as recorded on ingest (bundled data, --unit)."""
    with opened(store, settings) as s:
        return s.units()


def series_ids(*, settings: Settings | None = None, store: Store | None = None) -> list[str]:
    with opened(store, settings) as s:
        return s.series_ids()


@dataclass
class StoreStatus:
    """What ``streamcast status`` shows: where the store is and what it holds."""

    store: str
    series: pd.DataFrame  # per series and variable: count, first_ts, last_ts, revised
    quarantine: dict[str, int]
    tables: dict[str, int]
    last_batch: dict[str, Any] | None
    tracking_uri: str = ""  # MLflow, password hidden
    data_dir: str = ""
    config_file: str | None = None  # where the settings came from (None: environment and defaults)


def store_location(settings: Settings | None = None) -> str:
    """Where the store is, fit to print (password hidden)."""
    return redact_url((settings or get_settings()).database_url)


def check_store(settings: Settings | None = None) -> None:
    """Raise :class:`NotFoundError` / :class:`SchemaError` unless the store exists at this version."""
    with Store((settings or get_settings()).database_url, read_only=True):
        pass


def store_status(settings: Settings | None = None) -> StoreStatus:
    settings = settings or get_settings()
    with Store(settings.database_url, read_only=True) as s:
        return StoreStatus(
            store=redact_url(settings.database_url),
            series=s.series_summary(),
            quarantine=s.quarantine_counts(),
            tables=s.table_counts(),
            last_batch=s.last_batch(),
            tracking_uri=redact_url(settings.tracking_uri) if "://" in settings.tracking_uri else settings.tracking_uri,
            data_dir=str(settings.data_dir.resolve()),
            config_file=str(settings.config_file) if settings.config_file else None,
        )


def live_scores(
    target: str = DEFAULT_TARGET, *, settings: Settings | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, DriftCheck | None]:
    """Live error by model, version and step, the retrain triggers recorded so far, and
    what the drift trigger compares now."""
    settings = settings or get_settings()
    with opened(None, settings) as s:
        return s.live_scores(target), s.retrain_triggers(), drift_check(s, settings, target)
