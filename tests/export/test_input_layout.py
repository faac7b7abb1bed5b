"""Input layouts (inspector/data/layouts.py): the grey space-to-depth layout is defined once and every
side (pre-processing, loader, manifest, runtime) agrees on it; bad inputs are refused by name."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from inspector.data import load_dataset
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data.layouts import INPUT_LAYOUTS, input_layout
from inspector.data.loader import BatchLoader
from inspector.data.transforms import AugmentConfig, to_input, unletterbox_boxes
from inspector.export.manifest import PackageError, read_manifest
from inspector.models import ModelConfig


def _board(seed: int, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = (rng.random((size, size)) > 0.5).astype(np.uint8) * 255
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def test_gray_diff_s2d_planes_are_grey_template_and_difference_packed_like_pixel_unshuffle():
    import paddle

    image, template = _board(1), _board(2)
    tensor = to_input(image, template, "gray-diff-s2d")
    assert tensor.shape == (12, 8, 8) and tensor.dtype == np.float32
    grey_image, grey_template = image[..., 0], template[..., 0]  # equal planes: grey is any of them
    planes = np.stack([grey_image, grey_template, cv2.absdiff(grey_image, grey_template)]).astype(np.float32) / 255
    # paddle's own pixel_unshuffle defines the channel order the network was trained with.
    expected = paddle.nn.functional.pixel_unshuffle(paddle.to_tensor(planes[None]), 2).numpy()[0]
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-7)
    # The difference plane is zero where the boards agree and 1 where they differ.
    difference = tensor[8:].reshape(2, 2, 8, 8).transpose(2, 0, 3, 1).reshape(16, 16)
    np.testing.assert_array_equal(difference > 0.5, grey_image != grey_template)


def test_gray_frame_diff_s2d_is_gray_diff_s2d_without_its_template_plane():
    image, template = _board(1), _board(2)
    full = to_input(image, template, "gray-diff-s2d")
    reduced = to_input(image, template, "gray-frame-diff-s2d", out=np.full((8, 8, 8), np.nan, np.float32))
    assert reduced.shape == (8, 8, 8)
    np.testing.assert_array_equal(reduced, np.concatenate([full[0:4], full[8:12]]))
    with pytest.raises(ValueError, match="needs the golden template"):
        to_input(image, None, "gray-frame-diff-s2d")


def test_gray_frame_template_s2d_is_gray_diff_s2d_without_its_difference_plane():
    image, template = _board(1), _board(2)
    full = to_input(image, template, "gray-diff-s2d")
    reduced = to_input(image, template, "gray-frame-template-s2d", out=np.full((8, 8, 8), np.nan, np.float32))
    np.testing.assert_array_equal(reduced, full[0:8])


def test_to_input_refuses_a_missing_template_odd_sides_and_an_unknown_layout():
    with pytest.raises(ValueError, match="needs the golden template"):
        to_input(_board(1), None, "gray-diff-s2d")
    with pytest.raises(ValueError, match="divisible by 2"):
        to_input(_board(1, 15), _board(2, 15), "gray-diff-s2d")
    with pytest.raises(ValueError, match="unknown input layout 'rgbd'; this version knows image, image"):
        to_input(_board(1), _board(2), "rgbd")
    with pytest.raises(ValueError, match=r"template shape \(8, 8, 3\) differs"):
        to_input(_board(1), _board(2, 8), "gray-diff-s2d")


def test_model_config_channels_come_from_the_layout():
    assert ModelConfig(arch="mbv3-small", input_size=320, input_mode="gray-diff-s2d").in_channels == 12
    assert {mode: layout.channels for mode, layout in INPUT_LAYOUTS.items()} == \
        {"image": 3, "image+template": 6, "gray-diff-s2d": 12, "gray-frame-diff-s2d": 8, "gray-frame-template-s2d": 8}
    with pytest.raises(ValueError, match="input_mode: unknown input layout"):
        ModelConfig(arch="mbv3-small", input_mode="grey")


def test_loader_keeps_native_pixels_and_maps_boxes_back_exactly():
    """Eval batches of real 640 px boards at a 160 network side: the planes are made at 320 and packed,
    and the boxes map back to the original pixels through the batch's scale and padding."""
    dataset = load_dataset(BUNDLED_DEEPPCB)
    loader = BatchLoader(dataset, 4, 160, "gray-diff-s2d", train=False, workers=0)
    batch = next(iter(loader))
    assert batch.images.shape == (4, 12, 160, 160)
    for row, key in enumerate(batch.keys):
        sample = next(s for s in dataset.samples if s.key == key)
        count = len(sample.boxes)
        mapped = unletterbox_boxes(batch.boxes[row, :count], float(batch.scales[row]), tuple(batch.pads[row]))
        np.testing.assert_allclose(mapped, sample.boxes, atol=1e-3)
    # Train crops are in network pixels too: a 64 crop is cut at 128 letterbox pixels and packed.
    train = BatchLoader(dataset, 2, 160, "gray-diff-s2d", train=True, crop_size=64, workers=0,
                        augment=AugmentConfig.off())
    crops = next(iter(train))
    assert crops.images.shape == (2, 12, 64, 64)
    kept = crops.boxes[crops.classes >= 0]
    assert len(kept) and kept.min() >= 0 and kept.max() <= 64


