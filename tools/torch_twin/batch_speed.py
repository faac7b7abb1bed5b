"""Milliseconds per training board: the loader's batches on the CPU against the same batches made on the device.

    python -m tools.torch_twin.batch_speed --data ../shared/datasets/deeppcb [--boards 256] [--batch 32]
        [--input-mode gray-diff-s2d] [--device cuda]

Both sides with the twin's training augmentation (dihedral, brightness/contrast, noise, blur; whole boards) on the
same boards, decoded and letterboxed once beforehand (as in training). The CPU side is one process making batches
(``BatchLoader._make_batch``): divide by the workers a run gives it. The device side includes copying the boards
there once (printed apart) and synchronises after every batch.
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from inspector.data import load_dataset
from inspector.data.augment import PairAugmentConfig
from inspector.data.loader import BatchLoader
from inspector.data.transforms import AugmentConfig
from tools.torch_twin.device_batches import DeviceBatches


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--boards", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", type=int, default=320)
    p.add_argument("--input-mode", default="gray-diff-s2d")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    dataset = load_dataset(args.data)
    dataset.samples = dataset.samples[:args.boards]
    loader = BatchLoader(dataset, args.batch, args.input_size, args.input_mode, train=True, workers=0,
                         augment=AugmentConfig(), pairs=PairAugmentConfig(dihedral=True))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(loader._letterboxed, dataset.samples))
    steps = len(loader)

    start = time.perf_counter()
    for start_position, indices in loader._batch_indices(0):
        loader._make_batch(indices, 0, start_position)
    cpu_ms = 1000 * (time.perf_counter() - start) / (steps * args.batch)

    device = torch.device(args.device)
    start = time.perf_counter()
    made = DeviceBatches(loader, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    copy_s = time.perf_counter() - start
    made.batch(1, 0)  # first use: kernels loaded
    start = time.perf_counter()
    for step in range(steps):
        made.batch(0, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
    device_ms = 1000 * (time.perf_counter() - start) / (steps * args.batch)
    result = {"boards": steps * args.batch, "batch": args.batch, "input_mode": args.input_mode,
              "cpu_ms_per_board": round(cpu_ms, 3), "device": str(device),
              "device_name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "device_ms_per_board": round(device_ms, 3), "copy_to_device_s": round(copy_s, 2),
              "boards_on_device_mb": round(made.nbytes / 2**20, 1), "torch_threads": torch.get_num_threads()}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
