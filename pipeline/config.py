"""Settings for streamcast: the environment (prefix ``STREAMCAST_``) over a config file
over the defaults.

The config file is ``streamcast.toml`` (its top-level keys) or the ``[tool.streamcast]``
table of a ``pyproject.toml``, whichever is found first walking up from the current
folder (``STREAMCAST_CONFIG`` names one explicitly). Relative paths in it, and relative
SQLite URLs, resolve against the file's folder, and the data folder defaults to ``data``
beside it, so every command finds the same store from any sub-folder.

Nothing happens at import: call :func:`get_settings` where settings are needed,
so tests and CLI flags can point everything at a temporary folder.
"""

from __future__ import annotations

import json
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamcast.errors import InputError

CONFIG_FILE = "streamcast.toml"

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


def find_config(start: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The config file that applies in ``start`` (default: the current folder) and its
    streamcast table, or None. A file that is not valid TOML is an :class:`InputError`."""
    explicit = os.environ.get("STREAMCAST_CONFIG")
    if explicit:
        path = Path(explicit).expanduser().resolve()
        if not path.is_file():
            raise InputError(f"STREAMCAST_CONFIG: no config file at {path}")
        return path, _table(path)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE, _table(folder / CONFIG_FILE)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = _table(pyproject)
            if table is not None:
                return pyproject, table
    return None


def _table(path: Path) -> Any:
    """A config file's streamcast settings: streamcast.toml's top level, pyproject's
    ``[tool.streamcast]`` (None when it has none)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({exc})") from None
    if path.name == "pyproject.toml":
        return doc.get("tool", {}).get("streamcast")
    return doc


def _resolved_sqlite(url: str, base: Path) -> str:
    """A relative SQLite URL (``sqlite:///data/x.db``) made absolute against ``base``."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix:
        return prefix + str((base / url.removeprefix(prefix)).resolve())
    return url


class ConfigFileSource(PydanticBaseSettingsSource):
    """Settings from the config file, below the environment and explicit values."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False  # __call__ reads the whole table at once

    def __call__(self) -> dict[str, Any]:
        found = find_config()
        if found is None:
            return {}
        path, table = found
        known = set(self.settings_cls.model_fields) - {"config_file"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise InputError(f"{path}: unknown setting {unknown[0]!r} (settings: {', '.join(sorted(known))})")
        out = dict(table)
        base = path.parent
        data_dir = Path(str(out.get("data_dir", "data"))).expanduser()
        out["data_dir"] = data_dir if data_dir.is_absolute() else (base / data_dir).resolve()
        for key in ("db_url", "mlflow_tracking_uri"):
            if isinstance(out.get(key), str):
                out[key] = _resolved_sqlite(out[key], base)
        if "mlflow_tracking_uri" in out:  # the field reads MLFLOW_TRACKING_URI from the environment
            out["MLFLOW_TRACKING_URI"] = out.pop("mlflow_tracking_uri")
        out["config_file"] = path
        return out


class Settings(BaseSettings):
    """Runtime configuration. Every field can be set as ``STREAMCAST_<FIELD>``, or in the
    config file (see the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="STREAMCAST_", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFileSource(settings_cls), file_secret_settings

    def __init__(self, **values: Any) -> None:
        """As pydantic-settings builds them; a value that does not validate is an
        :class:`InputError` naming where it was set (option, environment variable or
        config file key), on one line."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InputError(_invalid_settings(exc, values)) from None

    config_file: Path | None = None  # the config file these settings came from (None: none found)
    data_dir: Path = Path("data")
    db_url: str | None = None
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    bounds: dict[str, Bounds] = Field(default_factory=lambda: dict(DEFAULT_BOUNDS))
    max_gap_steps: int = 3
    seed: int = 42
    retrain_hours: float = 24.0  # retrain when the last training is older than this
    drift_factor: float = 1.5  # ... or when live MASE exceeds backtest MASE by this factor
    drift_window: int = 72  # matured step-1..H points per series in the live MASE window
    # A streamed ESN champion's readout learns from each matured actual: per step, a scale
    # and an offset of its output by recursive least squares, where past time steps count
    # ``adapt_forgetting`` ** age and a ridge of weight ``adapt_prior`` holds them at the
    # registered readout; the correction is used only as far as it stands out from the
    # registered readout's validation noise (James-Stein shrinkage; ``adapt_threshold`` 0
    # uses the raw least-squares correction).
    adapt_forgetting: float = Field(0.95, gt=0, le=1)
    adapt_prior: float = Field(5.0, gt=0)
    adapt_threshold: float = Field(5.0, ge=0)
    # Live intervals: their level moves by this much (log units) per season of matured
    # points all outside their interval (a quantile tracker; see backtest.tracked_quantile).
    interval_rate: float = Field(4.0, gt=0)
    # ... in the stream, which moves it after every batch by the points that matured from H
    # different origins at once (a less noisy share than a daily forecast's), so faster.
    stream_interval_rate: float = Field(12.0, gt=0)
    holidays: str | None = None  # train with this country's public holidays as an input (US, AU-VIC, ...)
    calendar_tz: str | None = None  # train with the calendar read in this zone's local time (IANA name), not UTC
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


def _invalid_settings(exc: ValidationError, explicit: dict[str, Any]) -> str:
    """``invalid setting STREAMCAST_SEED='abc': Input should be a valid integer, ...`` (each problem)."""
    found = None
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        name = loc[0] if loc else ""
        env = name if name.isupper() else f"STREAMCAST_{name.upper()}"
        if name in explicit:
            where = ".".join(loc)
        elif env in os.environ:
            where = env + "".join(f"[{p}]" for p in loc[1:])
        else:
            found = found or find_config()
            where = f"{found[0].name}: {'.'.join(loc)}" if found else ".".join(loc)
        value = err.get("input")
        shown = f"={value!r}" if isinstance(value, str | int | float | bool) else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}{shown}: {msg}")
    return "invalid setting " + "; ".join(parts)


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]


def services_required() -> bool:
    """True in CI, where tests needing PostgreSQL or Redis must fail rather than skip."""
    return os.environ.get("STREAMCAST_REQUIRE_SERVICES", "") not in ("", "0", "false")
