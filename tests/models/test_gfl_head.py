"""The anchor-free GFL head (``ModelConfig.head == "gfl"``): configuration, task-aligned assignment on crafted
boxes, the loss terms on hand cases, decoding of known distributions, learning one synthetic board, and the
exported package through the runtime on Paddle Lite and Paddle Inference."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
from typer.testing import CliRunner

from inspector.models import ModelConfig, build_model
from inspector.models.assign import task_aligned_assign
from inspector.models.detector import DecodedDetector
from inspector.models.gfl_head import anchor_points, gfl_channels
from inspector.models.gfl_loss import distribution_focal_loss, giou

INPUT = 64
GRIDS = [(8, 8), (4, 4), (2, 2)]  # input 64 at strides 8, 16, 32


def gfl_config(**overrides) -> ModelConfig:
    values = dict(arch="mbv3-small", num_classes=3, input_size=INPUT, input_mode="image+template", head="gfl")
    return ModelConfig(**{**values, **overrides})


# --------------------------------------------------------------------------- configuration


def test_yolo_stays_the_default_and_configs_saved_before_the_head_field_load_as_yolo():
    saved = ModelConfig(arch="mbv3-small").to_dict()
    for name in ("head", "reg_max", "gfl_cls_loss", "tal_topk"):
        saved.pop(name)
    assert ModelConfig.from_dict(saved).head == "yolo"
    cfg = gfl_config(reg_max=5, gfl_cls_loss="qfl")
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("field, value", [("head", "fcos"), ("reg_max", 0), ("reg_max", 7.5), ("gfl_cls_loss", "bce"),
                                          ("gfl_iou_weight", -1.0), ("tal_topk", 0), ("tal_center_radius", "2"),
                                          ("gfl_tower_depth", 0), ("gfl_tower_kernel", 4)])
def test_bad_head_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"^checkpoint.json: {field}: expected"):
        ModelConfig.from_dict({**gfl_config().to_dict(), field: value}, source="checkpoint.json")


def test_every_arch_builds_the_gfl_layout_with_prediction_convs_named_as_the_yolo_head():
    for arch, depth in (("mbv3-small", 1), ("mbv3-small", 3), ("ppyolo-r18", 1)):
        model = build_model(gfl_config(arch=arch, gfl_tower_depth=depth, gfl_tower_kernel=5))
        assert all(len(block) == depth for block in model.head.blocks)
        model.eval()
        outputs = model(paddle.rand([1, 6, INPUT, INPUT]))
        assert [o.shape for o in outputs] == [[1, gfl_channels(3, 7), h, w] for h, w in GRIDS]
        names = {name for name, _ in model.named_sublayers()}
        assert {f"head.predictions.{level}" for level in range(3)} <= names


# --------------------------------------------------------------------------- assignment


def assign_one(gt_boxes, gt_classes, pred_boxes=None, num_classes=3, **settings):
    """Assignment of one image whose every point predicts a 24 px box centred on itself, score 0.5."""
    points, strides = anchor_points(GRIDS, (8, 16, 32))
    if pred_boxes is None:
        pred_boxes = np.concatenate([points - 12.0, points + 12.0], axis=1)
    scores = np.full((1, len(points), num_classes), 0.5)
    return task_aligned_assign(scores, pred_boxes[None], points, strides, np.asarray(gt_boxes, np.float32)[None],
                               np.asarray(gt_classes)[None], **settings), points


def test_the_best_aligned_point_gets_the_box_with_its_iou_as_the_class_target():
    assignment, points = assign_one([[16, 16, 40, 40]], [2], topk=1)
    (positive,) = np.nonzero(assignment.positive[0])
    assert points[positive].tolist() == [[28.0, 28.0]]  # its predicted box is the GT box exactly
    assert assignment.gt_index[0, positive].tolist() == [0]
    np.testing.assert_allclose(assignment.scores[0, positive], [[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(assignment.boxes[0, positive], [[16, 16, 40, 40]])
    assert assignment.scores.sum() == pytest.approx(1.0)  # nothing else is a target


def test_topk_positives_get_soft_targets_scaled_to_the_best_iou():
    assignment, points = assign_one([[16, 16, 40, 40]], [1], topk=5)
    positive = np.nonzero(assignment.positive[0])[0]
    assert len(positive) == 5
    targets = assignment.scores[0, positive]
    assert np.all(targets[:, [0, 2]] == 0) and targets[:, 1].max() == pytest.approx(1.0)
    assert np.all((targets[:, 1] > 0) & (targets[:, 1] <= 1.0))
    # The five are the nearest to the box centre, where the predicted boxes overlap it most.
    distance = np.abs(points[positive] - 28.0).sum(axis=1)
    assert distance.max() <= 8.0


def test_a_point_claimed_by_two_boxes_keeps_the_one_it_overlaps_most():
    gt = [[16, 16, 40, 40], [20, 20, 44, 44]]  # the point (28, 28) predicts box 0 exactly
    assignment, points = assign_one(gt, [0, 1], topk=3)
    at = int(np.nonzero((points == [28.0, 28.0]).all(axis=1))[0][0])
    assert assignment.gt_index[0, at] == 0 and assignment.scores[0, at, 0] == pytest.approx(1.0)
    assert set(assignment.gt_index[0][assignment.positive[0]].tolist()) == {0, 1}


def test_a_box_too_small_to_hold_a_point_is_learned_through_the_centre_prior_only():
    tiny = [[1, 1, 3, 3]]  # no cell centre (4, 12, 20, ...) lies inside
    assignment, _ = assign_one(tiny, [0], topk=4)
    assert assignment.positive.sum() > 0
    assignment, _ = assign_one(tiny, [0], topk=4, center_radius=0.0)
    assert assignment.positive.sum() == 0


@pytest.mark.parametrize("gt_boxes, gt_classes", [(np.zeros((0, 4)), np.zeros(0)), ([[0, 0, 0, 0]], [-1]),
                                                  ([[10, 10, 20, 20]], [-1])])
def test_no_ground_truth_means_no_positives(gt_boxes, gt_classes):
    assignment, _ = assign_one(gt_boxes, gt_classes)
    assert not assignment.positive.any() and assignment.scores.sum() == 0


# --------------------------------------------------------------------------- loss terms


def test_giou_on_hand_cases():
    a = paddle.to_tensor([[0.0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 2, 2]])
    b = paddle.to_tensor([[0.0, 0, 2, 2], [2, 0, 3, 1], [1, 0, 3, 2]])
    # identical: 1; disjoint side by side: IoU 0, hull 3, union 2 -> -1/3; half overlap: IoU 2/6, hull = union
    np.testing.assert_allclose(giou(a, b).numpy(), [1.0, -1.0 / 3.0, 1.0 / 3.0], atol=1e-6)


def test_distribution_focal_loss_on_hand_cases():
    sharp = paddle.to_tensor([[-20.0, -20, -20, 20, -20]])  # all mass on bin 3
    assert float(distribution_focal_loss(sharp, np.array([3.0], np.float32))) == pytest.approx(0.0, abs=1e-6)
    assert float(distribution_focal_loss(sharp, np.array([1.0], np.float32))) > 10.0
    halves = paddle.to_tensor([[-20.0, -20, 0, 0, -20]])  # half on bin 2, half on bin 3
    # target 2.5: the best a distribution can do is exactly this one; the loss is its entropy, log 2
    assert float(distribution_focal_loss(halves, np.array([2.5], np.float32))) == pytest.approx(np.log(2), abs=1e-6)
    # target 2.2: best is 0.8 on bin 2, 0.2 on bin 3 (loss = that pair's entropy), the halves do worse
    skewed = paddle.to_tensor([[-20.0, -20, np.log(0.8), np.log(0.2), -20]])
    entropy = -(0.8 * np.log(0.8) + 0.2 * np.log(0.2))
    assert float(distribution_focal_loss(skewed, np.array([2.2], np.float32))) == pytest.approx(entropy, abs=1e-5)
    assert float(distribution_focal_loss(halves, np.array([2.2], np.float32))) > entropy + 0.15


@pytest.mark.parametrize("gt_boxes, gt_classes", [(np.zeros((2, 0, 4), np.float32), np.zeros((2, 0), np.int64)),
                                                  (np.zeros((2, 3, 4), np.float32), np.full((2, 3), -1))])
def test_loss_without_ground_truth_is_finite_and_only_pushes_scores_down(gt_boxes, gt_classes):
    paddle.seed(0)
    model = build_model(gfl_config())
    losses = model.loss(model(paddle.rand([2, 6, INPUT, INPUT])), gt_boxes, gt_classes)
    assert float(losses["loss_iou"]) == 0.0 and float(losses["loss_dfl"]) == 0.0
    assert 0.0 < float(losses["loss_cls"]) == pytest.approx(float(losses["loss"]))
    losses["loss"].backward()
    gradients = [p.grad.numpy() for p in model.parameters() if p.grad is not None]
    assert gradients and all(np.isfinite(g).all() for g in gradients)
    prediction = model.head.predictions[0]
    assert np.abs(prediction.bias.grad.numpy()[:3]).max() > 0  # class logits are pushed down
    assert np.abs(prediction.bias.grad.numpy()[3:]).max() == 0  # distributions untouched


def test_loss_with_ground_truth_has_every_term_and_reaches_the_distributions():
    paddle.seed(0)
    model = build_model(gfl_config(gfl_cls_loss="qfl"))
    gt_boxes = np.array([[[8, 8, 30, 26], [0, 0, 0, 0]], [[30, 34, 50, 60], [4, 40, 20, 52]]], np.float32)
    losses = model.loss(model(paddle.rand([2, 6, INPUT, INPUT])), gt_boxes, np.array([[1, -1], [0, 2]]))
    assert all(float(losses[key]) > 0 for key in ("loss_cls", "loss_iou", "loss_dfl"))
    assert float(losses["loss"]) == pytest.approx(sum(float(losses[k]) for k in ("loss_cls", "loss_iou", "loss_dfl")),
                                                  rel=1e-5)
    losses["loss"].backward()
    assert np.abs(model.head.predictions[0].bias.grad.numpy()[3:]).max() > 0
    with pytest.raises(ValueError, match="gt_classes: class id 5 out of range"):
        model.loss(model(paddle.rand([1, 6, INPUT, INPUT])), gt_boxes[:1], np.array([[5, -1]]))


# --------------------------------------------------------------------------- decoding


def known_outputs(cfg: ModelConfig) -> list[paddle.Tensor]:
    """Maps whose every point scores 0 except one, with sharp or split side distributions there."""
    bins = cfg.reg_max + 1
    outputs = []
    for h, w in GRIDS:
        level = np.full((1, gfl_channels(cfg.num_classes, cfg.reg_max), h, w), -30.0, np.float32)
        level[:, cfg.num_classes:] = 0.0  # uniform distributions
        outputs.append(level)
    # stride 8, row 1, column 2: the point (20, 12); class 1 logit 0 -> score 0.5
    column = outputs[0][0, :, 1, 2]
    column[1] = 0.0
    dist = column[cfg.num_classes:].reshape(4, bins)
    dist[:] = -30.0
    dist[0, 1] = dist[1, 2] = dist[2, 3] = 30.0  # left 1, top 2, right 3 strides
    dist[3, 0] = dist[3, 1] = 0.0  # bottom: half on 0, half on 1 -> 0.5 strides
    return [paddle.to_tensor(level) for level in outputs]


def test_decode_of_a_known_distribution_gives_the_expected_box():
    cfg = gfl_config()
    model = build_model(cfg)
    boxes, scores = model.decode(known_outputs(cfg))
    assert boxes.shape == [1, 84, 4] and scores.shape == [1, 84, 3]
    index = 1 * 8 + 2  # row-major, level 0 first
    np.testing.assert_allclose(boxes.numpy()[0, index], [20 - 8, 12 - 16, 20 + 24, 12 + 4], atol=1e-4)
    np.testing.assert_allclose(scores.numpy()[0, index], [0.0, 0.5, 0.0], atol=1e-6)
    assert scores.numpy().sum() == pytest.approx(0.5, abs=1e-5)
    # A uniform distribution sits at reg_max / 2 strides on every side: the stride-32 point (48, 48).
    np.testing.assert_allclose(boxes.numpy()[0, -1], [48 - 112, 48 - 112, 48 + 112, 48 + 112], atol=1e-3)


def test_the_export_graph_decodes_with_its_buffers_as_the_model_does():
    paddle.seed(1)
    model = build_model(gfl_config())
    model.eval()
    images = paddle.rand([2, 6, INPUT, INPUT])
    want = model.decode(model(images))
    got = DecodedDetector(model)(images)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert {name for name, _ in DecodedDetector(model).named_buffers() if "points" in name or "projection" in name}


# --------------------------------------------------------------------------- compression refuses or works


def test_distillation_takes_the_gfl_head_and_the_pipeline_distils_it(tmp_path):
    from inspector.compression.distill import check_teacher_head
    from inspector.pipeline.config import PipelineConfig, PipelineError
    from inspector.training.checkpoint import load_checkpoint, save_checkpoint

    model = build_model(gfl_config())
    save_checkpoint(tmp_path / "teacher", model.state_dict(), model.cfg, ["a", "b", "c"], {})
    check_teacher_head(load_checkpoint(tmp_path / "teacher"))  # distilled with gfl_distill's terms (issue 14)
    assert PipelineConfig(data="d", out="o", head="gfl").distill
    with pytest.raises(PipelineError, match="^head: expected one of"):
        PipelineConfig(data="d", out="o", head="anchorless")
    assert PipelineConfig(data="d", out="o", head="gfl", distill=False, prune_ratio=0.3).head == "gfl"


@pytest.mark.parametrize("arch", ["mbv3-small", "ppyolo-r18"])
def test_pruning_the_gfl_towers_computes_what_the_model_computes_with_those_channels_zeroed(arch):
    """As test_prune's oracle: zero the removed channels where they are written in the unpruned model."""
    import copy

    from inspector.compression.pruning.channels import channels_to_keep, prune_model
    from inspector.compression.pruning.groups import channel_groups
    from inspector.models.layers import SPP, ConvBNAct, CoordConv

    paddle.seed(0)
    model = build_model(gfl_config(arch=arch, gfl_tower_depth=2))
    rng = np.random.default_rng(0)
    with paddle.no_grad():  # non-trivial BatchNorm statistics, so every channel matters
        for name, param in model.named_parameters():
            if ".bn." in name:
                param.set_value(rng.uniform(0.5, 1.5, param.shape).astype("float32"))
    model.eval()
    names = [group.name for group in channel_groups(model)]
    assert {f"head.blocks.{level}.{layer}.out" for level in range(3) for layer in range(2)} <= set(names)

    def innermost(layer):
        return layer.conv if isinstance(layer, CoordConv) else layer.fuse if isinstance(layer, SPP) else layer

    masked = copy.deepcopy(model)
    layers = dict(masked.named_sublayers())
    with paddle.no_grad():
        for group in channel_groups(masked):
            first = innermost(layers[group.producers[0]])
            weight = first.conv.weight if isinstance(first, ConvBNAct) else first.weight
            removed = np.setdiff1d(np.arange(group.size), channels_to_keep(weight.numpy(), 0.5, "l1"))
            for path in group.producers:
                layer = innermost(layers[path])
                for param in ([layer.bn.weight, layer.bn.bias] if isinstance(layer, ConvBNAct)
                              else [layer.weight, layer.bias]):
                    value = param.numpy()
                    value[removed] = 0.0
                    param.set_value(value)
    x = paddle.to_tensor(rng.normal(0, 1, (2, 6, INPUT, INPUT)).astype("float32"))
    with paddle.no_grad():
        expected = [o.numpy() for o in masked(x)]
        prune_model(model, {name: 0.5 for name in names}, "l1")
        got = [o.numpy() for o in model(x)]
    head_weights = [sum(int(np.prod(p.shape)) for p in m.head.parameters()) for m in (model, masked)]
    assert head_weights[0] < 0.6 * head_weights[1]
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pipeline_and_train_commands_pass_the_head_on(tmp_path, monkeypatch):
    from pathlib import Path

    import inspector.pipeline
    from inspector.cli import app

    seen: dict = {}

    def fake_run(cfg, until=None, echo=print, redo=None):
        seen["cfg"] = cfg
        return Path(cfg.out)

    monkeypatch.setattr(inspector.pipeline, "run_pipeline", fake_run)
    result = CliRunner().invoke(app, ["pipeline", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                                      "--head", "gfl"])
    assert result.exit_code == 0, result.output
    assert seen["cfg"].head == "gfl"
    result = CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--data", str(tmp_path / "d"), "--out",
                                      str(tmp_path / "t"), "--head", "fcos"])
    assert result.exit_code != 0 and "fcos" in result.output


