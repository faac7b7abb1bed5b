"""Knowledge distillation: train a small student (MobileNetV3) to imitate a trained teacher (PP-YOLO).

``inspector distill --teacher RUN --student-arch mbv3-small --data DIR --out runs/NAME`` is an ordinary
training run (``inspector.training.trainer.train``: schedule, EMA, per-epoch validation, best/last
checkpoints, resume, Ctrl-C) whose loss adds the teacher's terms (a ``DistillationObjective``). ``best/``
and ``last/model.pdparams`` hold the student alone, so ``inspector eval`` and export treat the result
like any other run. ``last/state.pdparams`` also holds the feature adapters, for resuming.

The student copies the teacher's ``ModelConfig`` except for ``arch``: the same input size and mode (it
must see what the teacher sees), classes, strides and anchors. Both heads then produce the same maps,
channel for channel (``head.py``: per anchor ``[tx, ty, tw, th, obj, iou, cls...]``, all raw logits),
so they are compared directly.

Loss of one batch, with ``alpha = teacher_weight(epoch)`` moving linearly from ``alpha_start`` in the
first epoch to ``alpha_end`` in the last (more teacher early, more labels late):

    loss = (1 - alpha) * hard + alpha * (w_cls * cls + w_obj * obj + w_box * box + w_feat * feat)

- ``hard``: the detector's own PP-YOLO loss against the labels (``models/loss.py``), unchanged.
- ``cls``: ``T^2 * sum over cells of p_obj * sum over classes of KL(sigmoid(t/T) || sigmoid(s/T))``.
  The classes are independent sigmoids, not a softmax, so each class score is its own Bernoulli and
  the divergence is the binary KL per class (BCE against the teacher's softened probability minus that
  probability's entropy: the same gradient as BCE, and 0 at a match). A softmax KL across classes would invent
  a competition between classes the head never had, and on background cells, where all class scores are
  low, it would inflate noise into a confident distribution. ``p_obj`` is the teacher's objectness
  probability: class scores count only where there is an object; elsewhere the teacher's class logits
  were never trained and are noise. ``T^2`` keeps the gradient scale independent of ``T`` (Hinton 2015).
- ``obj``: ``sum over all cells of KL(sigmoid(t_obj) || sigmoid(s_obj))``: the teacher's objectness
  everywhere, its "this is background" on the thousands of empty cells included.
- ``box``: only where the teacher is confident (``sigmoid(t_obj) > confidence_threshold``), its box
  as the target: binary KL of the centre offsets ``sigmoid(tx)``, ``sigmoid(ty)``, L1 of the log scales
  ``tw``, ``th``, binary KL of the predicted-IoU channel. Elsewhere the teacher's boxes are untrained.
- ``feat`` (FitNets, Romero 2015): on each neck level, the MSE between the student feature mapped to
  the teacher's channels by a 1x1 conv adapter and the teacher feature, summed over levels. With
  ``feature_normalize`` both maps are first standardised per image and channel over the positions, so
  the term compares spatial patterns (it equals 2 * (1 - Pearson correlation) per channel), bounded
  and independent of each network's activation scale, which differs by orders of magnitude between a
  ResNet and a MobileNet and between levels.

The anchor-free GFL head (``head: gfl``) has its own terms, in ``gfl_distill.py``: localization distillation
of the box-side distributions (weighted by the teacher's quality score), the teacher's quality scores as soft
targets (quality focal), and a Pearson (``pkd``) or channel-wise (``cwd``) term on the neck, chosen by
``feature_method``. There ``cls_weight`` weighs the quality term, ``box_weight`` the LD term and
``feature_weight`` the neck term; ``obj_weight`` and ``confidence_threshold`` (YOLO objectness) are not read.
The loss has the same form, ``(1 - alpha) * hard + alpha * teacher terms``, with the GFL hard loss.
``schedule`` moves alpha linearly or along a half cosine, for either head.

``teacher_cache`` (either head; ``teacher_cache.py``): the teacher's maps computed once per training board and
dihedral orientation on the whole board and sliced for each crop, the crops aligned to the teacher's coarsest
stride. Needs ``dihedral`` (or no augmentation): the loader's own flips are not recorded per sample. The
targets then are the teacher's with the whole board around the crop, not its output on the bare crop.

Response terms are summed over the cells of an image and averaged over the batch, like the hard loss,
so the weights compare directly. Each term is exactly 0 when the student matches the teacher.
The teacher is frozen: eval mode (BatchNorm uses and keeps its running statistics), run under
``paddle.no_grad()``, every parameter ``stop_gradient``.

PaddleSlim: the adapters are ``paddleslim.dygraph.dist`` ``ShapeAlign("1x1conv")``, exactly FitNets'
adapter. Its losses do not fit: ``KLLoss``/``DMLLoss`` with ``act="sigmoid"`` compute ``p log(p/q)`` of
the positive outcome only, which is not a divergence for Bernoulli outputs (it keeps falling as the
student's probability rises past the teacher's), and its ``MSELoss`` is ``paddle.nn.MSELoss``. Its
``Distill`` wrapper hooks named sublayers and expects one tensor per hook, while our neck returns a
list, and it patches paddle's functional API globally; the objective here calls ``features`` and
``head`` directly instead.

The split: the student is validated on the same images as the teacher and never trains on the
teacher's validation images. When the teacher's run has a ``split.json`` and the data holds any of its
images, that split (restricted to the images present) is copied into the student's run; images the
teacher never saw go to train. Otherwise (a bare checkpoint, other data) a split is drawn from
``--split-seed`` as ``inspector train`` would, with a warning.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddleslim.dygraph.dist.losses.distillation_loss import ShapeAlign

from inspector.compression.gfl_distill import (check_gfl_pair, gfl_feature_loss,
                                               gfl_response_losses, scheduled_weight)
from inspector.compression.distill_config import DISTILL_CONFIG_FILE, DistillConfig  # noqa: F401 (re-exported)
from inspector.compression.teacher_cache import KEPT_STORES, TeacherCache, TeacherView, retire_stores, store_for
from inspector.data import DataError, Dataset, load_dataset
from inspector.data.loader import BatchLoader
from inspector.data.split import relative_key, write_split
from inspector.models import ModelConfig, parse_arch
from inspector.models.head import split_level
from inspector.training.checkpoint import INFO_FILE, MODEL_FILE, Checkpoint, load_checkpoint
from inspector.training.config import TrainConfig
from inspector.training.trainer import Objective, train

log = logging.getLogger(__name__)

RESPONSE_KEYS = ("distill_cls", "distill_obj", "distill_box")
TEACHER_CACHE_DIR = "teacher-cache"  # in the distillation run's directory while it trains (teacher_cache.py)


def teacher_weight(epoch: int, epochs: int, alpha_start: float, alpha_end: float) -> float:
    """alpha of 0-based ``epoch`` out of ``epochs``: ``alpha_start`` first, ``alpha_end`` last, linear between."""
    return scheduled_weight(epoch, epochs, alpha_start, alpha_end, "linear")


def binary_kl_with_logits(student_logits: paddle.Tensor, teacher_logits: paddle.Tensor) -> paddle.Tensor:
    """Elementwise KL(Bernoulli(sigmoid(t)) || Bernoulli(sigmoid(s))), the gradient of BCE (sigmoid(s) - sigmoid(t)).

    Written with log sigmoid(x) = -softplus(-x) and log(1 - sigmoid(x)) = -softplus(x) rather than logs of
    probabilities: exactly 0 where s == t, and no log of a probability that rounds to 0 or 1 in float32 (the
    confident cells' large logits), so no clipping.
    """
    p = F.sigmoid(teacher_logits)
    return (p * (F.softplus(-student_logits) - F.softplus(-teacher_logits))
            + (1.0 - p) * (F.softplus(student_logits) - F.softplus(teacher_logits)))


def _per_image_sum(term: paddle.Tensor) -> paddle.Tensor:
    """Sum over everything but the batch axis, then average over the batch (as the hard loss does)."""
    return term.reshape([term.shape[0], -1]).sum(axis=1).mean()


def response_losses(
    student_outputs: list[paddle.Tensor],
    teacher_outputs: list[paddle.Tensor],
    cfg: ModelConfig,
    temperature: float,
    confidence_threshold: float,
) -> dict[str, paddle.Tensor]:
    """``distill_cls``, ``distill_obj``, ``distill_box`` between raw head maps of the same layout ``cfg``."""
    if len(student_outputs) != len(teacher_outputs):
        raise ValueError(f"student has {len(student_outputs)} output levels, the teacher {len(teacher_outputs)}")
    terms: dict[str, list[paddle.Tensor]] = {key: [] for key in RESPONSE_KEYS}
    for level, (student_map, teacher_map) in enumerate(zip(student_outputs, teacher_outputs)):
        if list(student_map.shape) != list(teacher_map.shape):
            raise ValueError(f"level {level}: student map {list(student_map.shape)} vs teacher map "
                             f"{list(teacher_map.shape)}; the heads must share anchors, classes and input size")
        s = split_level(student_map, cfg.num_anchors, cfg.num_classes, cfg.iou_aware)
        t = split_level(teacher_map.detach(), cfg.num_anchors, cfg.num_classes, cfg.iou_aware)
        teacher_obj = F.sigmoid(t.obj)  # (B, A, H*W)

        cls = binary_kl_with_logits(s.cls / temperature, t.cls / temperature).sum(axis=-1)
        terms["distill_cls"].append(temperature**2 * _per_image_sum(cls * teacher_obj))

        terms["distill_obj"].append(_per_image_sum(binary_kl_with_logits(s.obj, t.obj)))

        confident = (teacher_obj > confidence_threshold).astype("float32")
        box = (binary_kl_with_logits(s.tx, t.tx) + binary_kl_with_logits(s.ty, t.ty)
               + paddle.abs(s.tw - t.tw) + paddle.abs(s.th - t.th))
        if s.iou is not None:
            box = box + binary_kl_with_logits(s.iou, t.iou)
        terms["distill_box"].append(_per_image_sum(box * confident))
    return {key: paddle.add_n(values) for key, values in terms.items()}


class FeatureAdapters(nn.Layer):
    """Per neck level a 1x1 conv from the student's channels to the teacher's (PaddleSlim's ShapeAlign)."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int]) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"student neck has {len(student_channels)} levels, the teacher's {len(teacher_channels)}")
        self.levels = nn.LayerList([ShapeAlign("1x1conv", int(s), int(t))
                                    for s, t in zip(student_channels, teacher_channels)])

    def forward(self, features: list[paddle.Tensor]) -> list[paddle.Tensor]:
        return [adapter(x) for adapter, x in zip(self.levels, features)]


def _standardise(x: paddle.Tensor, eps: float = 1e-6) -> paddle.Tensor:
    """Zero mean, unit variance per image and channel over the spatial positions of (B, C, H, W)."""
    mean = x.mean(axis=[2, 3], keepdim=True)
    variance = ((x - mean) ** 2).mean(axis=[2, 3], keepdim=True)
    return (x - mean) / paddle.sqrt(variance + eps)


def feature_loss(adapted_student: list[paddle.Tensor], teacher_features: list[paddle.Tensor],
                 normalize: bool = True) -> paddle.Tensor:
    """FitNets hint: sum over levels of the mean squared difference (of standardised maps if ``normalize``)."""
    terms = []
    for level, (s, t) in enumerate(zip(adapted_student, teacher_features)):
        if list(s.shape) != list(t.shape):
            raise ValueError(f"level {level}: adapted student feature {list(s.shape)} vs teacher {list(t.shape)}")
        t = t.detach()
        if normalize:
            s, t = _standardise(s), _standardise(t)
        terms.append(F.mse_loss(s, t))
    return paddle.add_n(terms)


def freeze(model: nn.Layer) -> nn.Layer:
    """Eval mode (BatchNorm reads its running statistics and never updates them), no parameter gradients."""
    model.eval()
    for parameter in model.parameters():
        parameter.stop_gradient = True
    return model


def student_model_config(teacher: Checkpoint, student_arch: str) -> ModelConfig:
    """The teacher's model configuration with the student's architecture (same input, classes, anchors)."""
    return ModelConfig.from_dict({**teacher.model_config.to_dict(), "arch": student_arch},
                                 source=f"student of {teacher.path}")


DISTILLABLE_HEADS = ("yolo", "gfl")


def check_teacher_head(teacher: Checkpoint) -> None:
    """A head these losses can read: ``yolo`` (``response_losses``) or ``gfl`` (``gfl_distill``)."""
    head = teacher.model_config.head
    if head not in DISTILLABLE_HEADS:
        raise ValueError(f"{teacher.path}: model config head {head!r}: distillation reads the heads "
                         f"{DISTILLABLE_HEADS} only")


def check_student_input(cfg: TrainConfig, teacher: Checkpoint) -> None:
    """The student must see exactly the teacher's input; ValueError otherwise."""
    expected = teacher.model_config
    if cfg.input_size != expected.input_size:
        raise ValueError(f"--input-size {cfg.input_size} differs from the teacher's {expected.input_size} "
                         f"({teacher.path}): the student must see the teacher's input; leave --input-size out")
    if cfg.input_mode != expected.input_mode:
        raise ValueError(f"--input-mode {cfg.input_mode} differs from the teacher's {expected.input_mode} "
                         f"({teacher.path}): the student must see the teacher's input; leave --input-mode out")


class DistillationObjective(Objective):
    """The training objective of a distillation run (see the module docstring for the formulation)."""

    def __init__(self, teacher: Checkpoint, config: DistillConfig, epochs: int) -> None:
        check_teacher_head(teacher)
        self.teacher_checkpoint = teacher
        self.teacher = freeze(teacher.build())
        self.config = config
        self.epochs = epochs
        self.adapters: FeatureAdapters | None = None
        self.cache: TeacherCache | None = None
        self.cache_root: Path | None = None
        self._views: list[TeacherView | None] | None = None

    def model_config(self, cfg: TrainConfig, train_set: Dataset, start: Checkpoint | None = None) -> ModelConfig:
        if list(train_set.class_names) != list(self.teacher_checkpoint.class_names):
            raise ValueError(f"{cfg.data} has classes {train_set.class_names}, the teacher "
                             f"({self.teacher_checkpoint.path}) {self.teacher_checkpoint.class_names}")
        config = student_model_config(self.teacher_checkpoint, cfg.arch)
        # its head maps must pair with the teacher's; a head of another family starts afresh (backbone and neck kept)
        if start is not None and start.model_config.head == config.head and start.model_config != config:
            given = start.model_config.to_dict()
            differing = [name for name, value in config.to_dict().items() if given.get(name) != value]
            raise ValueError(f"--init {start.path}: its model differs from the teacher's in {differing}; a student "
                             f"that starts from it must share the teacher's anchors, strides and head")
        if config.head == "gfl":
            check_gfl_pair(config, self.teacher_checkpoint.model_config, source=str(self.teacher_checkpoint.path))
        return config

    def extra_layers(self, model: nn.Layer) -> nn.Layer | None:
        if self.config.feature_weight == 0:
            return None
        self.adapters = FeatureAdapters(model.neck.out_channels, self.teacher.neck.out_channels)
        return self.adapters

    def attach_loader(self, loader: BatchLoader, out: Path | None = None) -> None:
        """With ``teacher_cache``: crops aligned to the teacher's coarsest cell, views recorded, the cache built
        (with ``out``: its entries also kept on disk in ``out/teacher-cache``, shared by the ranks and by a resumed
        run, removed when training finishes; with ``teacher_cache_dir``: there instead, kept for later runs)."""
        if not self.config.teacher_cache:
            return
        augment = loader.augment
        if augment is not None and (augment.flip_horizontal or augment.flip_vertical or augment.rotate90):
            raise ValueError("teacher_cache: the loader's own flips and quarter turns are not recorded per sample, so "
                             "no crop could be served from the cache; train with dihedral (it replaces them, and is "
                             "recorded) or without augmentation")
        teacher_cfg = self.teacher_checkpoint.model_config
        block = teacher_cfg.layout.block
        with_features = self.config.feature_weight > 0
        store = None
        kept = self.config.teacher_cache_dir
        if kept is not None or out is not None:
            root = Path(kept) if kept is not None else Path(out) / TEACHER_CACHE_DIR
            self.cache_root = None if kept is not None else root  # only the run's own store is removed at the end
            store = store_for(root, self.teacher_checkpoint.path / MODEL_FILE, teacher_cfg.strides, block,
                              with_features, layout=loader.input_mode)
            if kept is not None:
                for retired, held in retire_stores(store):
                    log.info("teacher cache: removed %s (%.1f MB): a kept root holds the stores of the %d most "
                             "recently used teachers", retired, held / 2**20, KEPT_STORES)
                known = sum(1 for _ in store.glob("*.npz"))
                log.info("teacher cache: %s (kept across runs; %d boards x orientations stored)", store, known)
        cache = TeacherCache(self.teacher_forward, loader.full_input, teacher_cfg.strides, block,
                             with_features=with_features, max_bytes=self.config.teacher_cache_mb << 20, store=store,
                             board_version=loader.board_version)
        if loader.crop_size is not None and (loader.crop_size * block) % cache.alignment:
            raise ValueError(f"teacher_cache: crop_size {loader.crop_size} must be a multiple of the teacher's "
                             f"coarsest stride {max(teacher_cfg.strides)}")
        loader.crop_align = cache.alignment
        loader.record_views = True
        self.cache = cache

    def training_finished(self) -> None:
        """The disk store served the ranks and would serve a resume; a finished run needs neither (GBs)."""
        if self.cache_root is not None:
            shutil.rmtree(self.cache_root, ignore_errors=True)  # every rank tries; whichever is first removes it

    def observe_batch(self, batch) -> None:
        views = getattr(batch, "views", None)
        self._views = ([TeacherView(*view) if view is not None else None for view in views]
                       if self.cache is not None and views is not None else None)

    def teacher_outputs(self, images: paddle.Tensor) -> tuple[list[paddle.Tensor] | None, list[paddle.Tensor]]:
        """The teacher's (neck features or None, head maps) for this batch: from the cache when it has the
        batch's views, else a forward pass."""
        if self.cache is not None and self._views is not None:
            return self.cache.outputs(images, self._views)
        return self.teacher_forward(images)

    def _cache_terms(self) -> dict[str, paddle.Tensor]:
        if self.cache is None:
            return {}
        stats = self.cache.stats
        looked_up = max(stats.hits + stats.misses, 1)
        return {"teacher_cache_hit_rate": paddle.full([], stats.hit_rate, dtype="float32"),
                "teacher_cache_from_store": paddle.full([], stats.from_store / looked_up, dtype="float32")}

    def alpha(self, epoch: int) -> float:
        return scheduled_weight(epoch, self.epochs, self.config.alpha_start, self.config.alpha_end,
                                self.config.schedule)

    def losses(self, model: nn.Layer, images: paddle.Tensor, gt_boxes: paddle.Tensor, gt_classes: paddle.Tensor,
               epoch: int) -> dict[str, paddle.Tensor]:
        if model.cfg.head == "gfl":
            return self.gfl_losses(model, images, gt_boxes, gt_classes, epoch)
        c = self.config
        teacher_features, teacher_outputs = self.teacher_outputs(images)
        student_features = model.features(images)
        student_outputs = model.head(student_features)

        hard = model.loss(student_outputs, gt_boxes, gt_classes)
        response = response_losses(student_outputs, teacher_outputs, model.cfg, c.temperature, c.confidence_threshold)
        if self.adapters is not None:
            feat = feature_loss(self.adapters(student_features), teacher_features, c.feature_normalize)
        else:
            feat = paddle.zeros([], dtype="float32")
        teacher_terms = (c.cls_weight * response["distill_cls"] + c.obj_weight * response["distill_obj"]
                         + c.box_weight * response["distill_box"] + c.feature_weight * feat)
        return self._combined(hard, response, feat, teacher_terms, epoch)

    def _combined(self, hard: dict, response: dict, feat: paddle.Tensor, teacher_terms: paddle.Tensor,
                  epoch: int) -> dict[str, paddle.Tensor]:
        """``(1 - alpha) * hard + alpha * teacher_terms`` with every part kept for logging (both heads)."""
        alpha = self.alpha(epoch)
        losses = {"loss": (1.0 - alpha) * hard["loss"] + alpha * teacher_terms, "loss_hard": hard["loss"]}
        losses.update({key: value for key, value in hard.items() if key != "loss"})
        losses.update(response)
        losses["distill_feat"] = feat
        losses["distill_alpha"] = paddle.full([], alpha, dtype="float32")
        losses.update(self._cache_terms())
        return losses

    def teacher_forward(self, images: paddle.Tensor) -> tuple[list[paddle.Tensor] | None, list[paddle.Tensor]]:
        """The frozen teacher on ``images``: (neck features, or None when no feature term reads them; head maps)."""
        with paddle.no_grad():
            features = self.teacher.features(images)
            return (features if self.config.feature_weight > 0 else None), self.teacher.head(features)

    def gfl_losses(self, model: nn.Layer, images: paddle.Tensor, gt_boxes: paddle.Tensor, gt_classes: paddle.Tensor,
                   epoch: int) -> dict[str, paddle.Tensor]:
        """The GFL head's loss: ``(1 - alpha) * hard + alpha * (w_cls * quality + w_box * LD + w_feat * neck)``."""
        c = self.config
        teacher_features, teacher_outputs = self.teacher_outputs(images)
        student_features = model.features(images)
        student_outputs = model.head(student_features)
        hard = model.loss(student_outputs, gt_boxes, gt_classes)
        response = gfl_response_losses(student_outputs, teacher_outputs, model.cfg, c.temperature)
        if self.adapters is not None:
            feat = gfl_feature_loss(self.adapters(student_features), teacher_features, c.feature_method,
                                    c.feature_temperature)
        else:
            feat = paddle.zeros([], dtype="float32")
        teacher_terms = (c.cls_weight * response["distill_quality"] + c.box_weight * response["distill_ld"]
                         + c.feature_weight * feat)
        return self._combined(hard, response, feat, teacher_terms, epoch)

    def checkpoint_info(self) -> dict:
        return {"distillation": {**self.config.to_dict(), "teacher_checkpoint": str(self.teacher_checkpoint.path),
                                 "teacher_arch": self.teacher_checkpoint.model_config.arch,
                                 "teacher_epoch": self.teacher_checkpoint.info.get("epoch")}}


def teacher_split_file(teacher: Checkpoint) -> Path | None:
    """The split file of the teacher's training run, if it has one."""
    configured = (teacher.info.get("train_config") or {}).get("split_file")
    for candidate in ([Path(configured)] if configured else []) + [teacher.path.parent / "split.json"]:
        if candidate.is_file():
            return candidate
    return None


def adopt_teacher_split(dataset: Dataset, teacher: Checkpoint, split_file: Path) -> dict | None:
    """Write the teacher's train/val split, restricted to ``dataset``'s samples, to ``split_file``.

    Returns the teacher split's ``{"seed", "val_fraction", "source"}``, or None (nothing written) when
    the teacher has no split file or it shares no validation image with ``dataset``.
    """
    source = teacher_split_file(teacher)
    if source is None:
        return None
    try:
        content = json.loads(source.read_text())
        teacher_train, teacher_val = set(content["train"]), set(content["val"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{source}: not a readable split file with 'train' and 'val' key lists ({error})") from error
    present = {relative_key(sample.key, dataset.root) for sample in dataset.samples}
    val = sorted(present & teacher_val)
    if not val:  # other data, or only the teacher's training images: nothing to validate on
        return None
    train_keys = sorted(present & teacher_train)
    seed = content.get("seed", 0)
    val_fraction = content.get("val_fraction", 0.2)
    write_split(Path(split_file), seed, val_fraction, train_keys, val)
    return {"seed": seed, "val_fraction": val_fraction, "source": str(source)}


def distill(cfg: TrainConfig, config: DistillConfig) -> Path:
    """A new distillation run in ``cfg.out``; ``cfg.arch`` is the student. Returns the run directory."""
    out = Path(cfg.out)
    if (out / "last").exists():
        raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose a new --out")
    parse_arch(cfg.arch)
    teacher = load_checkpoint(Path(config.teacher))
    check_teacher_head(teacher)
    check_student_input(cfg, teacher)
    if cfg.split_file is None:
        adopted = adopt_teacher_split(load_dataset(cfg.data, format=cfg.format), teacher, out / "split.json")
        if adopted is not None:
            log.info("split: the teacher's, from %s", adopted["source"])
            cfg = replace(cfg, split_seed=adopted["seed"], val_fraction=adopted["val_fraction"])
        else:
            log.warning("split: the teacher (%s) has no split.json covering %s; drawing one from seed %d, so the "
                        "student may train on images the teacher was validated on", teacher.path, cfg.data,
                        cfg.split_seed)
    out.mkdir(parents=True, exist_ok=True)
    config.save(out / DISTILL_CONFIG_FILE)
    return train(cfg, objective=DistillationObjective(teacher, config, cfg.epochs))


def resume_distillation(out: Path, epochs: int | None = None) -> Path:
    """Continue the distillation run in ``out`` from its ``last/`` checkpoint (optionally to ``epochs``)."""
    out = Path(out)
    config_file = out / DISTILL_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing; {out} is not a distillation run "
                                "(continue a plain training run with `inspector train --resume`)")
    if not (out / "last" / INFO_FILE).is_file():
        raise FileNotFoundError(f"{out / 'last'}: no checkpoint to resume from; start the run again without --resume")
    config = DistillConfig.load(config_file)
    cfg = TrainConfig.load(out / "train_config.json")
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    teacher = load_checkpoint(Path(config.teacher))
    check_student_input(cfg, teacher)
    recorded = json.loads((out / "last" / INFO_FILE).read_text()).get("distillation", {}).get("teacher_epoch")
    if recorded != teacher.info.get("epoch"):
        log.warning("teacher %s is now its epoch %s, the run started with epoch %s: the student continues against "
                    "a different teacher", teacher.path, teacher.info.get("epoch"), recorded)
    return train(cfg, resume=True, objective=DistillationObjective(teacher, config, cfg.epochs))
