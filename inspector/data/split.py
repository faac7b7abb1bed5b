"""A deterministic train/validation split that is written once and then stays fixed.

The split depends only on the set of sample keys and the seed (keys are sorted before the
seeded permutation), never on the order a reader happened to list the samples in. Keys are
stored relative to ``Dataset.root`` so a split file still applies after the data is moved.

Split file (JSON)::

    {"seed": 0, "val_fraction": 0.2, "train": ["group1/a.jpg", ...], "val": [...]}
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from inspector.data.structures import DataError, Dataset

_MAX_KEYS_IN_MESSAGE = 5


def split_dataset(
    dataset: Dataset,
    val_fraction: float = 0.2,
    seed: int = 0,
    split_file: Path | str | None = None,
) -> tuple[Dataset, Dataset]:
    """Split ``dataset`` into ``(train, val)``.

    When ``split_file`` exists it is used as-is (keys it lists that the dataset lacks are an
    error; samples it does not list go to train, with a warning). Otherwise the split is drawn
    from ``seed`` and, when ``split_file`` is given, written there.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if hasattr(dataset, "parts"):  # several sources: each split on its own (inspector.data.sources)
        return dataset.split(val_fraction, seed, split_file)
    if len(dataset) == 0:
        raise DataError(f"{dataset.root}: the dataset has no samples to split")
    relative_to_key = {relative_key(sample.key, dataset.root): sample.key for sample in dataset.samples}

    if split_file is not None and Path(split_file).is_file():
        train_keys, val_keys = _read_split(Path(split_file), relative_to_key, val_fraction, seed)
    else:
        train_keys, val_keys = _draw_split(sorted(relative_to_key), val_fraction, seed)
        if split_file is not None:
            write_split(Path(split_file), seed, val_fraction, train_keys, val_keys)

    train = dataset.subset({relative_to_key[k] for k in train_keys})
    val = dataset.subset({relative_to_key[k] for k in val_keys})
    return train, val


def load_split(dataset: Dataset, split_file: Path | str) -> tuple[Dataset, Dataset]:
    """``(train, val)`` exactly as an existing split file lists them (e.g. a training run's split.json)."""
    split_file = Path(split_file)
    if not split_file.is_file():
        raise DataError(f"{split_file}: split file not found")
    try:
        stored = json.loads(split_file.read_text())
        val_fraction, seed = float(stored["val_fraction"]), int(stored["seed"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{split_file}: not a split file (expected JSON with seed, val_fraction, train, val): "
                        f"{error}") from error
    return split_dataset(dataset, val_fraction, seed, split_file)


def relative_key(key: str, root: Path | str) -> str:
    """A sample key (POSIX path) relative to the dataset root; left as-is when outside the root."""
    relative = os.path.relpath(os.path.abspath(key), os.path.abspath(root))
    if relative == ".." or relative.startswith(".." + os.sep):
        return key
    return Path(relative).as_posix()


def write_split(path: Path, seed: int, val_fraction: float, train_keys: list[str], val_keys: list[str]) -> None:
    """Write the split file atomically, so an interrupted run never leaves half a split behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"seed": seed, "val_fraction": val_fraction, "train": sorted(train_keys),
                             "val": sorted(val_keys)})


def write_json_atomic(path: Path, content: dict) -> None:
    """Write JSON through a synced temporary file renamed over ``path`` (and sync the directory), so a
    reader or a crash never sees half a file: the old content or the new, nothing in between."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=1)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _draw_split(sorted_keys: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    count = len(sorted_keys)
    val_count = round(count * val_fraction)
    if val_fraction > 0 and count > 1:
        val_count = min(max(val_count, 1), count - 1)  # both sides non-empty when there is a choice
    order = np.random.default_rng(seed).permutation(count)
    val = [sorted_keys[i] for i in order[:val_count]]
    train = [sorted_keys[i] for i in order[val_count:]]
    return sorted(train), sorted(val)


def _read_split(
    path: Path, relative_to_key: dict[str, str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable split file ({error})") from error
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a JSON object with 'train' and 'val' key lists")
    for name in ("train", "val"):
        if not isinstance(content.get(name), list) or not all(isinstance(k, str) for k in content[name]):
            raise DataError(f"{path}: field '{name}': expected a list of sample keys (strings)")
    train, val = list(content["train"]), list(content["val"])

    both = sorted(set(train) & set(val))
    if both:
        raise DataError(f"{path}: {len(both)} keys are in both train and val, e.g. {_examples(both)}")
    missing = sorted((set(train) | set(val)) - relative_to_key.keys())
    if missing:
        raise DataError(
            f"{path}: {len(missing)} keys of this split file are not in the dataset, e.g. {_examples(missing)}; "
            "the data changed since the split was written (delete the split file to draw a new one)"
        )
    new = sorted(relative_to_key.keys() - set(train) - set(val))
    if new:
        warnings.warn(f"{path}: {len(new)} samples not in this split file go to train, e.g. {_examples(new)}")
        train += new
    if content.get("seed") != seed or content.get("val_fraction") != val_fraction:
        warnings.warn(
            f"{path}: using the stored split (seed {content.get('seed')}, val_fraction "
            f"{content.get('val_fraction')}), not seed {seed}, val_fraction {val_fraction}"
        )
    return train, val


def _examples(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_IN_MESSAGE])
    return shown + (", ..." if len(keys) > _MAX_KEYS_IN_MESSAGE else "")
