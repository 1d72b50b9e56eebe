"""Shared fixtures: settings pointed at tmp_path, a SQLite store, and PostgreSQL
when it is reachable (required in CI via STREAMCAST_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect reads its home at import: keep its database and logs out of ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="streamcast-prefect-")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.pop("PREFECT_API_URL", None)

from streamcast import services
from streamcast.config import Settings, services_required
from streamcast.specs import IngestSpec
from streamcast.store import Store

if "PYTEST_XDIST_WORKER" in os.environ and "OPENBLAS_NUM_THREADS" not in os.environ:
    from threadpoolctl import threadpool_limits

    # Test workers share the machine's cores, so each one's BLAS, and every process it
    # starts, gets its share of them. OpenBLAS's threads spin-wait for each other: with two
    # workers of two threads each on two cores, a 0.9 s ESN fit took 9.4 s and overran the
    # tuning test's budget in CI. numpy is loaded by now (a plugin imports it), so the
    # limit is set through threadpoolctl as well as in the environment.
    _SHARE = max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OPENBLAS_NUM_THREADS"] = str(_SHARE)
    threadpool_limits(_SHARE, user_api="blas")

PG_ADMIN_URL = os.environ.get("STREAMCAST_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_database() -> Iterator[str]:
    """Create a throwaway database on the local server and drop it afterwards."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        msg = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"
        if services_required():
            pytest.fail(msg + " (STREAMCAST_REQUIRE_SERVICES=1)")
        pytest.skip(msg)
    name = f"streamcast_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("STREAMCAST_DATA_DIR", str(d))
    monkeypatch.delenv("STREAMCAST_DB_URL", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
    return d


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The store on SQLite and on PostgreSQL: every store test runs against both."""
    if request.param == "sqlite":
        store = Store(f"sqlite:///{data_dir / 'streamcast.db'}")
        yield store
        store.dispose()
        return
    gen = _postgres_database()
    url = next(gen)
    monkeypatch.setenv("STREAMCAST_DB_URL", url)
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()
        gen.close()


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{data_dir / 'streamcast.db'}")
    yield s
    s.dispose()


WEATHER_COLUMNS = [
    "origin",
    "time_hour",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "pressure",
    "visib",
    "precip",
]


def weather_csv(path: Path, start: str = "2013-10-20", end: str = "2014-01-01") -> Path:
    """A slice of the real nyc-weather data as a wide CSV, as users would drop it."""
    from streamcast.sources.bundled import load_dataset

    weather, _ = load_dataset("nyc-weather")
    w = weather[WEATHER_COLUMNS]
    w[(w.time_hour >= start) & (w.time_hour < end)].to_csv(path, index=False)
    return path


def ingest_weather(settings: Settings, path: Path, **window: str) -> None:
    """Ingest a slice of nyc-weather through the service, as `streamcast ingest` does."""
    services.ingest(IngestSpec(source="csv", path=weather_csv(path, **window), series_col="origin"), settings=settings)


@pytest.fixture
def weather_store(settings: Settings, data_dir: Path) -> Settings:
    """Settings whose store holds nyc-weather from late October to the end of 2013."""
    ingest_weather(settings, data_dir / "weather.csv")
    return settings


def two_step_forecast(model_name: str = "naive", model_version: str = "1") -> pd.DataFrame:
    """One stored forecast of series A's temp: two hourly points after 2024-01-01 01:00 UTC."""
    origin = pd.Timestamp("2024-01-01T01:00Z")
    return pd.DataFrame(
        {
            "forecast_id": "f1",
            "series_id": "A",
            "target": "temp",
            "issued_at": origin,
            "origin_ts": origin,
            "step": [1, 2],
            "ts": [origin + pd.Timedelta(hours=h) for h in (1, 2)],
            "yhat": [2.5, 3.0],
            "lo": [1.0, 1.5],
            "hi": [4.0, 4.5],
            "model_name": model_name,
            "model_version": model_version,
            "run_id": "r",
        }
    )
