"""Distillation of the anchor-free GFL head (inspector.compression.gfl_distill and its use by distill.py): the
terms on crafted tensors, a frozen teacher, the weight schedules, refusals naming the fields, a tiny
`inspector distill` run with a GFL teacher, and the pipeline's distilled stage with the gfl head."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import paddle
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.compression.distill import DistillationObjective, DistillConfig, FeatureAdapters, distill
from inspector.compression.gfl_distill import (channel_wise_loss, check_gfl_pair, gfl_feature_loss,
                                               gfl_response_losses, localization_distillation,
                                               pearson_feature_loss, quality_distillation, scheduled_weight)
from inspector.data import load_dataset
from inspector.data.split import split_dataset
from inspector.data.synth import write_deeppcb
from inspector.models import ModelConfig, build_model
from inspector.models.gfl_head import gfl_channels
from inspector.training.checkpoint import load_checkpoint, save_checkpoint
from inspector.training.config import TrainConfig

INPUT = 64
NUM_CLASSES = 3
REG_MAX = 7


def gfl_config(**overrides) -> ModelConfig:
    values = dict(arch="mbv3-small", num_classes=NUM_CLASSES, input_size=INPUT, input_mode="image+template",
                  head="gfl", reg_max=REG_MAX)
    return ModelConfig(**{**values, **overrides})


def crafted_maps(cfg: ModelConfig, seed: int = 0, batch: int = 2) -> list[paddle.Tensor]:
    """Random raw GFL maps; the class logits mostly background, one confident point per level."""
    rng = np.random.default_rng(seed)
    maps = []
    for stride in cfg.strides:
        side = cfg.input_size // stride
        values = rng.normal(0.0, 2.0, (batch, gfl_channels(cfg.num_classes, cfg.reg_max), side, side))
        values[:, : cfg.num_classes] -= 5.0
        values[:, 0, 0, 0] = 5.0
        maps.append(paddle.to_tensor(values.astype(np.float32)))
    return maps


def copies(maps):
    return [paddle.to_tensor(m.numpy(), stop_gradient=False) for m in maps]


# --------------------------------------------------------------------------- terms on crafted tensors


def test_every_term_is_zero_when_the_student_equals_the_teacher():
    cfg = gfl_config()
    teacher = crafted_maps(cfg)
    for key, value in gfl_response_losses(copies(teacher), teacher, cfg, temperature=2.0).items():
        assert float(value) == pytest.approx(0.0, abs=1e-6), key
    features = [paddle.to_tensor(np.random.default_rng(level).normal(size=(2, 8, 4, 4)).astype(np.float32))
                for level in range(3)]
    for method in ("pkd", "cwd"):
        assert float(gfl_feature_loss(copies(features), features, method, 2.0)) == pytest.approx(0.0, abs=1e-5)


def test_each_term_grows_with_the_difference_it_measures():
    cfg = gfl_config()
    teacher = crafted_maps(cfg)
    bins = REG_MAX + 1
    # A student whose distributions differ only at the teacher's confident point: LD sees it, quality does not.
    moved = [m.numpy().copy() for m in teacher]
    moved[0][:, NUM_CLASSES : NUM_CLASSES + bins, 0, 0] += np.linspace(-3, 3, bins, dtype=np.float32)
    losses = gfl_response_losses([paddle.to_tensor(m) for m in moved], teacher, cfg, 2.0)
    assert float(losses["distill_ld"]) > 1e-4 and float(losses["distill_quality"]) == pytest.approx(0.0, abs=1e-7)
    # The same change at a background point weighs far less (the teacher's quality score weights LD).
    background = [m.numpy().copy() for m in teacher]
    background[0][:, NUM_CLASSES : NUM_CLASSES + bins, 5, 5] += np.linspace(-3, 3, bins, dtype=np.float32)
    assert float(gfl_response_losses([paddle.to_tensor(m) for m in background], teacher, cfg, 2.0)["distill_ld"]) \
        < 0.05 * float(losses["distill_ld"])
    # Class logits changed: quality sees it, LD does not.
    scored = [m.numpy().copy() for m in teacher]
    scored[1][:, :NUM_CLASSES] += 3.0
    losses = gfl_response_losses([paddle.to_tensor(m) for m in scored], teacher, cfg, 2.0)
    assert float(losses["distill_quality"]) > 1e-3 and float(losses["distill_ld"]) == pytest.approx(0.0, abs=1e-6)


def test_ld_is_the_tempered_kl_of_the_side_distributions_on_a_hand_case():
    teacher = paddle.to_tensor(np.array([[[[2.0, 0.0, -2.0]] * 4]], np.float32))  # (B=1, N=1, 4, 3)
    student = paddle.to_tensor(np.zeros((1, 1, 4, 3), np.float32))
    t = np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()  # softmax at T = 2
    expected = 4.0 * float((t * np.log(t / (1.0 / 3.0))).sum())
    got = localization_distillation(student, teacher, paddle.ones([1, 1]), temperature=2.0)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_quality_term_pushes_the_student_score_towards_the_teachers():
    teacher = paddle.to_tensor(np.array([[[1.0, -4.0]]], np.float32))
    student = paddle.to_tensor(np.array([[[-1.0, -2.0]]], np.float32), stop_gradient=False)
    quality_distillation(student, teacher).backward()
    grad = student.grad.numpy()[0, 0]
    assert grad[0] < 0 and grad[1] > 0  # gradient descent raises the first score, lowers the second


def test_feature_terms_ignore_scale_and_see_spatial_pattern():
    rng = np.random.default_rng(1)
    teacher = paddle.to_tensor(rng.normal(size=(2, 4, 6, 6)).astype(np.float32))
    scaled = paddle.to_tensor(teacher.numpy() * 50.0 + 3.0)
    assert float(pearson_feature_loss(scaled, teacher)) == pytest.approx(0.0, abs=1e-5)
    shuffled = paddle.to_tensor(np.roll(teacher.numpy(), 2, axis=3))
    assert float(pearson_feature_loss(shuffled, teacher)) > 0.1
    assert float(channel_wise_loss(shuffled, teacher, 1.0)) > 0.1
    assert float(pearson_feature_loss(paddle.to_tensor(-teacher.numpy()), teacher)) == pytest.approx(2.0, rel=1e-3)


def test_schedules_move_from_start_to_end():
    for schedule in ("linear", "cosine"):
        assert scheduled_weight(0, 5, 0.8, 0.2, schedule) == pytest.approx(0.8)
        assert scheduled_weight(4, 5, 0.8, 0.2, schedule) == pytest.approx(0.2)
        assert scheduled_weight(2, 5, 0.8, 0.2, schedule) == pytest.approx(0.5)
    assert scheduled_weight(1, 5, 0.8, 0.2, "cosine") > scheduled_weight(1, 5, 0.8, 0.2, "linear")
    with pytest.raises(ValueError, match="schedule"):
        DistillConfig(teacher="t", schedule="step")
    with pytest.raises(ValueError, match="feature_method"):
        DistillConfig(teacher="t", feature_method="fgd")


def test_teacher_and_student_must_share_the_head_layout_naming_the_fields():
    check_gfl_pair(gfl_config(), gfl_config(arch="ppyolo-r18"))
    with pytest.raises(ValueError, match="num_classes 3 .student. vs 4 .teacher.; reg_max 7 .student. vs 11"):
        check_gfl_pair(gfl_config(), gfl_config(arch="ppyolo-r18", reg_max=11, num_classes=4))
    with pytest.raises(ValueError, match="strides"):
        check_gfl_pair(gfl_config(), gfl_config(strides=(8, 16, 32, 64), anchors=[[(10.0, 10.0)]] * 4,
                                                input_size=64))
    with pytest.raises(ValueError, match="head 'gfl' .student. vs 'yolo'"):
        check_gfl_pair(gfl_config(), gfl_config(head="yolo"))


# --------------------------------------------------------------------------- a real (tiny) teacher


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return write_deeppcb(tmp_path_factory.mktemp("synth") / "boards", n=12, seed=4, size=160)


def run_config(data: Path, out: Path, arch: str, **overrides) -> TrainConfig:
    values = dict(arch=arch, data=str(data), out=str(out), epochs=2, batch_size=4, input_size=INPUT, crop_size=None,
                  input_mode="image+template", head="gfl", lr=3e-3, warmup_epochs=0.0, val_fraction=0.25,
                  split_seed=5, workers=0, seed=1, max_steps_per_epoch=1)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def teacher_run(synth_data, tmp_path_factory) -> Path:
    """An untrained PP-YOLO ResNet18 with the gfl head laid out as `inspector train` leaves a run."""
    run = tmp_path_factory.mktemp("teacher") / "run"
    cfg = run_config(synth_data, run, "ppyolo-r18", epochs=1)
    dataset = load_dataset(synth_data)
    split_dataset(dataset, cfg.val_fraction, cfg.split_seed, run / "split.json")
    model_config = gfl_config(arch="ppyolo-r18", num_classes=len(dataset.class_names))
    paddle.seed(0)
    save_checkpoint(run / "best", build_model(model_config).state_dict(), model_config, dataset.class_names,
                    {"epoch": 1, "train_config": cfg.to_dict()})
    return run


def batch_tensors(gt: bool = True):
    rng = np.random.default_rng(0)
    images = paddle.to_tensor(rng.random((2, 6, INPUT, INPUT), dtype=np.float32))
    if gt:
        boxes = np.array([[[8, 8, 24, 20]], [[30, 30, 50, 44]]], np.float32)
        classes = np.array([[0], [2]], np.int64)
    else:
        boxes, classes = np.zeros((2, 1, 4), np.float32), np.full((2, 1), -1, np.int64)
    return images, paddle.to_tensor(boxes), paddle.to_tensor(classes)


@pytest.mark.parametrize("method", ["pkd", "cwd"])
def test_gradients_reach_the_student_and_adapters_only_and_the_loss_is_the_weighted_sum(teacher_run, synth_data,
                                                                                        method):
    checkpoint = load_checkpoint(teacher_run)
    objective = DistillationObjective(checkpoint, DistillConfig(teacher=str(teacher_run), feature_method=method,
                                                                schedule="cosine"), epochs=4)
    dataset = load_dataset(synth_data)
    student = build_model(objective.model_config(run_config(synth_data, Path("unused"), "mbv3-small"), dataset))
    assert student.cfg.head == "gfl" and student.cfg.reg_max == checkpoint.model_config.reg_max
    adapters = objective.extra_layers(student)
    assert isinstance(adapters, FeatureAdapters)
    student.train()
    teacher_before = {k: v.numpy().copy() for k, v in objective.teacher.state_dict().items()}

    losses = objective.losses(student, *batch_tensors(), epoch=1)
    losses["loss"].backward()
    assert all(p.grad is None for p in objective.teacher.parameters())
    for k, v in objective.teacher.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), teacher_before[k], err_msg=k)
    trainable = [p for p in student.parameters() if not p.stop_gradient]
    assert all(p.grad is not None for p in trainable)
    assert float(student.head.predictions[0].weight.grad.abs().sum()) > 0
    assert float(student.backbone.stem.conv.weight.grad.abs().sum()) > 0
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in adapters.parameters())

    alpha = scheduled_weight(1, 4, 0.7, 0.3, "cosine")
    assert float(losses["distill_alpha"]) == pytest.approx(alpha)
    terms = sum(float(losses[k]) for k in ("distill_quality", "distill_ld", "distill_feat"))
    assert float(losses["loss"]) == pytest.approx((1 - alpha) * float(losses["loss_hard"]) + alpha * terms, rel=1e-5)
    for key in ("loss_cls", "loss_iou", "loss_dfl", "distill_quality", "distill_ld", "distill_feat"):
        assert np.isfinite(float(losses[key])), key


def test_finite_without_ground_truth(teacher_run, synth_data):
    objective = DistillationObjective(load_checkpoint(teacher_run), DistillConfig(teacher=str(teacher_run)), epochs=2)
    student = build_model(objective.model_config(run_config(synth_data, Path("unused"), "mbv3-small"),
                                                 load_dataset(synth_data)))
    objective.extra_layers(student)
    losses = objective.losses(student, *batch_tensors(gt=False), epoch=0)
    losses["loss"].backward()
    assert all(np.isfinite(float(v)) for v in losses.values())
    assert float(losses["distill_ld"]) > 0 and float(losses["distill_quality"]) > 0  # the teacher still teaches


def test_a_student_started_from_another_layout_is_refused(teacher_run, synth_data, tmp_path):
    dataset = load_dataset(synth_data)
    other = gfl_config(num_classes=len(dataset.class_names), reg_max=5)
    save_checkpoint(tmp_path / "init", build_model(other).state_dict(), other, dataset.class_names, {})
    objective = DistillationObjective(load_checkpoint(teacher_run), DistillConfig(teacher=str(teacher_run)), epochs=2)
    with pytest.raises(ValueError, match=r"differs from the teacher's in \['reg_max'\]"):
        objective.model_config(run_config(synth_data, tmp_path / "x", "mbv3-small"), dataset,
                               load_checkpoint(tmp_path / "init"))


def test_a_student_started_from_a_yolo_head_model_gets_the_teachers_gfl_head(teacher_run, synth_data, tmp_path):
    dataset = load_dataset(synth_data)
    cfg = run_config(synth_data, tmp_path / "x", "mbv3-small")
    teacher = load_checkpoint(teacher_run)
    yolo = ModelConfig.from_dict({**teacher.model_config.to_dict(), "arch": "mbv3-small", "head": "yolo"})
    save_checkpoint(tmp_path / "init", build_model(yolo).state_dict(), yolo, dataset.class_names, {})
    objective = DistillationObjective(teacher, DistillConfig(teacher=str(teacher_run)), epochs=2)
    config = objective.model_config(cfg, dataset, load_checkpoint(tmp_path / "init"))
    assert config == objective.model_config(cfg, dataset)  # the head pairs with the teacher's, as without --init


@pytest.mark.slow
def test_cli_distills_a_gfl_teacher_into_a_checkpointed_student(teacher_run, synth_data, tmp_path):
    out = tmp_path / "student"
    result = CliRunner().invoke(app, ["distill", "--teacher", str(teacher_run), "--student-arch", "mbv3-small",
                                      "--data", str(synth_data), "--out", str(out), "--epochs", "2", "--batch", "4",
                                      "--max-steps", "1", "--crop-size", "0", "--feature-method", "cwd",
                                      "--schedule", "cosine", "--aug-off-epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "train_config.json").read_text())["aug_off_epochs"] == 1
    student = load_checkpoint(out / "last")
    assert student.model_config.head == "gfl" and student.model_config.arch == "mbv3-small"
    assert student.info["distillation"]["feature_method"] == "cwd"
    rows = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 2 and all(np.isfinite(row["train_distill_ld"]) for row in rows)
    assert (out / "best" / "model.pdparams").is_file()


# --------------------------------------------------------------------------- the teacher-output cache


from inspector.compression.teacher_cache import (TeacherCache, TeacherView, crop_agreement, crop_maps,  # noqa: E402
                                                 orient_array, oriented_window, retire_stores,
                                                 store_for)
from inspector.data.transforms import to_input  # noqa: E402


def board(frame: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (frame, frame, 3), dtype=np.uint8)
    template = image.copy()
    template[frame // 3 : frame // 2, frame // 4 : frame // 2] = 0
    return image, template


def local_teacher(strides, block):
    """A teacher whose every output cell depends on that cell's pixels only (per level: the mean of each input
    channel over the cell, and its square): the cache must reproduce it exactly on every aligned crop."""
    def forward(images: paddle.Tensor):
        maps = []
        for stride in strides:
            pooled = paddle.nn.functional.avg_pool2d(images, stride, stride)
            maps.append(paddle.concat([pooled, pooled * pooled], axis=1))
        return None, maps
    return forward


def crop_input(image, template, view: TeacherView, mode: str) -> np.ndarray:
    """What the loader feeds for ``view``: crop the letterboxed pair, orient it, build the layout's planes."""
    window = (slice(view.y0, view.y0 + view.size), slice(view.x0, view.x0 + view.size))
    return to_input(orient_array(image[window], view.element), orient_array(template[window], view.element), mode)


