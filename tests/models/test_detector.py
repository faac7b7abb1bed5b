"""YOLODetector and build_model: shapes per architecture, overfitting a couple of images, export."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from inspector.models import ARCH_NAMES, ModelConfig, build_model, count_parameters
from inspector.models.detector import YOLODetector
from inspector.models.head import YOLOHead, channels_per_anchor
from inspector.models.layers import ConvBNAct
from inspector.models.nms import box_iou_numpy

REPO = Path(__file__).resolve().parents[2]


class StandInBackbone(nn.Layer):
    """Five strided convs: maps at strides 8, 16, 32, enough to test the head and loss on their own."""

    def __init__(self, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            ConvBNAct(in_channels, 16, 3, 2), ConvBNAct(16, width, 3, 2), ConvBNAct(width, width, 3, 2)
        )
        self.down16 = ConvBNAct(width, width, 3, 2)
        self.down32 = ConvBNAct(width, width, 3, 2)
        self.out_channels = [width, width, width]

    def forward(self, x: paddle.Tensor) -> list[paddle.Tensor]:
        s8 = self.stem(x)
        s16 = self.down16(s8)
        return [s8, s16, self.down32(s16)]


def stand_in_detector(cfg: ModelConfig) -> YOLODetector:
    backbone = StandInBackbone(cfg.in_channels)
    head = YOLOHead(backbone.out_channels, cfg.num_anchors, cfg.num_classes, cfg.iou_aware, block="conv")
    return YOLODetector(backbone, nn.Identity(), head, cfg)


def synthetic_batch(size: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two images with bright defects: class 0 filled squares, class 1 hollow ones; padded GT."""
    boxes = np.array(
        [[[20, 30, 34, 44], [70, 60, 82, 80], [0, 0, 0, 0]], [[50, 50, 64, 62], [90, 20, 102, 36], [10, 90, 26, 102]]],
        np.float32,
    )
    classes = np.array([[0, 1, -1], [1, 0, 0]])
    images = np.zeros((2, 3, size, size), np.float32)
    for b in range(2):
        for (x1, y1, x2, y2), c in zip(boxes[b].astype(int), classes[b]):
            if c < 0:
                continue
            images[b, :, y1:y2, x1:x2] = 1.0
            if c == 1:
                images[b, :, y1 + 3 : y2 - 3, x1 + 3 : x2 - 3] = 0.0
    return images, boxes, classes


def test_detector_methods_follow_the_contract():
    cfg = ModelConfig(arch="mbv3-small", num_classes=2, input_size=64, input_mode="image+template")
    model = stand_in_detector(cfg)
    images = paddle.rand([2, 6, 64, 64])
    features = model.features(images)
    assert [f.shape for f in features] == [[2, 32, 8, 8], [2, 32, 4, 4], [2, 32, 2, 2]]
    outputs = model(images)
    k = channels_per_anchor(2, True)
    assert [o.shape for o in outputs] == [[2, 3 * k, 8, 8], [2, 3 * k, 4, 4], [2, 3 * k, 2, 2]]
    assert [o.shape for o in model.head(features)] == [o.shape for o in outputs]
    boxes, scores = model.decode(outputs)
    assert boxes.shape == [2, 3 * (64 + 16 + 4), 4] and scores.shape == [2, 3 * 84, 2]
    losses = model.loss(outputs, np.array([[[8, 8, 30, 30]], [[0, 0, 0, 0]]], np.float32), np.array([[1], [-1]]))
    assert all(np.isfinite(float(v)) for v in losses.values())
    detections = model.postprocess(outputs, score_threshold=0.0, max_detections=7)
    assert len(detections) == 2 and all(len(d[0]) <= 7 for d in detections)


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_build_model_every_arch_gives_the_shared_head_layout(arch):
    cfg = ModelConfig(arch=arch, num_classes=6, input_size=64, input_mode="image+template")
    model = build_model(cfg)
    model.eval()
    features = model.features(paddle.rand([1, 6, 64, 64]))
    assert [f.shape[1] for f in features] == list(model.neck.out_channels)
    assert [f.shape[2] for f in features] == [8, 4, 2]
    outputs = model.head(features)
    assert [o.shape for o in outputs] == [[1, 3 * 12, s, s] for s in (8, 4, 2)]


