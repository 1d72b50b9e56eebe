"""HTTP latency of GET /forecasts/latest under concurrent load, on 127.0.0.1.

Builds a store with nyc-weather, a registered champion and a stored forecast,
starts `streamcast serve` in its own process, then runs 32 concurrent clients
(each a closed loop of requests) for a fixed number of requests. Also reports
the API process's resident memory.

    python bench/serve.py [--clients 32] [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _results import markdown_table, write_section
from common import free_port, wait_healthy

from streamcast.config import Settings
from streamcast.services import forecast, ingest, train


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(url: str, clients: int, total: int) -> tuple[np.ndarray, float, int]:
    latencies: list[float] = []
    errors = 0
    per_client = total // clients
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker(i: int) -> None:
            nonlocal errors
            sid = ["EWR", "JFK", "LGA"][i % 3]
            for _ in range(per_client):
                t0 = time.perf_counter()
                r = await client.get(url, params={"series_id": sid, "target": "temp"})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

        await asyncio.gather(*(worker(i) for i in range(clients // 4)))  # warm-up
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    return np.array(latencies) * 1000, elapsed, errors


def wrk_load(url: str, clients: int, seconds: int) -> tuple[float, float, float, int]:
    """(p50 ms, p99 ms, requests/s, requests) from wrk (Debian package `wrk`), a C load generator
    that needs far less CPU than the server it measures."""
    import re
    import shutil

    exe = shutil.which("wrk")
    assert exe is not None
    out = subprocess.run(
        [exe, "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", url], capture_output=True, text=True, check=True
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return ms("50"), ms("99"), rps, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {**os.environ, "STREAMCAST_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}"}
        os.environ.update(env)
        settings = Settings(data_dir=data)
        ingest(settings=settings, source="nyc-weather")
        train(settings=settings, models=["naive", "seasonal_naive"], folds=5)
        forecast(settings=settings)
        port = free_port()
        exe = Path(sys.executable).with_name("streamcast")
        proc = subprocess.Popen(
            [str(exe), "serve", "--port", str(port), "--workers", str(args.workers)], env=env, stdout=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base)
            import shutil

            url = base + "/forecasts/latest"
            if shutil.which("wrk"):
                tool = "wrk (2 threads)"
                wrk_load(url + "?series_id=JFK&target=temp", args.clients, 3)  # warm-up
                p50, p99, rps, n = wrk_load(url + "?series_id=JFK&target=temp", args.clients, 15)
                errors = 0
            else:
                tool = "httpx asyncio client"
                lat, elapsed, errors = asyncio.run(load(url, args.clients, args.requests))
                p50, p99, rps, n = np.percentile(lat, 50), np.percentile(lat, 99), len(lat) / elapsed, len(lat)
            httpx.get(base + "/")  # the dashboard too, before measuring memory
            rss = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(
        f"{n} requests, {args.clients} clients ({tool}): p50 {p50:.2f} ms, p99 {p99:.2f} ms, {rps:,.0f} req/s, "
        f"{errors} errors; API RSS {rss:.0f} MB"
    )
    body = markdown_table(
        ["endpoint", "load generator", "clients", "requests", "p50 ms", "p99 ms", "requests/s", "errors", "API RSS MB"],
        [
            [
                "GET /forecasts/latest?series_id=JFK",
                tool,
                str(args.clients),
                f"{n:,}",
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{rps:,.0f}",
                str(errors),
                f"{rss:.0f}",
            ]
        ],
    )
    body += (
        "\nOne `streamcast serve` process (uvicorn with uvloop/httptools, one worker) on SQLite; the load generator "
        "runs on the same 2-core machine. Targets: p99 < 25 ms at 32 clients; API under 300 MB resident.\n"
    )
    write_section("HTTP: /forecasts/latest under load", body)


if __name__ == "__main__":
    main()
