"""`inspector train`: train a detector from labeled data on the CPU (all cores) or a GPU when Paddle has one.

Per epoch: a progress bar with loss and throughput, then validation of the EMA weights on the fixed split,
a row in metrics.csv/metrics.json, the `last` checkpoint (resumable) and `best` when the official DeepPCB AP
improves (ties, and runs resumed from before that metric existed: mAP@0.5:0.95; ``inspector.evaluation.selection``).
Ctrl-C saves `last` before exiting, so `--resume` continues from the start of the interrupted epoch.
With several ranks, Ctrl-C stops every rank after the same step and rank 0 saves `last` there the same way.

Under ``python -m paddle.distributed.launch`` (``inspector train --nproc N``) the same loop runs data-parallel:
``--batch`` is the global batch, sliced among the ranks; each rank detects on its share of the validation boards,
rank 0 scores them and alone writes (see ``inspector.training.distributed``). One process without the launcher
trains exactly as before.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import paddle
from tqdm import tqdm

from inspector.data import Dataset, load_dataset
from inspector.data.layouts import input_layout
from inspector.data.loader import BatchLoader
from inspector.data.transforms import AugmentConfig
from inspector.data.split import split_dataset
from inspector.evaluation import evaluate_samples, improves, recipe_thresholds
from inspector.models import ModelConfig, build_model, count_parameters
from inspector.training.checkpoint import PRUNED_SHAPES, STATE_FILE, Checkpoint, load_checkpoint, save_checkpoint
from inspector.training.config import TrainConfig
from inspector.training.distributed import (
    RanksStopped,
    StopOnSignal,
    World,
    all_reduce_mean,
    average_buffers,
    barrier,
    data_parallel,
    gather_on_main,
    init_world,
    local_batch_size,
    main_first,
    running_statistics,
    share_of,
)
from inspector.training.ema import ModelEMA
from inspector.training.package_init import PACKAGE_INIT_DIR, checkpoint_from_package, is_package
from inspector.training.plots import plot_training
from inspector.training.records import SELECTION_KEYS, describe_validation, epoch_metrics, make_model_config
from inspector.training.validate import predict_loader

log = logging.getLogger(__name__)


def select_device() -> str:
    """GPU when this Paddle build has CUDA and a GPU is visible, else CPU with every core."""
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        paddle.set_device("gpu")
        return "gpu"
    paddle.set_device("cpu")
    return "cpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def build_lr_schedule(cfg: TrainConfig, steps_per_epoch: int) -> paddle.optimizer.lr.LRScheduler:
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = min(total - 1, int(cfg.warmup_epochs * steps_per_epoch))
    cosine = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=cfg.lr, T_max=max(1, total - warmup),
                                                      eta_min=cfg.lr * 0.02)
    if warmup <= 0:
        return cosine
    return paddle.optimizer.lr.LinearWarmup(cosine, warmup_steps=warmup, start_lr=cfg.lr * 0.01, end_lr=cfg.lr)


class Objective:
    """What a training run minimises. This default is the detector's own loss against the labels.

    Distillation (``inspector.compression.distill``) subclasses it: the teacher's terms join the loss,
    the model takes the teacher's configuration (same anchors, so the head maps pair up), and feature
    adapters train along with the model. Only the model goes into ``best/`` and ``model.pdparams``;
    the extra layers are kept in ``last/``'s training state for resuming.
    """

    def model_config(self, cfg: TrainConfig, train_set: Dataset, start: Checkpoint | None = None) -> ModelConfig:
        """The new run's model; ``start`` is the ``--init`` checkpoint (its anchors are what its head learned;
        one with another head family lends only its backbone and neck, so the head is configured afresh)."""
        if start is not None and start.model_config.head == cfg.head:
            return start.model_config
        return make_model_config(cfg, train_set)

    def build_model(self, model_config: ModelConfig) -> paddle.nn.Layer:
        """A model of the run's architecture, for training and for validating the EMA weights.

        Pruning (``inspector.compression.prune``) overrides it: its model has fewer channels than
        ``build_model`` gives, and starts from the pruned weights.
        """
        return build_model(model_config)

    def extra_layers(self, model: paddle.nn.Layer) -> paddle.nn.Layer | None:
        """Layers optimised together with ``model`` but not part of it; called once per run."""
        return None

    def attach_loader(self, loader: BatchLoader, out: Path | None = None) -> None:
        """The run's training loader, before the first batch (distillation's teacher cache aligns its crops
        and reads whole boards from it); ``out``: the run's directory, where it may keep files while training."""

    def training_finished(self) -> None:
        """Every rank, after the last epoch (not after an interruption): drop what only a resume would need."""

    def observe_batch(self, batch) -> None:
        """The training batch whose tensors the next ``losses`` call gets (its keys and views)."""

    def losses(self, model: paddle.nn.Layer, images: paddle.Tensor, gt_boxes: paddle.Tensor,
               gt_classes: paddle.Tensor, epoch: int) -> dict[str, paddle.Tensor]:
        """Loss terms of one batch; key ``loss`` is what is minimised, the rest go to metrics.csv."""
        return model.loss(model(images), gt_boxes, gt_classes)

    def checkpoint_info(self) -> dict:
        """Extra provenance written into every checkpoint.json of the run."""
        return {}


