"""Peak resident memory of `make run`'s pipeline and of the API process.

Runs the pipeline flow once (ingest -> train and compare -> register -> forecast)
in a fresh data folder as `make run` does, then serves the resulting store and
reads the API's resident memory after answering the dashboard and queries.

    python bench/memory.py [--models naive,seasonal_naive,esn,...]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _results import markdown_table, write_section
from common import free_port, wait_healthy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=None)
    args = ap.parse_args()
    bindir = Path(sys.executable).parent
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "STREAMCAST_DATA_DIR": f"{tmp}/data",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/data/mlflow.db",
            "PREFECT_HOME": f"{tmp}/prefect",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        cmd = [sys.executable, "-m", "flows.pipeline_flow", "--source", "nyc-weather", "--retrain", "always"]
        if args.models:
            cmd += ["--models", args.models]
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=Path(__file__).resolve().parent.parent, check=True, stdout=subprocess.DEVNULL)
        secs = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        rows.append(["pipeline flow (make run)", args.models or "all candidates", f"{peak_mb:,.0f}", f"{secs:.0f}"])
        print(f"pipeline: peak RSS {peak_mb:,.0f} MB in {secs:.0f} s", flush=True)

        port = free_port()
        proc = subprocess.Popen(
            [str(bindir / "streamcast"), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base)
            for path in ("/", "/series", "/forecasts/latest", "/forecasts/latest?series_id=EWR", "/scores", "/docs"):
                httpx.get(base + path, timeout=10).raise_for_status()
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        rows.append(
            ["API (streamcast serve)", "after /, /series, /forecasts/latest, /scores, /docs", f"{rss:,.0f}", "-"]
        )
        print(f"API: peak RSS {rss:,.0f} MB", flush=True)
    body = markdown_table(["process", "work", "peak RSS MB", "seconds"], rows)
    body += "\nTarget: the API process stays under 300 MB resident (it never imports TensorFlow or MLflow).\n"
    write_section("Memory: peak resident set", body)


if __name__ == "__main__":
    main()
