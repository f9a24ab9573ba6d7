"""Every Python block of README.md runs as pasted, on its own, in a fresh namespace."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_as_pasted(index, tmp_path, monkeypatch):
    pytest.importorskip("scipy")
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    code = BLOCKS[index]
    if "LocalCluster" in code:
        pytest.importorskip("dask.distributed")
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": f"readme_block_{index}"})
