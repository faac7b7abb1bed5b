"""Seconds per panel and peak memory of whole-panel inspection on a large synthetic panel.

    .venv/bin/python benchmarks/panel_throughput.py [--size 16000] [--workers 2] [--dir /tmp/panel-bench]

1. (a child process, so its memory is not counted) draws 25 synthetic boards with defects and lays
   them out at random over a ``size`` x ``size`` grid of 640 px cells: a non-periodic panel. The tested
   panel is misregistered (shift 23.5, -17.25 px, rotation 0.15 deg) and both are written as greyscale
   PNGs under ``--dir`` (kept and reused by later runs).
2. This process loads the two panels in grey (2 x 256 MB at 16k), loads the shipped package at
   ``--workers`` engines of ``--threads`` threads each (default 2 x 1), and inspects the panel once to warm up and ``--repeat`` times measured
   (registration, tiles, inference, stitching). Prints seconds per panel, the split, tiles and
   detections, the registration error against the known map, the CPU time per panel (which a busy
   machine does not inflate the way it inflates wall time), and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

CELL = 640
MISREGISTRATION = (23.5, -17.25, 0.15, 1.0)  # shift x, shift y, rotation (deg), scale


def make(directory: Path, size: int) -> None:
    from inspector.data.panels import Misregistration
    from inspector.data.synth import generate_pair

    rng = np.random.default_rng(16)
    boards = [generate_pair(rng, CELL) for _ in range(25)]
    cells = size // CELL + (size % CELL > 0)
    template = np.full((size, size), 255, np.uint8)
    tested = np.full((size, size), 255, np.uint8)
    for row in range(cells):
        for col in range(cells):
            board = boards[int(rng.integers(len(boards)))]
            y, x = row * CELL, col * CELL
            h, w = min(CELL, size - y), min(CELL, size - x)
            template[y:y + h, x:x + w] = board.template[:h, :w, 0]
            tested[y:y + h, x:x + w] = board.tested[:h, :w, 0]
    matrix = Misregistration(*MISREGISTRATION).matrix(size, size)
    tested = cv2.warpAffine(tested, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=255)
    directory.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(directory / f"template_{size}.png"), template, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    cv2.imwrite(str(directory / f"tested_{size}.png"), tested, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    np.save(directory / f"truth_{size}.npy", matrix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16000)
    parser.add_argument("--workers", type=int, default=2, help="tiles inspected at once, one engine each")
    parser.add_argument("--threads", type=int, default=1, help="threads of each engine")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/panel-bench"))
    parser.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make(args.dir, args.size)
        return
    template_file, tested_file = args.dir / f"template_{args.size}.png", args.dir / f"tested_{args.size}.png"
    if not (template_file.is_file() and tested_file.is_file()):
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make", "--size", str(args.size), "--dir", str(args.dir)],
                       check=True)
        print(f"made the {args.size} px panels in {time.perf_counter() - start:.0f} s")

    from inspector.runtime import Detector
    from inspector.runtime.panel import PanelInspector

    load_start = time.perf_counter()
    template = cv2.imread(str(template_file), cv2.IMREAD_GRAYSCALE)
    tested = cv2.imread(str(tested_file), cv2.IMREAD_GRAYSCALE)
    loaded = time.perf_counter() - load_start
    truth = np.load(args.dir / f"truth_{args.size}.npy")
    detector = Detector.load(None, threads=args.threads)
    inspector = PanelInspector(detector, workers=args.workers)
    inspector.inspect(tested, template)  # warm-up
    runs, cpu = [], []
    for _ in range(args.repeat):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        found = inspector.inspect(tested, template)
        runs.append((time.perf_counter() - start, found))
        cpu.append(_cpu_seconds() - cpu_start)
    seconds = [s for s, _ in runs]
    found = runs[-1][1]
    matrix = found.registration.template_to_panel
    corners = np.float64([[0, 0], [args.size, 0], [0, args.size], [args.size, args.size]])
    error = np.abs(corners @ matrix[:, :2].T + matrix[:, 2] - (corners @ truth[:, :2].T + truth[:, 2])).max()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()
    print(f"{args.size} x {args.size} grey panel, {found.tiles} tiles of {found.tile_size} px, "
          f"{detector.info.engine}, {args.workers} workers x {detector.info.threads} thread(s), "
          f"{detector.info.precision}")
    print(f"seconds per panel: {' '.join(f'{s:.2f}' for s in seconds)} (best {min(seconds):.2f}); "
          f"split of the last (tiles and infer summed over the workers): "
          + ", ".join(f"{k} {v / 1e3:.2f} s" for k, v in found.timing_ms.items()))
    print(f"{len(found)} defects, {found.seam_merges} seam fragments merged, {found.refined_tiles} tiles refined; "
          f"registration: rotation {found.registration.rotation_deg:.4f} deg (true {MISREGISTRATION[2]}), "
          f"worst corner error {error:.3f} px")
    print(f"CPU time per panel (all threads): {' '.join(f'{c:.2f}' for c in cpu)} s; on {args.workers} idle cores "
          f"the wall time would approach {min(cpu) / args.workers:.1f} s")
    print(f"peak RSS {peak_mb:.0f} MB (images loaded in {loaded:.1f} s); load average during the run "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all its threads: what the panel cost, whatever else runs."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
