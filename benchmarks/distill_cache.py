"""Distillation throughput with and without the teacher-output cache, and how close a cached crop is to a fresh
teacher pass on that crop.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_cache.py --data ../shared/datasets/deeppcb \\
        --steps 6 --images 48 [--teacher RUN] [--agreement-model RUN]

Throughput: the same distillation steps (student forward + backward + AdamW step, gfl head, dihedral crops
aligned to the teacher's coarsest stride) three ways: a teacher forward in every step (no cache); the cache
cold (every board and orientation seen for the first time: one whole-board teacher pass per row, the worst
case); the cache warm (every row served from it, the steady state once each board's 8 orientations were met).
A real run sits between: the hit rate over E epochs with uniform dihedral draws is 1 - 8 (1 - (7/8)^E) / E
per board (printed), plus copy-pasted rows, which always get a fresh pass.

Measured (2-core VM shared with other jobs, load average ~11, so +-40 %; 32 DeepPCB trainval boards, untrained
ppyolo-r18 gfl teacher, mbv3-small student, 320 gray-diff-s2d, crops 256, batch 8, 1 thread), three runs:
no cache 0.57 / 1.03 / 0.67 img/s, cold 0.79 / 0.63 / 0.43, warm 5.9 / 3.4 / 4.7. A miss costs a whole-board
pass (320^2 vs the crop's 256^2: 1.56x); the last run's seconds per image (1.49 none, 2.33 cold, 0.21 warm) break
even at a hit rate of 0.40, i.e. about 10 epochs with dihedral draws; at 16 epochs (hit rate 0.56) 1.3x the
uncached speed, at 60 epochs (0.87) 3x, and without dihedral draws (one orientation per board: 1 - 1/E) 4x at 16.

Agreement: for aligned crops of validation-size boards, the max |cached - fresh| over all cells and over the
cells at least ``--margin`` cells from the crop's edge, per level, relative to the maps' largest value. The
teacher (``--teacher``: a run or checkpoint; default an untrained PP-YOLO ResNet18 gfl teacher) and, for a
trained network's receptive field, ``--agreement-model`` (any gfl run, e.g. a trained student).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import paddle

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.compression.distill import DistillationObjective, DistillConfig  # noqa: E402
from inspector.compression.teacher_cache import TeacherView, crop_agreement  # noqa: E402
from inspector.data import load_dataset  # noqa: E402
from inspector.data.augment import PairAugmentConfig  # noqa: E402
from inspector.data.loader import BatchLoader  # noqa: E402
from inspector.data.synth import write_deeppcb  # noqa: E402
from inspector.data.transforms import AugmentConfig  # noqa: E402
from inspector.models import ModelConfig, build_model  # noqa: E402
from inspector.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402


def expected_hit_rate(epochs: int) -> float:
    """Per board, uniform over 8 orientations: the share of E visits that find their orientation cached."""
    return 1.0 - 8.0 * (1.0 - (7.0 / 8.0) ** epochs) / epochs


def teacher_checkpoint(args, class_names: list[str], scratch: Path) -> Checkpoint:
    if args.teacher:
        return load_checkpoint(Path(args.teacher))
    cfg = ModelConfig(arch="ppyolo-r18", num_classes=len(class_names), input_size=args.input_size,
                      input_mode=args.input_mode, head="gfl")
    paddle.seed(0)
    save_checkpoint(scratch / "teacher", build_model(cfg).state_dict(), cfg, class_names, {"epoch": 0})
    return load_checkpoint(scratch / "teacher")


def steps_per_second(objective, student, optimizer, loader, steps: int, use_cache: bool, warm: bool) -> dict:
    """img/s of ``steps`` distillation steps; the cache reset (cold) or pre-filled (warm) first."""
    if objective.cache is not None:
        objective.cache._entries.clear()
        objective.cache._bytes = 0
        objective.cache.stats.__init__()
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == steps:
            break
    if use_cache and warm:  # fill: every board/orientation these batches use
        for batch in batches:
            objective.observe_batch(batch)
            objective.teacher_outputs(paddle.to_tensor(batch.images))
        objective.cache.stats.__init__()
    seen, start = 0, time.perf_counter()
    for batch in batches:
        images = paddle.to_tensor(batch.images)
        if use_cache:
            objective.observe_batch(batch)
        else:
            objective._views = None
        losses = objective.losses(student, images, paddle.to_tensor(batch.boxes), paddle.to_tensor(batch.classes), 0)
        losses["loss"].backward()
        optimizer.step()
        optimizer.clear_grad()
        seen += len(batch.keys)
    elapsed = time.perf_counter() - start
    stats = objective.cache.stats if objective.cache is not None and use_cache else None
    return {"img_per_s": round(seen / elapsed, 2), "seconds": round(elapsed, 1), "images": seen,
            "hit_rate": None if stats is None else round(stats.hit_rate, 3)}


def agreement(model_path: str | None, checkpoint: Checkpoint | None, dataset, args, crops: int) -> dict:
    """Cached crop vs fresh pass on the crop, for the teacher (or another gfl network)."""
    source = load_checkpoint(Path(model_path)) if model_path else checkpoint
    model = source.build()
    model.eval()
    cfg = source.model_config
    block = cfg.layout.block

    def forward(images):
        with paddle.no_grad():
            return None, model(images)

    loader = BatchLoader(dataset, 1, cfg.input_size, cfg.input_mode, train=True, seed=7,
                         crop_size=args.crop_size, augment=AugmentConfig.off(), workers=0,
                         pairs=PairAugmentConfig(dihedral=True))
    from inspector.compression.teacher_cache import TeacherCache

    cache = TeacherCache(forward, loader.full_input, cfg.strides, block)
    loader.crop_align, loader.record_views = cache.alignment, True
    worst = {"max_abs": 0.0, "interior_max_abs": 0.0, "scale": 0.0}
    margins = [args.margin * 4, args.margin * 2, args.margin]  # the same distance in pixels on each level
    interior_means = []
    for index, batch in enumerate(loader):
        if index == crops:
            break
        view = TeacherView(*batch.views[0])
        images = paddle.to_tensor(batch.images)
        _, cached = cache.outputs(images, [view])
        _, fresh = forward(images)
        result = crop_agreement([c.numpy() for c in cached], [f.numpy() for f in fresh], margins)
        for key in worst:
            worst[key] = max(worst[key], result[key])
        c, f = cached[0].numpy(), fresh[0].numpy()
        m = margins[0]
        interior_means.append(float(np.abs(c - f)[..., m:-m, m:-m].mean()) if c.shape[-1] > 2 * m else float("nan"))
    return {"model": str(source.path), "arch": cfg.arch, "crops": crops, "margin_cells_stride8": margins[0],
            "max_abs": round(worst["max_abs"], 4), "interior_max_abs": round(worst["interior_max_abs"], 4),
            "map_max_abs": round(worst["scale"], 3),
            "interior_mean_abs_stride8": round(float(np.nanmean(interior_means)), 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="labeled boards (default: 24 synthetic boards in a temporary directory)")
    parser.add_argument("--teacher", help="gfl teacher run or checkpoint (default: untrained ppyolo-r18 gfl)")
    parser.add_argument("--agreement-model", help="another gfl run whose cached crops are compared too")
    parser.add_argument("--input-size", type=int, default=320)
    parser.add_argument("--input-mode", default="gray-diff-s2d")
    parser.add_argument("--crop-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--images", type=int, default=32, help="boards used (the first N of the data)")
    parser.add_argument("--agreement-crops", type=int, default=8)
    parser.add_argument("--margin", type=int, default=2, help="interior: cells of stride 32 from the crop's edge")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="distill_cache_"))
    data = Path(args.data) if args.data else write_deeppcb(scratch / "boards", n=24, seed=0)
    dataset = load_dataset(data)
    dataset = dataset.subset([sample.key for sample in dataset.samples[: args.images]])
    checkpoint = teacher_checkpoint(args, dataset.class_names, scratch)
    if args.teacher is None:
        args.input_size, args.input_mode = checkpoint.model_config.input_size, checkpoint.model_config.input_mode

    objective = DistillationObjective(checkpoint, DistillConfig(teacher=str(checkpoint.path), teacher_cache=True),
                                      epochs=1)
    from inspector.training.config import TrainConfig

    student_cfg = objective.model_config(TrainConfig(arch="mbv3-small", data=str(data), out=str(scratch / "s"),
                                                     input_size=args.input_size, input_mode=args.input_mode,
                                                     head="gfl"), dataset)
    student = build_model(student_cfg)
    student.train()
    extra = objective.extra_layers(student)
    optimizer = paddle.optimizer.AdamW(learning_rate=1e-3, parameters=student.parameters()
                                       + (extra.parameters() if extra else []))
    loader = BatchLoader(dataset, args.batch, args.input_size, args.input_mode, train=True, seed=0,
                         crop_size=args.crop_size, augment=AugmentConfig(), workers=1,
                         pairs=PairAugmentConfig(dihedral=True))
    objective.attach_loader(loader)
    steps_per_second(objective, student, optimizer, loader, 1, False, False)  # warm-up (allocations)

    results = {"threads": os.environ.get("OMP_NUM_THREADS"), "teacher": checkpoint.model_config.arch,
               "input": f"{args.input_size} {args.input_mode}", "crop": args.crop_size, "batch": args.batch,
               "steps": args.steps}
    results["no_cache"] = steps_per_second(objective, student, optimizer, loader, args.steps, False, False)
    results["cache_cold"] = steps_per_second(objective, student, optimizer, loader, args.steps, True, False)
    results["cache_warm"] = steps_per_second(objective, student, optimizer, loader, args.steps, True, True)
    results["expected_hit_rate_by_epochs"] = {e: round(expected_hit_rate(e), 3) for e in (6, 16, 30, 60, 150)}
    results["cache_mb_per_board_orientation"] = round(objective.cache.nbytes / max(1, len(objective.cache)) / 2**20, 3)
    results["agreement_teacher"] = agreement(None, checkpoint, dataset, args, args.agreement_crops)
    if args.agreement_model:
        results["agreement_other"] = agreement(args.agreement_model, None, dataset, args, args.agreement_crops)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
