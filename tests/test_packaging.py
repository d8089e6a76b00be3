"""The package as pip builds it: the wheel holds every module and the studio's page, and the
build backend has nothing to warn about (setuptools turns its deprecations into errors on a
date it announces, and a user's `pip install` would then fail)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shipped_files() -> set[str]:
    """Every file of the library a user needs: its modules and the studio's static page."""
    package = ROOT / "jaxstyle"
    return {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@pytest.mark.slow  # builds in pip's isolated environment, which fetches setuptools
def test_the_wheel_holds_the_whole_library_and_builds_without_warnings(tmp_path):
    # From a copy of what the build reads: a checkout's build/ and *.egg-info (left by earlier
    # builds) would hand setuptools file lists that hide a file the configuration misses.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "jaxstyle", source / "jaxstyle",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, check=False,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    log = build.stdout + build.stderr
    assert "BuildBackendWarning" not in log and "SetuptoolsDeprecationWarning" not in log, [
        line for line in log.splitlines() if "Warning" in line
    ]
    (wheel,) = tmp_path.glob("jaxstyle-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(
            archive.read(name).decode() for name in names if name.endswith(".dist-info/METADATA")
        )
    assert shipped_files() <= names, sorted(shipped_files() - names)
    assert "jaxstyle/studio/static/index.html" in names
    assert "License-Expression: MIT" in metadata