@pytest.fixture(scope="module")
def grey_package(tiny_grey_package):
    return tiny_grey_package.package


def test_grey_package_manifest_records_the_layout_and_unknown_layouts_are_refused(grey_package, tmp_path):
    manifest = read_manifest(grey_package)
    assert (manifest.input.mode, manifest.input.channels, manifest.input.color, manifest.input.space_to_depth) == \
        ("gray-diff-s2d", 12, "GRAY", 2)
    for field, value, message in [("mode", "rgbd", "field 'input.mode' is 'rgbd'; expected one of"),
                                  ("space_to_depth", 1, "field 'input.space_to_depth': input mode 'gray-diff-s2d' "
                                                        "needs 2, the manifest says 1"),
                                  ("color", "RGB", "field 'input.color': input mode 'gray-diff-s2d' needs GRAY")]:
        bad = tmp_path / f"bad-{field}"
        shutil.copytree(grey_package, bad)
        data = json.loads((bad / "manifest.json").read_text())
        data["input"][field] = value
        (bad / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(PackageError, match=message) as refused:
            read_manifest(bad)
        assert str(bad / "manifest.json") in str(refused.value)


def test_runtime_refuses_frames_in_the_wrong_colour_format_or_size(grey_package, tiny_package):
    from inspector.runtime import Detector

    sample = load_dataset(BUNDLED_DEEPPCB).samples[0]
    image, template = sample.load_image(), sample.load_template()
    grey = Detector.load(grey_package, backend="lite", threads=1)
    found = grey.detect(image, template)  # DeepPCB's grey boards stored as BGR are grey
    assert found.image_size == (640, 640)
    single = grey.detect(image[..., 0], template[..., 0])  # a monochrome camera's (H, W) frames
    np.testing.assert_array_equal(single.boxes, found.boxes)
    colour = image.copy()
    colour[..., 0] = 255 - colour[..., 0]
    with pytest.raises(ValueError, match=r"expects grey frames \(input layout 'gray-diff-s2d'\)"):
        grey.detect(colour, template)
    with pytest.raises(ValueError, match="template has 1 channel"):
        grey.detect(image, template[..., 0])
    with pytest.raises(ValueError, match="template is 320x640 but the image is 640x640"):
        grey.detect(image, template[:, :320])

    rgb = Detector.load(tiny_package.package, backend="lite", threads=1)
    with pytest.raises(ValueError, match=r"expects colour BGR \(H, W, 3\) frames"):
        rgb.detect(image[..., 0], template[..., 0])


def test_grey_layout_is_exported_and_runs_the_same_on_both_engines(grey_package):
    """The packed input reaches Paddle Lite and Paddle Inference alike (no pixel_unshuffle op needed)."""
    from inspector.runtime import Detector

    sample = load_dataset(BUNDLED_DEEPPCB).samples[1]
    image, template = sample.load_image(), sample.load_template()
    lite = Detector.load(grey_package, backend="lite", threads=1).detect(image, template, score_threshold=0.01)
    paddle_found = Detector.load(grey_package, backend="paddle", threads=1).detect(image, template,
                                                                                  score_threshold=0.01)
    assert len(lite.boxes) == len(paddle_found.boxes)
    np.testing.assert_allclose(lite.boxes, paddle_found.boxes, atol=0.05)
    assert input_layout(read_manifest(grey_package).input.mode).block == 2


def test_each_frame_is_written_into_one_input_buffer_exactly_as_to_input_makes_it(grey_package):
    """A fresh 5 MB input per frame is page-faulted in again at every frame (glibc gives it back to the kernel):
    the detector writes every frame's input into one buffer, and what reaches the engine is still to_input's."""
    from inspector.data.transforms import letterbox_gray
    from inspector.runtime import Detector

    detector = Detector.load(grey_package, backend="lite", threads=1)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    run = detector.backend.run
    detector.backend.run = lambda images: seen.append((images, images.copy())) or run(images)
    size = detector.layout.letterbox_size(detector.input_size)
    samples = load_dataset(BUNDLED_DEEPPCB).samples[:2]
    for sample in samples:
        detector.detect(sample.load_image(), sample.load_template())
    assert np.shares_memory(seen[0][0], seen[1][0])
    for sample, (_, sent) in zip(samples, seen):
        expected = to_input(letterbox_gray(sample.load_image(), size)[0], letterbox_gray(sample.load_template(),
                                                                                     size)[0], "gray-diff-s2d")
        np.testing.assert_array_equal(sent[0], expected)
    with pytest.raises(ValueError, match=r"to_input out: expected a contiguous float32 array of shape \(12, 8, 8\)"):
        to_input(_board(1), _board(2), "gray-diff-s2d", out=np.empty((12, 8, 8), np.float64))
