"""The train flow on a thousand series: one process against 1, 2 (, 4) Dask workers.

A synthetic hourly panel (bench/scale.py's: N series x 90 days, two variables) is
ingested into a fresh data folder through the CLI; then the train flow runs on it once
per runner, one after the other on the same data, each with its own MLflow database
(so every run registers a first champion): `--task-runner default` (one process), and
`--task-runner dask` on a local cluster of K single-threaded worker processes, the work
split by candidate and by chunk of series (`--chunk-size`). Reports the wall time of
each run, the speed-up of K workers over one, and whether every candidate's MASE is
the same on every runner.

    python bench/scale_out.py [--series 1000] [--workers 1,2] [--chunk-size 250]
        [--models naive,seasonal_naive,esn] [--folds 5]
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
from scale import DAYS, panel

ROOT = Path(__file__).resolve().parent.parent  # flows/ is loaded from the checkout

RUN = """
import json, sys
from flows.train import train_flow
from streamcast.specs import TrainSpec
models, folds, runner, chunk, workers = sys.argv[1:6]
spec = TrainSpec.of(target="temp", models=models.split(","), folds=int(folds))
result = train_flow(spec, runner, None, int(chunk), int(workers) if workers else None)["temp"]
print("RESULT " + json.dumps(result))
"""


def train(
    env: dict[str, str], args: argparse.Namespace, runner: str, workers: int | None, db: Path
) -> tuple[float, dict]:
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    argv = [args.models, str(args.folds), runner, str(args.chunk_size), str(workers or "")]
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", RUN, *argv], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{runner} run ({workers} workers) failed:\n{out.stderr[-3000:]}")
    result = json.loads(next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")).removeprefix("RESULT "))
    print(f"{runner:8s} workers={workers}  {seconds:6.1f} s  winner {result['winner']}", flush=True)
    return seconds, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--workers", default="1,2", help="local Dask cluster sizes to run, comma-separated")
    ap.add_argument("--chunk-size", type=int, default=250)
    ap.add_argument("--models", default="naive,seasonal_naive,esn")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    sizes = [int(w) for w in args.workers.split(",")]
    streamcast = str(Path(sys.executable).parent / "streamcast")
    with tempfile.TemporaryDirectory(prefix="streamcast-scale-out-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        env = {
            **os.environ,
            "STREAMCAST_DATA_DIR": str(data),
            "PREFECT_HOME": f"{tmp}/prefect",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        env.pop("STREAMCAST_DB_URL", None)
        panel(args.series, 24 * DAYS).to_csv(data / "panel.csv", index=False)
        subprocess.run(
            [streamcast, "ingest", "--source", "csv", "--path", str(data / "panel.csv"), "--series-col", "station"],
            env=env,
            check=True,
            capture_output=True,
        )
        runs = {("default", None): train(env, args, "default", None, Path(tmp) / "mlflow-default.db")}
        for k in sizes:
            runs[("dask", k)] = train(env, args, "dask", k, Path(tmp) / f"mlflow-dask-{k}.db")
    one = runs[("dask", sizes[0])][0]
    rows = []
    for (_, k), (seconds, result) in runs.items():
        label = "default (one process, no Dask)" if k is None else f"dask, {k} local worker{'s' * (k > 1)}"
        rows.append([label, f"{seconds:.0f}", f"{one / seconds:.2f}", result["winner"]])
    body = markdown_table(["task runner", "train flow wall time s", f"speed-up over {sizes[0]} worker", "winner"], rows)
    mase = {key: {r["candidate"]: r["mase"] for r in res["comparison"]} for key, (_, res) in runs.items()}
    reference = mase[("default", None)]
    same = all(m == reference for m in mase.values())
    cands = ", ".join(f"{c} {v:.3f}" for c, v in sorted(reference.items(), key=lambda kv: kv[1]))
    body += (
        f"\n{args.series:,} synthetic hourly series x {DAYS} days (two variables), `--models {args.models} "
        f"--folds {args.folds}`, chunks of {args.chunk_size} series; wall time of the whole train flow process "
        "(Prefect's local server, cluster start-up, fits, backtests, refit, MLflow logging, registration). Dask "
        "splits each candidate's backtest by chunk of series and the ESN's fit and refit (ridge sums) too. "
        f"MASE: {cands}; "
        + ("the same on every runner (same seed, same metrics).\n" if same else f"differs between runners: {mase}.\n")
    )
    write_section(f"Training scale-out: {args.series:,} series on Dask workers", body)


if __name__ == "__main__":
    main()
