"""``inspector train --init PACKAGE`` (inspector/training/package_init.py): a shipped package's network is
recovered as a trainable checkpoint that computes what the package computes, also after converting it to the
full-resolution grey layout, and in train mode as in eval mode."""
from __future__ import annotations

import cv2
import numpy as np
import paddle
import pytest

from inspector.data import load_dataset
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data.loader import BatchLoader
from inspector.data.transforms import to_input
from inspector.models.detector import DecodedDetector
from inspector.models.inference_program import InferencePredictor
from inspector.training.checkpoint import load_checkpoint
from inspector.training.config import TrainConfig
from inspector.training.package_init import PACKAGE_INIT_DIR, checkpoint_from_package
from inspector.training.trainer import train

SHIPPED = BUNDLED_DEEPPCB.parents[2] / "models" / "default"


def _decoded(checkpoint_dir, images: np.ndarray) -> list[np.ndarray]:
    model = DecodedDetector(load_checkpoint(checkpoint_dir).build())
    model.eval()
    with paddle.no_grad():
        return [t.numpy() for t in model(paddle.to_tensor(images))]


def _rgb_from_s2d(s2d: np.ndarray) -> np.ndarray:
    """What image+template sees of a grey board at half the side: each RGB plane the 2x2 mean (INTER_AREA)."""
    test, template = s2d[:, 0:4].mean(axis=1, keepdims=True), s2d[:, 4:8].mean(axis=1, keepdims=True)
    return np.concatenate([test, test, test, template, template, template], axis=1)


def test_an_fp32_package_is_recovered_exactly(tiny_package, tmp_path):
    data = load_dataset(tiny_package.data)
    checkpoint = checkpoint_from_package(tiny_package.package, tmp_path / "init", data)
    assert checkpoint.model_config.input_mode == "image+template"
    images = np.random.default_rng(0).random((1, 6, 64, 64), dtype=np.float32)
    package = InferencePredictor(tiny_package.package / "model.pdmodel", tiny_package.package / "model.pdiparams")
    for recovered, shipped in zip(_decoded(checkpoint.path, images), package.run(images)):
        np.testing.assert_allclose(recovered, shipped, rtol=1e-4, atol=1e-4)


def test_converting_to_gray_diff_s2d_keeps_the_function_on_grey_boards(tiny_package, tmp_path):
    data = load_dataset(tiny_package.data)
    same = checkpoint_from_package(tiny_package.package, tmp_path / "same", data)
    grey = checkpoint_from_package(tiny_package.package, tmp_path / "grey", data, input_mode="gray-diff-s2d")
    assert grey.model_config.input_mode == "gray-diff-s2d" and grey.model_config.in_channels == 12
    assert grey.info["init_from_package"]["input_mode"] == "image+template"
    # Real grey boards in the grey layout; the RGB model gets the same boards at half the side.
    loader = BatchLoader(data, 4, 64, "gray-diff-s2d", train=False, workers=0)
    s2d = next(iter(loader)).images
    for converted, original in zip(_decoded(grey.path, s2d), _decoded(same.path, _rgb_from_s2d(s2d))):
        np.testing.assert_allclose(converted, original, rtol=1e-4, atol=1e-4)
    # The difference planes start unused: the model learns them from here.
    stem = load_checkpoint(grey.path).build().state_dict()
    first = next(value for value in stem.values() if value.ndim == 4)
    assert first.shape[1] == 12 and float(np.abs(first.numpy()[:, 8:]).max()) == 0.0


