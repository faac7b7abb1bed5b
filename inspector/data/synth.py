"""Synthetic DeepPCB-style boards: a defect-free template, a tested image, and its labelled defects.

They let the tests and the demo run with no outside data. A board looks like a binarised DeepPCB
scan: black copper on a white board, with straight and 45-degree traces of a few widths, parallel
buses, round and square pads, drilled holes, and copper pours with a clearance gap cut around the
traces and pads that cross them. The tested image is the template plus defects of the six DeepPCB
types, each drawn where it makes sense:

    open       a gap cut across a trace            short    copper bridging a gap between two features
    mousebite  bites taken out of a copper edge    spur     a thin protrusion from a copper edge
    copper     a spurious blob on the bare board   pin-hole a small hole inside copper

A box is the bounding box of the pixels its defect changed, plus a margin, widened to a minimum
side like DeepPCB's own boxes; boxes are kept apart. So every label sits on a real change and no
change lies outside the labels. Everything is drawn from the given ``numpy`` generator, so a seed
fixes the pixels and the labels.

Lengths are pixels at DeepPCB's 640 x 640 and scale with the requested size. The board is drawn in
``synth_board``, the defects painted in ``synth_defects``; this module puts a pair together and writes
data sets.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from inspector.data.synth_board import REFERENCE_SIZE, draw_board
from inspector.data.synth_defects import COPPER, MOUSEBITE, OPEN, PIN_HOLE, SHORT, SPUR, add_defects

__all__ = ["COPPER", "MOUSEBITE", "OPEN", "PIN_HOLE", "REFERENCE_SIZE", "SHORT", "SPUR", "SynthPair",
           "generate_pair", "write_deeppcb"]

_JPEG_QUALITY = 95  # high enough that the binarised edges stay crisp (ringing of a few grey levels)
_PAIRS_PER_GROUP = 100  # DeepPCB's folders hold up to a few hundred pairs; the stem's last 3 digits index them


@dataclass
class SynthPair:
    """A defect-free template, the same board with defects, and the defects' labels."""

    template: np.ndarray  # (H, W, 3) uint8 BGR
    tested: np.ndarray  # (H, W, 3) uint8 BGR
    boxes: np.ndarray  # (N, 4) float32 pixel xyxy (whole numbers, so they survive a DeepPCB text file)
    classes: np.ndarray  # (N,) int64, index into DEEPPCB_CLASSES


def generate_pair(rng: np.random.Generator, size: int = 640, n_defects: tuple[int, int] = (2, 8)) -> SynthPair:
    """Draw one board and a copy of it with between ``n_defects[0]`` and ``n_defects[1]`` defects.

    (Fewer only if a board has no room left for another well-separated defect.)
    """
    if size < 160:
        raise ValueError(f"size must be at least 160 pixels for defects to fit, got {size}")
    low, high = n_defects
    if not 0 <= low <= high:
        raise ValueError(f"n_defects must be (low, high) with 0 <= low <= high, got {n_defects}")
    template_copper, holes, traces = draw_board(rng, size)
    tested_copper, boxes, classes = add_defects(rng, template_copper, holes, traces,
                                                int(rng.integers(low, high + 1)))
    return SynthPair(_to_bgr(template_copper), _to_bgr(tested_copper),
                     np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int64))


def write_deeppcb(out_dir: Path | str, n: int, seed: int, size: int = 640, test_fraction: float = 0.2) -> Path:
    """Write ``n`` synthetic pairs in DeepPCB's layout under ``out_dir`` and return it.

    ``groupGGGGG/GGGGG/<stem>_test.jpg`` and ``_temp.jpg``, ``groupGGGGG/GGGGG_not/<stem>.txt``
    (``x1 y1 x2 y2 type`` lines, type 1..6), and the lists ``trainval.txt`` and ``test.txt``
    (a seeded ``test_fraction`` of the pairs).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    list_lines = []
    for index in tqdm(range(n), desc="synthetic boards", unit="pair", disable=n <= 50):
        group = f"{index // _PAIRS_PER_GROUP:05d}"
        stem = f"{group}{index % _PAIRS_PER_GROUP:03d}"
        image_dir = out_dir / f"group{group}" / group
        label_dir = out_dir / f"group{group}" / f"{group}_not"
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)

        pair = generate_pair(rng, size)
        jpeg = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]
        cv2.imwrite(str(image_dir / f"{stem}_test.jpg"), pair.tested, jpeg)
        cv2.imwrite(str(image_dir / f"{stem}_temp.jpg"), pair.template, jpeg)
        labels = "".join(f"{x1} {y1} {x2} {y2} {c + 1}\n"
                         for (x1, y1, x2, y2), c in zip(pair.boxes.astype(int).tolist(), pair.classes.tolist()))
        (label_dir / f"{stem}.txt").write_text(labels, encoding="utf-8")
        list_lines.append(f"group{group}/{group}/{stem}.jpg group{group}/{group}_not/{stem}.txt\n")

    n_test = int(round(n * test_fraction))
    is_test = np.zeros(n, bool)
    is_test[rng.permutation(n)[:n_test]] = True
    (out_dir / "trainval.txt").write_text("".join(l for l, t in zip(list_lines, is_test) if not t), encoding="utf-8")
    (out_dir / "test.txt").write_text("".join(l for l, t in zip(list_lines, is_test) if t), encoding="utf-8")
    return out_dir


def _to_bgr(copper: np.ndarray) -> np.ndarray:
    """Copper mask (1 = copper) -> DeepPCB look: black copper on a white board, 3-channel."""
    _, gray = cv2.threshold(copper, 0, 255, cv2.THRESH_BINARY_INV)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
