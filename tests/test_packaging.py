"""The wheel carries what the server serves from its package: the dashboard's files,
the vendored API reference renderer and its licence, and the ``py.typed`` marker
(an editable install would hide a file missing from the package data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from spectral.api.reference import SCALAR
from tests.procs import ROOT

#: Not part of a source tree to build from (a previous build/ would be reused).
LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "*.egg-info", "data", "__pycache__", ".*_cache"
)


def test_the_wheel_holds_every_served_file(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=LEFT_OUT)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path), str(source)],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("spectral_notify-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    served = {
        f"spectral/static/{name}" for name in ("dashboard.html", "dashboard.css", "dashboard.js")
    }
    served |= {
        f"spectral/static/vendor/{SCALAR}",
        "spectral/static/vendor/LICENSE-scalar-api-reference",
        "spectral/py.typed",
    }
    assert served <= names, served - names
    in_tree = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "spectral" / "static").rglob("*")
        if path.is_file()
    }
    assert in_tree <= names, in_tree - names
