"""Training on several labeled sources at once: e.g. the base DeepPCB set plus boards reviewed on the line.

``load_dataset`` given a list of sources returns a ``MultiSourceDataset``; ``split_dataset`` on it splits
each source on its own. So training, distillation, pruning, quantization and the pipeline take
``data=[...]`` wherever they take one directory::

    data = [{"path": "../shared/datasets/deeppcb", "weight": 1}, {"path": "reviewed/", "weight": 3}]
    dataset = load_dataset(data)                    # or a list of plain paths (weight 1 each)
    train, val = split_dataset(dataset, 0.2, 0, run_dir / "split.json")

* One class list: each source is read on its own; a VOC/COCO source whose classes are a subset of the
  first source's is re-read with the first's ids (a reviewed folder rarely holds every type); any other
  disagreement is refused, both lists named.
* A fixed validation split per source: source 0 uses the split file as given (``split.json``: ``eval
  --split val`` and every tool reading it see the base set's validation boards, unchanged); source *i*
  uses ``split-<i>.json`` beside it. Each is drawn once and read back afterwards.
* Per-source weights: a source of weight *w* contributes *w* times its training boards per epoch (whole
  copies, plus a seeded, fixed subset for the fraction), so a few hundred reviewed boards are not
  drowned by a thousand base ones. Validation boards are never repeated.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspector.data.structures import DataError, Dataset


@dataclass
class MultiSourceDataset(Dataset):
    """Every source's samples (unweighted), plus the sources and their weights for ``split``."""

    parts: list[Dataset] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def split(self, val_fraction: float, seed: int, split_file: Path | str | None) -> tuple[Dataset, Dataset]:
        from inspector.data.split import split_dataset

        trains, vals = [], []
        for index, (part, weight) in enumerate(zip(self.parts, self.weights)):
            train, val = split_dataset(part, val_fraction, seed, split_file_for(split_file, index))
            trains.append(weighted(train, weight, seed + index))
            vals.append(val)
        train = Dataset([s for part in trains for s in part.samples], list(self.class_names), self.root, self.format)
        val = Dataset([s for part in vals for s in part.samples], list(self.class_names), self.root, self.format)
        return train, val


def parse_sources(spec: Sequence) -> tuple[list[str], list[float]]:
    """``(paths, weights)`` from a list of paths or ``{"path", "weight"}`` entries."""
    paths, weights = [], []
    for position, entry in enumerate(spec):
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"path", "weight"})
            if unknown or "path" not in entry:
                raise DataError(f"data[{position}]: expected {{'path': DIR, 'weight': W}}, got {entry!r}")
            path, weight = entry["path"], entry.get("weight", 1.0)
        else:
            path, weight = entry, 1.0
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            weight = float("nan")
        if not (weight > 0 and math.isfinite(weight)):
            raise DataError(f"data[{position}] ({path}): weight: expected a positive number, got {entry!r}")
        paths.append(str(path))
        weights.append(weight)
    if not paths:
        raise DataError("data: no source given")
    return paths, weights


def load_sources(spec: Sequence, format: str | None = None, verify_images: bool = False) -> Dataset:
    """Read every source with one class list; a single source is returned as a plain ``Dataset``."""
    from inspector.data.readers import load_dataset

    paths, weights = parse_sources(spec)
    first = load_dataset(paths[0], format=format, verify_images=verify_images)
    if len(paths) == 1 and weights[0] == 1.0:
        return first
    base = list(first.class_names)
    parts = [first]
    for path in paths[1:]:
        dataset = load_dataset(path, verify_images=verify_images)
        if list(dataset.class_names) != base:
            foreign = [name for name in dataset.class_names if name not in base]
            if foreign or dataset.format == "deeppcb":
                raise DataError(f"{path}: its classes {list(dataset.class_names)} disagree with those of {paths[0]} "
                                f"{base} (not in the first: {foreign or 'none, the order differs'}); every source "
                                "must use one class list")
            dataset = load_dataset(path, class_names=base, verify_images=verify_images)
        parts.append(dataset)
    return MultiSourceDataset([s for part in parts for s in part.samples], base, first.root, first.format,
                              [p for part in parts for p in part.problems], parts=parts, weights=weights, paths=paths)


def split_file_for(split_file: Path | str | None, index: int) -> Path | None:
    """Source ``index``'s split file: the given one for source 0, ``<stem>-<index>.json`` beside it after."""
    if split_file is None:
        return None
    split_file = Path(split_file)
    return split_file if index == 0 else split_file.with_name(f"{split_file.stem}-{index}{split_file.suffix}")


def weighted(dataset: Dataset, weight: float, seed: int) -> Dataset:
    """``dataset`` with its samples repeated ``weight`` times (the fraction by a seeded, fixed subset)."""
    whole, fraction = int(math.floor(weight)), weight - math.floor(weight)
    samples = list(dataset.samples) * whole
    extra = int(round(fraction * len(dataset.samples)))
    if extra:
        order = np.random.default_rng(seed).permutation(len(dataset.samples))[:extra]
        samples += [dataset.samples[i] for i in sorted(order)]
    return Dataset(samples, list(dataset.class_names), dataset.root, dataset.format)
