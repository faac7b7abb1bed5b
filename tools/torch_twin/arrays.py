"""Weights as they travel back from the GPU machine: numpy arrays under the Paddle parameter names, in
``best.npz`` or, for a model over the 16 MiB a returned file may hold, float16 parts ``best.part*.npz``.
numpy only, so both sides read them: the twin's trainer (torch, no paddle) and ``import_run`` (paddle, no torch)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def load_arrays(weights: Path) -> dict[str, np.ndarray]:
    """best.npz or its parts, float16 widened back to float32; a name in two parts is refused."""
    arrays: dict[str, np.ndarray] = {}
    paths = sorted(Path(weights).glob("best*.npz"))
    if not paths:
        raise FileNotFoundError(f"{weights}: no best.npz or best.part*.npz")
    for path in paths:
        with np.load(path) as data:
            for key in data.files:
                if key in arrays:
                    raise ValueError(f"{path}: {key} also appears in another part")
                value = data[key]
                arrays[key] = value.astype(np.float32) if value.dtype == np.float16 else value
    return arrays