def full_input_of(image, template, mode):
    return lambda key, element: to_input(orient_array(image, element), orient_array(template, element), mode)


def test_orientation_convention_is_the_augmenters():
    augment = pytest.importorskip("inspector.data.augment")
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    for element in range(8):
        np.testing.assert_array_equal(orient_array(image, element), augment.dihedral_array(image, element))
        box = augment.dihedral_boxes(np.array([[2, 4, 6, 8]], np.float32), element, 10, 10)[0]
        assert oriented_window(2, 4, 4, 10, element) == (int(box[0]), int(box[1]))


@pytest.mark.parametrize("mode, block", [("image+template", 1), ("gray-diff-s2d", 2)])
def test_a_cached_crop_equals_a_fresh_teacher_pass_on_that_crop_for_a_local_teacher(mode, block):
    strides = (8, 16, 32)
    frame, size = 128 * block, 64 * block  # letterbox pixels: input 128, crops of 64
    image, template = board(frame)
    cache = TeacherCache(local_teacher(strides, block), full_input_of(image, template, mode), strides, block)
    assert cache.alignment == 32 * block
    views = [TeacherView("a", element, x0, y0, size, frame)
             for element in range(8) for x0, y0 in ((0, 0), (32 * block, 64 * block), (64 * block, 32 * block))]
    images = paddle.to_tensor(np.stack([crop_input(image, template, v, mode) for v in views]))
    _, cached = cache.outputs(images, views)
    _, fresh = local_teacher(strides, block)(images)
    for c, f in zip(cached, fresh):
        np.testing.assert_allclose(c.numpy(), f.numpy(), atol=2e-3, rtol=2e-3)  # float16 storage
    assert (cache.stats.misses, cache.stats.hits) == (8, len(views) - 8)  # one whole-board pass per orientation
    # A crop off the coarsest grid cannot be served from the cache.
    with pytest.raises(ValueError, match="not aligned"):
        crop_maps([m.numpy()[0] for m in fresh], TeacherView("a", 0, 8, 0, size, frame), strides, block)


