"""A real Prefect server on 127.0.0.1: work pool, `prefect deploy --all`, schedules, a worker run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy.engine import make_url

from flows.retrain import deployment_launcher
from streamcast import services
from streamcast.config import Settings
from streamcast.specs import StreamSpec
from streamcast.store import Store
from tests.conftest import _postgres_database, ingest_weather

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "ingest-hourly": "5 * * * *",
    "forecast-hourly": "10 * * * *",
    "retrain-daily": "0 3 * * *",
    "stream-replay": None,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Everything on SQLite (one machine), or the store, MLflow and the Prefect server
    each on its own PostgreSQL database (what several machines share)."""
    if request.param == "sqlite":
        yield {"settings": Settings(data_dir=data_dir), "prefect_db": None}
        return
    with ExitStack() as stack:
        store_url, mlflow_url, prefect_url = (
            stack.enter_context(contextmanager(_postgres_database)()) for _ in range(3)
        )
        monkeypatch.setenv("STREAMCAST_DB_URL", store_url)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_url)
        prefect_db = make_url(prefect_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        yield {"settings": Settings(data_dir=data_dir), "prefect_db": prefect_db}


def test_deploy_all_schedules_and_worker_runs_forecast(backend: dict, data_dir: Path, tmp_path: Path) -> None:
    settings: Settings = backend["settings"]
    ingest_weather(settings, data_dir / "w.csv", start="2013-11-01", end="2013-12-30")
    services.train(settings=settings, models=["naive"], folds=2)
    store = Store(settings.database_url)
    before = store.table_counts()["forecasts"]

    bindir = Path(sys.executable).parent
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "STREAMCAST_DATA_DIR": str(data_dir),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "PWD": str(ROOT),
    }
    if backend["prefect_db"]:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = backend["prefect_db"]
    prefect = str(bindir / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, "prefect server exited"
            time.sleep(0.5)

        def run(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
            res = subprocess.run([prefect, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            assert res.returncode == 0, f"prefect {' '.join(args)}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
            return res

        run("work-pool", "create", "streamcast-process", "--type", "process")
        run("--no-prompt", "deploy", "--all")
        deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        by_name = {d["name"]: d for d in deployments}
        assert set(by_name) == set(EXPECTED)
        for name, cron in EXPECTED.items():
            crons = [s["schedule"].get("cron") for s in by_name[name].get("schedules", [])]
            assert crons == ([cron] if cron else []), (name, crons)
            assert by_name[name]["work_pool_name"] == "streamcast-process"

        # A stream's retrain trigger under Prefect: a run of the retrain deployment, polled.
        with temporary_settings(updates={PREFECT_API_URL: api}):
            job = deployment_launcher(StreamSpec(retrain_models=["naive"]))("temp")
            assert job is not None and job.poll() is None  # scheduled; no worker has run it yet
        run("deployment", "run", "forecast/forecast-hourly")
        worker = subprocess.run(
            [prefect, "worker", "start", "--pool", "streamcast-process", "--run-once"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert worker.returncode == 0, worker.stderr[-3000:]
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        states = {r["name"]: r["state_type"] for r in runs}
        assert "COMPLETED" in states.values(), (states, worker.stdout[-2000:], worker.stderr[-2000:])
        assert store.table_counts()["forecasts"] == before + 72
        with temporary_settings(updates={PREFECT_API_URL: api}):
            assert job.poll() == 0, states  # the worker ran the retrain too
        retrain = next(r for r in runs if r["id"] == str(job.flow_run_id))
        assert retrain["parameters"]["spec"] == {"target": "temp", "models": ["naive"]}
        if backend["prefect_db"]:  # the server really kept its runs in PostgreSQL
            import sqlalchemy as sa

            pg = sa.create_engine(make_url(backend["prefect_db"]).set(drivername="postgresql+psycopg"))
            with pg.connect() as conn:
                assert conn.execute(sa.text("SELECT count(*) FROM flow_run")).scalar_one() >= 1
            pg.dispose()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        store.dispose()


def test_without_a_prefect_api_the_stream_flow_retrains_in_a_background_process() -> None:
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert deployment_launcher(StreamSpec()) is None  # services.stream then uses background_launcher


def test_prefect_yaml_names_a_prefect_the_project_installs() -> None:
    """prefect.yaml's prefect-version is one pyproject.toml's requirement accepts and no
    newer than the Prefect installed here."""
    import tomllib
    from importlib.metadata import version

    import yaml
    from packaging.requirements import Requirement
    from packaging.version import Version

    root = Path(__file__).resolve().parents[1]
    declared = Version(str(yaml.safe_load((root / "prefect.yaml").read_text())["prefect-version"]))
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["orchestrate"]
    prefect = next(Requirement(d) for d in deps if Requirement(d).name == "prefect")
    assert declared in prefect.specifier, (declared, prefect.specifier)
    assert declared <= Version(version("prefect"))


def test_flow_scripts_drop_prefects_temporary_server_notice(caplog: pytest.LogCaptureFixture) -> None:
    """`make run` (local mode) shows the flow's progress, not Prefect's notice about its temporary server."""
    import logging

    from flows.runners import quiet_prefect_notices

    quiet_prefect_notices()
    quiet_prefect_notices()  # once is enough, however often the scripts ask
    logger = logging.getLogger("prefect")
    assert sum(type(f).__name__ == "_DropTemporaryServerNotice" for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="prefect"):
        logger.info("Starting temporary server on http://127.0.0.1:8123\nSee https://www.prefect.io/docs ...")
        logger.info("Flow run 'tidy-fox' - Finished in state Completed()")
        logger.info("Stopping temporary server on http://127.0.0.1:8123")
    assert [r.getMessage() for r in caplog.records] == ["Flow run 'tidy-fox' - Finished in state Completed()"]
