"""Forecasting candidates. Names are fixed: users pass them to ``--models``.

A new candidate is a :class:`Forecaster` subclass (one file per family in this
folder) plus one line in ``REGISTRY``; the contract tests in
``tests/test_models_contract.py`` then fail until it is in their table.
"""

from __future__ import annotations

import importlib
from typing import Any

from streamcast.errors import InputError
from streamcast.models.base import Forecaster, ModelConfig, NotFittedError

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
CANDIDATES = list(REGISTRY)
# What `streamcast train` races when no --models are given.
BASELINES = ["naive", "seasonal_naive", "weekly_naive"]
# statsforecast's models: what a forecaster would otherwise reach for.
STATISTICAL = ["ets", "theta", "mstl"]
DEFAULT_CANDIDATES = [*BASELINES, *STATISTICAL, "esn", "hopfield", "rnn", "lstm", "cnn", "cnn_lstm", "ensemble"]


def get_model_class(name: str) -> type[Forecaster]:
    if name not in REGISTRY:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    klass: type[Forecaster] = getattr(importlib.import_module(module), cls)
    return klass


def create_model(name: str, **config: Any) -> Forecaster:
    """A fresh, unfitted candidate by name, with config overrides (unknown ones are refused)."""
    return get_model_class(name)(**config)


__all__ = [
    "BASELINES",
    "CANDIDATES",
    "DEFAULT_CANDIDATES",
    "REGISTRY",
    "STATISTICAL",
    "Forecaster",
    "ModelConfig",
    "NotFittedError",
    "create_model",
    "get_model_class",
]