def test_pipeline_directories_started_before_the_head_field_continue_as_yolo():
    from inspector.pipeline.config import PipelineConfig, differences

    wanted = PipelineConfig(data="d", out="o").to_dict()
    saved = {key: value for key, value in wanted.items() if key != "head"}
    assert differences(saved, wanted) == []
    assert differences(saved, {**wanted, "head": "gfl"}) == ["head: 'yolo' -> 'gfl'"]


def test_qat_keeps_the_prediction_convs_fp32_and_trains_through_the_gfl_loss():
    from inspector.compression.quantization.layers import convolutions, quantize_model, resolve_layer_names

    paddle.seed(2)
    model = build_model(gfl_config())
    assert resolve_layer_names(model, ["head.predictions"]) == [f"head.predictions.{i}" for i in range(3)]
    quantize_model(model, skip_layers=["head.predictions"])
    kinds = {name: type(conv).__name__ for name, conv in convolutions(model).items()}
    assert {name for name, kind in kinds.items() if kind == "Conv2D"} == {f"head.predictions.{i}" for i in range(3)}
    model.train()
    gt = np.array([[[8, 8, 30, 26]]], np.float32)
    losses = model.loss(model(paddle.rand([1, 6, INPUT, INPUT])), gt, np.array([[1]]))
    losses["loss"].backward()
    assert np.isfinite(float(losses["loss"]))
    assert model.head.blocks[0][0].pointwise.conv._layer.weight.grad is not None  # fake-quant layers learn


