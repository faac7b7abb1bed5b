"""Compare NMS methods on one package's network outputs: official DeepPCB AP / F and COCO mAP per method.

The network runs once per board (through the runtime's engine, as ``Detector.detect`` feeds it); each
method then selects detections from the same outputs at the low score of every evaluation
(``EVAL_THRESHOLDS``), so only the NMS differs between rows.

    .venv/bin/python benchmarks/nms_methods.py models/default --data ../shared/datasets/deeppcb --split val

Choose with ``--split train`` (the package's training part); report on ``--split val``; never on the
official DeepPCB test split. Measured on models/default's network (deeppcb-mbv3s-s2d-320-int8, Lite x86 FP32
twin, 2026-12-06), which made "agnostic" at 0.33 the product's default (``inspector.models.nms``):

    split  NMS             official AP  official F  mAP@0.5  mAP@0.5:0.95
    val    hard 0.5        0.8904       0.8828      0.9187   0.5642
    val    agnostic 0.5    0.8960       0.8931      0.8844   0.5461
    val    agnostic 0.33   0.8963       0.8962      0.8820   0.5440
    val    agnostic 0.25   0.8962       0.8984      0.8819   0.5442
    train  hard 0.5        0.9269       0.9104      0.9490   0.5888
    train  agnostic 0.5    0.9309       0.9163      0.9199   0.5740
    train  agnostic 0.33   0.9323       0.9233      0.9159   0.5714
    train  agnostic 0.25   0.9314       0.9252      0.9154   0.5714
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.cli.evaluation import load_eval_dataset  # noqa: E402
from inspector.cli.options import Split  # noqa: E402
from inspector.data.transforms import letterbox, to_input, unletterbox_boxes  # noqa: E402
from inspector.evaluation import EVAL_THRESHOLDS, ImageDetections, evaluate_samples  # noqa: E402
from inspector.models.nms import select_detections  # noqa: E402
from inspector.runtime import Detector  # noqa: E402

METHODS = [("hard", 0.5), ("agnostic", 0.5), ("agnostic", 0.33), ("agnostic", 0.25)]


def network_outputs(detector: Detector, dataset) -> list:
    """Per board: (decoded boxes, per-class scores, letterbox scale, pad, frame width, height)."""
    layout = detector.layout
    size = layout.letterbox_size(detector.input_size)
    found = []
    for sample in dataset.samples:
        image = sample.load_image()
        template = sample.load_template() if detector.needs_template else None
        resized, scale, pad = letterbox(image, size)
        tensor = to_input(resized, None if template is None else letterbox(template, size)[0], layout.mode)[None]
        boxes, scores = detector.infer(tensor)  # views of the engine's buffers, which the next run reuses
        network_pad = (pad[0] / layout.block, pad[1] / layout.block)
        found.append((boxes[0].copy(), scores[0].copy(), scale / layout.block, network_pad, image.shape[1],
                      image.shape[0]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="model package")
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/deeppcb"))
    parser.add_argument("--split", choices=[s.value for s in Split], default="val",
                        help="the package's split.json part (default val)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()

    detector = Detector.load(args.model, threads=args.threads)
    dataset = load_eval_dataset(args.data, None, Split(args.split), args.model)
    outputs = network_outputs(detector, dataset)
    rows = []
    print(f"{detector.info.package} on {len(dataset.samples)} boards ({args.split}), {detector.info.engine}")
    print(f"{'NMS':16s} {'official AP':>11s} {'official F':>10s} {'mAP@0.5':>8s} {'mAP@0.5:0.95':>12s}")
    for method, iou in METHODS:
        dets = []
        for boxes, scores, scale, pad, width, height in outputs:
            kept_boxes, kept_scores, kept_classes = select_detections(
                boxes, scores, EVAL_THRESHOLDS.score_threshold, iou, EVAL_THRESHOLDS.max_detections, method)
            dets.append(ImageDetections(unletterbox_boxes(kept_boxes, scale, pad, (width, height)), kept_scores,
                                        kept_classes))
        result = evaluate_samples(dataset.samples, dets, detector.class_names)
        rows.append({"nms": method, "nms_threshold": iou, "official_ap": result.official_ap,
                     "official_f": result.official_f, "map50": result.map50, "map50_95": result.map50_95})
        print(f"{method + ' ' + str(iou):16s} {result.official_ap:11.4f} {result.official_f:10.4f} "
              f"{result.map50:8.4f} {result.map50_95:12.4f}")
    if args.json:
        args.json.write_text(json.dumps({"package": str(args.model), "split": args.split, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
