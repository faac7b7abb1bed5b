"""Distillation (inspector.compression.distill): the loss terms on crafted tensors, a frozen teacher, the
weight schedule, the split shared with the teacher, and tiny `inspector distill` runs (CLI, eval, resume)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.compression.distill import (DistillationObjective, DistillConfig, FeatureAdapters,
                                           adopt_teacher_split, binary_kl_with_logits, distill, feature_loss,
                                           response_losses, resume_distillation, teacher_weight)
from inspector.data import load_dataset
from inspector.data.synth import write_deeppcb
from inspector.models import ModelConfig, build_model
from inspector.models.head import OBJ, TW, channels_per_anchor
from inspector.training import trainer as trainer_module
from inspector.data.split import split_dataset
from inspector.training.checkpoint import load_checkpoint, save_checkpoint
from inspector.training.config import TrainConfig

INPUT = 64  # teacher and student input side: tiny, so the whole file runs in well under a minute
NUM_CLASSES = 3


# ---------------------------------------------------------------- loss terms on crafted tensors

def crafted_outputs(cfg: ModelConfig, seed: int = 0) -> list[paddle.Tensor]:
    """Random raw head maps for a batch of 2; anchor 0 of cell 0 is confidently an object on every level."""
    rng = np.random.default_rng(seed)
    k = channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    maps = []
    for stride in cfg.strides:
        side = cfg.input_size // stride
        values = rng.normal(0.0, 2.0, (2, cfg.num_anchors, k, side, side)).astype(np.float32)
        values[:, :, OBJ] = -6.0  # background everywhere ...
        values[:, 0, OBJ, 0, 0] = 6.0  # ... except one confident anchor per level
        maps.append(paddle.to_tensor(values.reshape(2, cfg.num_anchors * k, side, side)))
    return maps


def with_change(maps: list[paddle.Tensor], cfg: ModelConfig, channel: int, anchor: int, cell: tuple[int, int],
                delta: float) -> list[paddle.Tensor]:
    """A copy of ``maps`` with one field of one anchor and cell changed on every level."""
    k = channels_per_anchor(cfg.num_classes, cfg.iou_aware)
    changed = []
    for m in maps:
        values = m.numpy().copy()
        values[:, anchor * k + channel, cell[0], cell[1]] += delta
        changed.append(paddle.to_tensor(values))
    return changed


@pytest.fixture
def head_cfg() -> ModelConfig:
    return ModelConfig(arch="mbv3-small", num_classes=NUM_CLASSES, input_size=INPUT)


def responses(student, teacher, cfg, temperature=2.0) -> dict[str, float]:
    return {k: float(v) for k, v in response_losses(student, teacher, cfg, temperature, 0.5).items()}


def test_response_terms_vanish_when_the_student_equals_the_teacher(head_cfg):
    teacher = crafted_outputs(head_cfg)
    student = [paddle.to_tensor(m.numpy()) for m in teacher]
    for key, value in responses(student, teacher, head_cfg).items():
        assert value == 0.0, (key, value)


def test_binary_kl_is_the_bernoulli_divergence_with_the_bce_gradient():
    teacher = paddle.to_tensor(np.array([-30.0, -6.0, 0.0, 2.5, 30.0], np.float32))
    student = paddle.to_tensor(np.array([-29.0, -4.0, 1.0, 2.5, 20.0], np.float32), stop_gradient=False)
    kl = binary_kl_with_logits(student, teacher)
    kl.sum().backward()
    p, q = (1 / (1 + np.exp(-x.numpy().astype(np.float64))) for x in (teacher, student))
    expected = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    np.testing.assert_allclose(kl.numpy(), expected, rtol=1e-4, atol=1e-7)  # no blow-up at |logit| 30
    assert kl.numpy()[3] == 0.0
    np.testing.assert_allclose(student.grad.numpy(), q - p, rtol=1e-5, atol=1e-7)


def test_each_response_term_reacts_to_its_own_fields(head_cfg):
    teacher = crafted_outputs(head_cfg)
    first_class = 6  # iou-aware layout: [tx, ty, tw, th, obj, iou, cls...]

    cls_changed = responses(with_change(teacher, head_cfg, first_class, 0, (0, 0), 3.0), teacher, head_cfg)
    assert cls_changed["distill_cls"] > 1e-3 and abs(cls_changed["distill_box"]) < 1e-5

    obj_changed = responses(with_change(teacher, head_cfg, OBJ, 1, (1, 1), 4.0), teacher, head_cfg)
    assert obj_changed["distill_obj"] > 1e-3 and abs(obj_changed["distill_box"]) < 1e-5

    # A box counts only where the teacher is confident (anchor 0, cell 0), not on background cells.
    confident_box = responses(with_change(teacher, head_cfg, TW, 0, (0, 0), 0.5), teacher, head_cfg)
    assert confident_box["distill_box"] == pytest.approx(3 * 2 * 0.5 / 2, rel=1e-4)  # |dtw| per level and image
    background_box = responses(with_change(teacher, head_cfg, TW, 1, (1, 1), 0.5), teacher, head_cfg)
    assert abs(background_box["distill_box"]) < 1e-5


def test_class_term_is_scaled_by_temperature_squared_and_weighted_by_teacher_objectness(head_cfg):
    teacher = crafted_outputs(head_cfg)
    first_class = 6
    on_object = with_change(teacher, head_cfg, first_class, 0, (0, 0), 2.0)
    on_background = with_change(teacher, head_cfg, first_class, 1, (1, 1), 2.0)
    # The same change of a class logit matters where the teacher sees an object, hardly on background.
    assert responses(on_background, teacher, head_cfg)["distill_cls"] < 0.05 * responses(on_object, teacher,
                                                                                          head_cfg)["distill_cls"]
    # A large temperature makes the binary KL ~ (ds)^2 / (8 T^2); times T^2 it stays ~ (ds)^2 / 8 per class.
    hot = responses(on_object, teacher, head_cfg, temperature=50.0)["distill_cls"]
    obj = 1 / (1 + np.exp(-6.0))
    assert hot == pytest.approx(3 * 2 * obj * 2.0**2 / 8 / 2, rel=0.02)


def test_feature_loss_vanishes_at_a_match_and_normalisation_ignores_scale():
    rng = np.random.default_rng(1)
    teacher = [paddle.to_tensor(rng.normal(size=(2, 8, s, s)).astype(np.float32)) for s in (8, 4, 2)]
    assert float(feature_loss(teacher, teacher, normalize=False)) == 0.0
    assert float(feature_loss(teacher, teacher, normalize=True)) < 1e-6
    scaled = [3.0 * t + 1.0 for t in teacher]  # same spatial pattern, other activation scale
    assert float(feature_loss(scaled, teacher, normalize=True)) < 1e-5
    assert float(feature_loss(scaled, teacher, normalize=False)) > 1.0
    other = [paddle.to_tensor(rng.normal(size=(2, 8, s, s)).astype(np.float32)) for s in (8, 4, 2)]
    assert float(feature_loss(other, teacher, normalize=True)) > 1.0  # ~2 per level for unrelated maps

    adapters = FeatureAdapters([4, 4, 4], [8, 8, 8])
    student = [paddle.to_tensor(rng.normal(size=(2, 4, s, s)).astype(np.float32)) for s in (8, 4, 2)]
    assert [list(a.shape) for a in adapters(student)] == [list(t.shape) for t in teacher]


def test_teacher_weight_moves_linearly_from_start_to_end():
    schedule = [teacher_weight(e, 5, 0.7, 0.3) for e in range(5)]
    np.testing.assert_allclose(schedule, [0.7, 0.6, 0.5, 0.4, 0.3], atol=1e-9)
    assert teacher_weight(0, 1, 0.7, 0.3) == 0.7  # a one-epoch run uses the start weight
    assert teacher_weight(9, 5, 0.7, 0.3) == pytest.approx(0.3)  # past the end (resume with fewer epochs)
    with pytest.raises(ValueError, match="alpha_end"):
        DistillConfig(teacher="t", alpha_end=1.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillConfig(teacher="t", temperature=0.0)
    with pytest.raises(ValueError, match="unknown distillation option"):
        DistillConfig.from_dict({"teacher": "t", "temprature": 2.0})


# ---------------------------------------------------------------- with a real (tiny) teacher

@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return write_deeppcb(tmp_path_factory.mktemp("synth") / "boards", n=12, seed=3, size=160)


def run_config(data: Path, out: Path, arch: str, **overrides) -> TrainConfig:
    values = dict(arch=arch, data=str(data), out=str(out), epochs=2, batch_size=4, input_size=INPUT,
                  crop_size=None, input_mode="image+template", lr=3e-3, warmup_epochs=0.0, val_fraction=0.25,
                  split_seed=5, workers=0, seed=1, max_steps_per_epoch=1)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def teacher_run(synth_data, tmp_path_factory) -> Path:
    """An untrained PP-YOLO (ResNet18) teacher laid out as `inspector train` leaves a run: best/ and
    split.json. Training it, even briefly, would cost most of this file's time budget."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    cfg = run_config(synth_data, run, "ppyolo-r18", epochs=1)
    dataset = load_dataset(synth_data)
    split_dataset(dataset, cfg.val_fraction, cfg.split_seed, run / "split.json")
    model_config = ModelConfig(arch="ppyolo-r18", num_classes=len(dataset.class_names), input_size=INPUT,
                               input_mode="image+template")
    save_checkpoint(run / "best", build_model(model_config).state_dict(), model_config, dataset.class_names,
                    {"epoch": 1, "train_config": cfg.to_dict()})
    return run