def test_the_cache_never_serves_another_board_orientation_or_frame():
    strides, block, frame = (8, 16, 32), 1, 64
    boards = {"a": board(frame, 1), "b": board(frame, 2)}
    calls = []

    def full_input(key, element):
        calls.append((key, element))
        image, template = boards[key]
        return to_input(orient_array(image, element), orient_array(template, element), "image+template")

    cache = TeacherCache(local_teacher(strides, block), full_input, strides, block)
    views = [TeacherView("a", 0, 0, 0, 64, frame), TeacherView("a", 1, 0, 0, 64, frame),
             TeacherView("b", 0, 0, 0, 64, frame), TeacherView("a", 0, 0, 0, 64, frame)]
    images = paddle.to_tensor(np.stack([crop_input(*boards[v.key], v, "image+template") for v in views]))
    _, cached = cache.outputs(images, views)
    _, fresh = local_teacher(strides, block)(images)
    np.testing.assert_allclose(cached[0].numpy(), fresh[0].numpy(), atol=2e-3)
    assert calls == [("a", 0), ("a", 1), ("b", 0)] and cache.stats.hits == 1
    assert len({v.cache_key for v in views}) == 3
    assert TeacherView("a", 0, 0, 0, 64, 64).cache_key != TeacherView("a", 0, 0, 0, 64, 128).cache_key
    # A sample without a view (e.g. copy-pasted) gets a fresh pass on exactly its pixels.
    other = paddle.to_tensor(np.random.default_rng(9).random((1, 6, 32, 32), dtype=np.float32))
    _, out = cache.outputs(other, [None])
    np.testing.assert_array_equal(out[0].numpy(), local_teacher(strides, block)(other)[1][0].numpy())
    assert cache.stats.fresh == 1


