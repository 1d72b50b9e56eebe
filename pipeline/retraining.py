"""Retraining off the stream's hot path: a trigger starts a training elsewhere and the
stream goes on with the current champion; it swaps to the new one when the registry's
``@champion`` alias moves.

A *launcher* takes the target and either trains in place and returns None (the old,
synchronous way, still what tests and callers that want it pass), or starts the
training somewhere else and returns a :class:`RetrainJob` the stream polls at its
checks. :func:`background_launcher` runs ``streamcast train`` in a process of its own
(its output in ``<data dir>/logs/``); the Prefect stream flow may pass one that runs
a deployment instead (streamcast itself never imports Prefect).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import pandas as pd

from streamcast.config import Settings
from streamcast.specs import TrainSpec
from streamcast.store import utcnow


class RetrainJob(Protocol):
    """A training started elsewhere."""

    description: str

    def poll(self) -> int | None:
        """None while it runs; its exit status (0: trained) once it has ended."""
        ...


Launcher = Callable[[str], "RetrainJob | None"]


@dataclass
class ProcessJob:
    """``streamcast train`` in a background process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    description: str = ""
    _log: IO[bytes] | None = field(default=None, repr=False)

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None and self._log is not None:
            self._log.close()
            self._log = None
        return code


def train_command(spec: TrainSpec) -> list[str]:
    """The ``streamcast train`` command line of ``spec`` (through this interpreter)."""
    cmd = [sys.executable, "-c", "from streamcast.cli import main; main()", "train", "--target", spec.target]
    cmd += ["--models", ",".join(spec.models)] if spec.models else []
    return cmd


def background_launcher(spec: TrainSpec, settings: Settings) -> Launcher:
    """Start ``spec``'s training as its own process, on the same store and MLflow, its
    output in ``<data dir>/logs/retrain-<target>-<time>.log``; the stream does not wait."""

    def launch(target: str) -> ProcessJob:
        logs = settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = pd.Timestamp(utcnow()).strftime("%Y%m%dT%H%M%S")
        log_path = logs / f"retrain-{target}-{stamp}.log"
        env = {
            **os.environ,
            "STREAMCAST_DATA_DIR": str(settings.data_dir.resolve()),
            "STREAMCAST_DB_URL": settings.database_url,
            "MLFLOW_TRACKING_URI": settings.tracking_uri,
        }
        log = log_path.open("wb")
        process = subprocess.Popen(
            train_command(spec.model_copy(update={"target": target})),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # a Ctrl-C of the stream does not kill a training half-way
        )
        return ProcessJob(process, log_path, f"streamcast train (pid {process.pid}, log {log_path})", log)

    return launch
