"""Evidence on disk: NG frames, snapshots and the inspection record, never half-written.

Every file is written to a temporary name in its folder, flushed to disk, then renamed over its final
name (``os.replace`` is atomic on one file system), so a crash leaves either the whole file or none.
The inspection record is one JSON line per frame appended to ``inspections-<date>.jsonl``; each line
goes out in a single write, and a reader skips a last line cut short by a crash (``read_records``).

Layout under the evidence folder::

    <date>/<time>_<frame>.png      the NG frame as captured (lossless)
    <date>/<time>_<frame>.json     its defects, thresholds, model, template file
    templates/<sha1>.png           golden templates, stored once however many frames use them
    snapshots/<time>_<frame>.png   the frame with its detections drawn (and _raw.png, .json)
    inspections-<date>.jsonl       every inspected frame: verdict and defects
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.runtime import Detections


class EvidenceError(OSError):
    """Evidence could not be written (disk full, folder not writable...)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that it is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    ok, encoded = cv2.imencode(suffix, image, [cv2.IMWRITE_PNG_COMPRESSION, 1] if suffix == ".png" else [])
    if not ok:
        raise EvidenceError(f"OpenCV could not encode a {image.shape} image as {suffix}")
    return encoded.tobytes()


def atomic_write_image(path: Path, image: np.ndarray) -> None:
    atomic_write_bytes(path, encode_image(image, Path(path).suffix.lower()))


def atomic_write_json(path: Path, content: dict) -> None:
    atomic_write_bytes(path, (json.dumps(content, indent=2) + "\n").encode("utf-8"))


def append_line(path: Path, content: dict, durable: bool) -> None:
    """Append one JSON line in a single write; ``durable`` also waits until it is on disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(content, separators=(",", ":")) + "\n").encode("utf-8")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
        if durable:
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_records(path: Path) -> list[dict]:
    """The complete lines of an inspection record (a last line cut short by a crash is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def image_digest(image: np.ndarray) -> str:
    """Short content hash: the same template is stored once however many frames use it."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]


def save_template_once(folder: Path, template: np.ndarray) -> Path:
    path = Path(folder) / f"{image_digest(template)}.png"
    if not path.exists():
        atomic_write_image(path, template)
    return path


def safe_name(text: str, limit: int = 80) -> str:
    """``text`` as a file-name part: letters, digits, '-', '_' and '.'; others become '_'."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")
    return cleaned[:limit] or "frame"


def stamp(moment: float) -> tuple[str, str]:
    """('2026-11-22', '101112.345') for a time.time() value, local time."""
    local = time.localtime(moment)
    return time.strftime("%Y-%m-%d", local), time.strftime("%H%M%S", local) + f".{int(moment * 1000) % 1000:03d}"


def detections_to_list(detections: Detections) -> list[dict]:
    return detections.to_dict()["detections"]


@dataclass
class EvidenceStore:
    """Writes NG evidence, snapshots and the inspection record under ``root``."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def save_template(self, template: np.ndarray) -> Path:
        """The template's file (written the first time this exact image is seen)."""
        return save_template_once(self.root / "templates", template)

    def save_ng(self, *, frame_id: str, captured_at: float, source: str, image: np.ndarray,
                template: np.ndarray | None, defects: Detections, thresholds: dict, package_id: str,
                part_id: str = "", recipe: str = "") -> Path:
        """The NG frame and its JSON; returns the image's path. The JSON is written last: when it exists,
        so does everything it names."""
        day, moment = stamp(captured_at)
        base = self.root / day / f"{moment}_{safe_name(frame_id)}"
        image_path = base.with_suffix(".png")
        atomic_write_image(image_path, image)
        template_path = None if template is None else self.save_template(template)
        atomic_write_json(base.with_suffix(".json"), {
            "frame_id": frame_id, "part_id": part_id or None, "recipe": recipe or None, "source": source,
            "captured_at": captured_at, "verdict": "NG",
            "image": image_path.name,
            "template": None if template_path is None else os.path.relpath(template_path, image_path.parent),
            "defects": detections_to_list(defects), "thresholds": thresholds, "package_id": package_id,
        })
        return image_path

    def record(self, content: dict, durable: bool) -> None:
        """One line in today's inspection record."""
        day, _ = stamp(content.get("captured_at", time.time()))
        append_line(self.root / f"inspections-{day}.jsonl", content, durable)

    def save_snapshot(self, *, frame_id: str, captured_at: float, image: np.ndarray, annotated: np.ndarray,
                      detections: Detections, verdict: str, thresholds: dict, package_id: str,
                      part_id: str = "") -> Path:
        """The frame with its detections drawn, the raw frame and a JSON; returns the drawn image's path."""
        _, moment = stamp(captured_at)
        base = self.root / "snapshots" / f"{stamp(captured_at)[0]}_{moment}_{safe_name(frame_id)}"
        atomic_write_image(base.with_name(base.name + "_raw.png"), image)
        annotated_path = base.with_suffix(".png")
        atomic_write_image(annotated_path, annotated)
        atomic_write_json(base.with_suffix(".json"), {
            "frame_id": frame_id, "part_id": part_id or None, "captured_at": captured_at, "verdict": verdict,
            "thresholds": thresholds,
            "package_id": package_id, "detections": detections_to_list(detections),
        })
        return annotated_path


def load_ng_evidence(image_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """An NG frame and its template read back from the evidence folder (for log rows no longer in memory)."""
    from inspector.data import read_image

    image_path = Path(image_path)
    content = json.loads(image_path.with_suffix(".json").read_text(encoding="utf-8"))
    template = content.get("template")
    return read_image(image_path), None if not template else read_image(image_path.parent / template)
