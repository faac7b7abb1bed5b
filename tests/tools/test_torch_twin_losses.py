"""The torch twin's GFL loss and GFL distillation objective (``tools/torch_twin/losses.py``) against Paddle's.

The twin trains the detector on a machine without paddle; weights trained on a different loss would not be the
weights Paddle would have trained. So for the same random head maps, features, adapters and padded GT, every
returned term and the gradients w.r.t. the maps (and the neck features and adapters for distillation) must equal
Paddle's. The Paddle side runs here; the torch side in the interpreter named by ``TORCH_TWIN_PYTHON`` (a separate
venv: the two frameworks are never installed together), all cases in one subprocess.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from twin_harness import TORCH_CASE_LOOP, run_torch_cases, torch_python, write_case

RTOL, ATOL = 1e-4, 1e-6

# The torch side: for every case in the folder, the twin's losses and gradients, written next to it.
TORCH_SIDE = TORCH_CASE_LOOP + r'''
from tools.torch_twin import losses as twin

for meta, data, cfg, save in cases():
    levels = meta["levels"]
    outputs = [torch.tensor(data[f"out{i}"], requires_grad=True) for i in range(levels)]
    result = {}
    if meta["kind"] == "gfl":
        losses = twin.gfl_loss(outputs, data["gt_boxes"], torch.as_tensor(data["gt_classes"]), cfg)
        points, strides = twin.anchor_points([tuple(o.shape[2:]) for o in outputs], cfg.strides)
        cls, dist = twin.flatten_outputs(outputs, cfg)
        result.update(points=points, strides=strides, cls=cls.detach().numpy(), dist=dist.detach().numpy())
        differentiated = outputs
        names = [f"grad_out{i}" for i in range(levels)]
    else:
        settings = twin.GFLDistillSettings.from_dict(meta["distill_config"])
        teacher = [torch.tensor(data[f"teacher{i}"]) for i in range(levels)]
        student_features = [torch.tensor(data[f"sfeat{i}"], requires_grad=True) for i in range(levels)]
        teacher_features = [torch.tensor(data[f"tfeat{i}"]) for i in range(levels)]
        adapters = twin.FeatureAdapters([f.shape[1] for f in student_features], [f.shape[1] for f in teacher_features])
        result["adapter_keys"] = np.array(sorted(adapters.state_dict()))
        adapters.load_state_dict({key[len("adapter/"):]: torch.tensor(data[key]) for key in data.files
                                  if key.startswith("adapter/")})
        losses = twin.gfl_distill_losses(outputs, teacher, student_features, teacher_features, adapters,
                                         torch.as_tensor(data["gt_boxes"]), data["gt_classes"], cfg,
                                         meta["epoch"], meta["epochs"], settings)
        named = dict(adapters.named_parameters())
        differentiated = outputs + student_features + list(named.values())
        names = ([f"grad_out{i}" for i in range(levels)] + [f"grad_feat{i}" for i in range(levels)]
                 + [f"grad_adapter/{name}" for name in named])
    losses["loss"].backward()
    result.update({f"loss/{key}": value.detach().numpy() for key, value in losses.items()})
    result.update({name: tensor.grad.numpy() for name, tensor in zip(names, differentiated)})
    save(result)
'''


paddle = pytest.importorskip("paddle")
from inspector.compression.distill import DistillConfig, DistillationObjective, FeatureAdapters  # noqa: E402
from inspector.models.config import ModelConfig  # noqa: E402
from inspector.models.gfl_head import anchor_points, gfl_channels  # noqa: E402
from inspector.models.gfl_loss import flatten_outputs, gfl_loss  # noqa: E402

INPUT = 64
BATCH = 2
STUDENT_CHANNELS, TEACHER_CHANNELS = [8, 12, 16], [12, 20, 24]
# Image 0: three defects and a padding row; image 1: one defect and padding (-1 class, zero box).
GT_BOXES = np.array([[[4, 6, 30, 28], [30, 30, 60, 58], [10, 40, 22, 50], [0, 0, 0, 0]],
                     [[12, 8, 44, 40], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]], dtype=np.float32)
GT_CLASSES = np.array([[0, 3, 5, -1], [2, -1, -1, -1]], dtype=np.int64)


def _cfg(cls_loss: str) -> ModelConfig:
    return ModelConfig(arch="mbv3-small", head="gfl", input_size=INPUT, num_classes=6, gfl_cls_loss=cls_loss)


def _maps(rng: np.random.Generator, cfg: ModelConfig, scale: float = 1.5) -> list[np.ndarray]:
    channels = gfl_channels(cfg.num_classes, cfg.reg_max)
    return [(rng.standard_normal((BATCH, channels, INPUT // s, INPUT // s)) * scale).astype(np.float32)
            for s in cfg.strides]


def _leaves(arrays: list[np.ndarray]) -> list:
    return [paddle.to_tensor(a, stop_gradient=False) for a in arrays]


class _GivenMapsModel:
    """What ``DistillationObjective.gfl_losses`` reads of a student: fixed neck features and head maps."""

    def __init__(self, cfg: ModelConfig, features: list, outputs: list) -> None:
        self.cfg, self._features, self._outputs = cfg, features, outputs

    def features(self, images):
        return self._features

    def head(self, features):
        assert features is self._features
        return self._outputs

    def loss(self, outputs, gt_boxes, gt_classes):
        return gfl_loss(outputs, gt_boxes, gt_classes, self.cfg)


class _GivenTeacherObjective(DistillationObjective):
    """The real GFL objective with the teacher's maps given (no checkpoint to load)."""

    def __init__(self, config: DistillConfig, epochs: int, adapters, teacher_features, teacher_outputs) -> None:
        self.config, self.epochs, self.adapters = config, epochs, adapters
        self.cache, self._views = None, None
        self._teacher = (teacher_features, teacher_outputs)

    def teacher_outputs(self, images):
        return self._teacher