@pytest.mark.slow
def test_parameter_counts_order_the_architectures():
    counts = {arch: count_parameters(build_model(ModelConfig(arch=arch))) for arch in ARCH_NAMES}
    order = ["mbv3-small", "mbv3-large", "ppyolo-r18", "ppyolo-r34", "ppyolo-r50", "ppyolo-r50-dcn"]
    assert [counts[a] for a in order] == sorted(counts.values())
    assert counts["mbv3-small"] < 1.5e6 and counts["ppyolo-r50"] > 20e6
    narrow = count_parameters(build_model(ModelConfig(arch="mbv3-small-x0.75")))
    assert narrow < counts["mbv3-small"]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["stand-in", "mbv3-small"])
def test_tiny_model_overfits_two_images_and_finds_their_boxes(which):
    paddle.seed(0)
    cfg = ModelConfig(arch="mbv3-small", num_classes=2, input_size=128)
    model = stand_in_detector(cfg) if which == "stand-in" else build_model(cfg)
    images, gt_boxes, gt_classes = synthetic_batch(128)
    x = paddle.to_tensor(images)
    optimizer = paddle.optimizer.Adam(learning_rate=0.01, parameters=model.parameters())
    start = time.time()
    model.train()
    history = []
    for _ in range(60):
        losses = model.loss(model(x), gt_boxes, gt_classes)
        losses["loss"].backward()
        optimizer.step()
        optimizer.clear_grad()
        history.append(float(losses["loss"]))
    assert time.time() - start < 60
    assert np.isfinite(history).all() and history[-1] < 0.2 * history[0], history[::10]

    model.eval()
    for b, (boxes, scores, classes) in enumerate(model.postprocess(model(x), score_threshold=0.3)):
        valid = gt_classes[b] >= 0
        assert 0 < len(boxes) <= 2 * valid.sum()
        iou = box_iou_numpy(gt_boxes[b][valid], boxes)
        best = iou.argmax(axis=1)
        assert (iou.max(axis=1) > 0.5).all(), iou
        assert classes[best].tolist() == gt_classes[b][valid].tolist()


EXPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import paddle
    from paddle import inference
    from paddlelite.lite import MobileConfig, Opt, create_paddle_predictor
    from inspector.models import DecodedDetector, ModelConfig, build_model

    out_dir = sys.argv[1]
    paddle.seed(0)
    cfg = ModelConfig(arch="mbv3-small", num_classes=3, input_size=64)
    model = DecodedDetector(build_model(cfg))
    model.eval()
    x = np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)
    reference = [t.numpy() for t in model(paddle.to_tensor(x))]
    spec = [paddle.static.InputSpec([1, 3, 64, 64], "float32", "images")]
    paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), out_dir + "/model")

    config = inference.Config(out_dir + "/model.pdmodel", out_dir + "/model.pdiparams")
    predictor = inference.create_predictor(config)
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(x)
    predictor.run()
    exported = [predictor.get_output_handle(n).copy_to_cpu() for n in predictor.get_output_names()]

    opt = Opt()
    opt.set_model_file(out_dir + "/model.pdmodel")
    opt.set_param_file(out_dir + "/model.pdiparams")
    opt.set_valid_places("x86")
    opt.set_model_type("naive_buffer")
    opt.set_optimize_out(out_dir + "/lite")
    opt.run()
    lite_config = MobileConfig()
    lite_config.set_model_from_file(out_dir + "/lite.nb")
    lite = create_paddle_predictor(lite_config)
    lite.get_input(0).from_numpy(x)
    lite.run()
    lite_out = [lite.get_output(0).numpy(), lite.get_output(1).numpy()]

    for name, outs in (("inference", exported), ("lite", lite_out)):
        for got, want in zip(outs, reference):
            assert got.shape == want.shape, (name, got.shape, want.shape)
            assert np.allclose(got, want, atol=1e-3), (name, np.abs(got - want).max())
    print("EXPORT-OK", [r.shape for r in reference])
    """
)


@pytest.mark.slow
def test_decoded_detector_exports_to_legacy_program_and_runs_in_inference_and_lite(tmp_path):
    """Legacy (non-PIR) program: the .pdmodel format Paddle Lite reads; outputs must match dygraph."""
    script = tmp_path / "export.py"
    script.write_text(EXPORT_SCRIPT)
    env = dict(os.environ, FLAGS_enable_pir_api="0", OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "EXPORT-OK" in result.stdout
    assert (tmp_path / "model.pdmodel").stat().st_size > 0 and (tmp_path / "lite.nb").stat().st_size > 0
    assert "Can't parse message" not in result.stdout + result.stderr  # Lite read every op attribute
