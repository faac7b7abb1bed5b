"""The runtime on a real exported package: round trip, both backends, coordinates, and the CLI verbs."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.data import load_dataset
from inspector.export.manifest import PackageError
from inspector.runtime import AlignmentError, Detections, Detector
from inspector.data.transforms import letterbox, letterbox_gray, to_input
from inspector.runtime import package as package_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tiny_package):
    return tiny_package  # tests/conftest.py: trained and exported once per session


@pytest.fixture(scope="module")
def lite(tiny) -> Detector:
    return Detector.load(tiny.package, backend="lite", threads=1)


@pytest.fixture(scope="module")
def pair(tiny) -> tuple[np.ndarray, np.ndarray]:
    sample = load_dataset(tiny.data).samples[0]
    return sample.load_image(), sample.load_template()


def test_runtime_imports_no_paddle_and_no_training_code():
    code = ("import sys, inspector.runtime, inspector.runtime.evaluate, inspector.runtime.bench; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'paddle' or "
            "m.startswith(('inspector.training', 'inspector.compression'))]; print(bad); assert not bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_round_trip_reproduces_the_trained_model(tiny, lite, pair):
    import paddle

    from inspector.data.transforms import letterbox, to_input
    from inspector.models import DecodedDetector
    from inspector.training.checkpoint import load_checkpoint

    info = lite.info
    assert (info.backend, info.target, info.precision, info.threads) == ("lite", "lite-x86", "fp32", 1)
    assert info.package_id == lite.manifest.package_id and info.package == str(tiny.package)
    image, template = pair
    batch = to_input(letterbox(image, tiny.input_size)[0], letterbox(template, tiny.input_size)[0])[None]
    model = DecodedDetector(load_checkpoint(tiny.run).build())
    expected = [t.numpy() for t in model(paddle.to_tensor(batch))]
    for got, want in zip(lite.infer(batch), expected):
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-4)

    found = lite.detect(image, template, score_threshold=0.01)
    assert isinstance(found, Detections) and 0 < len(found) <= 100
    assert found.boxes.dtype == np.float32 and found.boxes.shape == (len(found), 4)
    assert found.class_names == [lite.class_names[c] for c in found.class_ids]
    assert np.all(np.diff(found.scores) <= 0)  # best first
    assert found.image_size == (image.shape[1], image.shape[0])
    assert found.timing.infer_ms > 0 and found.timing.total_ms >= found.timing.infer_ms


def test_lite_and_paddle_inference_agree(tiny, lite, pair):
    paddle_inference = Detector.load(tiny.package, backend="paddle", threads=1)
    assert (paddle_inference.info.backend, paddle_inference.info.precision) == ("paddle", "fp32")
    assert "oneDNN" in paddle_inference.info.engine
    image, template = pair
    a = lite.detect(image, template, score_threshold=0.01, max_detections=30)
    b = paddle_inference.detect(image, template, score_threshold=0.01, max_detections=30)
    assert len(a) == len(b) == 30
    assert a.class_ids.tolist() == b.class_ids.tolist()
    assert np.abs(a.boxes - b.boxes).max() < 1.0  # pixels of the 160 x 160 frame
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


class KnownBoxes:
    """Stands in for an engine: returns fixed boxes in input pixels, with class 1 scoring 0.9."""

    def __init__(self, boxes: list[list[float]], num_classes: int) -> None:
        self.boxes = np.array([boxes], np.float32)
        self.scores = np.zeros((1, len(boxes), num_classes), np.float32)
        self.scores[..., 1] = 0.9

    def run(self, images):
        return [self.boxes, self.scores]


def test_boxes_come_back_in_original_pixels_of_a_non_square_image(lite):
    # A 200 x 100 frame letterboxed to 64: scale 0.32, content 64 x 32 at rows 16..48.
    engine = KnownBoxes([[0, 16, 64, 48], [32, 32, 48, 40]], len(lite.class_names))
    detector = Detector(lite.package, engine, lite.info)
    image = np.full((100, 200, 3), 255, np.uint8)
    found = detector.detect(image, image.copy(), score_threshold=0.5, nms_threshold=0.99)
    assert found.image_size == (200, 100)
    np.testing.assert_allclose(found.boxes, [[0, 0, 200, 100], [100, 50, 150, 75]], atol=1e-3)
    assert found.class_names == [lite.class_names[1]] * 2


class TwoCalls:
    """Stands in for an engine: one spot scored "short" 0.9 and "spur" 0.6, and a second box on it (IoU 0.43)
    scored "spur" 0.7."""

    def run(self, images):
        boxes = np.array([[[10, 10, 20, 20], [10, 14, 20, 24]]], np.float32)
        scores = np.zeros((1, 2, 6), np.float32)
        scores[0, 0, 1], scores[0, 0, 3], scores[0, 1, 3] = 0.9, 0.6, 0.7
        return [boxes, scores]


def test_the_manifest_nms_decides_one_report_per_spot_or_one_per_class(lite):
    detector = Detector(lite.package, TwoCalls(), lite.info)
    assert (lite.manifest.postprocess.nms, lite.manifest.postprocess.nms_threshold) == ("agnostic", 0.33)
    image = np.full((64, 64, 3), 255, np.uint8)
    found = detector.detect(image, image.copy(), score_threshold=0.5)
    assert found.class_names == ["short"] and found.scores.tolist() == pytest.approx([0.9])
    # A package exported before "agnostic" existed says "hard" (per class) at 0.5, and runs that way.
    detector.manifest = replace(lite.manifest, postprocess=replace(lite.manifest.postprocess, nms="hard",
                                                                  nms_threshold=0.5))
    found = detector.detect(image, image.copy(), score_threshold=0.5)
    assert found.class_names == ["short", "spur", "spur"] and found.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])


def test_real_detections_on_a_non_square_frame_stay_inside_it(lite, pair):
    image, template = (im[:, :112] for im in pair)  # 112 wide, 160 high
    found = lite.detect(image, template, score_threshold=0.01)
    assert len(found) > 0 and found.image_size == (112, 160)
    assert found.boxes[:, [0, 2]].max() <= 112 and found.boxes[:, [1, 3]].max() <= 160 and found.boxes.min() >= 0


def test_frames_are_aligned_to_the_template_when_asked(lite, tiny):
    from inspector.data.synth import generate_pair

    board = generate_pair(np.random.default_rng(11), size=160)
    shift = np.float32([[1, 0, 4], [0, 1, -3]])
    frame = cv2.warpAffine(board.tested, shift, (160, 160), borderValue=(255, 255, 255))
    found = lite.detect(frame, board.template, align=True, score_threshold=0.01)
    assert found.alignment is not None and found.alignment.correlation > 0.9
    np.testing.assert_allclose(found.alignment.shift, (4, -3), atol=0.5)
    other = generate_pair(np.random.default_rng(12), size=160).template
    with pytest.raises(AlignmentError):
        lite.detect(frame, other, align=True)


def test_bad_inputs_are_refused_with_a_reason(lite, pair):
    image, template = pair
    with pytest.raises(ValueError, match="golden template"):
        lite.detect(image)
    with pytest.raises(ValueError, match="align=True"):
        lite.detect(image, template[:100])
    with pytest.raises(ValueError, match="uint8"):
        lite.detect(image.astype(np.float32), template)


@pytest.mark.parametrize("which", ["tiny_package", "tiny_grey_package"])
def test_a_detector_s_reused_buffers_never_carry_one_frame_into_the_next(which, request):
    """The runtime keeps its pre-processing arrays from frame to frame (transforms.Scratch): frames of other sizes
    (letterboxed with and without a border, shrunk and enlarged) one after another must each give what a fresh
    detector gives, fed the input tensor that to_input makes without reused arrays."""
    tiny = request.getfixturevalue(which)
    samples = load_dataset(tiny.data).samples
    board, golden = samples[0].load_image(), samples[0].load_template()
    other, other_golden = samples[1].load_image(), samples[1].load_template()
    frames = [(board, golden), (board[10:150, 5:100], golden[10:150, 5:100]), (other, other_golden),
              (other[:40, :150], other_golden[:40, :150]), (board, golden)]
    reused = Detector.load(tiny.package)
    fed = []
    infer = reused.infer
    reused.infer = lambda batch: (fed.append(batch.copy()), infer(batch))[1]
    layout = reused.layout
    fit = letterbox_gray if layout.color == "GRAY" else letterbox
    size = layout.letterbox_size(reused.input_size)
    for index, (image, template) in enumerate(frames):
        got = reused.detect(image, template, score_threshold=0.01)
        expected = Detector.load(tiny.package).detect(image, template, score_threshold=0.01)
        assert len(got) == len(expected) > 0, index
        np.testing.assert_array_equal(got.boxes, expected.boxes)
        np.testing.assert_array_equal(got.scores, expected.scores)
        tensor = to_input(fit(image, size)[0], fit(template, size)[0], layout.mode)
        np.testing.assert_array_equal(fed[index][0], tensor)


def test_thread_count_reaches_both_engines(tiny):
    assert Detector.load(tiny.package, backend="lite", threads=2).info.threads == 2
    assert Detector.load(tiny.package, backend="paddle", threads=2).info.threads == 2


def test_no_default_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(package_module, "DEFAULT_PACKAGE", tmp_path / "models" / "default")
    with pytest.raises(PackageError, match="no default model package is installed"):
        Detector.load(None)


def test_bench_writes_the_promised_json(tiny, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--model", str(tiny.package), "--threads", "1", "--runs", "5",
                                      "--warmup", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    bench = json.loads(out.read_text())
    for key in ("p50_ms", "p99_ms", "fps", "backend", "precision", "threads", "input_size", "model_bytes",
                "peak_rss_mb"):
        assert key in bench, key
    assert 0 < bench["p50_ms"] <= bench["p99_ms"] and bench["fps"] > 0
    assert (bench["backend"], bench["precision"], bench["threads"], bench["input_size"]) == ("lite", "fp32", 1,
                                                                                             tiny.input_size)
    assert bench["model_bytes"] == (tiny.package / "model_x86.nb").stat().st_size
    assert bench["frame_size"] == [640, 640] and bench["peak_rss_mb"] > 10
    # every stage's median, each a part of a frame's time (medians of parts need not add up to the whole's)
    stages = [bench["preprocess_p50_ms"], bench["infer_p50_ms"], bench["postprocess_p50_ms"]]
    assert all(0 < stage < bench["p99_ms"] for stage in stages)
    assert "pre-processing" in result.output and "post-processing" in result.output


def test_bench_against_another_package_alternates_their_frames_and_gives_the_ratio(tiny, tiny_grey_package, tmp_path,
                                                                                   monkeypatch):
    """Both packages' frames alternate in one process, so both see the same spell of a drifting machine."""
    timed = []
    detect = Detector.detect

    def recorded(self, *args, **kwargs):
        timed.append(Path(self.info.package).resolve())
        return detect(self, *args, **kwargs)

    monkeypatch.setattr(Detector, "detect", recorded)
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, ["bench", "--model", str(tiny_grey_package.package), "--against",
                                      str(tiny.package), "--runs", "4", "--warmup", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    model, against = tiny_grey_package.package.resolve(), tiny.package.resolve()
    assert timed == [model, against] + [model, against] * 4  # the warm-ups, then frame after frame alternately
    bench = json.loads(out.read_text())
    assert Path(bench["package"]).resolve() == model and Path(bench["against"]["package"]).resolve() == against
    assert bench["input_size"] == bench["against"]["input_size"] == tiny.input_size
    assert bench["p50_ratio"] == pytest.approx(bench["p50_ms"] / bench["against"]["p50_ms"])
    assert f"p50 ratio {bench['p50_ratio']:.3f}" in result.output


def test_predict_writes_annotated_images_and_one_json(tiny, tmp_path):
    images = sorted(tiny.data.rglob("*_test.jpg"))[:2]
    stray = tmp_path / "board.jpg"  # not DeepPCB-named, and no --template: cannot be judged
    stray.write_bytes(images[0].read_bytes())
    out = tmp_path / "predictions"
    result = CliRunner().invoke(app, ["predict", *map(str, images), str(stray), "--model", str(tiny.package),
                                      "--out", str(out), "--score-threshold", "0.01"])
    assert result.exit_code == 1, result.output  # one image refused
    report = json.loads((out / "detections.json").read_text())
    assert report["runtime"]["backend"] == "lite" and report["score_threshold"] == 0.01
    judged, refused = report["images"][:2], report["images"][2]
    assert "needs a golden template" in refused["error"]
    for record, image in zip(judged, images):
        assert record["template"] == str(image.with_name(image.name.replace("_test", "_temp")))
        assert len(record["detections"]) > 0
        assert set(record["detections"][0]) == {"box", "score", "class_id", "class_name"}
        annotated = cv2.imread(str(out / record["annotated"]))
        assert annotated.shape == cv2.imread(str(image)).shape
        assert not np.array_equal(annotated, cv2.imread(str(image)))  # boxes were drawn

    small = tmp_path / "golden-small.png"  # a template of another size: refused, naming both files
    cv2.imwrite(str(small), cv2.imread(str(images[0]))[:64, :48])
    result = CliRunner().invoke(app, ["predict", str(images[0]), "--template", str(small), "--model",
                                      str(tiny.package), "--out", str(tmp_path / "small")])
    assert result.exit_code == 1
    refusal = f"{images[0]} (template {small}): not judged: template is 48x64 but the image is"
    assert refusal in result.output, result.output


def test_eval_of_the_package_matches_the_training_checkpoint(tiny, tmp_path):
    runner = CliRunner()
    package_json, run_json = tmp_path / "package.json", tmp_path / "run.json"
    result = runner.invoke(app, ["eval", str(tiny.data), "--model", str(tiny.package), "--split", "val",
                                 "--json", str(package_json)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["eval", str(tiny.data), "--model", str(tiny.run), "--split", "val",
                                 "--json", str(run_json)])
    assert result.exit_code == 0, result.output
    package, run = json.loads(package_json.read_text()), json.loads(run_json.read_text())
    for key in ("map50", "map50_95", "precision", "recall", "f1_iou033", "score_threshold", "per_class", "n_images",
                "model", "backend"):
        assert key in package, key
    assert package["backend"] == "lite" and run["backend"] == "paddle-dygraph"
    for summary in (package, run):  # how far the official AP can be trusted on these images
        interval = summary["official_ap_interval"]
        assert interval["confidence"] == 0.95 and interval["low"] <= interval["high"]
    assert "official AP 95% interval" in result.output
    assert package["n_images"] == run["n_images"] == 2
    assert package["map50"] == pytest.approx(run["map50"], abs=1e-3)
    assert package["score_threshold"] == pytest.approx(run["score_threshold"], abs=1e-4)


def test_eval_against_another_package_scores_both_on_the_same_images_and_refuses_another_split(
        tiny, tiny_grey_package, tmp_path):
    from pathlib import Path

    runner = CliRunner()
    summary_file = tmp_path / "against.json"
    result = runner.invoke(app, ["eval", str(tiny.data), "--model", str(tiny.package), "--against",
                                 str(tiny_grey_package.package), "--json", str(summary_file)])
    assert result.exit_code == 0, result.output
    summary = json.loads(summary_file.read_text())
    against = summary["against"]
    assert against["model"] == str(tiny_grey_package.package)
    assert against["difference"] == pytest.approx(summary["official_ap"] - against["official_ap"])
    assert against["interval"]["low"] <= against["interval"]["high"]
    alone = runner.invoke(app, ["eval", str(tiny.data), "--model", str(tiny_grey_package.package), "--json",
                                str(tmp_path / "grey.json")])
    assert alone.exit_code == 0, alone.output
    assert json.loads((tmp_path / "grey.json").read_text())["official_ap"] == pytest.approx(against["official_ap"])
    assert f"against {tiny_grey_package.package}: official AP" in result.output and "(paired" in result.output

    itself = runner.invoke(app, ["eval", str(tiny.data), "--model", str(tiny.package), "--against", str(tiny.package),
                                 "--split", "val"])
    assert itself.exit_code == 0, itself.output
    assert "difference +0.00 pt, 95% interval +0.00 to +0.00 pt (paired" in itself.output

    shipped = Path(__file__).parents[2] / "models" / "default"  # trained on another split of other boards
    refused = runner.invoke(app, ["eval", str(tiny.data), "--model", str(tiny.package), "--against", str(shipped),
                                  "--split", "val"])
    assert refused.exit_code == 2
    assert "is not the split of" in refused.output and "held out from both models alike" in refused.output
    run = runner.invoke(app, ["eval", str(tiny.data), "--model", str(tiny.run), "--against", str(tiny.package)])
    assert run.exit_code == 2 and "--against compares model packages" in run.output