def test_an_rgb_package_converts_to_the_layout_without_the_template_plane_through_the_grey_layout(tiny_package,
                                                                                                  tmp_path):
    data = load_dataset(tiny_package.data)
    grey = checkpoint_from_package(tiny_package.package, tmp_path / "grey", data, input_mode="gray-diff-s2d")
    lean = checkpoint_from_package(tiny_package.package, tmp_path / "lean", data, input_mode="gray-frame-diff-s2d")
    assert lean.model_config.in_channels == 8
    grey_stem, lean_stem = (next(v.numpy() for v in load_checkpoint(c.path).build().state_dict().values()
                                 if v.ndim == 4) for c in (grey, lean))
    frame, template, difference = grey_stem[:, 0:4], grey_stem[:, 4:8], grey_stem[:, 8:12]
    np.testing.assert_allclose(lean_stem[:, 0:4], frame + template, rtol=1e-6)
    np.testing.assert_allclose(lean_stem[:, 4:8], difference - template, rtol=1e-6)
    assert float(np.abs(template).max()) > 0  # the template's weights moved, not dropped


def test_leaving_out_the_template_plane_keeps_the_function_where_copper_is_only_missing(tmp_path):
    """gray-diff-s2d -> gray-frame-diff-s2d: on a binarised board t = f - d + 2(1 - f)d, exact wherever the frame
    is not dark where the template is bright. A board whose defects only remove (dark) copper gets the same
    detections from both; one with extra copper does not (what the fine-tuning then learns)."""
    boards = load_dataset(BUNDLED_DEEPPCB)
    same = checkpoint_from_package(SHIPPED, tmp_path / "same", boards, calibration_images=4)
    lean = checkpoint_from_package(SHIPPED, tmp_path / "lean", boards, input_mode="gray-frame-diff-s2d",
                                   calibration_images=4)
    assert same.model_config.input_mode == "gray-diff-s2d", "models/default changed its layout: update this test"
    assert lean.model_config.input_mode == "gray-frame-diff-s2d" and lean.model_config.in_channels == 8
    grey = cv2.imread(str(boards.samples[0].template_path), cv2.IMREAD_GRAYSCALE)
    template = np.where(grey >= 128, 255, 0).astype(np.uint8)  # binarised (the JPEG files blur edges a little)
    region = np.zeros_like(template, dtype=bool)
    region[400:600, 100:500] = True  # traces and substrate
    missing = np.where(region, 255, template).astype(np.uint8)  # copper (dark) removed
    extra = np.where(region, 0, template).astype(np.uint8)  # copper added
    assert (missing != template).sum() > 1000 and (extra != template).sum() > 1000
    _assert_same_function_only_where_expected(same, lean, template, ((missing, True), (extra, False)))


def test_leaving_out_the_difference_plane_keeps_the_function_where_frame_and_template_agree(tmp_path):
    """gray-diff-s2d -> gray-frame-template-s2d drops the difference's weights: a board equal to its template (no
    difference anywhere) gets the same outputs from both; a defective one does not."""
    boards = load_dataset(BUNDLED_DEEPPCB)
    same = checkpoint_from_package(SHIPPED, tmp_path / "same", boards, calibration_images=4)
    lean = checkpoint_from_package(SHIPPED, tmp_path / "lean", boards, input_mode="gray-frame-template-s2d",
                                   calibration_images=4)
    assert lean.model_config.input_mode == "gray-frame-template-s2d" and lean.model_config.in_channels == 8
    template = cv2.imread(str(boards.samples[0].template_path), cv2.IMREAD_GRAYSCALE)
    frame = cv2.imread(str(boards.samples[0].image_path), cv2.IMREAD_GRAYSCALE)
    assert int((cv2.absdiff(frame, template) > 64).sum()) > 100  # the sample has defects
    _assert_same_function_only_where_expected(same, lean, template, ((template, True), (frame, False)))


