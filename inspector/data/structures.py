"""Small typed structures shared by every layer: a labeled sample, a dataset, a data problem.

Boxes are always pixel ``xyxy`` in the coordinates of the image file on disk; class ids are
0-based indices into ``Dataset.class_names``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

# DeepPCB's types 1..6, in order; the dataset's 0 ("background") is unused.
DEEPPCB_CLASSES: tuple[str, ...] = ("open", "short", "mousebite", "spur", "copper", "pin-hole")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file (and line/field when known)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input data, located as precisely as the format allows."""

    file: str
    message: str
    line: int | None = None
    field: str | None = None
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = f"{self.field}: " if self.field else ""
        return f"{self.severity}: {where}: {what}{self.message}"


def read_image(path: Path | str) -> np.ndarray:
    """Read an image as BGR uint8 (H, W, 3); raise DataError naming the file if it can't be read."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


@dataclass
class Sample:
    """One labeled image, optionally with its aligned defect-free template (golden board)."""

    image_path: Path
    boxes: np.ndarray  # (N, 4) float32, pixel xyxy
    classes: np.ndarray  # (N,) int64, index into the dataset's class_names
    template_path: Path | None = None
    source: str = ""  # the annotation file (or list line) this sample came from, for messages
    width: int | None = None  # from the annotation when the format states it
    height: int | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.classes):
            raise ValueError(f"{self.source or self.image_path}: {len(self.boxes)} boxes but {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def key(self) -> str:
        """Stable identity of the sample (used by splits and caches)."""
        return self.image_path.as_posix()

    def load_image(self) -> np.ndarray:
        return read_image(self.image_path)

    def load_template(self) -> np.ndarray | None:
        return None if self.template_path is None else read_image(self.template_path)


@dataclass
class Dataset:
    """Samples plus the class names their ids index, and the problems met while reading them."""

    samples: list[Sample]
    class_names: list[str]
    root: Path
    format: str
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    @property
    def num_boxes(self) -> int:
        return sum(len(s) for s in self.samples)

    @property
    def has_templates(self) -> bool:
        return bool(self.samples) and all(s.template_path is not None for s in self.samples)

    def subset(self, keys: list[str] | set[str]) -> "Dataset":
        """The samples whose ``key`` is in ``keys``, in this dataset's order."""
        keys = set(keys)
        return Dataset([s for s in self.samples if s.key in keys], list(self.class_names), self.root, self.format)

    def class_counts(self) -> dict[str, int]:
        counts = {name: 0 for name in self.class_names}
        for sample in self.samples:
            for c in sample.classes:
                counts[self.class_names[int(c)]] += 1
        return counts