def initial_checkpoint(cfg: TrainConfig, class_names: list[str], train_set: Dataset | None = None,
                       out: Path | None = None, world: World | None = None) -> Checkpoint:
    """The ``--init`` checkpoint, refused (ValueError naming the fields) unless it fits the run.

    Its head may be of another family (e.g. the shipped yolo-head model under a new gfl head): the run then
    starts from its backbone and neck only (``load_initial_weights``).

    ``--init`` may also name a model package (``package_init``): its network is recovered, in the run's
    input layout, into ``out/init-from-package`` (by the main rank; BatchNorm statistics measured on
    ``train_set``), and the run starts from that.
    """
    init = Path(cfg.init)
    if is_package(init):
        if train_set is None or out is None:
            raise ValueError(f"--init {init}: a model package can start a training run only")
        init = out / PACKAGE_INIT_DIR
        with main_first(world or World(rank=0, size=1)):
            if (world is None or world.is_main) and not (init / "checkpoint.json").is_file():
                checkpoint_from_package(cfg.init, init, train_set, input_mode=cfg.input_mode)
    start = load_checkpoint(init)
    config = start.model_config
    problems = [f"{name} {got!r} (init) vs {wanted!r} (this run)"
                for name, got, wanted in (("arch", config.arch, cfg.arch), ("input_size", config.input_size,
                                          cfg.input_size), ("input_mode", config.input_mode, cfg.input_mode))
                if got != wanted]
    if list(start.class_names) != list(class_names):
        problems.append(f"classes {start.class_names} (init) vs {list(class_names)} (the data)")
    if start.info.get(PRUNED_SHAPES):
        problems.append("it is a pruned model (continue its own run with `inspector prune --resume` instead)")
    if problems:
        raise ValueError(f"--init {start.path}: cannot start this run from it: {'; '.join(problems)}")
    return start


HEAD_PREFIX = "head."  # the parameters of a detector's head (``build_model``); the rest is backbone and neck


def load_initial_weights(model: paddle.nn.Layer, model_config: ModelConfig, start: Checkpoint) -> None:
    """``start``'s weights into ``model``: all of them, or, when its head is of another family, its backbone and
    neck (every one of them must fit: a partial body would train from a silently half-random start) while the
    new head keeps its random initialisation."""
    weights = start.build().state_dict()
    if start.model_config.head == model_config.head:
        model.set_state_dict(weights)
        log.info("initialised from %s (epoch %s)", start.path, start.info.get("epoch"))
        return
    own = model.state_dict()
    body = {name: tensor for name, tensor in own.items() if not name.startswith(HEAD_PREFIX)}
    unfit = [f"{name} {list(tensor.shape)} (this run) vs "
             f"{list(weights[name].shape) if name in weights else 'missing'} (init)"
             for name, tensor in body.items() if name not in weights or list(weights[name].shape) != list(tensor.shape)]
    if unfit:
        raise ValueError(f"--init {start.path}: its backbone and neck do not fit this run's model: "
                         f"{'; '.join(unfit[:5])}{f' and {len(unfit) - 5} more' if len(unfit) > 5 else ''}")
    model.set_state_dict({**own, **{name: weights[name] for name in body}})
    log.info("initialised backbone and neck from %s (epoch %s, %d tensors); its %s head is not this run's %s head, "
             "which starts from random weights", start.path, start.info.get("epoch"), len(body),
             start.model_config.head, model_config.head)


