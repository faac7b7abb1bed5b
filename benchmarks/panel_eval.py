"""Panel inspection vs the same tiles one by one: official AP/F, mAP@0.5 and F(IoU>0.33).

    .venv/bin/python benchmarks/panel_eval.py --data ../shared/datasets/deeppcb \
        --split-file models/default/split.json --panels 12 --cols 4 --rows 4 [--rotation 0.3 --shift 11.5,-6.5]

Takes ``panels * cols * rows`` pairs of the validation split in sorted key order, evaluates them one by
one through ``Detector.detect`` (what ``inspector eval`` does with tiles), writes them as panels
(``inspector data synth --panel``: DeepPCB layout, panel-pixel labels) and evaluates the panels through
``evaluate_detector`` (what ``inspector eval`` does with panels). Prints both and the difference.
Never point it at DeepPCB's test split.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from inspector.data import load_dataset
from inspector.data.panels import Misregistration, build_panel_dataset
from inspector.data.split import load_split
from inspector.runtime import Detector
from inspector.runtime.evaluate import evaluate_detector

KEYS = ("official_ap", "official_f", "map50", "f1_iou033")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split-file", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--panels", type=int, default=12)
    parser.add_argument("--cols", type=int, default=4)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--shift", default="0,0")
    parser.add_argument("--rotation", type=float, default=0.0)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--margin", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    detector = Detector.load(args.model, threads=args.threads)
    _, val = load_split(load_dataset(args.data), args.split_file)
    samples = sorted(val.samples, key=lambda s: s.key)[:args.panels * args.cols * args.rows]
    tiles = evaluate_detector(detector, val.subset([s.key for s in samples]), progress=False)

    shift_x, shift_y = (float(v) for v in args.shift.split(","))
    with tempfile.TemporaryDirectory(prefix="panel-eval-") as out:
        build_panel_dataset(out, args.panels, args.cols, args.rows, tiles_from=args.data, split_file=args.split_file,
                            margin=args.margin, misregistration=Misregistration(shift_x, shift_y, args.rotation,
                                                                                args.scale))
        panel_set = load_dataset(out)
        start = time.perf_counter()
        panels = evaluate_detector(detector, panel_set, progress=False)
        seconds = time.perf_counter() - start

    rows = {"tiles": {k: getattr(tiles, k) for k in KEYS}, "panels": {k: getattr(panels, k) for k in KEYS}}
    rows["difference"] = {k: rows["panels"][k] - rows["tiles"][k] for k in KEYS}
    print(f"{len(samples)} validation pairs; {args.panels} panels of {args.cols} x {args.rows}, shift {args.shift}, "
          f"rotation {args.rotation} deg, scale {args.scale}, margin {args.margin}; {detector.info.engine}, "
          f"{args.threads} threads; panels evaluated in {seconds:.1f} s")
    for name, row in rows.items():
        print(f"  {name:10s} " + "  ".join(f"{k} {v:+.4f}" if name == "difference" else f"{k} {v:.4f}"
                                          for k, v in row.items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
