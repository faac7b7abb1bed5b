"""Latency of one package against another on the same spell of the machine: their frames alternately, in one process.

This VM's speed drifts by a third between spells, and separate ``inspector bench`` runs (each its own process)
land on different spells, so a ratio of two of them can be off by 10 %. Here both packages are loaded once and
``Detector.detect`` runs on the bundled 640 px board for each in turn, frame after frame: both see the same spell.
Prints each package's whole-frame p50 and its stages' medians, and the ratio of the p50s (second / first).

    .venv/bin/python benchmarks/latency_ratio.py models/deeppcb-mbv3s-320-int8 models/default --frames 400

Measured 2026-12-07 (session 22, 2 threads, AMD EPYC 2 cores), b41ba9b's package against models/default, three
runs: 1.086 / 1.110 / 1.126 (p50 12.2 / 12.6 / 14.5 ms against 13.5 / 14.2 / 15.8); network +0.9 ms (the 12-plane
stem), pre-processing 1.2 against 0.85 ms, post-processing 0.53 against 0.47 ms.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.data import load_dataset  # noqa: E402
from inspector.data.bundled import BUNDLED_DEEPPCB  # noqa: E402
from inspector.runtime import Detector  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="the package to compare with (e.g. the one shipped before)")
    parser.add_argument("second", type=Path, help="the package measured against it")
    parser.add_argument("--frames", type=int, default=400, help="timed frames per package")
    parser.add_argument("--warmup", type=int, default=20, help="untimed frames per package first")
    parser.add_argument("--threads", type=int, default=2, help="engine threads")
    args = parser.parse_args()
    if args.frames < 1 or args.warmup < 0:
        parser.error(f"--frames must be >= 1 and --warmup >= 0, got {args.frames} and {args.warmup}")

    sample = load_dataset(BUNDLED_DEEPPCB).samples[0]
    image, template = sample.load_image(), sample.load_template()
    detectors = [Detector.load(path, threads=args.threads) for path in (args.first, args.second)]
    templates = [template if detector.needs_template else None for detector in detectors]
    for detector, golden in zip(detectors, templates):
        for _ in range(args.warmup):
            detector.detect(image, golden)
    totals: list[list[float]] = [[], []]
    stages: list[list[tuple[float, float, float]]] = [[], []]
    for _ in range(args.frames):
        for index, (detector, golden) in enumerate(zip(detectors, templates)):
            start = time.perf_counter()
            timing = detector.detect(image, golden).timing
            totals[index].append((time.perf_counter() - start) * 1e3)
            stages[index].append((timing.preprocess_ms, timing.infer_ms, timing.postprocess_ms))
    p50 = [float(np.median(values)) for values in totals]
    for path, detector, whole, parts in zip((args.first, args.second), detectors, p50, stages):
        pre, infer, post = np.median(np.array(parts), axis=0)
        print(f"{path}: p50 {whole:.2f} ms (pre-processing {pre:.2f}, network {infer:.2f}, post-processing "
              f"{post:.2f}); {detector.info.engine}, {detector.info.threads} thread(s)")
    print(f"ratio {p50[1] / p50[0]:.3f} ({args.frames} frames each, alternately)")


if __name__ == "__main__":
    main()
