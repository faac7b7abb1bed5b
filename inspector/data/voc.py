"""Reader for Pascal VOC XML annotations.

Layouts: ``Annotations/*.xml`` with the images in ``JPEGImages/``, or XML files beside their
images. Each file::

    <annotation>
      <filename>board.jpg</filename>
      <size><width>640</width><height>640</height><depth>3</depth></size>
      <template>board_temp.jpg</template>       (optional, our extension)
      <object><name>short</name>
        <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>40</xmax><ymax>44</ymax></bndbox></object>
    </annotation>

``<template>`` names the golden template image, relative to the folder of the image, so the
GUI's review output keeps templates. Problems are located by element: ``object[2].xmax`` is the
second ``<object>`` (1-based, as in XPath); ElementTree does not report line numbers.

Class ids: the ``class_names`` given; else DeepPCB's order when every name is a DeepPCB class
(so GUI reviews line up with DeepPCB-trained models); else the sorted unique names.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
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

_BNDBOX_NAMES = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class VocObject:
    name: str
    xyxy: tuple[float, float, float, float]
    where: Where


@dataclass
class VocFile:
    """One parsed XML file, before class names are fixed."""

    xml_path: Path
    image_path: Path
    template_path: Path | None
    size: tuple[int, int] | None
    objects: list[VocObject] = field(default_factory=list)


def voc_annotation_files(path: Path) -> list[Path]:
    """The XML files of a VOC dataset: ``Annotations/*.xml`` if that folder exists, else ``*.xml``."""
    if path.is_file():
        return [path]
    annotations_dir = path / "Annotations"
    return sorted((annotations_dir if annotations_dir.is_dir() else path).glob("*.xml"))


def read_voc(path: Path, class_names: list[str] | None = None, verify_images: bool = False) -> Dataset:
    path = Path(path).absolute()
    xml_files = voc_annotation_files(path)
    if not xml_files:
        raise DataError(f"{path}: no Pascal VOC files: expected Annotations/*.xml or *.xml")
    root = path.parent if path.is_file() else path
    log = ProblemLog(root)
    parsed = [voc for voc in (_parse_voc_file(xml_path, log) for xml_path in xml_files) if voc is not None]

    if class_names is None:
        names = {obj.name for voc in parsed for obj in voc.objects}
        class_names = list(DEEPPCB_CLASSES) if names <= set(DEEPPCB_CLASSES) else sorted(names)
    class_ids = {name: index for index, name in enumerate(class_names)}

    samples: list[Sample] = []
    for voc in parsed:
        raw_boxes = []
        for obj in voc.objects:
            if obj.name not in class_ids:
                log.error(obj.where.file, f"unknown class {obj.name!r} (expected one of: {', '.join(class_names)})",
                          field=obj.where.prefix + "name")
                continue
            raw_boxes.append(RawBox(obj.xyxy, class_ids[obj.name], obj.where, _BNDBOX_NAMES))
        sample = finish_sample(log, voc.image_path, raw_boxes, Where(voc.xml_path), image_field="filename",
                               template_path=voc.template_path, stated_size=voc.size, verify=verify_images,
                               source=log.name(voc.xml_path))
        if sample is not None:
            samples.append(sample)
    samples = drop_duplicate_images(log, samples)
    return Dataset(samples, list(class_names), root, "voc", log.in_file_order())


def _image_folder(xml_path: Path) -> Path:
    """JPEGImages/ next to Annotations/ in the VOC layout, else the XML's own folder."""
    if xml_path.parent.name == "Annotations" and (xml_path.parent.parent / "JPEGImages").is_dir():
        return xml_path.parent.parent / "JPEGImages"
    return xml_path.parent


def _parse_voc_file(xml_path: Path, log: ProblemLog) -> VocFile | None:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as bad:
        log.error(xml_path, f"not well-formed XML ({bad}); file skipped", bad.position[0])
        return None
    if root.tag != "annotation":
        log.error(xml_path, f"root element is <{root.tag}> (expected <annotation>); file skipped")
        return None
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        log.error(xml_path, "missing <filename>; file skipped", field="filename")
        return None
    image_folder = _image_folder(xml_path)
    template = (root.findtext("template") or "").strip()
    voc = VocFile(xml_path, image_folder / filename, image_folder / template if template else None,
                  _parse_size(root, xml_path, log))

    for index, element in enumerate(root.findall("object"), start=1):
        where = Where(xml_path, prefix=f"object[{index}].")
        try:
            voc.objects.append(_parse_object(element, where))
        except FieldError as bad:
            log.error(xml_path, bad.message, field=where.prefix + (bad.field or ""))
    return voc


def _parse_size(root: ET.Element, xml_path: Path, log: ProblemLog) -> tuple[int, int] | None:
    """(width, height) from <size>, or None when absent or unusable (the image header is used then)."""
    size = root.find("size")
    if size is None:
        return None
    values = []
    for name in ("width", "height"):
        text = (size.findtext(name) or "").strip()
        try:
            value = parse_number(text, f"size.{name}")
            if value <= 0 or not value.is_integer():
                raise FieldError(f"size.{name}", f"{text!r} is not a positive whole number")
        except FieldError as bad:
            log.error(xml_path, f"{bad.message}; size read from the image instead", field=bad.field)
            return None
        values.append(int(value))
    return values[0], values[1]


def _parse_object(element: ET.Element, where: Where) -> VocObject:
    name = (element.findtext("name") or "").strip()
    if not name:
        raise FieldError("name", "missing class name")
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise FieldError("bndbox", "missing <bndbox>")
    coordinates = []
    for coordinate in _BNDBOX_NAMES:
        text = bndbox.findtext(coordinate)
        if text is None:
            raise FieldError(coordinate, f"missing <{coordinate}>")
        coordinates.append(parse_number(text.strip(), coordinate))
    return VocObject(name, tuple(coordinates), where)
