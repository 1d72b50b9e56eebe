"""Issue forecasts from the registered champion and write them with full provenance."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from streamcast import tracking
from streamcast.bundle import ForecastBundle
from streamcast.config import Settings
from streamcast.errors import NotFoundError
from streamcast.features import prepare_panel
from streamcast.store import Store, utcnow

# History loaded for a forecast: enough for any lookback and for a reservoir's
# state to forget its zero start (fading memory), far less than the whole store.
HISTORY_DAYS = 30


@dataclass
class ChampionHandle:
    """The registered champion, loaded: its bundle and where it came from."""

    bundle: ForecastBundle
    name: str
    version: str
    run_id: str
    kind: str

    @property
    def max_gap(self) -> int:
        return int(self.bundle.meta["max_gap"])


def load_champion(settings: Settings, target: str) -> ChampionHandle:
    """The champion's bundle, cached on disk per version so forecasts don't re-download it."""
    tracking.configure(settings)
    mv = tracking.current_champion(target)
    if mv is None:
        raise NotFoundError(f"no champion registered for {target!r}: run `streamcast train --target {target}` first")
    cache = settings.data_dir / "models" / tracking.registered_name(target) / f"v{mv.version}"
    bundle_dir = cache / "bundle"
    if not (bundle_dir / "bundle.json").exists():
        tmp = cache.with_name(cache.name + f".tmp-{uuid.uuid4().hex[:6]}")
        src, _ = tracking.download_bundle(target, tracking.CHAMPION, tmp)
        cache.mkdir(parents=True, exist_ok=True)
        if bundle_dir.exists():
            shutil.rmtree(bundle_dir)
        shutil.move(str(src), bundle_dir)
        shutil.rmtree(tmp, ignore_errors=True)
    bundle = ForecastBundle(Path(bundle_dir))
    return ChampionHandle(
        bundle=bundle,
        name=mv.name,
        version=str(mv.version),
        run_id=str(mv.run_id),
        kind=bundle.meta.get("kind", bundle.model.kind),
    )


def forecast_id(series_id: str, target: str, origin: pd.Timestamp, version: str) -> str:
    """Deterministic: a redelivered observation re-issues the same forecast, not a new one."""
    key = f"{series_id}|{target}|{pd.Timestamp(origin).isoformat()}|{version}"
    return hashlib.sha1(key.encode()).hexdigest()[:32]


def forecast_frame(
    handle: ChampionHandle, panel: dict[str, pd.DataFrame], target: str, issued_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Rows for the ``forecasts`` table: one forecast_id per series, H points each."""
    fc = handle.bundle.forecast_panel(panel)
    # Deterministic, as in the stream: forecasting the same data again (a second run, a
    # Prefect retry) re-issues the same forecast, which replaces the stored one.
    firsts = fc.drop_duplicates("series_id")
    ids = {
        sid: forecast_id(sid, target, origin, handle.version)
        for sid, origin in zip(firsts["series_id"], firsts["origin_ts"], strict=True)
    }
    return fc.assign(
        forecast_id=fc["series_id"].map(ids),
        target=target,
        issued_at=issued_at or pd.Timestamp(utcnow()),
        model_name=handle.kind,
        model_version=handle.version,
        run_id=handle.run_id,
    )


def issue_forecast(
    settings: Settings, target: str, series: list[str] | None = None, handle: ChampionHandle | None = None
) -> pd.DataFrame:
    """Forecast every series (or ``series``) from its latest observations and store the points."""
    handle = handle or load_champion(settings, target)
    with Store(settings.database_url) as store:
        known = store.series_ids()
        missing = sorted(set(series or []) - set(known))
        if missing:
            raise NotFoundError(f"unknown series: {', '.join(missing)} (known: {', '.join(known)})")
        summary = store.series_summary()
        last = summary[summary.variable == target]["last_ts"].max()
        if pd.isna(last):
            raise NotFoundError(f"no {target!r} observations in the store")
        wide = store.load_wide(series_ids=series, start=last - pd.Timedelta(days=HISTORY_DAYS))
        fc = forecast_frame(handle, prepare_panel(wide, max_gap=handle.max_gap), target)
        store.write_forecasts(fc, replace=True)
    return fc