def train(cfg: TrainConfig, resume: bool = False, objective: Objective | None = None) -> Path:
    device = select_device()
    world = init_world()  # rank 0 of 1 unless started by paddle.distributed.launch
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if world.is_main:
        _log_to_file(out / "train.log")
    if resume:
        saved = TrainConfig.load(out / "train_config.json")
        if saved.epochs != cfg.epochs:
            log.info("resume: epochs %d -> %d", saved.epochs, cfg.epochs)
            saved.epochs = cfg.epochs
        saved.out = str(out)  # a run copied elsewhere continues where it now is
        cfg = saved
    elif (out / "last").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    barrier(world)  # every rank has read the saved configuration before rank 0 rewrites it
    if world.is_main:
        cfg.save(out / "train_config.json")

    seed_everything(cfg.seed)
    dataset = load_dataset(cfg.data, format=cfg.format)
    for problem in dataset.problems:
        log.warning("%s", problem)
    if input_layout(cfg.input_mode).needs_template and not dataset.has_templates:
        raise ValueError(f"{cfg.data}: input mode {cfg.input_mode} needs a template for every image")
    split_file = Path(cfg.split_file) if cfg.split_file else out / "split.json"
    with main_first(world):  # rank 0 may write split.json; the others read it
        train_set, val_set = split_dataset(dataset, cfg.val_fraction, cfg.split_seed, split_file)
    log.info("data: %d train / %d val images, %d classes, device %s, %s threads", len(train_set), len(val_set),
             len(dataset.class_names), device, os.environ.get("OMP_NUM_THREADS", "?"))
    if world.distributed:
        log.info("data parallel: %d ranks, global batch %d = %d per rank", world.size, cfg.batch_size,
                 local_batch_size(cfg.batch_size, world))

    train_loader = BatchLoader(train_set, cfg.batch_size, cfg.input_size, cfg.input_mode, train=True,
                               seed=cfg.seed, crop_size=cfg.crop_size, workers=cfg.workers,
                               augment=AugmentConfig() if cfg.augment else AugmentConfig.off(),
                               pairs=cfg.pair_augment(), plain_from_epoch=cfg.plain_from_epoch(),
                               rank=world.rank, ranks=world.size)
    # each rank detects on its share of the validation boards; rank 0 scores them all (distributed.py)
    val_loader = BatchLoader(share_of(val_set, world), cfg.batch_size, cfg.input_size, cfg.input_mode, train=False,
                             workers=cfg.workers)
    thresholds = recipe_thresholds(cfg.to_dict())
    steps_per_epoch = len(train_loader) if cfg.max_steps_per_epoch is None else min(len(train_loader),
                                                                                     cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_set)} training images are fewer than one batch of {cfg.batch_size}")

    objective = objective or Objective()
    objective.attach_loader(train_loader, out)
    start = None
    if resume:
        state = paddle.load(str(out / "last" / STATE_FILE))
        model_config = ModelConfig.from_dict(state["model_config"])
    else:
        state = None
        start = initial_checkpoint(cfg, dataset.class_names, train_set, out, world) if cfg.init else None
        model_config = objective.model_config(cfg, train_set, start)
    model = objective.build_model(model_config)
    if start is not None:  # fine-tuning: the EMA below starts from these weights too
        load_initial_weights(model, model_config, start)
    extra = objective.extra_layers(model)
    schedule = build_lr_schedule(cfg, steps_per_epoch)
    optimizer = paddle.optimizer.AdamW(learning_rate=schedule,
                                       parameters=model.parameters() + (extra.parameters() if extra else []),
                                       weight_decay=cfg.weight_decay, grad_clip=paddle.nn.ClipGradByGlobalNorm(10.0))
    ema = ModelEMA(model, decay=cfg.ema_decay)
    history: list[dict] = []
    start_epoch, best_map = 0, -1.0
    best_metrics: dict | None = None  # what best/ was chosen by (SELECTION_KEYS); None: no best/ yet
    if state is not None:
        model.set_state_dict(state["model"])
        if extra is not None:
            extra.set_state_dict(state["extra_layers"])
        optimizer.set_state_dict(_optimizer_state_from_portable(state["optimizer"], model, extra))
        schedule.set_state_dict(state["schedule"])
        ema.set_state_dict(state["ema"])
        start_epoch, best_map, history = state["epoch"], state["best_map"], state["history"]
        # A run saved before the official metric has only best_map: its best is compared by mAP@0.5:0.95.
        best_metrics = state.get("best_metrics") or ({"map50_95": best_map} if best_map >= 0 else None)
        log.info("resumed from epoch %d (best so far: %s)", start_epoch, best_metrics)
    log.info("model %s: %.2f M parameters, input %d (%s)", cfg.arch, count_parameters(model) / 1e6,
             cfg.input_size, cfg.input_mode)
    # Several ranks: the loss runs through paddle.DataParallel (gradients averaged in the backward pass).
    runner = (data_parallel(_ObjectiveStep(model, extra, objective), world, device, may_skip_layers=extra is not None)
              if world.distributed else None)
    trace = _StepTrace(out / "trace" / f"rank{world.rank}.jsonl") if os.environ.get(TRACE_VARIABLE) else None

    def save_last(next_epoch: int, interrupted: dict | None = None) -> None:
        train_state = {"model": model.state_dict(), "optimizer": _portable_optimizer_state(optimizer, model, extra),
                       "schedule": schedule.state_dict(), "ema": ema.state_dict(), "epoch": next_epoch,
                       "best_map": best_map, "best_metrics": best_metrics, "history": history,
                       "model_config": model_config.to_dict()}
        if extra is not None:
            train_state["extra_layers"] = extra.state_dict()
        save_checkpoint(out / "last", ema.shadow, model_config, dataset.class_names,
                        {"epoch": next_epoch, "train_config": cfg.to_dict(), **objective.checkpoint_info(),
                         **({"interrupted": interrupted} if interrupted else {})}, train_state)

    def synchronise_statistics() -> None:
        """BatchNorm running statistics (model, EMA, extra layers): one value for every rank (distributed.py)."""
        statistics = running_statistics(model)
        average_buffers(statistics, world)
        average_buffers({name: ema.shadow[name] for name in statistics if name in ema.shadow}, world)
        if extra is not None:
            average_buffers(running_statistics(extra), world)

    epoch = start_epoch
    # Several ranks: a stop request (the launcher's SIGTERM on Ctrl-C) ends every rank after the same step.
    stop = StopOnSignal(world) if world.distributed else None
    try:
        if stop is not None:
            stop.install()
        for epoch in range(start_epoch, cfg.epochs):
            row = _train_one_epoch(model, optimizer, schedule, ema, train_loader, epoch, cfg, steps_per_epoch,
                                   objective, runner, world, trace, stop)
            if world.distributed:
                synchronise_statistics()
            if trace is not None:
                trace.record_state(epoch, model, ema)
            validating = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
            if validating:  # every rank detects on its share of the boards
                eval_model = objective.build_model(model_config)
                ema.copy_to(eval_model)
                detections = gather_on_main(predict_loader(eval_model, val_loader, thresholds.score_threshold,
                                                           thresholds.nms_threshold, thresholds.max_detections,
                                                           thresholds.nms), world)
                if trace is not None:
                    trace.record_validation(epoch, [sample.key for sample in val_loader.dataset.samples])
            if not world.is_main:  # rank 0 scores and writes; the others wait for it
                history.append(row)
                barrier(world)
                continue
            if validating:
                result = evaluate_samples(val_set.samples, detections, dataset.class_names)
                row.update(epoch_metrics(result))
                log.info("epoch %d: %s", epoch + 1, describe_validation(row))
                if improves(row, best_metrics):
                    best_map, best_metrics = row["map50_95"], {key: row[key] for key in SELECTION_KEYS}
                    save_checkpoint(out / "best", ema.shadow, model_config, dataset.class_names,
                                    {"epoch": epoch + 1, "metrics": result.to_dict(), "train_config": cfg.to_dict(),
                                     **objective.checkpoint_info()})
                    plot_training(history + [row], out / "plots", result)
            history.append(row)
            _write_metrics(out, history)
            save_last(epoch + 1)
            barrier(world)
    except KeyboardInterrupt as interrupt:
        progress = None
        if isinstance(interrupt, RanksStopped):  # every rank is here, after the same step
            synchronise_statistics()
            progress = {"epoch": interrupt.epoch + 1, "completed_steps": interrupt.steps}
        if world.is_main:
            log.warning("interrupted during epoch %d%s: saving last checkpoint (resume repeats this epoch)", epoch + 1,
                        f" after step {progress['completed_steps']}" if progress else "")
            save_last(epoch, progress)
        raise
    finally:
        if stop is not None:
            stop.restore()
    objective.training_finished()
    if world.is_main:
        plot_training(history, out / "plots", None)
    return out


