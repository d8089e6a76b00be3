"""Every command of the README's ``sh`` blocks runs as written (from a directory holding the
repository's examples), with the real VGG16 that README command 1 downloads. The set-up steps
(venv, pip) are what CI itself runs; ``python -m pytest`` is this suite."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ("python3 -m venv", "pip install", "python -m pytest", "mkdocs")


def readme_commands() -> list[str]:
    """The README's shell commands, one per ``&&``-separated step, set-up steps left out."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            for step in filter(None, (s.strip() for s in line.split("&&"))):
                if not step.startswith(SETUP) and not step.startswith(". .venv"):
                    commands.append(step)
    return commands


def test_the_readme_has_the_five_commands():
    words = {shlex.split(c)[1] for c in readme_commands() if c.startswith("jaxstyle ")}
    assert {"stylize", "batch", "sweep", "video", "studio"} <= words


def _run_studio(argv, cwd, env):
    child = subprocess.Popen(argv, cwd=cwd, env={**env, "BROWSER": "true"}, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = None
    deadline = time.monotonic() + 300
    for line in child.stdout:
        found = re.search(r"(http://127\.0\.0\.1:\d+/\S*)", line)
        if found:
            url = found.group(1)
            break
        assert time.monotonic() < deadline, "the studio never said where it listens"
    assert url, "the studio exited without serving"
    page = urllib.request.urlopen(url, timeout=60).read().decode()
    child.send_signal(signal.SIGINT)
    child.wait(timeout=60)
    return page


@pytest.mark.real
@pytest.mark.slow
def test_every_readme_command_runs_as_written(real_vgg16, tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
                                f"{os.environ.get('PATH', '')}")
    for command in readme_commands():
        argv = shlex.split(command)
        if argv[:2] == ["jaxstyle", "studio"]:
            page = _run_studio(argv + ["--port", "0"], tmp_path, env)
            assert "<title>" in page and "jaxstyle" in page
            continue
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    for written in ("chelsea_marbled.png", "sheet.png", "clip_marbled.mp4", "batch_out"):
        assert (tmp_path / written).exists(), written