@pytest.mark.slow
def test_an_int8_gfl_model_saves_runs_on_onednn_like_its_fake_quant_model_and_converts_for_arm(tmp_path):
    from inspector.compression.quantization.calibrate import calibrate
    from inspector.compression.quantization.layers import lite_x86_fp32_layers, quantize_model
    from inspector.compression.quantization.measure import InferenceModel
    from inspector.compression.quantization.program import save_inference_model
    from inspector.models.inference_program import params_file, program_file
    from inspector.export.lite import convert_to_lite

    paddle.seed(3)
    model = build_model(gfl_config())
    model.eval()
    rng = np.random.default_rng(0)
    with paddle.no_grad():  # prediction weights as a trained head has: scores and distributions vary by place
        for prediction in model.head.predictions:
            prediction.weight.set_value(rng.normal(0, 0.5, prediction.weight.shape).astype("float32"))
            prediction.bias.set_value(np.zeros(prediction.bias.shape, "float32"))
    quantize_model(model, skip_layers=lite_x86_fp32_layers(model) + ["head.predictions"])
    calibrate(model, [rng.random((4, 6, INPUT, INPUT), dtype=np.float32)])
    images = rng.random((1, 6, INPUT, INPUT), dtype=np.float32)
    with paddle.no_grad():
        want_boxes, want_scores = (t.numpy() for t in model.decode(model(paddle.to_tensor(images))))
    prefix = tmp_path / "model"
    save_inference_model(model, prefix, INPUT, in_channels=6)
    onednn = InferenceModel(prefix, onednn_int8=True, threads=1)
    assert onednn.runtime.precision == "int8"
    # The INT8 graph converts for ARM (what ships there). Lite's own x86 INT8 kernels are not run: they are lossy
    # and not even repeatable on this graph (max box error from 2 px to 1e21 between runs), which is why x86
    # packages carry an FP32 twin (export/package.py).
    convert_to_lite(program_file(prefix), params_file(prefix), "arm", tmp_path / "arm.nb")
    assert (tmp_path / "arm.nb").stat().st_size > 0
    assert want_scores.std() > 0.02 and want_boxes[..., 2].std() > 2.0  # outputs that vary: a test that can fail

    boxes, scores = onednn(images)
    np.testing.assert_allclose(scores, want_scores, atol=0.03)
    np.testing.assert_allclose(boxes, want_boxes, atol=0.02 * INPUT)


