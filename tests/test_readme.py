"""The README's Python examples run as written (they need the real VGG16, as README command 1
leaves it)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.real
@pytest.mark.slow
def test_every_python_block_of_the_readme_runs(real_vgg16, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)  # the examples' relative paths; what they write stays here
    for block in blocks:  # each block is self-contained: a fresh namespace for each
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "out.png").is_file()
