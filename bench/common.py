"""Shared bench set-up: the nyc-weather panel from a fresh temporary store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd

from pipeline.config import Settings
from pipeline.features import prepare_panel
from pipeline.ingest import ingest_dataset
from pipeline.store import Store


def nyc_weather_panel() -> dict[str, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        store = Store(settings.database_url)
        ingest_dataset(store, "nyc-weather", settings)
        wide = store.load_wide()
        store.dispose()
    return prepare_panel(wide)
