"""Does the verification queue put first the boards a review teaches most? Measured on labeled boards.

Every board goes through the model package (detections down to ``threshold - near_band``, unknown-change
flags on) into a fresh ``ReviewQueue``; the model's mistakes on a board (at its threshold, DeepPCB
matching IoU > 0.33 with the class) are what a review would correct: missed defects and false calls.
Printed: mistakes per board in the queue's top ``--top``, in the same number of queued boards drawn at
random (mean of 200 draws), and over all boards.

    .venv/bin/python benchmarks/review_queue_rank.py --data ../shared/datasets/deeppcb \
        --split-file models/default/split.json --split val --top 30

Measured (models/default then deeppcb-mbv3s-320-int8, the 200 validation boards of models/default/split.json; never the test
split; 24 s): all 200 queued (157 near the threshold, 3 with unknown changes only, 40 other NG); the
queue's top 30 hold 2.90 model mistakes per board against 1.79 for 30 queued boards drawn at random (and
1.78 over all boards); 26 of the top 30 have at least one mistake, against 129 of all 200.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.data import load_dataset  # noqa: E402
from inspector.data.split import load_split  # noqa: E402
from inspector.evaluation import box_iou  # noqa: E402
from inspector.review_queue import DEFAULT_NEAR_BAND, ReviewQueue  # noqa: E402
from inspector.runtime import Detector  # noqa: E402


def mistakes(boxes: np.ndarray, classes: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray) -> int:
    """Missed defects plus false calls at IoU > 0.33 with the right class (greedy, as the DeepPCB protocol)."""
    used = np.zeros(len(gt_boxes), bool)
    false_calls = 0
    ious = box_iou(boxes, gt_boxes) if len(boxes) and len(gt_boxes) else np.zeros((len(boxes), len(gt_boxes)))
    for index in range(len(boxes)):
        candidates = np.where(~used & (ious[index] > 0.33) & (gt_classes == classes[index]))[0]
        if len(candidates):
            used[candidates[np.argmax(ious[index, candidates])]] = True
        else:
            false_calls += 1
    return false_calls + int((~used).sum())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="inspector/assets/deeppcb_demo")
    parser.add_argument("--split-file", default=None)
    parser.add_argument("--split", choices=("train", "val"), default="val")
    parser.add_argument("--model", default=None)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--near-band", type=float, default=DEFAULT_NEAR_BAND)
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data)
    if args.split_file:
        train, val = load_split(dataset, args.split_file)
        dataset = val if args.split == "val" else train
    detector = Detector.load(args.model, threads=1)
    threshold = detector.manifest.postprocess.score_threshold
    errors: dict[int, int] = {}
    all_errors = []
    with tempfile.TemporaryDirectory() as scratch:
        queue = ReviewQueue(Path(scratch) / "queue.db")
        for sample in dataset.samples:
            template = sample.load_template()
            found = detector.detect(sample.load_image(), template, score_threshold=max(0.01, threshold - args.near_band),
                                    unknown_changes=template is not None)
            called = found.scores >= threshold
            count = mistakes(found.boxes[called], found.class_ids[called], sample.boxes, sample.classes)
            all_errors.append(count)
            item = queue.offer_detections(sample.image_path, found, threshold, detector.class_names,
                                          template_path=sample.template_path, near_band=args.near_band)
            if item is not None:
                errors[item] = count
        ranked = [errors[item.id] for item in queue.pending(limit=len(errors))]
        counts = queue.counts()
        queue.close()
    top = min(args.top, len(ranked))
    rng = np.random.default_rng(0)
    random_mean = float(np.mean([np.mean(rng.choice(ranked, top, replace=False)) for _ in range(200)])) if top else 0.0
    result = {"boards": len(dataset), "queued": len(ranked), "queue": counts, "top": top,
              "mistakes_per_board_top": float(np.mean(ranked[:top])) if top else 0.0,
              "mistakes_per_board_random_queued": random_mean,
              "mistakes_per_board_all": float(np.mean(all_errors)) if all_errors else 0.0,
              "boards_with_a_mistake_top": int(np.sum(np.array(ranked[:top]) > 0)),
              "boards_with_a_mistake_all": int(np.sum(np.array(all_errors) > 0))}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