def test_the_lru_bound_evicts_old_boards():
    strides, frame = (8, 16, 32), 64
    image, template = board(frame)
    cache = TeacherCache(local_teacher(strides, 1), full_input_of(image, template, "image+template"), strides, 1,
                         max_bytes=1)
    for element in (0, 1, 0):
        view = TeacherView("a", element, 0, 0, 64, frame)
        cache.outputs(paddle.to_tensor(crop_input(image, template, view, "image+template")[None]), [view])
    assert len(cache) == 1 and cache.stats.evictions == 2 and cache.stats.misses == 3


def counting(teacher):
    """``teacher``, and the list of batch sizes it was called with (one entry per teacher pass)."""
    calls: list[int] = []

    def forward(images):
        calls.append(int(images.shape[0]))
        return teacher(images)
    return forward, calls


def test_ranks_sharing_a_disk_store_ask_the_teacher_once_per_board_orientation(tmp_path):
    """Two caches on one store (two ranks of a node, or a run and its resume): what one computed, the other reads
    back identical instead of a teacher pass; an evicted entry comes back from disk, not from the teacher."""
    strides, block, frame = (8, 16, 32), 1, 64
    image, template = board(frame)
    full = full_input_of(image, template, "image+template")
    views = [TeacherView("a", element, 0, 0, 32, frame) for element in (0, 3, 5)]
    images = paddle.to_tensor(np.stack([crop_input(image, template, v, "image+template") for v in views]))
    first_teacher, first_calls = counting(local_teacher(strides, block))
    first = TeacherCache(first_teacher, full, strides, block, store=tmp_path / "store")
    _, first_maps = first.outputs(images, views)
    assert first_calls == [3] and first.stats.misses == 3
    assert len(list((tmp_path / "store").glob("*.npz"))) == 3 and not list((tmp_path / "store").glob(".*"))

    second_teacher, second_calls = counting(local_teacher(strides, block))
    second = TeacherCache(second_teacher, full, strides, block, store=tmp_path / "store", max_bytes=1)
    _, second_maps = second.outputs(images, views)
    assert second_calls == [] and (second.stats.hits, second.stats.misses, second.stats.from_store) == (3, 0, 3)
    for a, b in zip(first_maps, second_maps):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    second.outputs(images, views)  # max_bytes=1 evicted all but one: the rest read from disk again
    assert second_calls == [] and second.stats.evictions >= 2 and second.stats.from_store >= 5

    # A damaged file is computed again (and rewritten), not served and not fatal.
    damaged = sorted((tmp_path / "store").glob("*.npz"))[0]
    damaged.write_bytes(b"not an npz")
    third_teacher, third_calls = counting(local_teacher(strides, block))
    third = TeacherCache(third_teacher, full, strides, block, store=tmp_path / "store")
    _, third_maps = third.outputs(images, views)
    assert third_calls == [1] and (third.stats.misses, third.stats.from_store) == (1, 2)
    for a, b in zip(first_maps, third_maps):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with np.load(damaged) as data:
        assert sorted(data.files) == ["map0", "map1", "map2"]


