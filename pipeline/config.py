"""Settings for streamcast, read from the environment (prefix ``STREAMCAST_``).

Nothing happens at import: call :func:`get_settings` where settings are needed,
so tests and CLI flags can point everything at a temporary folder.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# What is forecast when nobody says: the bundled data's temperature (°F).
DEFAULT_TARGET = "temp"


class Bounds(BaseModel):
    """Physically plausible range of one variable; values outside are quarantined."""

    low: float
    high: float


def _default_bounds() -> dict[str, Bounds]:
    """The bounds shipped in ``default_bounds.json`` (units there: °F, mph, ... for the
    bundled data; °C, km/h, ... for Open-Meteo's variables)."""
    table = json.loads(resources.files("streamcast").joinpath("default_bounds.json").read_text(encoding="utf-8"))
    return {name: Bounds(**limits) for name, limits in table.items() if not name.startswith("_")}


DEFAULT_BOUNDS: dict[str, Bounds] = _default_bounds()


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
