"""Task runners the flows can fan out on (Prefect's default: threads in the flow's
process; or a Dask cluster through prefect-dask), and the command-line options the
flows share when run as scripts (`python -m flows.train`, `make run`)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from streamcast.errors import InputError
from streamcast.specs import TrainSpec

TASK_RUNNERS = ("default", "dask")
DEFAULT_CHUNK_SIZE = 250  # series per training task: 1,000 series are four chunks, enough for a few workers


def dask_task_runner(address: str | None = None, n_workers: int | None = None) -> Any:
    """A ``DaskTaskRunner`` on the cluster at ``address``, else on a local cluster of
    single-threaded worker processes (a model fit is not thread-safe and uses the cores
    it has)."""
    # Dask's own INFO lines (nanny and worker start/stop) would drown the flow's logs.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from prefect.client.orchestration import get_client
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    kwargs: dict[str, Any] = {"processes": True, "threads_per_worker": 1}
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url) if client.api_url else None
    if api_url:
        # Workers report task runs to this flow's API, even Prefect's temporary local
        # server, instead of each starting a server of its own.
        kwargs["env"] = {"PREFECT_API_URL": str(api_url)}
    if n_workers is not None:
        kwargs["n_workers"] = n_workers
    return DaskTaskRunner(cluster_kwargs=kwargs)


def check_task_runner(name: str) -> None:
    if name not in TASK_RUNNERS:
        raise ValueError(f"unknown task runner {name!r}; choose from {', '.join(TASK_RUNNERS)}")


class _DropTemporaryServerNotice(logging.Filter):
    """Prefect's "Starting temporary server on ..." (with a link to its docs) and
    "Stopping temporary server" on every script run in local mode: noise on a console
    that should show the flow's progress."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Starting temporary server", "Stopping temporary server"))


def quiet_prefect_notices() -> None:
    prefect_logger = logging.getLogger("prefect")
    if not any(isinstance(f, _DropTemporaryServerNotice) for f in prefect_logger.filters):
        prefect_logger.addFilter(_DropTemporaryServerNotice())


def parse_training_args(description: str, *extra: tuple[str, dict[str, Any]]) -> argparse.Namespace:
    """Parse a flow script's options: the training spec's (unset ones keep its defaults),
    the task runner, and ``extra`` ones; ``train_spec`` holds the built spec."""
    quiet_prefect_notices()
    ap = argparse.ArgumentParser(description=description)
    for flag, kw in extra:
        ap.add_argument(flag, **kw)
    ap.add_argument("--target")
    ap.add_argument("--models", help="comma-separated candidates")
    ap.add_argument("--folds", type=int)
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--tune-minutes", type=float)
    ap.add_argument(
        "--no-refit", dest="refit", action="store_false", default=None, help="register the winner as backtested"
    )
    ap.add_argument(
        "--task-runner", default="default", choices=TASK_RUNNERS, help="dask: tasks by candidate and chunk of series"
    )
    ap.add_argument("--dask-address", help="Dask scheduler, e.g. tcp://10.0.0.5:8786 (else a local cluster)")
    ap.add_argument("--dask-workers", type=int, help="dask: processes of a local cluster (default: one per core)")
    ap.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="dask: series per training task (forecasting: 50 a task)",
    )
    args = ap.parse_args()
    for flag in ("chunk_size", "dask_workers"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1")
    options = {k: getattr(args, k) for k in ("target", "models", "folds", "epochs", "tune_minutes", "refit")}
    try:
        args.train_spec = TrainSpec.of(**options)
    except InputError as exc:
        ap.error(str(exc))
    return args