class _ObjectiveStep(paddle.nn.Layer):
    """The model and the objective's extra layers as one layer whose forward is the objective's loss terms.

    This is what ``paddle.DataParallel`` wraps: its reducer averages the gradients of every parameter of the
    layer it wraps, and an objective (distillation) computes its loss from more than ``model.forward``.
    """

    def __init__(self, model: paddle.nn.Layer, extra: paddle.nn.Layer | None, objective: Objective):
        super().__init__()
        self.model = model
        if extra is not None:
            self.extra = extra
        self._objective = objective

    def forward(self, images, gt_boxes, gt_classes, epoch: int) -> dict[str, paddle.Tensor]:
        return self._objective.losses(self.model, images, gt_boxes, gt_classes, epoch)


# Set to 1 to record, per rank and step, the sample keys, the loss and a digest of the weights in
# <run>/trace/rank<N>.jsonl: the check that ranks see disjoint samples and stay identical.
TRACE_VARIABLE = "INSPECTOR_TRAIN_TRACE"


class _StepTrace:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def record(self, epoch: int, step: int, keys: list[str], losses: dict, model: paddle.nn.Layer) -> None:
        """After a step: the trained weights (the running statistics differ among CPU ranks until the epoch ends)."""
        trained = [(name, p) for name, p in model.named_parameters() if not p.stop_gradient]
        self._write({"epoch": epoch, "step": step, "keys": list(keys), "loss": float(losses["loss"]),
                     "weights": _digest(trained)})

    def record_validation(self, epoch: int, keys: list[str]) -> None:
        """The validation boards this rank detected on."""
        self._write({"epoch": epoch, "validated": list(keys)})

    def record_state(self, epoch: int, model: paddle.nn.Layer, ema: ModelEMA) -> None:
        """At the end of an epoch: everything a checkpoint holds, the model's and the EMA's running statistics too."""
        self._write({"epoch": epoch, "state": _digest(list(model.state_dict().items())),
                     "ema": _digest(list(ema.shadow.items()))})

    def _write(self, entry: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def _digest(named: list) -> str:
    digest = hashlib.sha1()
    for name, value in named:
        digest.update(name.encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def _train_one_epoch(model, optimizer, schedule, ema, loader, epoch, cfg, steps,
                     objective: Objective | None = None, runner: paddle.nn.Layer | None = None,
                     world: World = World(), trace: _StepTrace | None = None,
                     stop: StopOnSignal | None = None) -> dict:
    """One epoch; ``runner``: the ``paddle.DataParallel``-wrapped ``_ObjectiveStep`` of a data-parallel run;
    ``stop``: its ranks' stop request, agreed on before every step (``RanksStopped`` then)."""
    objective = objective or Objective()
    model.train()
    if runner is not None:
        runner.train()
    loader.set_epoch(epoch)
    sums: dict[str, float] = {}
    seen, start = 0, time.perf_counter()
    bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", dynamic_ncols=True,
               disable=not world.is_main)
    for step, batch in enumerate(loader):
        if step >= steps:
            break
        if stop is not None and stop.agreed():
            raise RanksStopped(epoch, step)
        images = paddle.to_tensor(batch.images)
        objective.observe_batch(batch)
        if runner is None:
            losses = objective.losses(model, images, paddle.to_tensor(batch.boxes),
                                      paddle.to_tensor(batch.classes), epoch)
        else:
            losses = runner(images, paddle.to_tensor(batch.boxes), paddle.to_tensor(batch.classes), epoch)
        loss = losses["loss"]
        if not bool(paddle.isfinite(loss)):
            raise FloatingPointError(f"epoch {epoch + 1} step {step}: loss is {float(loss)}; lower --lr")
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        ema.update(model)
        if trace is not None:
            trace.record(epoch, step, batch.keys, losses, model)
        for key, value in losses.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        seen += len(batch.keys) * world.size  # every rank takes an equal slice of the global batch
        rate = seen / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{sums['loss'] / (step + 1):.3f}", lr=f"{optimizer.get_lr():.2e}", img_s=f"{rate:.1f}")
        bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - start
    sums = all_reduce_mean(sums, world)  # the global batch's loss terms: the mean of the ranks' means
    n = max(1, min(steps, len(loader)))
    row = {"epoch": epoch + 1, "lr": optimizer.get_lr(), "epoch_seconds": round(elapsed, 1),
           "train_img_per_s": round(seen / elapsed, 2)}
    row.update({f"train_{k}": round(v / n, 5) for k, v in sums.items()})
    return row


def _structured_parameters(model, extra=None) -> list:
    """(structured name, parameter) of the model, then of the extra layers under "extra."."""
    named = list(model.named_parameters())
    if extra is not None:
        named += [("extra." + name, p) for name, p in extra.named_parameters()]
    return named


def _portable_optimizer_state(optimizer, model, extra=None) -> dict:
    """Optimizer state keyed by structured parameter names ("backbone.stem.0.weight_moment1_0").

    Paddle keys it by global parameter names ("conv2d_1460.w_0_moment1_0") that depend on how many layers
    the process created before, so a checkpoint would not load into a model built in another order.
    """
    renames = {p.name + "_": name + "_" for name, p in _structured_parameters(model, extra)}
    portable = {}
    for key, value in optimizer.state_dict().items():
        prefix = max((old for old in renames if key.startswith(old)), key=len, default=None)
        portable[key if prefix is None else renames[prefix] + key[len(prefix):]] = value
    return portable


def _optimizer_state_from_portable(state: dict, model, extra=None) -> dict:
    renames = {name + "_": p.name + "_" for name, p in _structured_parameters(model, extra)}
    restored = {}
    for key, value in state.items():
        prefix = max((old for old in renames if key.startswith(old)), key=len, default=None)
        restored[key if prefix is None else renames[prefix] + key[len(prefix):]] = value
    return restored


def _write_metrics(out: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    tmp = out / "metrics.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    tmp.replace(out / "metrics.csv")
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(history, indent=2))
    tmp.replace(out / "metrics.json")


def _log_to_file(path: Path) -> None:
    """Send the package's log to this run's train.log (replacing the previous run's file handler)."""
    root = logging.getLogger("inspector")
    for old in [h for h in root.handlers if getattr(h, "_inspector_run_log", False)]:
        root.removeHandler(old)
        old.close()
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler._inspector_run_log = True
    root.addHandler(handler)
    root.setLevel(logging.INFO)
