"""Anchor boxes: the default set for PCB defects and k-means clustering of a data set's box sizes.

A YOLO head predicts each box as a correction of an anchor (a prior width and height), three
anchors per output level; small anchors go to the fine stride-8 level, large ones to stride 32.
Anchors close to the real box shapes make the corrections small and the training easier.

numpy only: the runtime and the config can use this without paddle.
"""
from __future__ import annotations

import numpy as np

Anchor = tuple[float, float]  # (width, height) in input pixels

# ``kmeans_anchors`` (defaults, seed 0) on the 6,873 boxes of DeepPCB trainval (640 x 640 images)
# together with their 90-degree-rotated copies, because training augments with rotations; rounded
# to whole pixels. Mean best IoU with the real boxes: 0.85. Defects are 25-45 px on their shorter
# side and up to ~170 px on the longer one, so the nine anchors are similar in size and differ
# mostly in shape; the stride-32 level gets the long thin ones.
DEEPPCB_ANCHORS_640: list[list[Anchor]] = [
    [(31.0, 28.0), (28.0, 34.0), (38.0, 30.0)],
    [(34.0, 36.0), (30.0, 50.0), (51.0, 30.0)],
    [(43.0, 43.0), (79.0, 41.0), (43.0, 79.0)],
]
DEEPPCB_INPUT_SIZE = 640


def default_anchors(input_size: int) -> list[list[Anchor]]:
    """The DeepPCB anchors scaled to a square network input of ``input_size`` pixels.

    Scaling assumes images are resized to the input as a whole (letterbox), so box sizes in input
    pixels shrink with the input size; with crops at native resolution, keep the 640 set instead.
    """
    if input_size <= 0:
        raise ValueError(f"input_size must be positive, got {input_size}")
    factor = input_size / DEEPPCB_INPUT_SIZE
    return [[(round(w * factor, 2), round(h * factor, 2)) for w, h in level] for level in DEEPPCB_ANCHORS_640]


def shape_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """IoU (N, M) of boxes (N, 2) and (M, 2) given as widths and heights, aligned at a common centre.

    This is the similarity YOLO uses between a box and an anchor: it compares shapes, not positions.
    """
    a = np.asarray(wh_a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(wh_b, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(a[:, None, 0], b[None, :, 0]) * np.minimum(a[:, None, 1], b[None, :, 1])
    union = (a[:, 0] * a[:, 1])[:, None] + (b[:, 0] * b[:, 1])[None, :] - inter
    return inter / np.maximum(union, 1e-12)


def kmeans_anchors(
    wh: np.ndarray, n: int = 9, seed: int = 0, levels: int = 3, restarts: int = 10, max_iterations: int = 300
) -> list[list[Anchor]]:
    """Cluster box sizes ``wh`` (N, 2) into ``n`` anchors with the distance 1 - IoU (YOLOv2).

    Plain Euclidean k-means would let large boxes dominate; the IoU distance treats a 4 px error on
    a 20 px box as seriously as a 20 px error on a 100 px box. Each centre is the median of its
    members (robust to a few odd boxes). k-means only finds a local optimum, so it runs from
    ``restarts`` k-means++ starts drawn with ``seed`` and keeps the anchors with the best mean IoU.
    Returns ``levels`` lists of ``n / levels`` anchors, sorted by area (smallest first, for the
    stride-8 level).
    """
    wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
    wh = wh[(wh[:, 0] > 0) & (wh[:, 1] > 0)]
    if n % levels != 0:
        raise ValueError(f"kmeans_anchors: n={n} anchors cannot be split evenly over {levels} levels")
    distinct = len(np.unique(wh, axis=0))
    if distinct < n:
        raise ValueError(f"kmeans_anchors: need at least {n} distinct positive box sizes, got {distinct}")
    rng = np.random.default_rng(seed)
    best_centres, best_fit = None, -1.0
    for _ in range(max(1, restarts)):
        centres = _kmeans_once(wh, n, rng, max_iterations)
        fit = shape_iou(wh, centres).max(axis=1).mean()
        if fit > best_fit:
            best_centres, best_fit = centres, fit
    centres = best_centres[np.argsort(best_centres[:, 0] * best_centres[:, 1], kind="stable")]
    per_level = n // levels
    return [
        [(float(w), float(h)) for w, h in centres[level * per_level : (level + 1) * per_level]]
        for level in range(levels)
    ]


def _kmeans_once(wh: np.ndarray, n: int, rng: np.random.Generator, max_iterations: int) -> np.ndarray:
    """One k-means run (IoU distance, median centres) from a k-means++ start; returns (n, 2) centres."""
    # k-means++ seeding: each new centre is drawn with probability proportional to its distance
    # to the nearest centre already chosen, which spreads the start over the range of shapes.
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(n - 1):
        distance = 1.0 - shape_iou(wh, np.array(centres)).max(axis=1)
        probability = distance / distance.sum() if distance.sum() > 0 else None
        centres.append(wh[rng.choice(len(wh), p=probability)])
    centres = np.array(centres)
    assignment = np.full(len(wh), -1)
    for _ in range(max_iterations):
        new_assignment = shape_iou(wh, centres).argmax(axis=1)
        if np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for k in range(n):
            members = wh[assignment == k]
            if len(members):  # an empty cluster keeps its centre
                centres[k] = np.median(members, axis=0)
    return centres


def mean_best_iou(wh: np.ndarray, anchors: list[list[Anchor]]) -> float:
    """Average over boxes of the best shape IoU with any anchor: how well the anchors fit the data."""
    flat = np.array([a for level in anchors for a in level], dtype=np.float64)
    return float(shape_iou(np.asarray(wh, dtype=np.float64).reshape(-1, 2), flat).max(axis=1).mean())
