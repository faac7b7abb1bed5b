"""The two-interpreter harness of the torch twin's parity tests (``tests/tools/test_torch_twin_*.py``).

Why two interpreters: paddle and torch are never installed together (the GPU machine has torch only, the
project venv paddle only). A parity test computes the Paddle side here, writes inputs to files (.npz, .json)
in a temporary folder, runs the twin's side in the interpreter named by ``TORCH_TWIN_PYTHON`` (a venv with
torch, no paddle) through a subprocess, and compares what that writes back. CI has no torch: the tests skip,
with the reason, when the variable is unset or its interpreter cannot import torch.

The case-folder protocol of the loss tests: ``write_case`` puts one case as ``NAME.npz`` (inputs) and
``NAME.json`` (its meta, with the ``ModelConfig`` as ``meta["cfg"]``); the torch-side script starts with
``TORCH_CASE_LOOP``, whose ``cases()`` yields each case's meta, arrays, config and a ``save`` that writes
``NAME.torch.npz``; ``run_torch_cases`` runs the script and returns those results by name.

Imported by name (``from twin_harness import ...``): pytest's default "prepend" import mode puts this folder
(no ``__init__.py``) on ``sys.path`` when it collects the tests beside it.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TORCH_SIDE_TIMEOUT_S = 300


def torch_python() -> str:
    """The interpreter of ``TORCH_TWIN_PYTHON``, or skip the test saying why there is none usable."""
    python = os.environ.get("TORCH_TWIN_PYTHON")
    if not python:
        pytest.skip("TORCH_TWIN_PYTHON is not set (the interpreter of a venv with torch; the twin is a dev tool)")
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"TORCH_TWIN_PYTHON={python} cannot import torch: {probe.stderr.strip()[-300:]}")
    return python


def run_torch_side(python: str, arguments: list[str]) -> None:
    """Run ``python arguments...`` from the repository root with the repository importable (``tools.torch_twin``,
    the paddle-free ``inspector`` modules) and one OpenMP thread; fail with the tail of its stderr if it fails."""
    completed = subprocess.run([python, *arguments], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                               timeout=TORCH_SIDE_TIMEOUT_S)
    assert completed.returncode == 0, f"torch side failed:\n{completed.stderr[-4000:]}"


# The start of a torch-side script that works through a case folder (run as ``python -c SCRIPT FOLDER``).
TORCH_CASE_LOOP = r'''
import json, sys
from pathlib import Path
import numpy as np
import torch
from inspector.models.config import ModelConfig


def cases():
    """(meta, arrays, ModelConfig, save) for every case in the folder, by name; save(result) writes NAME.torch.npz."""
    folder = Path(sys.argv[1])
    for meta_file in sorted(folder.glob("*.json")):
        meta = json.loads(meta_file.read_text())
        data = np.load(folder / (meta_file.stem + ".npz"))
        result_file = folder / (meta_file.stem + ".torch.npz")
        yield meta, data, ModelConfig.from_dict(meta["cfg"]), lambda result, path=result_file: np.savez(path, **result)
'''


def write_case(folder: Path, name: str, meta: dict, **arrays: np.ndarray) -> None:
    """One case for the torch side: its input arrays as ``NAME.npz`` and its meta as ``NAME.json``."""
    np.savez(folder / f"{name}.npz", **arrays)
    (folder / f"{name}.json").write_text(json.dumps(meta))


def run_torch_cases(python: str, folder: Path, script: str) -> dict[str, dict[str, np.ndarray]]:
    """Run a ``TORCH_CASE_LOOP`` script over ``folder``; every case's ``NAME.torch.npz``, by name."""
    run_torch_side(python, ["-c", script, str(folder)])
    results = {}
    for meta_file in sorted(folder.glob("*.json")):
        with np.load(folder / f"{meta_file.stem}.torch.npz") as data:
            results[meta_file.stem] = dict(data)
    return results
