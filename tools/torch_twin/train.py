"""Train one detector with the torch twin on a CUDA GPU, within a time budget, into a run folder the CPU side
imports (``tools.torch_twin.import_run``).

This is the trainer of ``inspector.training.trainer`` with the model and the loss swapped for their PyTorch
twins: the same data pipeline (``inspector.data.loader.BatchLoader``: letterbox, pair augmentation, layouts),
AdamW with a global-norm clip of 10, one warm-up epoch then a cosine to 2 % of the learning rate, an EMA of
the weights that is validated and kept, the same validation metrics (``inspector.evaluation``: the official
DeepPCB metric first) and the same choice of the best epoch (``inspector.evaluation.improves``).

What differs, and why:
- The number of epochs can be set by ``--seconds``: the first epoch (the warm-up) is timed and the schedule
  is fixed to the epochs that fit, because a lent GPU is lent for minutes. The chosen number is written into
  the run's ``train_config.json``, so the run reads as an ordinary fixed schedule afterwards.
- Batches are made on the GPU from the training boards kept there (``--batches device``, the default;
  ``device_batches.py``: the loader's draws, bit-identical batches but for the noise field's values), or by worker
  processes (``--batches workers``, ``torch.utils.data``; needed for copy-paste). Every batch is still a pure
  function of (seed, epoch, position), as on the CPU.
- Validation inputs are prepared once and kept on the GPU.

Weights leave the GPU machine as numpy arrays under the Paddle parameter names (``best.npz``); nothing here
imports paddle (the GPU machine has none).

    python -m tools.torch_twin.train --data gpu_data/deeppcb --split gpu_data/split.json --out /tmp/runs/student \
        --arch mbv3-small --head gfl --input-mode gray-diff-s2d --seconds 150
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from inspector.data import load_dataset
from inspector.data.loader import BatchLoader
from inspector.data.split import split_dataset
from inspector.data.transforms import AugmentConfig, unletterbox_boxes
from inspector.evaluation import (EVAL_THRESHOLDS, EvalThresholds, ImageDetections, evaluate_samples, improves,
                                  recipe_thresholds)
from inspector.models.config import ModelConfig
from inspector.models.nms import DEFAULT_NMS, DEFAULT_NMS_THRESHOLD, NMS_METHODS
from inspector.training.config import TrainConfig
from inspector.training.records import SELECTION_KEYS, epoch_metrics, make_model_config
from tools.torch_twin.arrays import load_arrays
from tools.torch_twin.device_batches import DeviceBatches
from tools.torch_twin.model import build_torch_model, load_paddle_arrays, postprocess, to_paddle_arrays


def log(out: Path, message: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {message}"
    print(f"[{out.name}] {line}", flush=True)
    with (out / "train.log").open("a") as f:
        f.write(line + "\n")


class Schedule(torch.utils.data.Sampler):
    """Yields (epoch, step, plain_from_epoch) for the whole run; ``epochs`` and ``plain_from`` are set by the
    training loop once the first epoch has been timed (the workers read them with each item)."""

    def __init__(self, steps: int, epochs: int | None, plain_from: int | None):
        self.steps, self.epochs, self.plain_from = steps, epochs, plain_from

    def __iter__(self):
        epoch = 0
        while self.epochs is None or epoch < self.epochs:
            for step in range(self.steps):
                yield epoch, step, self.plain_from
            epoch += 1

    def __len__(self) -> int:  # only an upper bound is needed by the DataLoader
        return 10**9


class Batches(torch.utils.data.Dataset):
    """Item (epoch, step, plain_from) -> the loader's batch ``step`` of ``epoch`` (a pure function of them)."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader
        self._epoch, self._indices = None, None

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, item):
        epoch, step, plain_from = item
        if self._epoch != epoch:
            self._epoch, self._indices = epoch, self.loader._batch_indices(epoch)
        self.loader.plain_from_epoch = plain_from
        start, indices = self._indices[step]
        batch = self.loader._make_batch(indices, epoch, start)
        return torch.from_numpy(batch.images), batch.boxes, batch.classes


class EMA:
    """``inspector.training.ema.ModelEMA`` for a torch module: decay ramps up as decay * (1 - exp(-n / ramp))."""

    def __init__(self, model: torch.nn.Module, decay: float, ramp_steps: int = 2000):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.decay, self.ramp_steps, self.updates = decay, ramp_steps, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.ramp_steps))
        source = model.state_dict()
        averaged, current = [], []
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                averaged.append(value)
                current.append(source[name].detach())
            else:
                value.copy_(source[name])
        # the same mul, then add, in two multi-tensor kernels instead of two launches per tensor (~300 of them)
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, current, alpha=1.0 - d)