# --------------------------------------------------------------------------- learning and export (slow)


@pytest.mark.slow
def test_one_synthetic_board_is_learned_and_its_boxes_found():
    from inspector.data.synth import generate_pair
    from inspector.models.nms import box_iou_numpy

    size = 160
    pair = generate_pair(np.random.default_rng(4), size=size, n_defects=(3, 3))
    image = np.concatenate([pair.tested, pair.template], axis=2)[:, :, [2, 1, 0, 5, 4, 3]]
    x = paddle.to_tensor(image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    gt_boxes, gt_classes = pair.boxes[None], pair.classes[None]
    paddle.seed(0)
    model = build_model(gfl_config(num_classes=6, input_size=size))
    optimizer = paddle.optimizer.Adam(learning_rate=0.005, parameters=model.parameters())
    model.train()
    history = []
    for _ in range(80):
        losses = model.loss(model(x), gt_boxes, gt_classes)
        losses["loss"].backward()
        optimizer.step()
        optimizer.clear_grad()
        history.append(float(losses["loss"]))
    assert np.isfinite(history).all() and np.mean(history[-5:]) < 0.35 * np.mean(history[:5]), history[::10]

    model.eval()
    boxes, scores, classes = model.postprocess(model(x), score_threshold=0.2)[0]
    iou = box_iou_numpy(gt_boxes[0], boxes)
    assert (iou.max(axis=1) > 0.5).all(), iou  # every defect found (7-11 px boxes on a 160 px board)
    assert classes[iou.argmax(axis=1)].tolist() == gt_classes[0].tolist()
    top = int(np.argmax(scores))
    assert box_iou_numpy(boxes[top:top + 1], gt_boxes[0]).max() > 0.7


@pytest.mark.slow
def test_a_gfl_package_runs_in_the_runtime_on_lite_and_paddle_like_the_trained_model(tmp_path):
    from inspector.cli import app
    from inspector.data import load_dataset
    from inspector.data.synth import write_deeppcb
    from inspector.data.transforms import letterbox, to_input
    from inspector.export import export_package
    from inspector.runtime import Detector
    from inspector.training.checkpoint import load_checkpoint

    data = write_deeppcb(tmp_path / "boards", n=6, seed=3, size=160)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--head", "gfl", "--data", str(data),
                                      "--out", str(run), "--epochs", "1", "--batch", "3", "--input-size", str(INPUT),
                                      "--crop-size", "0", "--no-augment", "--val-fraction", "0.34"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run).model_config.head == "gfl"
    package = export_package(run, tmp_path / "package", progress=lambda line: None)
    assert json.loads((package / "manifest.json").read_text())["model"]["head"] == "gfl"

    sample = load_dataset(data).samples[0]
    image, template = sample.load_image(), sample.load_template()
    batch = to_input(letterbox(image, INPUT)[0], letterbox(template, INPUT)[0])[None]
    model = DecodedDetector(load_checkpoint(run).build())
    model.eval()
    want = [t.numpy() for t in model(paddle.to_tensor(batch))]
    detections = {}
    for backend in ("lite", "paddle"):
        detector = Detector.load(package, backend=backend, threads=1)
        for got, expected in zip(detector.infer(batch), want):
            np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-4)
        detections[backend] = detector.detect(image, template, score_threshold=0.0, nms_threshold=0.99,
                                                max_detections=20)
    lite, paddle_inference = detections["lite"], detections["paddle"]
    assert len(lite) == len(paddle_inference) == 20
    assert lite.class_ids.tolist() == paddle_inference.class_ids.tolist()
    assert np.abs(lite.boxes - paddle_inference.boxes).max() < 1.0
