"""What each optional part of streamcast needs installed, and one clear line when it is not.

The core distribution (store, ingest, HTTP API, status and predictions) needs none of
TensorFlow, reservoirpy, statsforecast, MLflow, Prefect or Redis; the extras bring
them: ``[train]`` (models and MLflow: train, forecast, load the champion),
``[stream]`` (``[train]`` plus the Redis client), ``[orchestrate]`` (``[train]`` plus
Prefect and prefect-dask for flows/), ``[all]``. A command that needs an extra checks
for it first, without importing anything heavy.
"""

from __future__ import annotations

import importlib.util

from streamcast.errors import StreamcastError

# extra -> modules it provides (checked by name: finding a module does not import it)
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("mlflow", "tensorflow", "keras", "reservoirpy", "statsforecast", "matplotlib", "optuna", "holidays"),
    "stream": ("redis",),
    "orchestrate": ("prefect", "prefect_dask"),
}
# An extra also needs what these bring.
_INCLUDES: dict[str, tuple[str, ...]] = {"stream": ("train",), "orchestrate": ("train",)}


class MissingExtraError(StreamcastError):
    """The command needs an optional part of streamcast that is not installed."""

    exit_code = 2


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` (and the extras it includes) that cannot be imported here."""
    names = [m for e in (*_INCLUDES.get(extra, ()), extra) for m in EXTRAS[e]]
    return [m for m in names if importlib.util.find_spec(m) is None]


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtraError` naming the extra to install when ``what`` (a
    command, e.g. ``streamcast train``) cannot run here."""
    absent = missing(extra)
    if absent:
        raise MissingExtraError(
            f"{what} needs streamcast's [{extra}] extra (missing: {', '.join(absent)}): "
            f"pip install 'streamcast[{extra}]'"
        )
