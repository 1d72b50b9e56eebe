"""What a user asks for, stated once.

The CLI, the Prefect flows and the Python API each build one of these specs from
their own options and hand it to one service function (:mod:`streamcast.services`):
every default lives here and nowhere else. A spec is plain, validated data, so a
flow can take it as a parameter and a task can pass it to a worker.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import pandas as pd
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from streamcast.backtest import BacktestConfig
from streamcast.config import DEFAULT_TARGET
from streamcast.errors import InputError
from streamcast.features import check_zone
from streamcast.models import candidates, default_candidates


def _known_zone(zone: str) -> str:
    """A spec's time zone, checked as the features check theirs (a validator's ValueError)."""
    try:
        return check_zone(zone)
    except InputError as exc:
        raise ValueError(str(exc)) from None


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def of(cls, **options: Any) -> Self:
        """Build from options where ``None`` means "not given" (the spec's default applies);
        invalid values raise :class:`InputError` with one line naming each problem."""
        try:
            return cls(**{k: v for k, v in options.items() if v is not None})
        except ValidationError as exc:
            raise InputError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        msg = str(err["msg"]).removeprefix("Value error, ")
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _names(value: Any) -> Any:
    """Candidate lists may be given as one comma-separated string (CLI, deployment parameters)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _known_models(names: list[str]) -> list[str]:
    known = candidates()
    unknown = [m for m in names if m not in known]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if not names:
        raise ValueError("no candidates given")
    return list(dict.fromkeys(names))  # in the order given, each once


ModelNames = Annotated[list[str], BeforeValidator(_names), AfterValidator(_known_models)]


def split_targets(value: str | list[str]) -> list[str]:
    """``"temp, humid"`` (CLI, deployment parameters) or a list: the variables to forecast,
    in the order given, each once."""
    names = list(dict.fromkeys(_names(value)))
    if not names:
        raise InputError("no target given")
    return names


def _targets(value: Any) -> str:
    try:
        return ",".join(split_targets(value))
    except InputError as exc:
        raise ValueError(str(exc)) from None


# One variable, or several comma-separated: each is trained and registered on its own.
TargetNames = Annotated[str, BeforeValidator(_targets)]


class TrainSpec(Spec, BacktestConfig):
    """A training: which candidates race on the backtest (target, horizon, folds, step,
    validation slice, season and interval level come from :class:`BacktestConfig`)."""

    target: TargetNames = Field(DEFAULT_TARGET, description="variable to forecast; several comma-separated")
    models: ModelNames = Field(default_factory=default_candidates)
    epochs: int | None = Field(None, ge=1, description="at most this many epochs for Keras candidates")
    seed: int = 42
    tune_minutes: float = Field(0.0, ge=0, description="Optuna budget over all candidates")
    tune_max_trials: int | None = Field(None, ge=1)
    refit: bool = Field(True, description="register the winner refit on all the data (else as fit for the backtest)")
    model_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    holidays: str | None = Field(
        None, description="public holidays as a model input: a country or subdivision code (US, AU-VIC)"
    )
    calendar_tz: str | None = Field(
        None, description="the time zone the calendar inputs are read in (IANA name; None: UTC)"
    )
    calendar: list[str] | None = Field(
        None,
        description="calendar inputs of every candidate (hour, doy, dow, holiday:<code>, tz:<zone>); "
        "None: hour and day of year, day of week when the target has a weekly rhythm, holidays when set, "
        "read in calendar_tz",
    )

    @field_validator("calendar_tz")
    @classmethod
    def _known_calendar_zone(cls, zone: str | None) -> str | None:
        return None if zone is None else _known_zone(zone)

    @property
    def targets(self) -> list[str]:
        return self.target.split(",")

    def each_target(self) -> list[TrainSpec]:
        """One spec per target (``target="temp,humid"``): each trains and registers
        ``streamcast-<target>`` on its own, with the same options."""
        return [self if t == self.target else self.model_copy(update={"target": t}) for t in self.targets]

    def backtest_config(self) -> BacktestConfig:
        if len(self.targets) > 1:
            raise InputError(f"one target per training, not {self.target!r}: train each of spec.each_target()")
        return BacktestConfig(**self.model_dump(include=set(BacktestConfig.model_fields)))


class _OpenMeteoLocation(Spec):
    """Where Open-Meteo is asked for hourly weather (ingest and stream alike)."""

    source: str
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    variables: Annotated[list[str] | None, BeforeValidator(_names)] = None
    series_id: str | None = None

    @model_validator(mode="after")
    def _located(self) -> Self:
        if self.source == "open-meteo" and (self.latitude is None or self.longitude is None):
            raise ValueError("--source open-meteo needs --latitude and --longitude")
        return self

    def location_series_id(self) -> str:
        """Open-Meteo's series id: the one given, else the rounded coordinates."""
        return self.series_id or f"{self.latitude:.2f},{self.longitude:.2f}"


def _units(value: Any) -> Any:
    """``["temp=°C", "load=kW"]`` (the CLI's repeated --unit) or a mapping."""
    if value is None:
        return {}
    if isinstance(value, dict):
        pairs = list(value.items())
    else:
        pairs = []
        for item in [value] if isinstance(value, str) else value:
            name, sep, unit = str(item).partition("=")
            if not sep:
                raise ValueError(f"--unit {item!r}: expected variable=unit, e.g. temp=°C")
            pairs.append((name, unit))
    out = {}
    for name, unit in pairs:
        name, unit = str(name).strip(), str(unit).strip()
        if not name or not unit or len(unit) > 32:
            raise ValueError(f"unit {name}={unit!r}: give a variable and a unit of at most 32 characters")
        out[name] = unit
    return out


class IngestSpec(_OpenMeteoLocation):
    """An ingest: the bundled data, a file, the landing folder or Open-Meteo's archive."""

    source: Literal["nyc-weather", "csv", "parquet", "landing", "open-meteo"] = "nyc-weather"
    path: Path | None = Field(None, description="file (csv, parquet) or landing folder")
    time_col: str | None = None
    series_col: str | None = None
    tz: str = Field("UTC", description="time zone of naive timestamps")
    start: str | None = Field(None, description="open-meteo archive start (YYYY-MM-DD)")
    end: str | None = Field(None, description="open-meteo archive end (YYYY-MM-DD)")
    units: Annotated[dict[str, str], BeforeValidator(_units)] = Field(
        default_factory=dict, description="variable -> unit (CLI: --unit temp=°C), recorded in the store"
    )

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        return _known_zone(tz)

    @model_validator(mode="after")
    def _file_given(self) -> Self:
        if self.source in ("csv", "parquet") and self.path is None:
            raise ValueError("--path is required for csv and parquet")
        return self


class StreamSpec(_OpenMeteoLocation):
    """A stream: where observations come from, and what the champion forecasts."""

    source: Literal["replay", "redis", "open-meteo"] = "replay"
    target: str = DEFAULT_TARGET
    retrain_models: ModelNames = Field(
        default_factory=lambda: ["naive", "seasonal_naive", "esn"],
        description="candidates compared when drift or the interval triggers a retrain",
    )
    adapt: bool = Field(True, description="an ESN champion's readout learns from each matured actual")
    # replay
    dataset: str = "nyc-weather"
    speed: float = Field(3600.0, ge=0, description="simulated seconds per real second (0: no waiting)")
    start: datetime | None = Field(None, description="replay from this time (UTC)")
    until: datetime | None = Field(None, description="replay until this time (UTC)")
    # redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    stream: str = "streamcast:observations"
    group: str = "streamcast"
    consumer: str = "streamcast-1"
    batch_size: int = Field(64, ge=1, description="entries per batch")
    stop_after_idle: float | None = Field(None, ge=0, description="stop after this many idle seconds")
    claim_idle_ms: int = Field(10_000, ge=0, description="claim entries a consumer left pending this long")
    broker_retry_seconds: float = Field(
        300.0, ge=0, description="keep retrying an unreachable broker this long before giving up"
    )
    # open-meteo
    poll_seconds: float = Field(900.0, ge=0)
    max_polls: int | None = Field(None, ge=1)

    @field_validator("start", "until", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            ts = pd.Timestamp(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 time: {value!r}") from None
        return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()

    def retrain_spec(self) -> TrainSpec:
        """The training a drift or interval trigger runs."""
        return TrainSpec(target=self.target, models=self.retrain_models)
