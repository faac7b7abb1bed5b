"""Checks shared by the DeepPCB, VOC and COCO readers.

A reader parses its own format into ``RawBox`` candidates and then hands them, with the image
they belong to, to ``finish_sample``. That is where every format gets the same checks:

- the image exists and is readable (decoded only when ``verify`` is set: decoding thousands of
  JPEGs is slow, reading a header is not),
- the size an annotation states matches the image file,
- each box has x2 > x1, y2 > y1 and lies inside the image,
- the same box is not listed twice,
- the template, when one is named, exists and has the image's size.

Nothing here raises on bad data: each problem becomes a ``Problem`` in a ``ProblemLog`` and the
reader carries on. A bad box is dropped (error); a sample whose image can't be used is skipped
(error); a duplicate is loaded once (warning); a missing template leaves the sample without one
(warning).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from inspector.data.structures import Problem, Sample

XYXY_NAMES = ("x1", "y1", "x2", "y2")


class FieldError(Exception):
    """One field of one annotation entry is wrong; the reader turns it into a Problem."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ProblemLog:
    """Collects problems, naming files relative to the dataset root so messages stay short."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []

    def name(self, path: Path | str) -> str:
        path = Path(path)
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def error(self, file: Path | str, message: str, line: int | None = None, field: str | None = None) -> None:
        self.problems.append(Problem(self.name(file), message, line, field, "error"))

    def warning(self, file: Path | str, message: str, line: int | None = None, field: str | None = None) -> None:
        self.problems.append(Problem(self.name(file), message, line, field, "warning"))

    def in_file_order(self) -> list[Problem]:
        """Problems sorted by file name, then line; otherwise in the order they were found.

        Readers find problems in passes (parse, then check against the image), so without this
        line 8's problem could be listed before line 3's, or one file's split in two places.
        """
        return sorted(self.problems, key=lambda p: (p.file, p.line or 0))  # stable: ties keep their order


@dataclass(frozen=True)
class Where:
    """Where an entry was read from: a file, a line when the format has lines, a field prefix
    (e.g. ``object[2].`` or ``annotations[7].``) when it has structure instead."""

    file: Path
    line: int | None = None
    prefix: str = ""

    def describe(self) -> str:
        """Short name of the entry inside its file, for 'same as ...' messages."""
        return f"line {self.line}" if self.line is not None else self.prefix.rstrip(".") or "the same entry"


@dataclass(frozen=True)
class RawBox:
    """A box as read from an annotation (class already resolved), not yet checked against the image."""

    xyxy: tuple[float, float, float, float]
    class_id: int
    where: Where
    names: tuple[str, str, str, str] = XYXY_NAMES  # how the format calls the four coordinates


def format_number(value: float) -> str:
    """12.0 -> '12', 12.5 -> '12.5': messages show coordinates the way the files write them."""
    return f"{value:g}"


def parse_number(text: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FieldError(field, f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise FieldError(field, f"{text!r} is not a finite number")
    return value


def check_box(xyxy: tuple[float, float, float, float], image_size: tuple[int, int] | None,
              names: tuple[str, str, str, str] = XYXY_NAMES) -> None:
    """Raise FieldError for an empty/inverted box or one reaching outside a (width, height) image."""
    x1, y1, x2, y2 = xyxy
    n_x1, n_y1, n_x2, n_y2 = names
    if x2 <= x1:
        raise FieldError(n_x2, f"{format_number(x2)} <= {n_x1} {format_number(x1)} (expected {n_x2} > {n_x1})")
    if y2 <= y1:
        raise FieldError(n_y2, f"{format_number(y2)} <= {n_y1} {format_number(y1)} (expected {n_y2} > {n_y1})")
    if image_size is None:
        return
    width, height = image_size
    for name, value, limit in zip(names, xyxy, (width, height, width, height)):
        if not 0 <= value <= limit:
            raise FieldError(name, f"{format_number(value)} is outside the {width}x{height} image "
                                   f"(expected 0..{limit})")


class ImageProblem(Exception):
    """Why an image file can't be used."""


