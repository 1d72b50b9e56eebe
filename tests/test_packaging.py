"""The distribution installs one import package, ``streamcast``, and nothing that collides
with a user's own modules (``pipeline``, ``flows``)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

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