def test_a_stored_entry_is_served_only_while_its_board_s_files_are_unchanged(tmp_path, synth_data):
    """A store kept across runs names each entry after its board's files as they were: the same version reads
    it back, an edited board (another version) gets a teacher pass."""
    strides, block, frame = (8, 16, 32), 1, 64
    image, template = board(frame)
    full = full_input_of(image, template, "image+template")
    views = [TeacherView("a", 0, 0, 0, 32, frame)]
    images = paddle.to_tensor(np.stack([crop_input(image, template, v, "image+template") for v in views]))
    version = {"a": "1000:1"}
    first = TeacherCache(local_teacher(strides, block), full, strides, block, store=tmp_path / "store",
                         board_version=version.__getitem__)
    first.outputs(images, views)
    same_teacher, same_calls = counting(local_teacher(strides, block))
    same = TeacherCache(same_teacher, full, strides, block, store=tmp_path / "store", board_version=version.__getitem__)
    same.outputs(images, views)
    assert same_calls == [] and same.stats.from_store == 1
    version["a"] = "1000:2"  # the board's file rewritten since
    edited_teacher, edited_calls = counting(local_teacher(strides, block))
    edited = TeacherCache(edited_teacher, full, strides, block, store=tmp_path / "store",
                          board_version=version.__getitem__)
    edited.outputs(images, views)
    assert edited_calls == [1] and edited.stats.from_store == 0

    # The loader's version of a board: its files' sizes and modification times; touching one changes it.
    loader = BatchLoader(load_dataset(synth_data), 2, 96, "image+template", train=True, workers=0)
    sample = loader.dataset.samples[0]
    before = loader.board_version(sample.key)
    assert before == loader.board_version(sample.key)
    os.utime(sample.template_path, ns=(1, 1))
    assert loader.board_version(sample.key) != before
    with pytest.raises(KeyError, match="not a sample"):
        loader.board_version("no/such/board.jpg")


