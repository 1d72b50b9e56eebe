"""streamcast: streaming time-series forecasting.

The public API, the same functions the ``streamcast`` command and the Prefect flows call::

    import streamcast

    streamcast.ingest(source="csv", path="obs.csv", series_col="station")
    outcome = streamcast.train(models=["naive", "seasonal_naive", "esn"], folds=10)
    streamcast.forecast()                       # from the champion; stored
    streamcast.latest_forecasts(series_id="JFK")
    champion = streamcast.load_champion()       # champion.bundle.forecast_history(frame)

Each action takes a spec (``IngestSpec``, ``TrainSpec``, ``StreamSpec``) or the spec's
fields as keywords, and ``settings=Settings(...)`` to point it elsewhere than the
environment says. Names are resolved on first use, so ``import streamcast`` is light.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamcast.config import Settings
    from streamcast.errors import InputError, NotFoundError, StreamcastError
    from streamcast.queries import latest_forecasts
    from streamcast.services import forecast, ingest, load_champion, stream, train
    from streamcast.specs import IngestSpec, StreamSpec, TrainSpec

_EXPORTS = {
    "Settings": "streamcast.config",
    "IngestSpec": "streamcast.specs",
    "TrainSpec": "streamcast.specs",
    "StreamSpec": "streamcast.specs",
    "ingest": "streamcast.services",
    "train": "streamcast.services",
    "forecast": "streamcast.services",
    "stream": "streamcast.services",
    "load_champion": "streamcast.services",
    "latest_forecasts": "streamcast.queries",
    "StreamcastError": "streamcast.errors",
    "InputError": "streamcast.errors",
    "NotFoundError": "streamcast.errors",
}

try:
    __version__ = version("streamcast")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'streamcast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "IngestSpec",
    "InputError",
    "NotFoundError",
    "Settings",
    "StreamSpec",
    "StreamcastError",
    "TrainSpec",
    "__version__",
    "forecast",
    "ingest",
    "latest_forecasts",
    "load_champion",
    "stream",
    "train",
]