@pytest.mark.slow
def test_teacher_is_frozen_and_only_the_student_and_adapters_learn(teacher_run, synth_data):
    teacher_checkpoint = load_checkpoint(teacher_run)
    objective = DistillationObjective(teacher_checkpoint, DistillConfig(teacher=str(teacher_run)), epochs=4)
    dataset = load_dataset(synth_data)
    student = build_model(objective.model_config(run_config(synth_data, Path("unused"), "mbv3-small"), dataset))
    assert student.cfg.anchors == teacher_checkpoint.model_config.anchors  # the head maps pair up
    adapters = objective.extra_layers(student)
    student.train()
    teacher_before = {k: v.numpy().copy() for k, v in objective.teacher.state_dict().items()}
    student_bn_before = {k: v.numpy().copy() for k, v in student.state_dict().items() if k.endswith("_mean")}

    rng = np.random.default_rng(0)
    images = paddle.to_tensor(rng.random((2, 6, INPUT, INPUT), dtype=np.float32))
    boxes = paddle.to_tensor(np.array([[[8, 8, 24, 20]], [[30, 30, 50, 44]]], np.float32))
    classes = paddle.to_tensor(np.array([[0], [2]], np.int64))
    losses = objective.losses(student, images, boxes, classes, epoch=0)
    losses["loss"].backward()

    assert not objective.teacher.training
    assert all(p.grad is None for p in objective.teacher.parameters())
    for k, v in objective.teacher.state_dict().items():  # weights and BatchNorm running statistics
        np.testing.assert_array_equal(v.numpy(), teacher_before[k], err_msg=k)
    assert any(not np.allclose(v.numpy(), student_bn_before[k]) for k, v in student.state_dict().items()
               if k in student_bn_before)  # the student's BatchNorm did update (train mode)
    trainable = [p for p in student.parameters() if not p.stop_gradient]  # BatchNorm statistics are not
    assert all(p.grad is not None for p in trainable)
    # Non-zero from the head down to the stem (some residual branches start at exactly zero gradient:
    # their last BatchNorm gamma is initialised to 0).
    for layer in (student.head.predictions[0], student.backbone.stem.conv):
        assert float(layer.weight.grad.abs().sum()) > 0
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in adapters.parameters())

    # The weighting: (1 - alpha) * labels + alpha * teacher terms, alpha 0.7 in the first epoch.
    teacher_terms = sum(float(losses[k]) for k in ("distill_cls", "distill_obj", "distill_box", "distill_feat"))
    assert float(losses["distill_alpha"]) == pytest.approx(0.7)
    assert float(losses["loss"]) == pytest.approx(0.3 * float(losses["loss_hard"]) + 0.7 * teacher_terms, rel=1e-5)

    # --feature-weight 0: no adapters to train, no feature term.
    without_features = DistillationObjective(teacher_checkpoint, DistillConfig(teacher=str(teacher_run),
                                                                                feature_weight=0.0), epochs=4)
    assert without_features.extra_layers(student) is None
    assert float(without_features.losses(student, images, boxes, classes, epoch=3)["distill_feat"]) == 0.0


