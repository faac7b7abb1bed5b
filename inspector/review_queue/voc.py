"""The reviewed boards as Pascal VOC (image, template, boxes): the training source ``inspector train --data``
reads beside the base set. Written file by file, each whole or not at all (temporary file, then renamed)."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inspector.review_queue.ranking import ReviewError

if TYPE_CHECKING:
    from inspector.review_queue.store import ReviewQueue


def export_voc(queue: "ReviewQueue", out: Path | str) -> list[Path]:
    """Every reviewed board of ``queue`` under ``out`` (Annotations/, JPEGImages/, templates/); returns the XML
    files. Re-exporting replaces a board's files with its latest decision; a board whose pictures retention
    removed is left as an earlier export wrote it (the export holds its own copies)."""
    out = Path(out)
    ids = queue.reviewed_ids()
    written = []
    for item_id in ids:
        item = queue.get(item_id)
        if item.pictures_removed_at is not None:
            continue  # retention removed its pictures (after an earlier export kept its copies, if there was one)
        image_path = Path(item.image_path)
        if not image_path.is_file():
            raise ReviewError(f"review item {item_id}: image {image_path} no longer exists")
        name = f"review{item_id:06d}_{image_path.stem}"
        image_target = out / "JPEGImages" / f"{name}{image_path.suffix}"
        _copy_atomic(image_path, image_target)
        template_text = None
        if item.template_path:
            template = Path(item.template_path)
            if not template.is_file():
                raise ReviewError(f"review item {item_id}: template {template} no longer exists")
            digest = hashlib.sha1(template.read_bytes()).hexdigest()
            template_target = out / "templates" / f"{digest}{template.suffix}"
            if not template_target.is_file():
                _copy_atomic(template, template_target)
            template_text = f"../templates/{template_target.name}"
        written.append(_write_annotation(out / "Annotations" / f"{name}.xml", image_target, template_text,
                                         queue.labels(item_id), item.source))
    return written


def _write_annotation(path: Path, image: Path, template_text: str | None, labels, source: str) -> Path:
    import cv2

    height, width = cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape[:2]
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "JPEGImages"
    ET.SubElement(annotation, "filename").text = image.name
    origin = ET.SubElement(annotation, "source")
    ET.SubElement(origin, "database").text = "pcb-inspector verification queue"
    ET.SubElement(origin, "frame_id").text = source
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    if template_text is not None:
        ET.SubElement(annotation, "template").text = template_text
    for box, class_name in labels:
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = class_name
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x2, y2 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(annotation)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "wb") as stream:
        stream.write(ET.tostring(annotation, encoding="utf-8", xml_declaration=True) + b"\n")
    os.replace(temp, path)
    return path


def _copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