def read_image_size(path: Path, verify: bool) -> tuple[int, int]:
    """(width, height) of an image file from its header; with ``verify`` also decode it fully.

    Decoding uses PIL because it raises on a truncated JPEG (an interrupted copy), which
    cv2.imread decodes silently with a grey bottom; then cv2.imread, which training uses.
    """
    if not path.is_file():
        raise ImageProblem("file not found")
    unreadable = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # what PIL raises on bad files
    try:
        with Image.open(path) as image:  # reads the header only
            size = image.size
    except unreadable:
        raise ImageProblem("not a readable image") from None
    if verify:
        try:
            with Image.open(path) as image:
                image.load()
        except unreadable as bad:
            raise ImageProblem(f"corrupt image data ({bad})") from None
        if cv2.imread(str(path), cv2.IMREAD_COLOR) is None:
            raise ImageProblem("OpenCV cannot decode it")
    return size


def finish_sample(
    log: ProblemLog,
    image_path: Path,
    raw_boxes: list[RawBox],
    where: Where,
    *,
    image_field: str,
    template_path: Path | None = None,
    template_field: str = "template",
    stated_size: tuple[int, int] | None = None,
    verify: bool = False,
    source: str = "",
) -> Sample | None:
    """Check one image and its boxes; return the Sample, or None when the image can't be used.

    ``where``/``image_field``/``template_field`` locate the entry that names the image and
    template, so their problems point at the line or field to fix.
    """
    try:
        image_size = read_image_size(image_path, verify)
    except ImageProblem as problem:
        log.error(where.file, f"{log.name(image_path)}: {problem}; sample skipped", where.line, image_field)
        return None
    if stated_size is not None and tuple(stated_size) != tuple(image_size):
        log.error(where.file, f"annotation says {stated_size[0]}x{stated_size[1]} but {log.name(image_path)} is "
                  f"{image_size[0]}x{image_size[1]}; sample skipped", where.line, where.prefix + "size")
        return None

    boxes, classes = [], []
    first_seen: dict[tuple, Where] = {}
    for raw in raw_boxes:
        try:
            check_box(raw.xyxy, image_size, raw.names)
        except FieldError as bad:
            log.error(raw.where.file, bad.message, raw.where.line, raw.where.prefix + (bad.field or ""))
            continue
        key = (raw.xyxy, raw.class_id)
        if key in first_seen:
            log.warning(raw.where.file, f"duplicate box (same as {first_seen[key].describe()}); loaded once",
                        raw.where.line, raw.where.prefix.rstrip(".") or None)
            continue
        first_seen[key] = raw.where
        boxes.append(raw.xyxy)
        classes.append(raw.class_id)

    if template_path is not None:
        template_path = _usable_template(log, template_path, image_size, where, template_field, verify)
    width, height = stated_size if stated_size is not None else (None, None)
    return Sample(image_path, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64),
                  template_path, source, width, height)


def _usable_template(log: ProblemLog, path: Path, image_size: tuple[int, int], where: Where,
                     field: str, verify: bool) -> Path | None:
    """The template path if it can be used with this image, else None (after logging why)."""
    try:
        template_size = read_image_size(path, verify)
    except ImageProblem as problem:
        if not path.exists():
            log.warning(where.file, f"{log.name(path)}: file not found; sample loaded without template",
                        where.line, field)
        else:
            log.error(where.file, f"{log.name(path)}: {problem}; sample loaded without template", where.line, field)
        return None
    if template_size != image_size:
        log.error(where.file, f"{log.name(path)} is {template_size[0]}x{template_size[1]} but the image is "
                  f"{image_size[0]}x{image_size[1]}; sample loaded without template", where.line, field)
        return None
    return path


def drop_duplicate_images(log: ProblemLog, samples: list[Sample]) -> list[Sample]:
    """Keep the first sample of each image: a split or cache keyed by image path needs them unique."""
    kept: dict[str, Sample] = {}
    for sample in samples:
        first = kept.get(sample.key)
        if first is None:
            kept[sample.key] = sample
        else:
            log.error(sample.source, f"{log.name(sample.image_path)} is already loaded from {first.source}; "
                      "this entry skipped", field="image")
    return list(kept.values())
