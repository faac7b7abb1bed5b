"""Training-loader throughput with and without each pair augmentation (inspector.data.augment).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/augment_throughput.py ../shared/datasets/deeppcb \
        --input-mode image+template --images 96

One thread (workers=0, OpenCV single-threaded), decode cache warmed by a first pass, then one timed
epoch per variant. Images/s are given by CPU time of this process (steady on a shared machine) and by
wall time. This is the loader alone, not training.
"""
from __future__ import annotations

import argparse
import time

import cv2

from inspector.data import load_dataset
from inspector.data.augment import PairAugmentConfig
from inspector.data.loader import BatchLoader

VARIANTS = {
    "baseline (today)": None,
    "dihedral": PairAugmentConfig(dihedral=True),
    "copy-paste 0.5 x2": PairAugmentConfig(copy_paste=0.5),
    "copy-paste 1.0 x2": PairAugmentConfig(copy_paste=1.0),
    "dihedral + copy-paste 0.5 x2": PairAugmentConfig(dihedral=True, copy_paste=0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="labeled pairs (DeepPCB layout)")
    parser.add_argument("--input-mode", default="image+template")
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--crop-sizes", default="256,0", help="comma-separated; 0: whole image (the aug-off epochs)")
    parser.add_argument("--images", type=int, default=96, help="first N pairs of the data")
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    dataset = load_dataset(args.data)
    dataset.samples = dataset.samples[: args.images]
    print(f"{len(dataset)} pairs, input mode {args.input_mode}, input {args.input_size}, 1 thread")
    for crop in (int(c) for c in args.crop_sizes.split(",")):
        for name, pairs in VARIANTS.items():
            loader = BatchLoader(dataset, args.batch, args.input_size, args.input_mode, train=True,
                                 crop_size=crop or None, workers=0, pairs=pairs)
            for _ in loader:  # epoch 0 fills the decode cache
                pass
            wall, cpu, images = time.perf_counter(), time.process_time(), 0
            for batch in loader:
                images += len(batch)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"crop {crop or 'none':>4}  {name:30s} {images / cpu:7.1f} img/s CPU  "
                  f"{images / wall:7.1f} img/s wall")


if __name__ == "__main__":
    main()