def test_the_student_keeps_the_teachers_split(teacher_run, synth_data, tmp_path):
    teacher_checkpoint = load_checkpoint(teacher_run)
    teacher_split = json.loads((teacher_run / "split.json").read_text())
    dataset = load_dataset(synth_data)

    assert adopt_teacher_split(dataset, teacher_checkpoint, tmp_path / "all.json") is not None
    assert json.loads((tmp_path / "all.json").read_text())["val"] == teacher_split["val"]

    dropped = teacher_split["val"][0]  # data lacking one validation image: the rest of the split holds
    subset = dataset.subset({s.key for s in dataset.samples if not s.key.endswith(dropped)})
    adopt_teacher_split(subset, teacher_checkpoint, tmp_path / "subset.json")
    assert json.loads((tmp_path / "subset.json").read_text())["val"] == teacher_split["val"][1:]

    only_train = dataset.subset({s.key for s in dataset.samples if not any(s.key.endswith(v)
                                                                           for v in teacher_split["val"])})
    assert adopt_teacher_split(only_train, teacher_checkpoint, tmp_path / "none.json") is None


@pytest.mark.slow
def test_cli_distill_writes_a_normal_run_that_eval_reads(teacher_run, synth_data, tmp_path):
    runner = CliRunner()
    run = tmp_path / "student"
    result = runner.invoke(app, ["distill", "--teacher", str(teacher_run), "--student-arch", "mbv3-small",
                                 "--data", str(synth_data), "--out", str(run), "--epochs", "2", "--batch", "4",
                                 "--max-steps", "1"])
    assert result.exit_code == 0, result.output

    checkpoint = load_checkpoint(run)
    teacher_config = load_checkpoint(teacher_run).model_config
    assert checkpoint.path.name == "best" and checkpoint.model_config.arch == "mbv3-small"
    assert checkpoint.model_config.to_dict() == {**teacher_config.to_dict(), "arch": "mbv3-small"}
    weights = paddle.load(str(checkpoint.path / "model.pdparams"))
    assert set(weights) == set(build_model(checkpoint.model_config).state_dict())  # the student alone
    checkpoint.build()
    assert checkpoint.info["distillation"]["teacher_arch"] == "ppyolo-r18"
    assert json.loads((run / "split.json").read_text())["val"] == json.loads((teacher_run / "split.json")
                                                                             .read_text())["val"]
    state = paddle.load(str(run / "last" / "state.pdparams"))
    assert len(state["extra_layers"]) == 6  # three 1x1 adapters (weight, bias), kept for resuming

    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for key in ("train_loss", "train_loss_hard", "train_loss_obj", "train_distill_cls", "train_distill_obj",
                "train_distill_box", "train_distill_feat", "train_distill_alpha", "map50_95"):
        assert key in rows[0], key
    assert [float(r["train_distill_alpha"]) for r in rows] == pytest.approx([0.7, 0.3])

    report = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", str(synth_data), "--model", str(run), "--split", "val", "--json",
                                 str(report)])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["n_images"] == 3