def test_a_store_belongs_to_one_teacher_and_layout(tmp_path):
    weights = tmp_path / "model.pdparams"
    weights.write_bytes(b"teacher one")
    store = store_for(tmp_path / "cache", weights, (8, 16, 32), 2, False)
    assert store.parent == tmp_path / "cache"
    assert store_for(tmp_path / "cache", weights, (8, 16, 32), 2, False) == store
    assert store_for(tmp_path / "cache", weights, (8, 16, 32), 2, True) != store  # needs features it may lack
    assert store_for(tmp_path / "cache", weights, (8, 16, 32), 1, False) != store
    assert store_for(tmp_path / "cache", weights, (8, 16, 32), 2, False, layout="gray-diff-s2d") != store
    weights.write_bytes(b"teacher two")  # retrained in place: its old maps must not be served
    assert store_for(tmp_path / "cache", weights, (8, 16, 32), 2, False) != store


def test_a_kept_root_holds_the_stores_of_the_most_recently_used_teachers_and_nothing_else_is_removed(tmp_path):
    root = tmp_path / "cache"
    stores = []
    for age, name in enumerate((b"oldest", b"older", b"recent")):
        weights = tmp_path / f"teacher-{age}.pdparams"
        weights.write_bytes(name)
        store = store_for(root, weights, (8, 16, 32), 2, False)
        store.mkdir(parents=True)
        (store / "board.npz").write_bytes(b"x" * 1000)
        os.utime(store, (1000 + age, 1000 + age))
        stores.append(store)
    (root / "notes").mkdir()  # not a store: a user's directory is never touched
    os.utime(root / "notes", (1, 1))
    (root / "README.txt").write_text("kept teacher maps")
    weights = tmp_path / "teacher-new.pdparams"
    weights.write_bytes(b"new teacher")
    current = store_for(root, weights, (8, 16, 32), 2, False)

    removed = retire_stores(current, keep=3)
    assert removed == [(stores[0], 1000)]
    assert sorted(p.name for p in root.iterdir()) == sorted(["notes", "README.txt", current.name, stores[1].name,
                                                             stores[2].name])
    # Opening an older teacher's store again makes it the most recent: the next retirement spares it.
    assert retire_stores(stores[1], keep=2) == [(stores[2], 1000)]
    assert sorted(p.name for p in root.iterdir()) == sorted(["notes", "README.txt", current.name, stores[1].name])
    assert retire_stores(stores[1], keep=2) == []


@pytest.mark.slow
def test_a_resnet_teacher_s_cached_crop_is_its_board_output_close_to_a_fresh_crop_pass(teacher_run):
    """The real PP-YOLO teacher: a cached crop is the teacher on the whole board, sliced. At the whole board it is
    exact; on a crop it differs where the crop's edges and PP-YOLO's CoordConv (coordinates relative to the map)
    change the teacher's view, and it is far closer to the fresh pass than any other window or orientation is."""
    checkpoint = load_checkpoint(teacher_run)
    teacher = build_model(checkpoint.model_config)
    teacher.set_state_dict(checkpoint.build().state_dict())
    teacher.eval()

    def forward(images):
        with paddle.no_grad():
            return None, teacher(images)

    strides, frame = checkpoint.model_config.strides, INPUT
    image, template = board(frame, 5)
    cache = TeacherCache(forward, full_input_of(image, template, "image+template"), strides, 1)
    whole = [TeacherView("a", element, 0, 0, frame, frame) for element in (0, 3, 6)]
    images = paddle.to_tensor(np.stack([crop_input(image, template, v, "image+template") for v in whole]))
    _, cached = cache.outputs(images, whole)
    _, fresh = forward(images)
    for c, f in zip(cached, fresh):
        np.testing.assert_allclose(c.numpy(), f.numpy(), atol=2e-2 * float(np.abs(f.numpy()).max()))

    crop = TeacherView("a", 2, 32, 0, 32, frame)
    crop_image = paddle.to_tensor(crop_input(image, template, crop, "image+template")[None])
    _, [*cached_crop] = cache.outputs(crop_image, [crop])
    _, fresh_crop = forward(crop_image)
    agreement = crop_agreement([c.numpy() for c in cached_crop], [f.numpy() for f in fresh_crop], [1, 0, 0])
    wrong = TeacherView("a", 0, 0, 32, 32, frame)  # another window of the same board and orientation 0
    _, wrong_maps = cache.outputs(crop_image, [wrong])
    wrong_agreement = crop_agreement([w.numpy() for w in wrong_maps], [f.numpy() for f in fresh_crop], [1, 0, 0])
    assert agreement["max_abs"] < wrong_agreement["max_abs"]


