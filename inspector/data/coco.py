"""Reader for COCO detection JSON.

``path`` is the JSON file, or a directory holding exactly one (directly or in ``annotations/``).
An image's ``file_name`` is looked up relative to the JSON's folder, then in ``images/`` beside
the JSON, then in ``images/`` one level up (the usual ``annotations/`` + ``images/`` layout).
``bbox`` is ``[x, y, w, h]`` and becomes pixel xyxy. Categories sorted by id become the 0-based
class ids, unless ``class_names`` is given: then categories are matched to it by name.

Our extension: an image entry may carry ``template_file_name``, the aligned golden template,
looked up the same way as ``file_name``.

Problems are located by JSON path, 0-based as in the file's arrays: ``annotations[7].bbox.w``.
Broken structure (not JSON, no ``images`` list, ...) raises DataError; a bad entry is skipped.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from inspector.data.structures import DataError, Dataset, Sample
from inspector.data.validation import (
    FieldError,
    ProblemLog,
    RawBox,
    Where,
    drop_duplicate_images,
    finish_sample,
)

_BBOX_NAMES = ("bbox.x", "bbox.y", "bbox.x+w", "bbox.y+h")


def coco_json_files(directory: Path) -> list[Path]:
    """JSON files in ``directory`` or ``directory/annotations`` that hold a COCO ``images`` list."""
    found = []
    for candidate in sorted(directory.glob("*.json")) + sorted(directory.glob("annotations/*.json")):
        try:
            content = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and isinstance(content.get("images"), list):
            found.append(candidate)
    return found


def read_coco(path: Path, class_names: list[str] | None = None, verify_images: bool = False) -> Dataset:
    path = Path(path).absolute()
    json_path = _the_json_file(path)
    root = path if path.is_dir() else (json_path.parent.parent if json_path.parent.name == "annotations"
                                       else json_path.parent)
    log = ProblemLog(root)
    content = _load_json(json_path)

    category_to_class, class_names = _class_ids(content["categories"], content["annotations"], class_names,
                                                json_path, log)
    images = _image_entries(content["images"], json_path, log)
    boxes_by_image = _annotation_boxes(content["annotations"], images, category_to_class, json_path, log)

    folders = _image_folders(json_path, root)
    samples: list[Sample] = []
    for image_id, (index, entry) in images.items():
        prefix = f"images[{index}]."
        image_path = _find_file(entry["file_name"], folders)
        if image_path is None:
            log.error(json_path, f"{entry['file_name']!r} not found (looked in {_describe(folders, log)}); "
                      "sample skipped", field=prefix + "file_name")
            continue
        template_path = None
        if "template_file_name" in entry:
            template_name = entry["template_file_name"]
            template_path = _find_file(template_name, folders) or folders[0] / template_name
        stated_size = (entry["width"], entry["height"]) if "width" in entry and "height" in entry else None
        sample = finish_sample(log, image_path, boxes_by_image.get(image_id, []), Where(json_path, prefix=prefix),
                               image_field=prefix + "file_name", template_path=template_path,
                               template_field=prefix + "template_file_name", stated_size=stated_size,
                               verify=verify_images, source=f"{log.name(json_path)} images[{index}]")
        if sample is not None:
            samples.append(sample)
    samples = drop_duplicate_images(log, samples)
    return Dataset(samples, class_names, root, "coco", log.in_file_order())


def _the_json_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = coco_json_files(path)
    if not found:
        raise DataError(f"{path}: no COCO file: expected a JSON file with an 'images' list in it or in annotations/")
    if len(found) > 1:
        raise DataError(f"{path}: several COCO files ({', '.join(p.name for p in found)}); pass one of them")
    return found[0]


def _load_json(json_path: Path) -> dict[str, Any]:
    try:
        content = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as bad:
        raise DataError(f"{json_path}:{bad.lineno}: not valid JSON: {bad.msg}") from None
    if not isinstance(content, dict):
        raise DataError(f"{json_path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(content.get(key), list):
            raise DataError(f"{json_path}: {key}: missing or not a list (expected a COCO detection file)")
    return content


def _json_int(entry: dict, key: str, prefix: str) -> int:
    value = entry.get(key)
    if value is None:
        raise FieldError(prefix + key, "missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(prefix + key, f"{value!r} is not an integer")
    return value


def _json_number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(field, f"{value!r} is not a number")
    if not math.isfinite(value):
        raise FieldError(field, f"{value!r} is not a finite number")
    return float(value)


def _class_ids(categories: list, annotations: list, class_names: list[str] | None, json_path: Path,
               log: ProblemLog) -> tuple[dict[int, int | None], list[str]]:
    """Map category id -> 0-based class id (None: a category excluded by ``class_names``)."""
    names_by_id: dict[int, tuple[int, str]] = {}  # category id -> (index in the file, name)
    for index, category in enumerate(categories):
        prefix = f"categories[{index}]."
        try:
            if not isinstance(category, dict):
                raise FieldError(prefix.rstrip("."), "expected an object with 'id' and 'name'")
            category_id = _json_int(category, "id", prefix)
            name = category.get("name")
            if not isinstance(name, str) or not name:
                raise FieldError(prefix + "name", f"{name!r} is not a class name")
            if category_id in names_by_id:
                first = names_by_id[category_id][0]
                raise FieldError(prefix + "id", f"duplicate category id {category_id} (first at categories[{first}]); "
                                 "entry skipped")
        except FieldError as bad:
            log.error(json_path, bad.message, field=bad.field)
            continue
        names_by_id[category_id] = (index, name)

    if class_names is None:
        class_names = []
        for category_id in sorted(names_by_id):
            index, name = names_by_id[category_id]
            if name in class_names:
                log.warning(json_path, f"category name {name!r} is used by more than one id; they are merged "
                            "into one class", field=f"categories[{index}].name")
            else:
                class_names.append(name)
    class_ids = {name: position for position, name in enumerate(class_names)}
    mapping: dict[int, int | None] = {}
    for category_id, (index, name) in sorted(names_by_id.items()):
        mapping[category_id] = class_ids.get(name)
        if mapping[category_id] is None:
            count = sum(1 for a in annotations if isinstance(a, dict) and a.get("category_id") == category_id)
            log.error(json_path, f"{name!r} is not one of the class names ({', '.join(class_names)}); "
                      f"its {count} annotations are skipped", field=f"categories[{index}].name")
    return mapping, list(class_names)


def _image_entries(images: list, json_path: Path, log: ProblemLog) -> dict[int, tuple[int, dict]]:
    """image id -> (index in the file, entry) for the well-formed image entries."""
    entries: dict[int, tuple[int, dict]] = {}
    for index, entry in enumerate(images):
        prefix = f"images[{index}]."
        try:
            if not isinstance(entry, dict):
                raise FieldError(prefix.rstrip("."), "expected an object with 'id' and 'file_name'")
            image_id = _json_int(entry, "id", prefix)
            if image_id in entries:
                first = entries[image_id][0]
                raise FieldError(prefix + "id",
                                 f"duplicate image id {image_id} (first at images[{first}]); entry skipped")
            for key in ("file_name", "template_file_name"):
                if key in entry and (not isinstance(entry[key], str) or not entry[key]):
                    raise FieldError(prefix + key, f"{entry[key]!r} is not a file name")
            if "file_name" not in entry:
                raise FieldError(prefix + "file_name", "missing")
            for key in ("width", "height"):
                if key in entry and (_json_int(entry, key, prefix) <= 0):
                    raise FieldError(prefix + key, f"{entry[key]} is not positive")
        except FieldError as bad:
            log.error(json_path, bad.message, field=bad.field)
            continue
        entries[image_id] = (index, entry)
    return entries


def _annotation_boxes(annotations: list, images: dict[int, tuple[int, dict]], category_to_class: dict[int, int | None],
                      json_path: Path, log: ProblemLog) -> dict[int, list[RawBox]]:
    """image id -> its boxes; malformed annotations are logged and skipped."""
    boxes: dict[int, list[RawBox]] = {}
    first_index_of_id: dict[int, int] = {}
    known_categories = ", ".join(str(c) for c in sorted(category_to_class))
    for index, annotation in enumerate(annotations):
        prefix = f"annotations[{index}]."
        try:
            if not isinstance(annotation, dict):
                raise FieldError(prefix.rstrip("."), "expected an object with 'image_id', 'category_id' and 'bbox'")
            if "id" in annotation:
                annotation_id = _json_int(annotation, "id", prefix)
                if annotation_id in first_index_of_id:
                    raise FieldError(prefix + "id", f"duplicate annotation id {annotation_id} "
                                     f"(first at annotations[{first_index_of_id[annotation_id]}]); entry skipped")
                first_index_of_id[annotation_id] = index
            image_id = _json_int(annotation, "image_id", prefix)
            if image_id not in images:
                raise FieldError(prefix + "image_id", f"unknown image id {image_id}")
            category_id = _json_int(annotation, "category_id", prefix)
            if category_id not in category_to_class:
                raise FieldError(prefix + "category_id",
                                 f"unknown category id {category_id} (expected one of {known_categories})")
            xyxy = _xyxy_from_bbox(annotation.get("bbox"), prefix)
        except FieldError as bad:
            log.error(json_path, bad.message, field=bad.field)
            continue
        class_id = category_to_class[category_id]
        if class_id is not None:  # None: its category is excluded, reported once with the category
            boxes.setdefault(image_id, []).append(RawBox(xyxy, class_id, Where(json_path, prefix=prefix), _BBOX_NAMES))
    return boxes


def _xyxy_from_bbox(bbox: Any, prefix: str) -> tuple[float, float, float, float]:
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise FieldError(prefix + "bbox", f"expected [x, y, w, h], found {bbox!r}")
    x, y, w, h = (_json_number(value, f"{prefix}bbox.{name}") for value, name in zip(bbox, "xywh"))
    for name, value in (("w", w), ("h", h)):
        if value <= 0:
            raise FieldError(f"{prefix}bbox.{name}", f"{value:g} is not positive (expected {name} > 0)")
    return x, y, x + w, y + h


def _image_folders(json_path: Path, root: Path) -> list[Path]:
    folders = [json_path.parent, json_path.parent / "images", json_path.parent.parent / "images", root / "images"]
    return list(dict.fromkeys(folders))  # drop repeats, keep order


def _find_file(name: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return None


def _describe(folders: list[Path], log: ProblemLog) -> str:
    return ", ".join((log.name(folder) if folder != log.root else ".") + "/" for folder in folders)