@pytest.mark.slow
def test_distillation_can_start_from_a_trained_student_with_the_teachers_head(teacher_run, synth_data, tmp_path):
    common = ["distill", "--teacher", str(teacher_run), "--student-arch", "mbv3-small", "--data", str(synth_data),
              "--epochs", "1", "--batch", "4", "--max-steps", "1"]
    runner = CliRunner()
    first = tmp_path / "first"
    assert runner.invoke(app, common + ["--out", str(first)]).exit_code == 0
    result = runner.invoke(app, common + ["--out", str(tmp_path / "again"), "--init", str(first), "--lr", "1e-12"])
    assert result.exit_code == 0, result.output
    before = paddle.load(str(first / "best" / "model.pdparams"))
    after = paddle.load(str(tmp_path / "again" / "last" / "model.pdparams"))
    name = next(n for n in before if n.endswith(".weight") and before[n].ndim == 4)
    np.testing.assert_allclose(after[name].numpy(), before[name].numpy(), atol=1e-6)

    # A student with other anchors cannot pair its head maps with the teacher's: refused, the field named.
    shutil.copytree(first / "best", tmp_path / "other-anchors")
    info = json.loads((tmp_path / "other-anchors" / "checkpoint.json").read_text())
    info["model_config"]["anchors"][0][0] = [99.0, 99.0]
    (tmp_path / "other-anchors" / "checkpoint.json").write_text(json.dumps(info))
    result = runner.invoke(app, common + ["--out", str(tmp_path / "refused"), "--init",
                                          str(tmp_path / "other-anchors")])
    assert result.exit_code == 2 and "differs from the teacher's in ['anchors']" in result.output, result.output