def learning_rate(step: int, steps_per_epoch: int, epochs: int, lr: float, warmup_epochs: float) -> float:
    """Paddle's LinearWarmup(0.01 lr -> lr) then CosineAnnealingDecay(lr -> 0.02 lr), as build_lr_schedule."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(warmup_epochs * steps_per_epoch))
    if step < warmup:
        return lr * 0.01 + (lr - lr * 0.01) * step / warmup
    t = min(step - warmup, total - warmup)
    return lr * 0.02 + (lr - lr * 0.02) * (1 + math.cos(math.pi * t / max(1, total - warmup))) / 2


def prepare_validation(val_set, cfg: TrainConfig, device) -> tuple[torch.Tensor, list, list]:
    loader = BatchLoader(val_set, 50, cfg.input_size, cfg.input_mode, train=False, workers=4)
    images, frames, keys = [], [], []
    for batch in loader:
        images.append(torch.from_numpy(batch.images))
        frames += [(float(s), (float(p[0]), float(p[1]))) for s, p in zip(batch.scales, batch.pads)]
        keys += batch.keys
    return torch.cat(images).to(device), frames, keys


@torch.no_grad()
def validate(model, model_config: ModelConfig, val_images, frames, val_set,
             thresholds: EvalThresholds = EVAL_THRESHOLDS) -> dict:
    """The paddle trainer's validation (``inspector.training.validate``) on the torch model: the same kept
    detections (``thresholds``: the run's recipe NMS), the same metrics, so best checkpoints compare."""
    model.eval()
    detections = []
    for start in range(0, len(val_images), 50):
        outputs = model(val_images[start:start + 50])
        for (boxes, scores, classes), (scale, pad) in zip(
                postprocess(outputs, model_config, thresholds.score_threshold, thresholds.nms_threshold,
                            thresholds.max_detections, thresholds.nms), frames[start:start + 50]):
            detections.append(ImageDetections(unletterbox_boxes(boxes, scale, pad), scores, classes))
    return evaluate_samples(val_set.samples, detections, val_set.class_names).to_dict()


def save_arrays(path: Path, model: torch.nn.Module, half: bool = False) -> None:
    arrays = to_paddle_arrays(model)
    if half:
        arrays = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in arrays.items()}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


class Objective:
    """The labels' loss; ``Distillation`` adds the teacher's terms."""

    def __init__(self, model_config: ModelConfig):
        self.cfg = model_config
        if model_config.head == "gfl":
            from tools.torch_twin.losses import gfl_loss as loss
        else:
            from tools.torch_twin.yolo_loss import yolo_loss as loss
        self._loss = loss

    def parameters(self) -> list:
        return []

    def losses(self, model, images, boxes, classes, epoch: int, epochs: int) -> dict:
        return self._loss(model(images), boxes, classes, self.cfg)


