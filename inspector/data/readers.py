"""``load_dataset``: read labeled data in DeepPCB, Pascal VOC or COCO form into a ``Dataset``.

The format is recognised from what the path holds (``detect_format``), or given explicitly.
Each format has its own module (``deeppcb``, ``voc``, ``coco``); the checks they share live in
``validation``. Recoverable problems end up in ``Dataset.problems``; only input that can't be
read at all (no data found, broken JSON structure) raises ``DataError``.
"""
from __future__ import annotations

from pathlib import Path

from inspector.data.coco import coco_json_files, read_coco
from inspector.data.deeppcb import LIST_FILES, looks_like_deeppcb, read_deeppcb
from inspector.data.structures import DEEPPCB_CLASSES, DataError, Dataset
from inspector.data.voc import read_voc, voc_annotation_files

FORMATS = ("deeppcb", "voc", "coco")

_WHAT_WE_LOOK_FOR = (
    f"DeepPCB list files ({', '.join(LIST_FILES)}) "
    "or <group>/<id>/<stem>_test.jpg images with <group>/<id>_not/ annotations, "
    "Pascal VOC XML files (Annotations/*.xml or *.xml), "
    "a COCO JSON file (*.json or annotations/*.json with an 'images' list)"
)


def detect_format(path: Path | str) -> str:
    """'deeppcb', 'voc' or 'coco' for a dataset directory or annotation file; DataError if unclear."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_file():
        by_suffix = {".txt": "deeppcb", ".xml": "voc", ".json": "coco"}
        if path.suffix.lower() not in by_suffix:
            raise DataError(f"{path}: unknown annotation file type (expected a DeepPCB list .txt, "
                            "a Pascal VOC .xml or a COCO .json)")
        return by_suffix[path.suffix.lower()]

    found = []
    if looks_like_deeppcb(path):
        found.append("deeppcb")
    if voc_annotation_files(path):
        found.append("voc")
    if coco_json_files(path):
        found.append("coco")
    if not found:
        raise DataError(f"{path}: no labeled data found; looked for {_WHAT_WE_LOOK_FOR}")
    if len(found) > 1:
        raise DataError(f"{path}: holds data in several formats ({', '.join(found)}); say which one to read "
                        f"(format=..., or --format on the command line)")
    return found[0]


def load_dataset(path: Path | str, format: str | None = None, class_names: list[str] | None = None,
                 verify_images: bool = False) -> Dataset:
    """Read the labeled data at ``path`` (or, given a list, several sources: ``inspector.data.sources``).

    ``format`` overrides detection. ``class_names`` fixes the class ids of VOC and COCO data
    (DeepPCB's classes are fixed). ``verify_images`` decodes every image and template instead of
    only reading their headers: slower, but it finds corrupt files before training does.
    """
    if isinstance(path, (list, tuple)):  # several sources (inspector.data.sources): one class list, a split each
        from inspector.data.sources import load_sources

        return load_sources(path, format, verify_images)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    format = format or detect_format(path)
    if format == "deeppcb":
        if class_names is not None and list(class_names) != list(DEEPPCB_CLASSES):
            raise DataError(f"{path}: DeepPCB classes are fixed ({', '.join(DEEPPCB_CLASSES)}); "
                            f"got class_names {list(class_names)}")
        return read_deeppcb(path, verify_images)
    if format == "voc":
        return read_voc(path, class_names, verify_images)
    if format == "coco":
        return read_coco(path, class_names, verify_images)
    raise DataError(f"{path}: unknown format {format!r} (expected one of {', '.join(FORMATS)})")