def test_cli_refuses_a_student_input_other_than_the_teachers(teacher_run, synth_data, tmp_path):
    runner = CliRunner()
    common = ["distill", "--teacher", str(teacher_run), "--student-arch", "mbv3-small", "--data", str(synth_data)]
    result = runner.invoke(app, common + ["--out", str(tmp_path / "a"), "--input-size", str(2 * INPUT)])
    assert result.exit_code == 2 and "differs from the teacher's 64" in result.output
    result = runner.invoke(app, common + ["--out", str(tmp_path / "b"), "--input-mode", "image"])
    assert result.exit_code == 2 and "--input-mode image differs" in result.output
    result = runner.invoke(app, common + ["--out", str(tmp_path / "c"), "--student-arch", "mbv4"])
    assert result.exit_code == 2 and "unknown architecture" in result.output
    result = runner.invoke(app, ["distill", "--out", str(tmp_path / "d")])
    assert result.exit_code == 2 and "--teacher, --student-arch, --data needed" in result.output
    assert not (tmp_path / "a" / "last").exists()


@pytest.mark.slow
def test_resume_after_interrupt_matches_an_uninterrupted_run(teacher_run, synth_data, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "plot_training", lambda *args: None)  # half the time; tested elsewhere
    config = DistillConfig(teacher=str(teacher_run))
    straight = distill(run_config(synth_data, tmp_path / "straight", "mbv3-small"), config)

    real_epoch = trainer_module._train_one_epoch

    def interrupted_in_epoch_two(*args, **kwargs):
        if args[5] == 1:  # epoch
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the second epoch
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "_train_one_epoch", interrupted_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        distill(run_config(synth_data, tmp_path / "resumed", "mbv3-small"), config)
    assert load_checkpoint(tmp_path / "resumed" / "last").info["epoch"] == 1
    monkeypatch.setattr(trainer_module, "_train_one_epoch", real_epoch)

    resumed = resume_distillation(tmp_path / "resumed")
    for name in ("model.pdparams", "state.pdparams"):
        a = paddle.load(str(straight / "last" / name))
        b = paddle.load(str(resumed / "last" / name))
        a, b = (a, b) if name == "model.pdparams" else (a["extra_layers"], b["extra_layers"])
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
    assert len(json.loads((resumed / "metrics.json").read_text())) == 2
    with pytest.raises(FileExistsError, match="--resume"):
        distill(run_config(synth_data, tmp_path / "resumed", "mbv3-small"), config)