def _assert_same_function_only_where_expected(same, lean, template, frames) -> None:
    """``lean`` (an 8-plane layout) computes what ``same`` (gray-diff-s2d) does on each frame marked True of
    ``frames`` ((frame, equal) pairs, all against ``template``) and measurably differs on those marked False."""
    for frame, equal in frames:
        full = to_input(frame, template, "gray-diff-s2d")[None]
        reduced = to_input(frame, template, lean.model_config.input_mode)[None]
        assert reduced.shape == (1, 8, 320, 320)
        (boxes_full, scores_full), (boxes_lean, scores_lean) = _decoded(same.path, full), _decoded(lean.path, reduced)
        if equal:
            np.testing.assert_allclose(scores_lean, scores_full, atol=1e-4)
            np.testing.assert_allclose(boxes_lean, boxes_full, atol=1e-2)
        else:
            assert float(np.abs(scores_lean - scores_full).max()) > 1e-2


def test_the_shipped_int8_package_becomes_a_model_that_trains_from_where_it_stands(tmp_path):
    """models/default is a QAT package: BatchNorm folded into the weights, weights INT8. Recovered, its
    BatchNorms are unfolded from statistics measured on the calibration boards, so a train-mode step (batch
    statistics) starts from the function eval mode computes, not from a network thrown off by renormalisation."""
    boards = load_dataset(BUNDLED_DEEPPCB)
    checkpoint = checkpoint_from_package(SHIPPED, tmp_path / "init", boards, calibration_images=8)
    model = checkpoint.build()
    spec = checkpoint.model_config  # the shipped package's own input layout (RGB pairs or grey + difference)
    images = paddle.to_tensor(next(iter(BatchLoader(boards, 8, spec.input_size, spec.input_mode, train=False,
                                                    workers=0))).images)
    with paddle.no_grad():
        evaluated = [t.numpy() for t in model(images)]
        model.train()
        trained = [t.numpy() for t in model(images)]
    for a, b in zip(trained, evaluated):
        # objectness / class logits of a batch of 8 real boards: batch statistics equal the measured ones
        assert float(np.abs(a - b).max()) < 1e-2 * max(1.0, float(np.abs(b).max()))
    # Dequantized weights reproduce the package: the decoded boxes of the eval model and of the INT8 graph
    # (Paddle Inference, FP32 kernels running its quantize/dequantize operators) agree to quantisation noise.
    shipped = InferencePredictor(SHIPPED / "model.pdmodel", SHIPPED / "model.pdiparams")
    first = images.numpy()[:1]
    recovered_scores = _decoded(checkpoint.path, first)[1]
    shipped_scores = shipped.run(first)[1]
    confident = shipped_scores.max(axis=-1) > 0.5
    assert confident.sum() > 0
    difference = np.abs(recovered_scores[confident] - shipped_scores[confident])
    # The recovered network has no activation fake-quant: a few class scores of a confident anchor move by up
    # to ~0.18 (shipped grey 12-plane model, 43 confident anchors: median 1e-4, 99th percentile 0.16); a wrong
    # scale or BatchNorm moves them all and flips classes.
    assert np.median(difference) < 0.01 and difference.max() < 0.25
    np.testing.assert_array_equal(recovered_scores[confident].argmax(-1), shipped_scores[confident].argmax(-1))


def test_training_starts_from_a_package_and_refuses_a_layout_it_cannot_convert(tiny_package, tmp_path):
    base = dict(arch="mbv3-small", data=str(tiny_package.data), epochs=1, batch_size=3, input_size=64, crop_size=None,
                warmup_epochs=0.0, val_fraction=0.25, workers=0, seed=1, augment=False, max_steps_per_epoch=1,
                init=str(tiny_package.package))
    run = train(TrainConfig(out=str(tmp_path / "grey"), input_mode="gray-diff-s2d", **base))
    recovered = load_checkpoint(run / PACKAGE_INIT_DIR)
    assert recovered.model_config.input_mode == "gray-diff-s2d"
    assert load_checkpoint(run / "best").model_config.input_mode == "gray-diff-s2d"
    with pytest.raises(ValueError, match=r"manifest.json: cannot convert input layout 'image\+template' to 'image'"):
        train(TrainConfig(out=str(tmp_path / "rgb"), input_mode="image", **base))
