"""Operator review of one frame, and writing it as Pascal VOC labeled data.

The operator starts from the model's defects on a frame, marks wrong ones as false calls and draws the
defects it missed. ``ReviewState.labels()`` is then the truth for that frame, and
``write_voc_review`` stores it where ``inspector.data.load_dataset`` (and so ``inspector train``)
reads it::

    <review folder>/Annotations/<name>.xml     <template>../templates/<sha1>.png</template> when known
    <review folder>/JPEGImages/<name>.png      the frame exactly as captured
    <review folder>/templates/<sha1>.png       its golden template, once per distinct template

Files are written image first, XML last, each atomically: a sample appears only when complete.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gui.evidence import atomic_write_bytes, atomic_write_image, safe_name, save_template_once, stamp
from inspector.runtime import Detections

MODEL = "model"
OPERATOR = "operator"


@dataclass
class ReviewBox:
    xyxy: tuple[float, float, float, float]  # pixels of the frame
    class_name: str
    origin: str  # MODEL or OPERATOR
    score: float | None = None  # the model's score; None for boxes the operator drew
    false_call: bool = False  # the operator says this model detection is not a defect


@dataclass
class ReviewState:
    """The boxes of one frame under review."""

    frame_id: str
    captured_at: float
    image: np.ndarray
    template: np.ndarray | None
    class_names: list[str]
    boxes: list[ReviewBox] = field(default_factory=list)

    @classmethod
    def from_detections(cls, frame_id: str, captured_at: float, image: np.ndarray, template: np.ndarray | None,
                        defects: Detections | None, class_names: list[str]) -> "ReviewState":
        boxes = [] if defects is None else [
            ReviewBox(tuple(float(v) for v in box), name, MODEL, float(score))
            for box, score, name in zip(defects.boxes, defects.scores, defects.class_names)]
        return cls(frame_id, captured_at, image, template, list(class_names), boxes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])

    def box_at(self, x: float, y: float) -> int | None:
        """Index of the smallest box containing the point (small boxes sit on top), or None."""
        hits = [(area(b.xyxy), i) for i, b in enumerate(self.boxes)
                if b.xyxy[0] <= x <= b.xyxy[2] and b.xyxy[1] <= y <= b.xyxy[3]]
        return min(hits)[1] if hits else None

    def toggle_false_call(self, index: int) -> None:
        box = self.boxes[index]
        if box.origin != MODEL:
            raise ValueError("only the model's detections can be marked as false calls; remove a drawn box instead")
        box.false_call = not box.false_call

    def add_missed(self, xyxy: tuple[float, float, float, float], class_name: str) -> ReviewBox:
        """A defect the model missed, drawn by the operator (clipped to the frame)."""
        if class_name not in self.class_names:
            raise ValueError(f"class {class_name!r}: expected one of {', '.join(self.class_names)}")
        width, height = self.image_size
        x1, x2 = sorted((min(max(xyxy[0], 0.0), width), min(max(xyxy[2], 0.0), width)))
        y1, y2 = sorted((min(max(xyxy[1], 0.0), height), min(max(xyxy[3], 0.0), height)))
        if x2 - x1 < 1 or y2 - y1 < 1:
            raise ValueError(f"a box must be at least 1x1 pixel inside the frame, got {xyxy}")
        box = ReviewBox((x1, y1, x2, y2), class_name, OPERATOR)
        self.boxes.append(box)
        return box

    def remove(self, index: int) -> None:
        if self.boxes[index].origin != OPERATOR:
            raise ValueError("the model's detections are kept for the record; mark them as false calls instead")
        del self.boxes[index]

    def labels(self) -> list[tuple[tuple[float, float, float, float], str]]:
        """The reviewed truth: model detections not marked false, plus the drawn ones."""
        return [(b.xyxy, b.class_name) for b in self.boxes if not b.false_call]

    @property
    def n_false_calls(self) -> int:
        return sum(b.false_call for b in self.boxes)

    @property
    def n_missed(self) -> int:
        return sum(b.origin == OPERATOR for b in self.boxes)


def area(xyxy: tuple[float, float, float, float]) -> float:
    return max(0.0, xyxy[2] - xyxy[0]) * max(0.0, xyxy[3] - xyxy[1])


def pixel_box(xyxy: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Whole-pixel box that covers ``xyxy``, inside a (width, height) image."""
    width, height = size
    x1, y1 = max(0, math.floor(xyxy[0])), max(0, math.floor(xyxy[1]))
    x2, y2 = min(width, math.ceil(xyxy[2])), min(height, math.ceil(xyxy[3]))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def review_name(frame_id: str, captured_at: float) -> str:
    """Same frame, same name: saving a review again replaces the earlier one."""
    day, moment = stamp(captured_at)
    return f"{day}_{moment}_{safe_name(frame_id)}"


def write_voc_review(root: Path, review: ReviewState) -> Path:
    """Store the reviewed frame as a Pascal VOC sample under ``root``; returns the XML's path."""
    root = Path(root)
    name = review_name(review.frame_id, review.captured_at)
    image_path = root / "JPEGImages" / f"{name}.png"
    xml_path = root / "Annotations" / f"{name}.xml"
    atomic_write_image(image_path, review.image)
    template_text = None
    if review.template is not None:
        template_path = save_template_once(root / "templates", review.template)
        template_text = f"../templates/{template_path.name}"

    width, height = review.image_size
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "JPEGImages"
    ET.SubElement(annotation, "filename").text = image_path.name
    source = ET.SubElement(annotation, "source")
    ET.SubElement(source, "database").text = "pcb-inspector operator review"
    ET.SubElement(source, "frame_id").text = review.frame_id
    size = ET.SubElement(annotation, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3 if review.image.ndim == 3 else 1)):
        ET.SubElement(size, tag).text = str(value)
    if template_text is not None:
        ET.SubElement(annotation, "template").text = template_text
    for xyxy, class_name in review.labels():
        obj = ET.SubElement(annotation, "object")
        ET.SubElement(obj, "name").text = class_name
        ET.SubElement(obj, "difficult").text = "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), pixel_box(xyxy, (width, height))):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(annotation)
    atomic_write_bytes(xml_path, ET.tostring(annotation, encoding="utf-8", xml_declaration=True) + b"\n")
    return xml_path