def _gfl_case(name, folder, cfg, maps, gt_boxes, gt_classes):
    write_case(folder, name, {"kind": "gfl", "cfg": cfg.to_dict(), "levels": len(maps)},
               gt_boxes=gt_boxes, gt_classes=gt_classes, **{f"out{i}": m for i, m in enumerate(maps)})
    outputs = _leaves(maps)
    losses = gfl_loss(outputs, paddle.to_tensor(gt_boxes), gt_classes, cfg)
    losses["loss"].backward()
    points, strides = anchor_points([tuple(m.shape[2:]) for m in maps], cfg.strides)
    cls, dist = flatten_outputs(outputs, cfg)
    expected = {f"loss/{key}": value.numpy() for key, value in losses.items()}
    expected.update({f"grad_out{i}": o.grad.numpy() for i, o in enumerate(outputs)})
    expected.update(points=points, strides=strides, cls=cls.numpy(), dist=dist.numpy())
    return expected


def _distill_case(name, folder, cfg, rng, config: DistillConfig, epoch: int, epochs: int):
    maps, teacher_maps = _maps(rng, cfg), _maps(rng, cfg, scale=2.0)
    sizes = [INPUT // s for s in cfg.strides]
    student_features, teacher_features = ([rng.standard_normal((BATCH, c, n, n)).astype(np.float32)
                                           for c, n in zip(channels, sizes)]
                                          for channels in (STUDENT_CHANNELS, TEACHER_CHANNELS))
    adapters = FeatureAdapters(STUDENT_CHANNELS, TEACHER_CHANNELS)
    for parameter in adapters.parameters():  # non-zero biases, so a dropped bias would show
        parameter.set_value(rng.standard_normal(parameter.shape).astype(np.float32) * 0.3)
    adapter_state = {f"adapter/{key}": value.numpy() for key, value in adapters.state_dict().items()}
    write_case(folder, name, {"kind": "distill", "cfg": cfg.to_dict(), "levels": len(maps),
                              "distill_config": config.to_dict(), "epoch": epoch, "epochs": epochs},
               gt_boxes=GT_BOXES, gt_classes=GT_CLASSES, **adapter_state,
               **{f"out{i}": m for i, m in enumerate(maps)}, **{f"teacher{i}": m for i, m in enumerate(teacher_maps)},
               **{f"sfeat{i}": f for i, f in enumerate(student_features)},
               **{f"tfeat{i}": f for i, f in enumerate(teacher_features)})
    outputs, features = _leaves(maps), _leaves(student_features)
    objective = _GivenTeacherObjective(config, epochs, adapters, [paddle.to_tensor(f) for f in teacher_features],
                                       [paddle.to_tensor(m) for m in teacher_maps])
    losses = objective.gfl_losses(_GivenMapsModel(cfg, features, outputs), None, paddle.to_tensor(GT_BOXES),
                                  paddle.to_tensor(GT_CLASSES), epoch)
    losses["loss"].backward()
    expected = {f"loss/{key}": value.numpy() for key, value in losses.items()}
    expected.update({f"grad_out{i}": o.grad.numpy() for i, o in enumerate(outputs)})
    expected.update({f"grad_feat{i}": f.grad.numpy() for i, f in enumerate(features)})
    expected.update({f"grad_adapter/{key}": p.grad.numpy() for key, p in adapters.named_parameters()})
    expected["adapter_keys"] = np.array(sorted(adapters.state_dict()))
    return expected


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """name -> (Paddle's values, the twin's values) for every case, the twin's from one torch subprocess."""
    python = torch_python()
    folder = tmp_path_factory.mktemp("twin_losses")
    rng = np.random.default_rng(7)
    expected = {}
    for cls_loss in ("vfl", "qfl"):
        cfg = _cfg(cls_loss)
        expected[cls_loss] = _gfl_case(cls_loss, folder, cfg, _maps(rng, cfg), GT_BOXES, GT_CLASSES)
    cfg = _cfg("vfl")
    one_empty_classes = GT_CLASSES.copy()
    one_empty_classes[1] = -1
    one_empty_boxes = GT_BOXES.copy()
    one_empty_boxes[1] = 0.0
    expected["image_without_gt"] = _gfl_case("image_without_gt", folder, cfg, _maps(rng, cfg), one_empty_boxes,
                                             one_empty_classes)
    expected["batch_without_gt"] = _gfl_case("batch_without_gt", folder, _cfg("qfl"), _maps(rng, cfg),
                                             np.zeros_like(GT_BOXES), np.full_like(GT_CLASSES, -1))
    expected["distill_pkd_linear"] = _distill_case(
        "distill_pkd_linear", folder, cfg, rng, DistillConfig(teacher="unused", temperature=2.0, feature_weight=0.5,
                                                              box_weight=1.5, cls_weight=0.8), epoch=0, epochs=6)
    expected["distill_cwd_cosine"] = _distill_case(
        "distill_cwd_cosine", folder, _cfg("qfl"), rng,
        DistillConfig(teacher="unused", temperature=3.0, schedule="cosine", feature_method="cwd",
                      feature_temperature=2.0, alpha_start=0.9, alpha_end=0.2), epoch=4, epochs=6)
    twin = run_torch_cases(python, folder, TORCH_SIDE)
    return {name: (values, twin[name]) for name, values in expected.items()}


def _assert_same(expected: dict, actual: dict, case: str) -> None:
    assert sorted(expected) == sorted(actual), f"{case}: keys differ"
    for key, value in expected.items():
        if value.dtype.kind in "US":
            assert list(value) == list(actual[key]), f"{case}: {key}"
        else:
            np.testing.assert_allclose(actual[key], value, rtol=RTOL, atol=ATOL, err_msg=f"{case}: {key}")


@pytest.mark.parametrize("case", ["vfl", "qfl", "image_without_gt", "batch_without_gt"])
def test_gfl_loss_terms_and_gradients_equal_paddle(cases, case):
    expected, actual = cases[case]
    _assert_same(expected, actual, case)
    # The terms are not trivially zero where GT exists: a loss that ignored the boxes would fail here.
    if case != "batch_without_gt":
        assert expected["loss/loss_iou"] > 0 and expected["loss/loss_dfl"] > 0
    else:
        assert expected["loss/loss_iou"] == 0 and expected["loss/loss_dfl"] == 0


@pytest.mark.parametrize("case", ["distill_pkd_linear", "distill_cwd_cosine"])
def test_gfl_distillation_total_parts_and_gradients_equal_paddle(cases, case):
    expected, actual = cases[case]
    _assert_same(expected, actual, case)
    assert expected["loss/distill_feat"] > 0 and expected["loss/distill_ld"] > 0


def test_schedule_reaches_distinct_alphas(cases):
    """The two distillation cases sit at different points of different schedules (0.7 at epoch 0, linear; the
    cosine schedule's value at epoch 4 of 6), so a twin that ignored the schedule would fail above."""
    linear = float(cases["distill_pkd_linear"][0]["loss/distill_alpha"])
    cosine = float(cases["distill_cwd_cosine"][0]["loss/distill_alpha"])
    assert linear == pytest.approx(0.7)
    assert cosine == pytest.approx(0.9 + (0.2 - 0.9) * (1 - math.cos(math.pi * 4 / 5)) / 2, rel=1e-6)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
