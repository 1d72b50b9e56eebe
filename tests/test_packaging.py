"""The distribution installs one import package, ``streamcast``, and nothing that collides
with a user's own modules (``pipeline``, ``flows``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib.metadata import Distribution, distribution, requires
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streamcast.config import Settings
from streamcast.store import Store
from tests.conftest import two_step_forecast

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = ["wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("streamcast-*.whl")
    return built


def test_wheel_holds_only_the_streamcast_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"streamcast"}
    for module in (
        "streamcast/store/__init__.py",
        "streamcast/store/migrations/env.py",
        "streamcast/store/migrations/versions/0001_baseline.py",
        "streamcast/cli/render.py",
        "streamcast/models/base.py",
    ):
        assert module in names
    assert "streamcast/py.typed" in names
    assert "streamcast/default_bounds.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "streamcast = streamcast.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_works_beside_a_users_own_pipeline_package(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # Dependencies come from this environment (no network); streamcast itself only from the wheel.
    site = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "outer.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = ["install", "--quiet", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), *install],
        check=True,
        capture_output=True,
    )
    project = tmp_path / "project"
    for package in ("pipeline", "flows"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f"WHOSE = 'user {package}'\n")
    (project / "pipeline" / "config.py").write_text("raise ImportError('the user pipeline package was imported')\n")
    env = {
        **os.environ,
        "PYTHONPATH": ".",
        "STREAMCAST_DATA_DIR": str(tmp_path / "data"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}",
    }
    env.pop("STREAMCAST_DB_URL", None)
    code = (
        "import streamcast, pipeline, flows\n"
        "print(streamcast.__file__)\n"
        "print(pipeline.WHOSE, flows.WHOSE)\n"
        "print(streamcast.Settings().database_url)\n"
    )
    shown = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], cwd=project, env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert shown[0].startswith(str(site)), shown
    assert shown[1] == "user pipeline user flows"
    assert str(tmp_path / "data") in shown[2]

    cli = venv / "bin" / "streamcast"
    status = subprocess.run([str(cli), "status"], cwd=project, env=env, capture_output=True, text=True)
    assert status.returncode == 2 and "no streamcast store" in status.stderr, status.stderr
    # The schema's migrations ship in the wheel: the installed CLI can create the store.
    upgrade = subprocess.run([str(cli), "db", "upgrade"], cwd=project, env=env, capture_output=True, text=True)
    assert upgrade.returncode == 0, upgrade.stderr
    status = subprocess.run([str(cli), "status"], cwd=project, env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "no observations yet" in status.stdout
    ingest = subprocess.run(
        [str(cli), "ingest", "--source", "csv", "--path", str(project / "missing.csv")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert ingest.returncode == 2
    assert "missing.csv" in ingest.stderr + ingest.stdout
    assert "Traceback" not in ingest.stderr


HEAVY = ("tensorflow", "keras", "reservoirpy", "statsforecast", "mlflow", "prefect", "prefect_dask", "redis", "optuna")


def _core_closure() -> list[Distribution]:
    """The installed distributions that streamcast's core requirements (no extras) pull in,
    followed recursively: exactly what `pip install streamcast` would bring."""
    todo = [(r, ("",)) for r in requires("streamcast") or []]
    seen: dict[str, Distribution] = {}
    while todo:
        line, extras = todo.pop()
        req = Requirement(line)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        dist = seen.get(name) or distribution(req.name)
        wanted = ("", *sorted(req.extras))
        if name not in seen or req.extras:
            todo += [(r, wanted) for r in dist.requires or []]
        seen[name] = dist
    return list(seen.values())


def _core_site(root: Path) -> Path:
    """A folder holding only the core closure's files (links into this environment)."""
    site = root / "core-site"
    site.mkdir()
    for dist in _core_closure():
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if top.endswith(".pth") or top == "__pycache__":
                continue
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    return site


def test_core_install_serves_forecasts_without_tensorflow_mlflow_or_prefect(wheel: Path, tmp_path: Path) -> None:
    """The wheel with its core requirements only (no extras): ingest, status, predictions
    and the HTTP API work; training says which extra to install, in one line."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True, capture_output=True, text=True
    ).stdout.strip()
    (Path(purelib) / "core.pth").write_text(str(_core_site(tmp_path)) + "\n")
    install = ["install", "--quiet", "--no-deps", "--no-index", str(wheel)]
    subprocess.run([sys.executable, "-m", "pip", "--python", py, *install], check=True, capture_output=True)
    probe = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    assert subprocess.run([py, "-c", probe], check=True, capture_output=True, text=True).stdout.strip() == "[]"

    data = tmp_path / "data"
    env = {**os.environ, "STREAMCAST_DATA_DIR": str(data), "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}"}
    env.pop("STREAMCAST_DB_URL", None)
    cli = str(venv / "bin" / "streamcast")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    (tmp_path / "obs.csv").write_text("ts,station,temp\n2024-01-01T00:00Z,A,1\n2024-01-01T01:00Z,A,2\n")
    assert run("ingest", "--source", "csv", "--path", "obs.csv", "--series-col", "station").returncode == 0
    train = run("train", "--models", "naive")
    assert train.returncode == 2 and "Traceback" not in train.stderr, train.stderr
    message = train.stderr.strip().splitlines()
    assert len(message) == 1 and "pip install 'streamcast[train]'" in message[0] and "mlflow" in message[0], message
    forecast = run("forecast")
    assert forecast.returncode == 2 and "streamcast[train]" in forecast.stderr

    # A forecast written by a full install elsewhere (here: this process) is served by the core one.
    points = two_step_forecast("esn", "3")
    with Store(Settings(data_dir=data).database_url) as store:
        store.write_forecasts(points)
    latest = run("predictions", "latest", "--format", "json")
    assert latest.returncode == 0, latest.stderr
    model = json.loads(latest.stdout)[0]["model"]
    assert (model["name"], model["version"]) == ("esn", "3")
    assert run("status").returncode == 0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [cli, "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        body = None
        deadline = time.monotonic() + 60
        while body is None and time.monotonic() < deadline and server.poll() is None:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/forecasts/latest?series_id=A", timeout=5).json()
            except httpx.TransportError:
                time.sleep(0.2)
        assert body is not None, server.stderr.read().decode() if server.poll() is not None else "no answer"
        assert [p["yhat"] for p in body["points"]] == [2.5, 3.0] and body["model"]["version"] == "3"
    finally:
        server.terminate()
        server.wait(timeout=30)
