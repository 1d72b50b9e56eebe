"""Forecasting candidates. Names are fixed: users pass them to ``--models``.

A new built-in candidate is a :class:`Forecaster` subclass (one file per family in
this folder) plus one line in ``REGISTRY``; the contract tests in
``tests/test_models_contract.py`` then fail until it is in their table.

Installed packages add candidates through the ``streamcast.models`` entry-point group
(name = the candidate's ``kind``, value = ``module:Class``, a :class:`Forecaster`
subclass); they race, register, load as the pyfunc and join the ensemble like
built-in ones. ``examples/streamcast-drift`` is a complete plug-in.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from streamcast.errors import InputError
from streamcast.models.base import Forecaster, ModelConfig, NotFittedError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "streamcast.models"
# What a candidate name may look like: it becomes a run name, a folder and a tag value.
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")

# name -> "module:Class"; imported lazily so that baselines never pull in TensorFlow.
REGISTRY: dict[str, str] = {
    "naive": "streamcast.models.baselines:NaiveForecaster",
    "seasonal_naive": "streamcast.models.baselines:SeasonalNaiveForecaster",
    "weekly_naive": "streamcast.models.baselines:WeeklyNaiveForecaster",
    "ets": "streamcast.models.statistical:ETSForecaster",
    "theta": "streamcast.models.statistical:ThetaForecaster",
    "mstl": "streamcast.models.statistical:MSTLForecaster",
    "lstm": "streamcast.models.keras:LSTMForecaster",
    "rnn": "streamcast.models.keras:SimpleRNNForecaster",
    "cnn": "streamcast.models.keras:CNNForecaster",
    "cnn_lstm": "streamcast.models.keras:CNNLSTMForecaster",
    "esn": "streamcast.models.esn:ESNForecaster",
    "hopfield": "streamcast.models.hopfield:HopfieldForecaster",
    "ensemble": "streamcast.models.ensemble:EnsembleForecaster",
}
# What `streamcast train` races when no --models are given.
BASELINES = ["naive", "seasonal_naive", "weekly_naive"]
# statsforecast's models: what a forecaster would otherwise reach for.
STATISTICAL = ["ets", "theta", "mstl"]
NETWORKS = ["esn", "hopfield", "rnn", "lstm", "cnn", "cnn_lstm"]


@functools.cache
def plugins() -> dict[str, EntryPoint]:
    """Candidates added by installed packages (entry-point group ``streamcast.models``).
    A plug-in may not take a built-in name; a malformed name is skipped with a warning."""
    found: dict[str, EntryPoint] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in REGISTRY:
            log.warning("plug-in model %r (%s) skipped: the name is a built-in candidate's", ep.name, ep.value)
        elif not _NAME.fullmatch(ep.name):
            log.warning("plug-in model %r (%s) skipped: names are lower_snake_case", ep.name, ep.value)
        else:
            found.setdefault(ep.name, ep)
    return found


def candidates() -> list[str]:
    """Every candidate name: the built-in ones, then installed plug-ins."""
    return [*REGISTRY, *plugins()]


def default_candidates() -> list[str]:
    """What races when no --models are given: every candidate, the ensemble last."""
    return [*BASELINES, *STATISTICAL, *NETWORKS, *plugins(), "ensemble"]


def ensemble_members() -> list[str]:
    """Who an ensemble may draw on when nobody says: every other candidate."""
    return [*NETWORKS, *STATISTICAL, *BASELINES, *plugins()]


def get_model_class(name: str) -> type[Forecaster]:
    if name in REGISTRY:
        module, cls = REGISTRY[name].split(":")
        klass: type[Forecaster] = getattr(importlib.import_module(module), cls)
        return klass
    ep = plugins().get(name)
    if ep is None:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(candidates())}")
    dist = f" from {ep.dist.name}" if ep.dist is not None else ""
    try:
        loaded = ep.load()
    except Exception as exc:  # noqa: BLE001 - any failure of a third-party import is the plug-in's
        raise InputError(f"plug-in model {name!r} ({ep.value}{dist}) failed to load: {exc}") from None
    if not (isinstance(loaded, type) and issubclass(loaded, Forecaster)):
        raise InputError(f"plug-in model {name!r} ({ep.value}{dist}) is not a streamcast Forecaster subclass")
    if getattr(loaded, "kind", None) != name:
        raise InputError(
            f"plug-in model {name!r} ({ep.value}{dist}) has kind {getattr(loaded, 'kind', None)!r}; "
            "the entry-point name and the class's kind must be the same"
        )
    return loaded


def create_model(name: str, **config: Any) -> Forecaster:
    """A fresh, unfitted candidate by name, with config overrides (unknown ones are refused)."""
    return get_model_class(name)(**config)


__all__ = [
    "BASELINES",
    "ENTRY_POINT_GROUP",
    "NETWORKS",
    "REGISTRY",
    "STATISTICAL",
    "Forecaster",
    "ModelConfig",
    "NotFittedError",
    "candidates",
    "create_model",
    "default_candidates",
    "ensemble_members",
    "get_model_class",
    "plugins",
]