# --------------------------------------------------------------------------- the loader's views and a cached run


from inspector.data.augment import PairAugmentConfig  # noqa: E402
from inspector.data.loader import BatchLoader  # noqa: E402
from inspector.data.transforms import AugmentConfig  # noqa: E402


@pytest.mark.parametrize("mode", ["image+template", "gray-diff-s2d"])
def test_the_loaders_views_rebuild_each_training_input_and_crops_are_aligned(synth_data, mode):
    dataset = load_dataset(synth_data)
    loader = BatchLoader(dataset, 4, 96, mode, train=True, seed=3, crop_size=64, augment=AugmentConfig.off(),
                         workers=0, pairs=PairAugmentConfig(dihedral=True))
    block = loader.layout.block
    loader.crop_align, loader.record_views = 32 * block, True
    elements = set()
    for batch in loader:
        for row, view in enumerate(batch.views):
            assert view.x0 % (32 * block) == 0 and view.y0 % (32 * block) == 0
            assert (view.size, view.frame) == (64 * block, 96 * block)
            elements.add(view.element)
            board = loader.full_input(view.key, 0)  # the whole board's input, unoriented
            assert board.shape[-1] == 96
            oriented_full = loader.full_input(view.key, view.element)
            x, y = oriented_window(view.x0, view.y0, view.size, view.frame, view.element)
            window = oriented_full[:, y // block : (y + view.size) // block, x // block : (x + view.size) // block]
            np.testing.assert_array_equal(batch.images[row], window)
    assert len(elements) > 1


def test_pasted_or_flipped_rows_have_no_view(synth_data):
    dataset = load_dataset(synth_data)
    pasted = BatchLoader(dataset, 4, 96, "image+template", train=True, seed=3, crop_size=64,
                         augment=AugmentConfig.off(), workers=0, pairs=PairAugmentConfig(copy_paste=1.0))
    pasted.record_views = True
    flipped = BatchLoader(dataset, 4, 96, "image+template", train=True, seed=3, crop_size=64, workers=0)
    flipped.record_views = True
    pasted_views = [v for batch in pasted for v in batch.views]
    assert any(v is None for v in pasted_views)
    for batch in pasted:  # the rows that kept their view are the unpasted ones: their pixels are the board's
        for row, view in enumerate(batch.views):
            if view is not None:
                full = pasted.full_input(view.key, 0)
                np.testing.assert_array_equal(batch.images[row],
                                              full[:, view.y0 : view.y0 + 64, view.x0 : view.x0 + 64])
    assert all(v is None for batch in flipped for v in batch.views)


@pytest.mark.slow
def test_a_cached_distillation_run_trains_reuses_the_teacher_and_writes_a_checkpoint(teacher_run, synth_data,
                                                                                      tmp_path):
    cfg = run_config(synth_data, tmp_path / "cached", "mbv3-small", epochs=3, crop_size=32, dihedral=True,
                     max_steps_per_epoch=2, batch_size=3)
    out = distill(cfg, DistillConfig(teacher=str(teacher_run), teacher_cache=True))
    rows = json.loads((out / "metrics.json").read_text())
    assert len(rows) == 3 and rows[-1]["train_teacher_cache_hit_rate"] > 0
    assert load_checkpoint(out / "last").model_config.head == "gfl"
    assert not (out / "teacher-cache").exists()  # the disk store served the run; a finished run drops it
    # teacher_cache_dir: the store outlives the run, and the same schedule distilled again from the same teacher
    # finds every board and orientation there (no teacher pass on a whole board), with the same result.
    kept = tmp_path / "kept-cache"
    first = distill(run_config(synth_data, tmp_path / "kept-1", "mbv3-small", epochs=3, crop_size=32, dihedral=True,
                               max_steps_per_epoch=2, batch_size=3),
                    DistillConfig(teacher=str(teacher_run), teacher_cache=True, teacher_cache_dir=str(kept)))
    stored = sorted(kept.glob("*/*.npz"))
    assert stored and not (first / "teacher-cache").exists()
    second = distill(run_config(synth_data, tmp_path / "kept-2", "mbv3-small", epochs=3, crop_size=32, dihedral=True,
                                max_steps_per_epoch=2, batch_size=3),
                     DistillConfig(teacher=str(teacher_run), teacher_cache=True, teacher_cache_dir=str(kept)))
    rows = json.loads((second / "metrics.json").read_text())
    assert rows[-1]["train_teacher_cache_hit_rate"] == 1.0 and rows[-1]["train_teacher_cache_from_store"] > 0
    assert sorted(kept.glob("*/*.npz")) == stored
    first_rows = json.loads((first / "metrics.json").read_text())
    assert [row["train_loss"] for row in rows] == [row["train_loss"] for row in first_rows]
    with pytest.raises(ValueError, match="dihedral"):  # augment's flips are not recorded: refused, not ignored
        distill(run_config(synth_data, tmp_path / "flips", "mbv3-small", crop_size=32),
                DistillConfig(teacher=str(teacher_run), teacher_cache=True))


# --------------------------------------------------------------------------- the GPU preset, on a CPU


@pytest.mark.slow
def test_the_gpu_preset_runs_and_resumes_across_the_distilled_stage_on_a_cpu(tmp_path):
    """configs/pipeline-gpu.yaml as it is (gfl head, gray-diff-s2d, PP-YOLO ResNet teacher, dihedral, plain last
    epochs, distillation) with only sizes and epochs shrunk: teacher, student and the distilled stage run; a
    distilled stage cut short (its last/ written, the pipeline's record not) continues instead of restarting."""
    from inspector.pipeline import PipelineConfig, read_preset, run_pipeline

    preset = read_preset(Path(__file__).parents[2] / "configs" / "pipeline-gpu.yaml")
    assert (preset["head"], preset["input_mode"], preset["distill"]) == ("gfl", "gray-diff-s2d", True)
    assert preset["teacher_arch"].startswith("ppyolo-r")
    data = write_deeppcb(tmp_path / "boards", n=8, seed=4, size=160)
    out = tmp_path / "pipe"
    tiny = dict(data=str(data), out=str(out), input_size=64, teacher_arch="ppyolo-r18", teacher_epochs=1, epochs=2,
                batch_size=2, eval_every=1, aug_off_epochs=1, max_steps_per_epoch=1, val_fraction=0.25,
                split_seed=1)
    cfg = PipelineConfig.from_dict({**preset, **tiny}, source="pipeline-gpu.yaml (tiny)")
    lines: list[str] = []
    run_pipeline(cfg, until="distilled", echo=lines.append)
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["stages"]) == ["teacher", "student", "distilled"]
    distilled = load_checkpoint(out / "distilled" / "last")
    assert (distilled.model_config.head, distilled.model_config.input_mode) == ("gfl", "gray-diff-s2d")
    assert distilled.info["distillation"]["teacher_arch"] == "ppyolo-r18"

    del state["stages"]["distilled"]  # as if stopped after the stage's last epoch, before the pipeline noted it
    (out / "pipeline.json").write_text(json.dumps(state))
    lines.clear()
    run_pipeline(cfg, until="distilled", echo=lines.append)
    assert any(line.startswith("[3/") and "distilled: running" in line for line in lines)
    assert any(line.startswith("[1/") and "done earlier" in line for line in lines)
    assert len(json.loads((out / "distilled" / "metrics.json").read_text())) == 2  # continued, not retrained


