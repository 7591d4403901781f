"""The notebooks as a course hands them out: `notebooks/` copied to a folder of its own, far from the project, runs
top to bottom with every bundled asset (the TensorRT example plans, the samples) found through the package."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# 05 and 07 read the TensorRT plans (they once found them by a path relative to the notebook); 01 is the first one
# a class opens.
COPIED = ("01_quickstart.ipynb", "05_tensorrt_plans.ipynb", "07_mixed_precision.ipynb")


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", []))
    return output.get("data", {}).get("text/plain", "")


@pytest.mark.slow
@pytest.mark.parametrize("name", COPIED)
def test_notebook_runs_from_a_copied_folder(name, tmp_path):
    folder = tmp_path / "course" / "notebooks"
    shutil.copytree(NOTEBOOKS, folder)
    assert not any((p / "workbench").is_dir() for p in folder.parents), "the copy must not sit inside the project"
    nb = nbformat.read(folder / name, as_version=4)
    env_cache = {"WORKBENCH_CACHE": str(tmp_path / "cache")}
    previous = {k: os.environ.get(k) for k in env_cache}
    os.environ.update(env_cache)
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        for key, value in previous.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    printed = "\n".join(_text(o) for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    for word in ("skipped", "skipping", "not found", "Traceback"):
        assert word not in printed, f"{name} printed {word!r}:\n{printed[-2000:]}"
    if name != "01_quickstart.ipynb":  # 05 and 07 end with cells printing this after their asserts
        assert "checks passed" in printed
