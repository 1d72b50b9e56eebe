"""One function per user action: what the CLI commands, the Prefect flows and the
Python API call. Each takes a spec (or builds one from keyword options), opens what
it needs from the settings, does the work and closes it again.

Heavy libraries (TensorFlow, MLflow) are imported inside the actions that need them,
so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from streamcast.config import DEFAULT_TARGET, Settings, get_settings
from streamcast.errors import InputError
from streamcast.extras import require
from streamcast.ingestion import IngestReport, run_ingest
from streamcast.monitoring import RetrainDecision, retrain_decision
from streamcast.specs import IngestSpec, StreamSpec, TrainSpec
from streamcast.store import Store

if TYPE_CHECKING:
    from streamcast.forecasting import ChampionHandle
    from streamcast.retraining import Launcher
    from streamcast.streaming import StreamStats
    from streamcast.training import TrainOutcome


def ingest(spec: IngestSpec | None = None, *, settings: Settings | None = None, **options: Any) -> IngestReport:
    """Ingest the bundled data, a file, the landing folder or Open-Meteo (idempotent;
    bad rows are quarantined, an unusable input raises :class:`InputError`).

    ``streamcast.ingest(source="csv", path="obs.csv", series_col="station")``
    """
    spec = spec or IngestSpec.of(**options)
    settings = settings or get_settings()
    with Store(settings.database_url) as store:
        return run_ingest(store, spec, settings)


def upgrade_store(*, settings: Settings | None = None) -> tuple[str | None, str]:
    """``streamcast db upgrade``: create the store, or bring one from an older streamcast
    to this version (writers do the same on opening it). Returns the schema before and after."""
    from streamcast.store import upgrade_store as upgrade

    return upgrade((settings or get_settings()).database_url)


def train(
    spec: TrainSpec | None = None,
    *,
    settings: Settings | None = None,
    on_progress: Callable[[str, str], None] | None = None,
    **options: Any,
) -> TrainOutcome:
    """Backtest the candidates on the store's data, log to MLflow, register the winner
    behind the champion gate.

    ``streamcast.train(models=["naive", "esn"], folds=10)``
    """
    require("train", "training")
    from streamcast.training import run_training

    settings = settings or get_settings()
    return run_training(training_spec(spec or TrainSpec.of(**options), settings), settings, on_progress)


def training_specs(spec: TrainSpec, settings: Settings | None = None) -> list[TrainSpec]:
    """One spec per target of ``spec`` (``target="temp,humid"``), after checking that the
    store holds every one of them: a misspelt second target stops before the first trains."""
    settings = settings or get_settings()
    specs = spec.each_target()
    if len(specs) > 1:
        with Store(settings.database_url, read_only=True) as store:
            missing = [s.target for s in specs if not store.has_variable(s.target)]
        if missing:
            raise InputError(f"no variable {', '.join(map(repr, missing))} in the store; nothing was trained")
    return specs


def training_spec(spec: TrainSpec, settings: Settings | None = None) -> TrainSpec:
    """``spec`` with what the environment sets and the spec leaves open
    (``STREAMCAST_HOLIDAYS``, ``STREAMCAST_CALENDAR_TZ``): every way into training starts from this."""
    settings = settings or get_settings()
    update: dict[str, str] = {}
    if spec.holidays is None and settings.holidays:
        update["holidays"] = settings.holidays
    if spec.calendar_tz is None and settings.calendar_tz:
        update["calendar_tz"] = settings.calendar_tz
    return spec.model_copy(update=update) if update else spec


def load_champion(target: str = DEFAULT_TARGET, *, settings: Settings | None = None) -> ChampionHandle:
    """The registered champion of ``target`` (downloaded once per version, then cached):
    ``load_champion().bundle.forecast_history(history_frame)`` forecasts any history."""
    require("train", "loading the champion")
    from streamcast.forecasting import load_champion as load

    return load(settings or get_settings(), target)


def forecast(
    target: str = DEFAULT_TARGET,
    series: list[str] | None = None,
    *,
    settings: Settings | None = None,
    chunk_of_all: bool = False,
) -> pd.DataFrame:
    """Forecast every series (or ``series``) from its latest observations with the
    champion; the points are stored with full provenance and returned. ``chunk_of_all``:
    ``series`` is a chunk of a forecast of every series (see :func:`mark_scored`)."""
    require("train", "forecasting")
    from streamcast.forecasting import issue_forecast

    return issue_forecast(settings or get_settings(), target, series, chunk_of_all=chunk_of_all)


def mark_scored(target: str, checked_at: datetime, *, settings: Settings | None = None) -> None:
    """A forecast of every series in chunks, begun at ``checked_at``, has scored what
    matured in every chunk: the next forecast scores from there."""
    require("train", "forecasting")
    from streamcast.forecasting import mark_scored as mark

    mark(settings or get_settings(), target, checked_at)


def stream(
    spec: StreamSpec | None = None,
    *,
    settings: Settings | None = None,
    on_start: Callable[[str], None] | None = None,
    on_batch: Callable[[StreamStats], None] | None = None,
    retrain: Launcher | None = None,
    **options: Any,
) -> StreamStats:
    """Process observations as they arrive until the source ends (or Ctrl-C): store,
    advance the champion, forecast, score, retrain when due. ``on_start`` hears what
    is being consumed; ``retrain`` starts a training when a trigger fires (default: a
    background ``streamcast train`` process the stream does not wait for)."""
    spec = spec or StreamSpec.of(**options)
    require("stream" if spec.source == "redis" else "train", "streaming")
    from streamcast import tracking
    from streamcast.retraining import background_launcher
    from streamcast.sources import open_stream
    from streamcast.streaming import StreamProcessor

    settings = settings or get_settings()
    # Connected to MLflow before the first entry is read, as the processor is to the store:
    # the first batch then loads the champion, not MLflow's database layer (0.9 s of imports).
    tracking.configure(settings)
    source = open_stream(spec, settings)
    if on_start:
        on_start(source.description)
    # A trigger starts `streamcast train` in a process of its own; the stream goes on.
    launcher = retrain or background_launcher(spec.retrain_spec(), settings)
    processor = StreamProcessor(settings, target=spec.target, retrain=launcher, adapt=spec.adapt)
    try:
        return processor.run(source.batches, on_batch=on_batch)
    except KeyboardInterrupt:
        return processor.stats
    finally:
        processor.close()
        source.close()


def decide_retrain(target: str = DEFAULT_TARGET, *, settings: Settings | None = None) -> RetrainDecision:
    """Whether a training is due: no champion yet, the retrain interval elapsed, or live error drifted."""
    settings = settings or get_settings()
    with Store(settings.database_url) as store:
        return retrain_decision(store, settings, target)
