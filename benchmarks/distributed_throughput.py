"""Training images/s: one process with every thread vs N data-parallel processes (gloo) with one each.

    .venv/bin/python benchmarks/distributed_throughput.py [--data ../shared/datasets/deeppcb] [--nproc 2]
        [--steps 24] [--batch 8] [--parallel-first] [--json FILE]

Both run the real `inspector train` (DeepPCB student mbv3-small, input 320, crops 256, the same global batch)
for two epochs of `--steps` steps; the second epoch is timed (the first fills the decode cache), from the
run's metrics.json (`train_img_per_s`, all ranks together). The load average is printed before each run:
on a shared machine the numbers are only comparable when run back to back.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_DEEPPCB = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "deeppcb"


def run(data: Path, out: Path, nproc: int, threads: int, steps: int, batch: int) -> dict:
    command = [sys.executable, "-m", "inspector.cli", "train", "--arch", "mbv3-small", "--data", str(data),
               "--out", str(out), "--epochs", "2", "--batch", str(batch), "--input-size", "320", "--crop-size",
               "256", "--max-steps", str(steps), "--eval-every", "2", "--val-fraction", "0.05", "--nproc", str(nproc)]
    # --nproc splits OMP_NUM_THREADS among the ranks: give it the total.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads * nproc)}
    load = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = json.loads((out / "metrics.json").read_text())
    return {"processes": nproc, "threads_each": threads, "global_batch": batch, "steps_timed": steps,
            "img_per_s": history[-1]["train_img_per_s"], "epoch_seconds": history[-1]["epoch_seconds"],
            "wall_seconds": round(time.perf_counter() - started, 1), "load_before": [round(x, 2) for x in load]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DEEPPCB)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--parallel-first", action="store_true", help="Run the N-process case first.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        cases = [(1, cores), (args.nproc, max(1, cores // args.nproc))]
        for nproc, threads in reversed(cases) if args.parallel_first else cases:
            row = run(args.data, Path(scratch) / f"p{nproc}", nproc, threads, args.steps, args.batch)
            rows.append(row)
            print(f"{row['processes']} process(es) x {row['threads_each']} thread(s), global batch "
                  f"{row['global_batch']}: {row['img_per_s']:.2f} img/s (epoch {row['epoch_seconds']} s; "
                  f"load before {row['load_before']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