class Distillation(Objective):
    """GFL distillation from a trained teacher (its Paddle-named arrays), as inspector.compression.distill."""

    def __init__(self, model, model_config: ModelConfig, teacher_dir: Path, settings: dict, device):
        super().__init__(model_config)
        from tools.torch_twin.losses import FeatureAdapters, GFLDistillSettings, gfl_distill_losses

        teacher_config = ModelConfig.from_dict(json.loads((teacher_dir / "model_config.json").read_text()))
        self.teacher = build_torch_model(teacher_config).to(device).eval()
        load_paddle_arrays(self.teacher, load_arrays(teacher_dir))
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.settings = GFLDistillSettings.from_dict(settings)
        self._distill = gfl_distill_losses
        self.adapters = (FeatureAdapters(model.neck.out_channels, self.teacher.neck.out_channels).to(device)
                         if self.settings.feature_weight > 0 else None)

    def parameters(self) -> list:
        return list(self.adapters.parameters()) if self.adapters is not None else []

    def losses(self, model, images, boxes, classes, epoch: int, epochs: int) -> dict:
        with torch.no_grad():
            teacher_features = self.teacher.features(images)
            teacher_outputs = self.teacher.head(teacher_features)
        student_features = model.features(images)
        student_outputs = model.head(student_features)
        return self._distill(student_outputs, teacher_outputs, student_features, teacher_features, self.adapters,
                             boxes, classes, self.cfg, epoch, epochs, self.settings)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", required=True, help="split.json (keys relative to the dataset root)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--arch", default="mbv3-small")
    p.add_argument("--head", default="gfl")
    p.add_argument("--input-mode", default="gray-diff-s2d")
    p.add_argument("--input-size", type=int, default=320)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.004)
    p.add_argument("--epochs", type=int, default=None, help="fixed schedule (else --seconds decides)")
    p.add_argument("--epochs-from", type=Path, default=None,
                   help="wait for this run's train_config.json and take its epochs (distilled = alone's schedule)")
    p.add_argument("--seconds", type=float, default=None,
                   help="time budget for the whole schedule (the epochs that fit, timed on the second epoch)")
    p.add_argument("--max-epochs", type=int, default=400)
    p.add_argument("--aug-off-fraction", type=float, default=0.1)
    p.add_argument("--dihedral", action="store_true")
    p.add_argument("--copy-paste", type=float, default=0.0)
    p.add_argument("--ema-decay", type=float, default=0.9998)
    p.add_argument("--nms", choices=NMS_METHODS, default=DEFAULT_NMS,
                   help="NMS of validation and best-checkpoint choice (TrainConfig.nms; the package runs it)")
    p.add_argument("--nms-threshold", type=float, default=DEFAULT_NMS_THRESHOLD)
    p.add_argument("--batches", choices=("device", "workers"), default=None,
                   help="make the training batches on the device from boards kept there (default; not with "
                        "--copy-paste) or in --workers processes on the CPU")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--eval-seconds", type=float, default=20.0, help="validate at most this often (and at the end)")
    p.add_argument("--teacher", type=Path, default=None, help="distil from this run folder (best*.npz)")
    p.add_argument("--distill", default="{}", help="JSON of distillation settings (DistillConfig fields)")
    p.add_argument("--half-weights", action="store_true", help="write best.npz in float16 (large teachers)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    started = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    epochs = args.epochs
    if args.epochs_from is not None:
        source = args.epochs_from / "train_config.json"
        while not source.is_file():
            if not (args.epochs_from / "failed").exists():
                time.sleep(1.0)
                continue
            raise SystemExit(f"{args.epochs_from} failed: no schedule to copy")
        epochs = json.loads(source.read_text())["epochs"]
    aug_off = None
    cfg = TrainConfig(arch=args.arch, data=args.data, out=str(out), epochs=epochs or 1, batch_size=args.batch,
                      input_size=args.input_size, crop_size=None, input_mode=args.input_mode, head=args.head,
                      dihedral=args.dihedral, copy_paste=args.copy_paste, lr=args.lr, ema_decay=args.ema_decay,
                      seed=args.seed, workers=args.workers, nms=args.nms, nms_threshold=args.nms_threshold)
    thresholds = recipe_thresholds(cfg.to_dict())
    dataset = load_dataset(args.data)
    train_set, val_set = split_dataset(dataset, cfg.val_fraction, cfg.split_seed, args.split)
    model_config = make_model_config(cfg, train_set)
    (out / "model_config.json").write_text(json.dumps(model_config.to_dict(), indent=2))
    log(out, f"{len(train_set)} train / {len(val_set)} val, {args.arch} {args.head} {args.input_mode}, "
             f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'})")

    loader = BatchLoader(train_set, cfg.batch_size, cfg.input_size, cfg.input_mode, train=True, seed=cfg.seed,
                         crop_size=None, workers=0, augment=AugmentConfig(), pairs=cfg.pair_augment())
    with ThreadPoolExecutor(8) as pool:  # decode once here: the forked workers share the cache
        list(pool.map(loader._letterboxed, train_set.samples))
    steps = len(loader)
    schedule = Schedule(steps, epochs, None)
    if epochs is not None:
        aug_off = max(1, round(epochs * args.aug_off_fraction)) if args.aug_off_fraction > 0 else 0
        schedule.plain_from = epochs - aug_off if aug_off else None
    made_on = args.batches or ("workers" if args.copy_paste > 0 else "device")
    if made_on == "device":
        stream = device_stream(DeviceBatches(loader, device), schedule)
    else:
        batches = torch.utils.data.DataLoader(Batches(loader), batch_size=None, sampler=schedule,
                                              num_workers=args.workers, pin_memory=device.type == "cuda",
                                              prefetch_factor=4 if args.workers else None,
                                              persistent_workers=bool(args.workers),
                                              multiprocessing_context="fork" if args.workers else None)
        stream = iter(batches)  # the workers fork now, before this process touches CUDA
    val_images, frames, _ = prepare_validation(val_set, cfg, device)

    if args.teacher is not None:  # what inspector.compression.distill.DistillConfig reads back (import_run)
        (out / "distill_config.json").write_text(json.dumps({"teacher": str(args.teacher),
                                                              **json.loads(args.distill)}, indent=2))
    model = build_torch_model(model_config).to(device)
    objective = (Distillation(model, model_config, args.teacher, json.loads(args.distill), device)
                 if args.teacher is not None else Objective(model_config))
    params = list(model.parameters()) + objective.parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = EMA(model, cfg.ema_decay)
    history: list[dict] = []
    best: dict | None = None
    last_eval = time.perf_counter()
    sums: dict[str, float] = {}
    seen, epoch_start, step_in_run = 0, time.perf_counter(), 0
    log(out, f"ready after {time.perf_counter() - started:.1f} s; {steps} steps per epoch of {cfg.batch_size}, batches "
             f"made {'on the device' if made_on == 'device' else f'by {args.workers} workers'}")
    model.train()
    for epoch, step, images_boxes_classes in _numbered(stream, steps):
        images, boxes, classes = images_boxes_classes
        total_epochs = schedule.epochs or args.max_epochs
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step_in_run, steps, total_epochs, cfg.lr, cfg.warmup_epochs)
        images = images.to(device, non_blocking=True)
        losses = objective.losses(model, images, boxes, classes, epoch, total_epochs)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            (out / "failed").write_text(f"epoch {epoch + 1} step {step}: loss {float(loss)}")
            raise FloatingPointError(f"epoch {epoch + 1} step {step}: loss is {float(loss)}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        optimizer.step()
        ema.update(model)
        step_in_run += 1
        seen += len(images)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach() if torch.is_tensor(value) else value)
        if step + 1 < steps:
            continue
        # ---- end of an epoch
        elapsed = time.perf_counter() - epoch_start
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(elapsed, 2),
               "train_img_per_s": round(seen / elapsed, 1), "elapsed": round(time.perf_counter() - started, 1)}
        row.update({f"train_{k}": round(v / steps, 5) for k, v in sums.items()})
        if schedule.epochs is None and epoch == 1:  # fix the schedule to what fits the budget, timed on the
            # second epoch: the first also pays for the workers' start and cuDNN's autotuning (on the H200 it took
            # 32 s against 4-6 s for the next ones, and a schedule fitted on it used a third of the time it had)
            budget = (args.seconds or 60.0) - (time.perf_counter() - started) - 10.0
            fit = int(budget / elapsed) + 2
            schedule.epochs = max(2, min(args.max_epochs, fit))
            aug_off = max(1, round(schedule.epochs * args.aug_off_fraction)) if args.aug_off_fraction > 0 else 0
            schedule.plain_from = schedule.epochs - aug_off if aug_off else None
            cfg.epochs, cfg.aug_off_epochs = schedule.epochs, aug_off
            cfg.save(out / "train_config.json")
            log(out, f"epoch 2 took {elapsed:.1f} s: schedule fixed at {schedule.epochs} epochs "
                     f"(last {aug_off} without augmentation)")
        elif epoch == 0 and schedule.epochs is not None:
            cfg.epochs, cfg.aug_off_epochs = schedule.epochs, aug_off or 0
            cfg.save(out / "train_config.json")
        last = epoch + 1 == schedule.epochs
        if last or time.perf_counter() - last_eval >= args.eval_seconds:
            metrics = validate(ema.model, model_config, val_images, frames, val_set, thresholds)
            row.update(epoch_metrics(metrics))
            last_eval = time.perf_counter()
            if improves(row, best):
                best = {k: row[k] for k in SELECTION_KEYS}
                save_arrays(out / "best.npz", ema.model, half=args.half_weights)
                (out / "best.json").write_text(json.dumps({"epoch": epoch + 1, "metrics": metrics}, indent=2))
            log(out, f"epoch {epoch + 1}/{schedule.epochs}: loss {row.get('train_loss', 0):.4f} "
                     f"{row['train_img_per_s']} img/s  official AP {row['official_ap']:.4f} F {row['official_f']:.4f}"
                     f"  mAP50 {row['map50']:.4f} mAP50-95 {row['map50_95']:.4f}")
            model.train()
        history.append(row)
        (out / "metrics.json").write_text(json.dumps(history, indent=2))
        sums, seen, epoch_start = {}, 0, time.perf_counter()
        if last:
            break
    save_arrays(out / "last.npz", ema.model, half=args.half_weights)
    (out / "done").write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1), "best": best}))
    log(out, f"done in {time.perf_counter() - started:.0f} s; best {best}")


def device_stream(batches: DeviceBatches, schedule: Schedule):
    """The schedule's batches made on the device, read as the schedule is fixed (its epochs, its plain epochs)."""
    for epoch, step, plain_from in schedule:
        batches.loader.plain_from_epoch = plain_from
        yield batches.batch(epoch, step)


def _numbered(batches, steps: int):
    """(epoch, step, batch) over the DataLoader's stream."""
    for index, batch in enumerate(batches):
        yield index // steps, index % steps, batch


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        out = next((Path(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--out=")), None)
        if out is None and "--out" in sys.argv:
            out = Path(sys.argv[sys.argv.index("--out") + 1])
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / "failed").exists():
                import traceback

                (out / "failed").write_text(traceback.format_exc())
        raise
