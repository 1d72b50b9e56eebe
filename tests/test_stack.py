"""scripts/stack.sh (`make stack` / `make stop` / `make mlflow-ui`): stop ends everything
it started, status tells the truth, a taken port fails clearly."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "scripts" / "stack.sh"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data_dir: Path, prefect_port: int, mlflow_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return {
        **env,
        "STREAMCAST_DATA_DIR": str(data_dir),
        "PREFECT_HOME": str(data_dir / "prefect"),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(mlflow_port),
        "MLFLOW_TRACKING_URI": f"sqlite:///{data_dir / 'mlflow.db'}",
    }


def _stack(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STACK), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _group(pgid: int) -> set[int]:
    """Every live process of a process group."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True, check=True).stdout
    return {int(pid) for pid, group in (line.split() for line in out.splitlines()) if int(group) == pgid}


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        # A zombie that nobody has reaped yet is gone for every practical purpose.
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"):
            continue
        alive.add(pid)
    return alive


def test_stop_ends_every_process_the_stack_started_and_status_tells_the_truth(tmp_path: Path) -> None:
    env = _env(tmp_path / "data", _free_port(), _free_port())
    started = _stack(env, "start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        status = _stack(env, "status").stdout
        assert status.count(": running") == 3, status
        run = tmp_path / "data" / "stack"
        processes = set().union(
            *(_group(int((run / f"{n}.pid").read_text())) for n in ("prefect-server", "mlflow", "worker"))
        )
        assert len(processes) >= 3
    finally:
        stopped = _stack(env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert {"stopped worker", "stopped mlflow", "stopped prefect-server"} <= {
        line.split(" (")[0] for line in stopped.stdout.splitlines()
    }
    assert _alive(processes) == set(), "processes the stack started outlived make stop"
    assert _stack(env, "status").stdout.count(": stopped") == 3


def test_a_taken_port_fails_clearly_and_starts_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path / "data", _free_port(), port)
        res = _stack(env, "start", timeout=60)
        assert res.returncode == 1
        assert f"port {port} on 127.0.0.1 is already taken: cannot start the MLflow UI" in res.stderr
        assert "MLFLOW_PORT" in res.stderr
        assert not list((tmp_path / "data" / "stack").glob("*.pid"))  # nothing was started

        ui = subprocess.run(
            ["make", "--no-print-directory", "mlflow-ui"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert ui.returncode != 0 and f"port {port} on 127.0.0.1 is already taken" in ui.stderr