@pytest.mark.slow
@pytest.mark.parametrize("head", ["gfl", "yolo"])
def test_either_head_s_objective_serves_whole_board_views_from_the_cache_as_the_teacher_computes_them(
        synth_data, tmp_path, head):
    dataset = load_dataset(synth_data)
    teacher_cfg = gfl_config(arch="ppyolo-r18", num_classes=len(dataset.class_names), head=head)
    paddle.seed(1)
    save_checkpoint(tmp_path / "teacher", build_model(teacher_cfg).state_dict(), teacher_cfg, dataset.class_names,
                    {"epoch": 1})
    objective = DistillationObjective(load_checkpoint(tmp_path / "teacher"),
                                      DistillConfig(teacher=str(tmp_path / "teacher"), teacher_cache=True), epochs=1)
    loader = BatchLoader(dataset, 3, INPUT, "image+template", train=True, seed=2, augment=AugmentConfig(), workers=0,
                         pairs=PairAugmentConfig(dihedral=True))
    objective.attach_loader(loader)
    assert loader.record_views and loader.crop_align == 32
    batch = next(iter(loader))
    objective.observe_batch(batch)
    images = paddle.to_tensor(batch.images)
    _, cached = objective.teacher_outputs(images)
    assert objective.cache.stats.misses == len(batch.keys)
    # The teacher on the same boards and orientations without the photometric changes the student saw.
    clean = paddle.to_tensor(np.stack([loader.full_input(v.key, v.element) for v in batch.views]))
    with paddle.no_grad():
        fresh = objective.teacher(clean)
    for c, f in zip(cached, fresh):
        np.testing.assert_allclose(c.numpy(), f.numpy(), atol=2e-2 * float(np.abs(f.numpy()).max()))


def test_the_pipeline_refuses_a_teacher_cache_without_dihedral_before_training_anything():
    from inspector.pipeline import PipelineConfig, PipelineError

    with pytest.raises(PipelineError, match="^teacher_cache: true needs dihedral: true"):
        PipelineConfig(data="d", out="o", head="gfl", teacher_cache=True)
    assert PipelineConfig(data="d", out="o", head="gfl", teacher_cache=True, dihedral=True).teacher_cache
