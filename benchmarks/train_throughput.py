"""Training throughput (images/s) of each detector on this machine, and what the CPU levers buy.

    .venv/bin/python benchmarks/train_throughput.py [--data DIR] [--archs mbv3-small,ppyolo-r18] [--heads yolo,gfl]
        [--steps 8]

For every (arch, head, input size, crop) it runs a few warm-up steps, then times `--steps` full training steps
(forward, loss, backward, AdamW update) with the real loader (decode cache warm). Data: the DeepPCB set
beside the repository when present, else synthetic boards. Prints a table; `--json FILE` saves it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))

import paddle  # noqa: E402

from inspector.data import load_dataset  # noqa: E402
from inspector.data.loader import BatchLoader  # noqa: E402
from inspector.data.synth import write_deeppcb  # noqa: E402
from inspector.models import ModelConfig, build_model  # noqa: E402
from inspector.training.trainer import select_device  # noqa: E402

SHARED_DEEPPCB = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "deeppcb"


def time_training_steps(arch: str, dataset, input_size: int, crop: int | None, batch: int, steps: int,
                        warmup: int = 2, head: str = "yolo") -> float:
    cfg = ModelConfig(arch=arch, num_classes=len(dataset.class_names), input_size=input_size,
                      input_mode="image+template", head=head)
    model = build_model(cfg)
    model.train()
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=model.parameters())
    loader = BatchLoader(dataset, batch, input_size, "image+template", train=True, crop_size=crop)
    batches = iter(loader)
    elapsed, images = 0.0, 0
    for step in range(warmup + steps):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        start = time.perf_counter()
        losses = model.loss(model(paddle.to_tensor(batch.images)), paddle.to_tensor(batch.boxes),
                            paddle.to_tensor(batch.classes))
        losses["loss"].backward()
        optimizer.step()
        optimizer.clear_grad()
        if step >= warmup:
            elapsed += time.perf_counter() - start
            images += len(batch.keys)
    return images / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SHARED_DEEPPCB if SHARED_DEEPPCB.is_dir() else None)
    parser.add_argument("--archs", default="mbv3-small,mbv3-large,ppyolo-r18")
    parser.add_argument("--heads", default="yolo", help="comma-separated: yolo, gfl")
    parser.add_argument("--configs", default="320:256,320:0,416:0",
                        help="input:crop pairs (crop 0 = whole image)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    device = select_device()
    if args.data is None:
        args.data = Path(tempfile.mkdtemp()) / "synth"
        write_deeppcb(args.data, n=4 * args.batch, seed=0)
    dataset = load_dataset(args.data)
    dataset.samples = dataset.samples[: 8 * args.batch]  # enough distinct images; keeps the cache small
    rows = []
    print(f"device {device}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, batch {args.batch}, data {args.data}")
    print(f"{'arch':<14}{'head':>5}{'input':>6}{'crop':>6}{'img/s':>9}")
    for arch in args.archs.split(","):
        for head in args.heads.split(","):
            for pair in args.configs.split(","):
                input_size, crop = (int(v) for v in pair.split(":"))
                rate = time_training_steps(arch, dataset, input_size, crop or None, args.batch, args.steps, head=head)
                rows.append({"arch": arch, "head": head, "input_size": input_size, "crop": crop or None,
                             "img_per_s": round(rate, 2), "device": device,
                             "threads": int(os.environ["OMP_NUM_THREADS"]), "batch": args.batch})
                print(f"{arch:<14}{head:>5}{input_size:>6}{crop or '-':>6}{rate:>9.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
