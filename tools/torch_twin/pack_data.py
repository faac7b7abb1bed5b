"""Pack a DeepPCB-layout dataset small enough to travel to the lent GPU machine (64 MiB per call, code included).

The trainval JPEGs (about 41 KB each, 83 MB for 1,000 pairs) are decoded and re-encoded as lossless WebP
(about 15 KB each: DeepPCB boards are binarised), kept under their original file names (OpenCV and Pillow
read an image by its content, not its suffix), so the readers and the split file (keys relative to the
dataset root) work on the copy unchanged. Every decoded pixel is checked equal to the original's; labels and
list files are copied as they are. The copy is only for training on the GPU machine: every number we report
is measured on the original images here.

    python -m tools.torch_twin.pack_data --data ../shared/datasets/deeppcb --out gpu_data/deeppcb

Refuses a dataset folder that holds DeepPCB's official ``test.txt`` (that split is kept for independent
evaluation and must never travel into training).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg")


LOSSLESS_WEBP = 101  # OpenCV: a WebP quality above 100 selects lossless compression


def encode_lossless(path: Path) -> bytes:
    """The image as lossless WebP bytes, checked pixel for pixel against the original as the readers decode it
    (``inspector.data.structures.read_image``: three channels; WebP stores a grey image as equal RGB planes)."""
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{path}: not a readable image")
    ok, data = cv2.imencode(".webp", pixels, [cv2.IMWRITE_WEBP_QUALITY, LOSSLESS_WEBP])
    if not ok:
        raise ValueError(f"{path}: WebP encoding failed")
    if not np.array_equal(cv2.imdecode(data, cv2.IMREAD_COLOR), pixels):
        raise ValueError(f"{path}: lossless WebP did not reproduce the pixels")
    return data.tobytes()


def pack(data: Path, out: Path, budget_mb: float) -> dict:
    if (data / "test.txt").exists():
        raise ValueError(f"{data}: holds DeepPCB's official test.txt; pack only the trainval folder")
    files = sorted(p for p in data.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    others = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    other_bytes = sum(p.stat().st_size for p in others)
    encoded = {path: encode_lossless(path) for path in images}
    total = other_bytes + sum(len(b) for b in encoded.values())
    if total > budget_mb * 1e6:
        raise ValueError(f"{data}: {len(images)} images take {total / 1e6:.1f} MB as lossless WebP, over {budget_mb} MB")
    if out.exists():
        shutil.rmtree(out)
    for path in others:
        target = out / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    for path, content in encoded.items():
        target = out / path.relative_to(data)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    summary = {"source": str(data), "images": len(images), "encoding": "lossless WebP under the original names",
               "bytes": total, "pixels_identical": True}
    (out / "PACKED.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--budget-mb", type=float, default=46.0)
    args = parser.parse_args()
    print(json.dumps(pack(args.data, args.out, args.budget_mb)))


if __name__ == "__main__":
    main()
