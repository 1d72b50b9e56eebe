"""Forecasting candidates. Names are fixed: users pass them to ``--models``."""

from __future__ import annotations

from typing import Any

from pipeline.models.base import Forecaster, ModelConfig, NotFittedError

# name -> "module:Class"; imported lazily so that baselines never pull in TensorFlow.
REGISTRY: dict[str, str] = {
    "naive": "pipeline.models.baselines:NaiveForecaster",
    "seasonal_naive": "pipeline.models.baselines:SeasonalNaiveForecaster",
    "lstm": "pipeline.models.keras:LSTMForecaster",
    "rnn": "pipeline.models.keras:SimpleRNNForecaster",
    "cnn": "pipeline.models.keras:CNNForecaster",
    "cnn_lstm": "pipeline.models.keras:CNNLSTMForecaster",
    "esn": "pipeline.models.esn:ESNForecaster",
    "hopfield": "pipeline.models.hopfield:HopfieldForecaster",
    "ensemble": "pipeline.models.ensemble:EnsembleForecaster",
}
CANDIDATES = list(REGISTRY)


def get_model_class(name: str) -> type[Forecaster]:
    import importlib

    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    klass: type[Forecaster] = getattr(importlib.import_module(module), cls)
    return klass


def create_model(name: str, **config: Any) -> Forecaster:
    """A fresh, unfitted candidate by name, with config overrides."""
    return get_model_class(name)(**config)


__all__ = ["CANDIDATES", "REGISTRY", "Forecaster", "ModelConfig", "NotFittedError", "create_model", "get_model_class"]
