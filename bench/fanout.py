"""Training in one process against training fanned out over a local Dask cluster.

Ingests nyc-weather into a fresh data folder, then runs the train flow twice, one
after the other on the same data: `--task-runner default` (every candidate in the
flow's process) and `--task-runner dask` (one task per candidate on a local
cluster of single-threaded worker processes, one per core). Each run gets its own
MLflow database, so both register a first champion. Reports wall time and the
MASE of every candidate both ways.

    python bench/fanout.py [--models naive,seasonal_naive,esn,...] [--folds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import markdown_table, write_section

ROOT = Path(__file__).resolve().parent.parent  # flows/ is loaded from the checkout

RUN = """
import json, sys
from flows.train import train_flow
from streamcast.specs import TrainSpec
spec = TrainSpec.of(models=sys.argv[1].split(",") if sys.argv[1] else None, folds=int(sys.argv[2]))
result = train_flow(spec, task_runner=sys.argv[3])[spec.target]
print("RESULT " + json.dumps(result))
"""


def train(env: dict[str, str], models: str, folds: int, runner: str, mlflow_db: Path) -> tuple[float, dict]:
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}"}
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", RUN, models, str(folds), runner],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{runner} run failed:\n{out.stderr[-3000:]}")
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    print(f"{runner:8s} {seconds:6.1f} s  winner {result['winner']}", flush=True)
    return seconds, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="", help="comma-separated candidates (default: all)")
    ap.add_argument("--folds", type=int, default=30)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "STREAMCAST_DATA_DIR": f"{tmp}/data",
            "PREFECT_HOME": f"{tmp}/prefect",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        subprocess.run([str(bindir / "streamcast"), "ingest"], env=env, check=True, capture_output=True)
        runs = {r: train(env, args.models, args.folds, r, Path(tmp) / f"mlflow-{r}.db") for r in ("default", "dask")}
    (t_local, local), (t_dask, dask) = runs["default"], runs["dask"]
    mase_dask = {r["candidate"]: r["mase"] for r in dask["comparison"]}
    rows = [[r["candidate"], f"{r['mase']:.3f}", f"{mase_dask[r['candidate']]:.3f}"] for r in local["comparison"]]
    body = markdown_table(["candidate", "MASE, one process", "MASE, Dask workers"], rows)
    body += "\n" + markdown_table(
        ["task runner", "train flow wall time s", "ratio", "winner"],
        [
            ["default (one process)", f"{t_local:.0f}", "1.00", local["winner"]],
            [
                f"dask (local cluster, {os.cpu_count()} workers)",
                f"{t_dask:.0f}",
                f"{t_dask / t_local:.2f}",
                dask["winner"],
            ],
        ],
    )
    body += (
        f"\n{args.folds} origins; wall time of the whole train flow process (Prefect's local server, cluster "
        "start-up, backtests, MLflow logging, registration). On 2 cores the workers' Keras fits compete for the "
        "same cores, so the fan-out does not pay here. "
        + (
            "Every candidate's MASE is the same both ways (same seed, same metrics).\n"
            if all(r["mase"] == mase_dask[r["candidate"]] for r in local["comparison"])
            else "Candidates whose MASE differs between the two runners: "
            + ", ".join(r["candidate"] for r in local["comparison"] if r["mase"] != mase_dask[r["candidate"]])
            + ".\n"
        )
    )
    write_section("Training fan-out: one process against Dask workers", body)


if __name__ == "__main__":
    main()
