"""Shared bench set-up: the nyc-weather panel from a fresh temporary store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd

from streamcast.config import Settings
from streamcast.features import prepare_panel
from streamcast.ingestion import run_ingest
from streamcast.specs import IngestSpec
from streamcast.store import Store


def nyc_weather_panel() -> dict[str, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        with Store(settings.database_url) as store:
            run_ingest(store, IngestSpec(source="nyc-weather"), settings)
            wide = store.load_wide()
    return prepare_panel(wide)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str, timeout: float = 30.0) -> None:
    """Wait until `streamcast serve` at ``base`` answers /health."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"API at {base} did not become healthy in {timeout:.0f} s")
