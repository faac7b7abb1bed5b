"""Reader for the DeepPCB layout.

::

    trainval.txt, test.txt           one pair a line: "<group>/<id>/<stem>.jpg <group>/<id>_not/<stem>.txt"
    <group>/<id>/<stem>_test.jpg      tested image (the list names the stem, not this file)
    <group>/<id>/<stem>_temp.jpg      aligned defect-free template of the same area
    <group>/<id>_not/<stem>.txt       annotations: "x1 y1 x2 y2 type" a line, type 1..6

Every list file present is read. Without list files, the pairs are found by looking for
``**/*_test.jpg`` and the matching ``<id>_not/<stem>.txt``. Annotation fields may be separated by
spaces, commas or both (the dataset's README says commas, its files use spaces).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from inspector.data.structures import DEEPPCB_CLASSES, DataError, Dataset, Sample
from inspector.data.validation import (
    FieldError,
    ProblemLog,
    RawBox,
    Where,
    drop_duplicate_images,
    finish_sample,
    parse_number,
)

LIST_FILES = ("trainval.txt", "test.txt")
_FIELD_SEPARATOR = re.compile(r"[,\s]+")


@dataclass(frozen=True)
class PairEntry:
    """One tested image with its template and annotation file, and where it was listed."""

    image_path: Path  # <stem>_test.jpg
    template_path: Path  # <stem>_temp.jpg, which may not exist
    annotation_path: Path
    where: Where  # the list line, or the image itself when discovered without a list


def read_deeppcb(path: Path, verify_images: bool = False) -> Dataset:
    """Read a DeepPCB directory (all its list files), or a single list file such as ``test.txt``."""
    path = Path(path).absolute()
    if path.is_file():
        root, list_files = path.parent, [path]
    else:
        root, list_files = path, [path / name for name in LIST_FILES if (path / name).is_file()]
    log = ProblemLog(root)
    entries = _entries_from_lists(root, list_files, log) if list_files else _entries_by_discovery(root, log)

    samples: list[Sample] = []
    for entry in entries:
        sample = _load_pair(entry, log, verify_images)
        if sample is not None:
            samples.append(sample)
    samples = drop_duplicate_images(log, samples)
    return Dataset(samples, list(DEEPPCB_CLASSES), root, "deeppcb", log.in_file_order())


def looks_like_deeppcb(directory: Path) -> bool:
    """A list file, or a <stem>_test.jpg whose folder has an <id>_not/ sibling."""
    if any((directory / name).is_file() for name in LIST_FILES):
        return True
    return any((image.parent.parent / f"{image.parent.name}_not").is_dir() for image in directory.rglob("*_test.jpg"))


def _entries_from_lists(root: Path, list_files: list[Path], log: ProblemLog) -> list[PairEntry]:
    entries: list[PairEntry] = []
    first_listed: dict[tuple[Path, Path], Where] = {}
    for list_file in list_files:
        lines = list_file.read_text(encoding="utf-8", errors="replace").splitlines()
        if not any(line.strip() for line in lines):
            log.warning(list_file, "list file has no entries")
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            where = Where(list_file, number)
            if len(fields) != 2:
                log.error(list_file, f"expected 2 fields '<group>/<id>/<stem>.jpg <group>/<id>_not/<stem>.txt', "
                          f"found {len(fields)}", number)
                continue
            image_name, annotation_name = fields
            if not image_name.endswith(".jpg"):
                log.error(list_file, f"{image_name!r} does not end in .jpg (expected <group>/<id>/<stem>.jpg)",
                          number, "image")
                continue
            stem = image_name[: -len(".jpg")]
            entry = PairEntry(root / f"{stem}_test.jpg", root / f"{stem}_temp.jpg", root / annotation_name, where)
            key = (entry.image_path, entry.annotation_path)
            if key in first_listed:
                first = first_listed[key]
                log.warning(list_file, f"duplicate entry (first at {log.name(first.file)}:{first.line}); loaded once",
                            number)
                continue
            first_listed[key] = where
            entries.append(entry)
    return entries


def _entries_by_discovery(root: Path, log: ProblemLog) -> list[PairEntry]:
    images = sorted(root.rglob("*_test.jpg"))
    if not images:
        raise DataError(f"{root}: no DeepPCB data: expected a list file ({', '.join(LIST_FILES)}) "
                        "or <group>/<id>/<stem>_test.jpg images")
    entries = []
    for image_path in images:
        stem = image_path.name[: -len("_test.jpg")]
        annotation_path = image_path.parent.parent / f"{image_path.parent.name}_not" / f"{stem}.txt"
        if not annotation_path.is_file():
            log.error(image_path, f"no annotation file {log.name(annotation_path)}; sample skipped")
            continue
        entries.append(PairEntry(image_path, image_path.with_name(f"{stem}_temp.jpg"), annotation_path,
                                 Where(image_path)))
    return entries


def _load_pair(entry: PairEntry, log: ProblemLog, verify_images: bool) -> Sample | None:
    if not entry.annotation_path.is_file():
        log.error(entry.where.file, f"{log.name(entry.annotation_path)}: file not found; sample skipped",
                  entry.where.line, "annotation")
        return None
    raw_boxes = read_annotation_file(entry.annotation_path, log)
    return finish_sample(log, entry.image_path, raw_boxes, entry.where, image_field="image",
                         template_path=entry.template_path, verify=verify_images,
                         source=log.name(entry.annotation_path))


def read_annotation_file(path: Path, log: ProblemLog) -> list[RawBox]:
    """The boxes of one annotation file; lines that can't be parsed are logged and skipped."""
    boxes = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        text = line.strip().strip(",")
        if not text:
            continue
        try:
            xyxy, class_id = parse_annotation_line(text)
        except FieldError as bad:
            log.error(path, bad.message, number, bad.field)
            continue
        boxes.append(RawBox(xyxy, class_id, Where(path, number)))
    return boxes


def parse_annotation_line(text: str) -> tuple[tuple[float, float, float, float], int]:
    """'x1 y1 x2 y2 type' (spaces and/or commas) -> (xyxy, 0-based class id)."""
    fields = _FIELD_SEPARATOR.split(text)
    if len(fields) != 5:
        raise FieldError(None, f"expected 5 fields 'x1 y1 x2 y2 type', found {len(fields)}")
    x1, y1, x2, y2 = (parse_number(value, name) for value, name in zip(fields, ("x1", "y1", "x2", "y2")))
    defect_type = parse_number(fields[4], "type")
    if not defect_type.is_integer():
        raise FieldError("type", f"{fields[4]!r} is not an integer class id (expected 1..{len(DEEPPCB_CLASSES)})")
    if not 1 <= defect_type <= len(DEEPPCB_CLASSES):
        raise FieldError("type", f"unknown class id {int(defect_type)} (expected 1..{len(DEEPPCB_CLASSES)})")
    return (x1, y1, x2, y2), int(defect_type) - 1
