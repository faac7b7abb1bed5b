"""The ARM runner's C++ pre/post-processing (deploy/arm/cpp) equals the Python runtime's.

The pure part of pcb_inspect (manifest, letterbox, input tensor, score threshold + greedy NMS,
boxes back to frame pixels) is built here with CMake, without Paddle Lite, as the driver
``pcb_postprocess_check``. It is fed the raw network outputs the Python runtime computed on real
DeepPCB boards and must reproduce the runtime's input tensor, letterbox geometry and detections.

With ``PADDLE_LITE_DIR`` set to Paddle Lite's prebuilt C++ library (e.g. on an ARM board, see
deploy/arm/README.md), the whole runner ``pcb_inspect`` is built too and compared with
``Detector.detect`` end to end.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.data import load_dataset
from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data.transforms import letterbox, to_input, unletterbox_boxes
from inspector.export.manifest import PackageError, read_manifest
from inspector.models.nms import select_detections
from inspector.runtime import Detector
from inspector.runtime.package import DEFAULT_PACKAGE, lite_target_for_this_machine

pytestmark = pytest.mark.slow  # exports the tiny package when no other test has yet

ARM_CPP = Path(__file__).resolve().parents[2] / "deploy" / "arm" / "cpp"
# Headers the pure part needs, and the Debian package that ships each.
HEADERS = {
    "opencv4/opencv2/imgcodecs.hpp": "libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev",
    "nlohmann/json.hpp": "nlohmann-json3-dev",
    "openssl/evp.h": "libssl-dev",
}


def _missing_build_tools() -> list[str]:
    missing = [tool for tool in ("cmake", "c++") if shutil.which(tool) is None]
    for header, package in HEADERS.items():
        if not any((Path(root) / header).is_file() for root in ("/usr/include", "/usr/local/include")):
            missing.append(f"{header} ({package})")
    return missing


_MISSING = _missing_build_tools()
if _MISSING:
    pytest.skip(f"cannot build deploy/arm/cpp here: missing {', '.join(_MISSING)} (`make sysdeps` installs them)",
                allow_module_level=True)


def _cmake_build(source: Path, build: Path, target: str, *options: str) -> Path:
    for command in (["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", *options],
                    ["cmake", "--build", str(build), "--target", target, "-j", "2"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=540)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return build / target


@pytest.fixture(scope="module")
def checker(tmp_path_factory) -> Path:
    """pcb_postprocess_check, built from deploy/arm/cpp without Paddle Lite."""
    return _cmake_build(ARM_CPP, tmp_path_factory.mktemp("arm-build"), "pcb_postprocess_check",
                        "-DPCB_WITH_PADDLE_LITE=OFF")


@pytest.fixture(scope="module", params=["tiny", "tiny-gray-diff-s2d", "tiny-gray-frame-diff-s2d",
                                        "tiny-gray-frame-template-s2d", "default"])
def package(request) -> Path:
    """The tiny exported packages (input 64; RGB image+template, and the grey space-to-depth layouts: all three
    planes, without the template's, without the difference's) always; the shipped models/default when it is
    installed."""
    if request.param == "default":
        if not (DEFAULT_PACKAGE / "manifest.json").is_file():
            pytest.skip(f"{DEFAULT_PACKAGE} is not installed (it is not in git)")
        return DEFAULT_PACKAGE
    if request.param == "tiny-gray-diff-s2d":
        return request.getfixturevalue("tiny_grey_package").package
    if request.param == "tiny-gray-frame-diff-s2d":
        return request.getfixturevalue("tiny_frame_diff_package").package
    if request.param == "tiny-gray-frame-template-s2d":
        return request.getfixturevalue("tiny_frame_template_package").package
    return request.getfixturevalue("tiny_package").package


@pytest.fixture(scope="module")
def detector(package) -> Detector:
    return Detector.load(package, backend="lite", threads=1)


@dataclass(frozen=True)
class Frame:
    name: str
    image: Path
    template: Path


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[Frame]:
    """Real DeepPCB pairs as shipped (640 x 640 JPEG), and crops of one written losslessly as PNG:
    a wide one that is shrunk and padded top and bottom, and a small tall one that is enlarged and
    padded left and right (for an input of 64 or 320 alike)."""
    folder = tmp_path_factory.mktemp("arm-frames")
    samples = load_dataset(BUNDLED_DEEPPCB).samples
    found = [Frame(Path(s.image_path).stem, Path(s.image_path), Path(s.template_path)) for s in samples[:3]]
    image, template = cv2.imread(str(found[0].image)), cv2.imread(str(found[0].template))
    for name, (y0, y1, x0, x1) in {"wide": (100, 487, 20, 611), "small-tall": (200, 261, 300, 345)}.items():
        paths = folder / f"{name}_test.png", folder / f"{name}_temp.png"
        cv2.imwrite(str(paths[0]), image[y0:y1, x0:x1])
        cv2.imwrite(str(paths[1]), template[y0:y1, x0:x1])
        found.append(Frame(name, *paths))
    return found


@dataclass(frozen=True)
class PythonResult:
    tensor: np.ndarray  # (1, C, S, S) as fed to the network
    scale: float
    pad: tuple[int, int]
    boxes: np.ndarray  # (N, 4) frame pixels
    scores: np.ndarray
    classes: np.ndarray


def _python_pipeline(detector: Detector, frame: Frame, score_threshold: float, outputs: Path,
                     max_detections: int | None = None) -> PythonResult:
    """Detector.detect's steps one by one, keeping what C++ must reproduce; the raw network outputs
    are written to ``outputs``/boxes.f32 and scores.f32 for the C++ side."""
    image, template = cv2.imread(str(frame.image)), cv2.imread(str(frame.template))
    layout = detector.layout
    size = layout.letterbox_size(detector.input_size)
    resized, scale, pad = letterbox(image, size)
    tensor = to_input(resized, letterbox(template, size)[0] if detector.needs_template else None, layout.mode)[None]
    scale, pad = scale / layout.block, (pad[0] / layout.block, pad[1] / layout.block)
    boxes, scores = detector.infer(tensor)
    boxes.astype("<f4").tofile(outputs / "boxes.f32")
    scores.astype("<f4").tofile(outputs / "scores.f32")
    post = detector.manifest.postprocess
    max_detections = max_detections or post.max_detections
    kept_boxes, kept_scores, kept_classes = select_detections(
        boxes[0], scores[0], score_threshold, post.nms_threshold, max_detections, post.nms)
    mapped = unletterbox_boxes(kept_boxes, scale, pad, (image.shape[1], image.shape[0]))
    # The steps above are the runtime's own: Detector.detect gives the same detections.
    found = detector.detect(image, template if detector.needs_template else None, score_threshold=score_threshold,
                            max_detections=max_detections)
    np.testing.assert_array_equal(found.boxes, mapped)
    np.testing.assert_array_equal(found.scores, kept_scores)
    return PythonResult(tensor, scale, pad, mapped, kept_scores, kept_classes)


def _run_checker(checker: Path, package: Path, frame: Frame | None, outputs: Path, score_threshold: float | None,
                 *extra: str) -> subprocess.CompletedProcess:
    command = [str(checker), "--model", str(package), "--boxes", str(outputs / "boxes.f32"),
               "--scores", str(outputs / "scores.f32"), "--input-out", str(outputs / "input.f32")]
    if frame is not None:
        command += ["--image", str(frame.image), "--template", str(frame.template)]
    if score_threshold is not None:
        command += ["--score-threshold", repr(score_threshold)]
    return subprocess.run(command + list(extra), capture_output=True, text=True, timeout=120)


def _assert_same_detections(report: dict, expected: PythonResult, class_names: list[str]) -> None:
    exact = report["exact"]
    assert len(exact) == len(expected.scores)
    if exact:
        np.testing.assert_allclose(np.array([d["box"] for d in exact]), expected.boxes, rtol=0, atol=0.01)
        np.testing.assert_array_equal(np.array([d["score"] for d in exact], np.float32), expected.scores)
        np.testing.assert_array_equal([d["class_id"] for d in exact], expected.classes)
    # The printed form: Detections.to_dict()'s keys and rounding.
    result = report["result"]
    assert set(result) == {"image_size", "detections", "timing_ms", "alignment"}
    assert set(result["timing_ms"]) == {"preprocess_ms", "infer_ms", "postprocess_ms"}
    assert result["alignment"] is None
    for printed, box, score, class_id in zip(result["detections"], expected.boxes, expected.scores, expected.classes):
        assert set(printed) == {"box", "score", "class_id", "class_name"}
        assert printed["box"] == pytest.approx([round(float(v), 2) for v in box], abs=0.0101)
        assert printed["score"] == pytest.approx(round(float(score), 4), abs=1.01e-4)
        assert (printed["class_id"], printed["class_name"]) == (int(class_id), class_names[int(class_id)])


def test_cpp_preprocessing_and_postprocessing_equal_the_python_runtime(checker, package, detector, frames, tmp_path):
    manifest = detector.manifest
    # The package's settings; a low threshold (many candidates); no threshold and no cap on detections,
    # so that NMS sees only the best 1000 candidates (pre_nms_top_k) and keeps more than 100.
    settings = {"package": (manifest.postprocess.score_threshold, None), "low": (0.02, None), "all": (0.0, 5000)}
    candidates_seen, detections_seen, most_kept = 0, 0, 0
    for frame in frames:
        for label, (threshold, max_detections) in settings.items():
            outputs = tmp_path / f"{frame.name}-{label}"
            outputs.mkdir()
            expected = _python_pipeline(detector, frame, threshold, outputs, max_detections)
            extra = ["--max-detections", str(max_detections)] if max_detections else []
            run = _run_checker(checker, package, frame, outputs, None if label == "package" else threshold, *extra)
            assert run.returncode == 0, run.stderr
            report = json.loads(run.stdout)
            where = f"{package.name} {frame.name} threshold {threshold}"

            tensor = np.fromfile(outputs / "input.f32", dtype="<f4").reshape(expected.tensor.shape)
            assert np.array_equal(tensor, expected.tensor), f"{where}: input tensor differs by up to " \
                f"{np.abs(tensor - expected.tensor).max()} in {(tensor != expected.tensor).sum()} values"
            assert report["letterbox"]["scale"] == expected.scale and tuple(report["letterbox"]["pad"]) == expected.pad
            assert report["result"]["image_size"] == list(cv2.imread(str(frame.image)).shape[1::-1])
            assert report["package_id"] == manifest.package_id
            _assert_same_detections(report, expected, manifest.class_names)
            scores = np.fromfile(outputs / "scores.f32", dtype="<f4")
            candidates_seen = max(candidates_seen, int((scores > np.float32(threshold)).sum()))
            detections_seen += len(expected.scores)
            most_kept = max(most_kept, len(expected.scores))
    # The comparison covered real detections and the pre-NMS top-1000 cut (more candidates than that, so
    # the cut decides which ones; test_cpp_nms_methods_equal_python keeps more than the default cap of 100).
    assert detections_seen > 0 and candidates_seen > 1000 and most_kept > 0
    assert {f.name for f in frames} >= {"wide", "small-tall"}


def test_cpp_image_only_input_equals_python(checker, detector, frames, tmp_path):
    """An ``image``-mode package (3 channels, no template) through the same C++ path, on the tiny
    package's manifest switched to that mode; the network outputs are the real ones of a frame."""
    package = tmp_path / "image-only"
    shutil.copytree(detector.package.path, package)
    data = json.loads((package / "manifest.json").read_text())
    data["input"].update(mode="image", channels=3, color="RGB", space_to_depth=1)
    (package / "manifest.json").write_text(json.dumps(data))
    frame = frames[3]  # the wide crop: shrunk and padded
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    _python_pipeline(detector, frame, 0.02, outputs)  # real outputs (of the image+template network)
    image = cv2.imread(str(frame.image))
    resized, scale, pad = letterbox(image, detector.input_size)
    post = detector.manifest.postprocess
    boxes = np.fromfile(outputs / "boxes.f32", "<f4").reshape(-1, 4)
    scores = np.fromfile(outputs / "scores.f32", "<f4").reshape(len(boxes), -1)
    kept = select_detections(boxes, scores, 0.02, post.nms_threshold, post.max_detections, post.nms)
    expected = PythonResult(to_input(resized)[None], scale, pad,
                            unletterbox_boxes(kept[0], scale, pad, (image.shape[1], image.shape[0])), kept[1], kept[2])

    command = [str(checker), "--model", str(package), "--image", str(frame.image), "--boxes",
               str(outputs / "boxes.f32"), "--scores", str(outputs / "scores.f32"), "--input-out",
               str(outputs / "input.f32"), "--score-threshold", "0.02"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    tensor = np.fromfile(outputs / "input.f32", dtype="<f4")
    assert tensor.shape == (3 * detector.input_size**2,) and np.array_equal(tensor, expected.tensor.ravel())
    _assert_same_detections(json.loads(run.stdout), expected, detector.manifest.class_names)
    # And the template the image-only model cannot use is refused, as Detector.detect refuses it.
    refused = subprocess.run(command + ["--template", str(frame.template)], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "takes no template" in refused.stderr


def test_cpp_nms_methods_equal_python(checker, detector, frames, tmp_path):
    """Per-class ("hard") and class-agnostic NMS on the same real network outputs: the C++ runner keeps
    exactly the detections ``select_detections`` keeps for the manifest's method, and the two methods
    differ on these outputs (so a runner ignoring the method cannot pass). With no threshold and no cap,
    per-class NMS keeps more than the default cap of 100 out of the best 1000 candidates."""
    frame = frames[0]
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    _python_pipeline(detector, frame, 0.02, outputs)  # the real outputs of this package's network
    image = cv2.imread(str(frame.image))
    layout = detector.layout
    _, scale, pad = letterbox(image, layout.letterbox_size(detector.input_size))
    scale, pad = scale / layout.block, (pad[0] / layout.block, pad[1] / layout.block)
    boxes = np.fromfile(outputs / "boxes.f32", "<f4").reshape(-1, 4)
    scores = np.fromfile(outputs / "scores.f32", "<f4").reshape(len(boxes), -1)
    kept_by_method = {}
    for method in ("hard", "agnostic"):
        package = _package_copy(detector, tmp_path / method)
        data = json.loads((package / "manifest.json").read_text())
        data["postprocess"]["nms"] = method
        (package / "manifest.json").write_text(json.dumps(data))
        post = read_manifest(package).postprocess
        for threshold, max_detections in ((0.02, post.max_detections), (0.0, 5000)):
            kept = select_detections(boxes, scores, threshold, post.nms_threshold, max_detections, method)
            expected = PythonResult(np.zeros(0), scale, pad,
                                    unletterbox_boxes(kept[0], scale, pad, (image.shape[1], image.shape[0])),
                                    *kept[1:])
            run = _run_checker(checker, package, frame, outputs, threshold, "--max-detections", str(max_detections))
            assert run.returncode == 0, run.stderr
            _assert_same_detections(json.loads(run.stdout), expected, detector.manifest.class_names)
            kept_by_method[method, threshold] = {(tuple(np.round(b, 3)), int(c)) for b, c in zip(kept[0], kept[2])}
    assert kept_by_method["hard", 0.02] != kept_by_method["agnostic", 0.02]
    assert len(kept_by_method["agnostic", 0.02]) < len(kept_by_method["hard", 0.02])
    assert (scores > 0).sum() > 1000 and len(kept_by_method["hard", 0.0]) > 100


def _package_copy(detector: Detector, tmp_path: Path) -> Path:
    copy = tmp_path / "package"
    shutil.copytree(detector.package.path, copy)
    return copy


def _outputs_for(detector: Detector, folder: Path) -> Path:
    """Zero network outputs of the manifest's shapes (enough to reach the checks under test)."""
    folder.mkdir(exist_ok=True)
    outputs = detector.manifest.outputs
    np.zeros(outputs["boxes"]["shape"], "<f4").tofile(folder / "boxes.f32")
    np.zeros(outputs["scores"]["shape"], "<f4").tofile(folder / "scores.f32")
    return folder


def test_cpp_refuses_what_the_python_runtime_refuses(checker, detector, frames, tmp_path):
    outputs = _outputs_for(detector, tmp_path / "outputs")
    frame = frames[0]
    arm_nb = detector.manifest.targets["lite-arm"][0]

    good = _package_copy(detector, tmp_path / "good")
    run = _run_checker(checker, good, frame, outputs, None, "--verify", "lite-arm")
    assert run.returncode == 0, run.stderr

    corrupted = _package_copy(detector, tmp_path / "corrupted")
    data = bytearray((corrupted / arm_nb).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupted / arm_nb).write_bytes(bytes(data))
    run = _run_checker(checker, corrupted, frame, outputs, None, "--verify", "lite-arm")
    assert run.returncode == 1 and f"{arm_nb}: sha256 differs from the manifest's" in run.stderr

    truncated = _package_copy(detector, tmp_path / "truncated")
    (truncated / arm_nb).write_bytes(data[:1000])
    run = _run_checker(checker, truncated, frame, outputs, None, "--verify", "lite-arm")
    assert run.returncode == 1 and "1000 bytes, the manifest says" in run.stderr and "truncated" in run.stderr

    # Bad manifest fields: refused by both sides, the C++ message naming the field as Python's does.
    for field, value, expected in [
        ("input.size", 0, "field 'input.size' is 0; expected an integer >= 1"),
        ("input.channels", 3, f"field 'input.channels': input mode '{detector.layout.mode}' needs "
                              f"{detector.layout.channels}, the manifest says 3"),
        ("input.mode", "rgbd", "field 'input.mode' is \"rgbd\"; expected one of"),
        ("postprocess.score_threshold", 1.5, "field 'postprocess.score_threshold' is 1.5"),
        ("format_version", 99, "field 'format_version': this runner reads up to version 1"),
    ]:
        bad = _package_copy(detector, tmp_path / f"bad-{field}")
        data = json.loads((bad / "manifest.json").read_text())
        section, _, key = field.rpartition(".")
        (data[section] if section else data)[key] = value
        (bad / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(PackageError):
            read_manifest(bad)
        run = _run_checker(checker, bad, frame, outputs, None)
        assert run.returncode == 1 and expected in run.stderr, run.stderr

    # Matrix NMS is the Python runtime's alone: the C++ runner says so instead of running hard NMS.
    matrix = _package_copy(detector, tmp_path / "matrix")
    data = json.loads((matrix / "manifest.json").read_text())
    data["postprocess"]["nms"] = "matrix"
    (matrix / "manifest.json").write_text(json.dumps(data))
    run = _run_checker(checker, matrix, frame, outputs, None)
    assert run.returncode == 1 and "'postprocess.nms' is 'matrix'" in run.stderr

    # A template of another size than the frame: refused like Detector.detect without align.
    run = subprocess.run([str(checker), "--model", str(good), "--image", str(frames[0].image), "--template",
                          str(frames[3].template), "--boxes", str(outputs / "boxes.f32"), "--scores",
                          str(outputs / "scores.f32")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "template is 591x387 but the image is 640x640" in run.stderr


def test_cpp_and_python_refuse_colour_frames_for_a_grey_model(checker, tiny_grey_package, frames, tmp_path):
    """A grey-layout model is not silently fed a colour camera's frames, on either side."""
    package = tiny_grey_package.package
    detector = Detector.load(package, backend="lite", threads=1)
    image, template = cv2.imread(str(frames[0].image)), cv2.imread(str(frames[0].template))
    colour = image.copy()
    colour[..., 2] = 255 - colour[..., 2]  # the red plane differs from the others
    colour_path = tmp_path / "colour_test.png"
    cv2.imwrite(str(colour_path), colour)
    with pytest.raises(ValueError, match="expects grey frames"):
        detector.detect(colour, template)
    detector.detect(image, template)  # grey stored as three equal planes is grey
    outputs = _outputs_for(detector, tmp_path / "outputs")
    run = subprocess.run([str(checker), "--model", str(package), "--image", str(colour_path), "--template",
                          str(frames[0].template), "--boxes", str(outputs / "boxes.f32"), "--scores",
                          str(outputs / "scores.f32")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "expects grey frames" in run.stderr, run.stderr


@pytest.mark.skipif(not os.environ.get("PADDLE_LITE_DIR"),
                    reason="PADDLE_LITE_DIR (Paddle Lite's prebuilt C++ library) is not set: pcb_inspect itself "
                           "is not built here; see deploy/arm/README.md")
def test_pcb_inspect_on_paddle_lite_equals_detector(detector, frames, tmp_path):
    """The whole runner on Paddle Lite's C++ library against Detector.detect on the same package.
    PCB_CMAKE_ARGS adds CMake options (e.g. linker flags) for unusual library builds."""
    binary = _cmake_build(ARM_CPP, tmp_path / "build", "pcb_inspect",
                          f"-DPADDLE_LITE_DIR={os.environ['PADDLE_LITE_DIR']}",
                          *shlex.split(os.environ.get("PCB_CMAKE_ARGS", "")))
    command = [str(binary), "--model", str(detector.package.path), "--threads", "1"]
    command += [str(frame.image) for frame in frames if frame.image.stem.endswith("_test")]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[0]["runtime"]["target"] == lite_target_for_this_machine()
    assert lines[0]["runtime"]["package_id"] == detector.manifest.package_id
    for record in lines[1:]:
        image, template = cv2.imread(record["image"]), cv2.imread(record["template"])
        expected = detector.detect(image, template if detector.needs_template else None).to_dict()
        assert len(record["detections"]) == len(expected["detections"]), record["image"]
        for got, want in zip(record["detections"], expected["detections"]):
            assert got["box"] == pytest.approx(want["box"], abs=0.0101)
            assert got["score"] == pytest.approx(want["score"], abs=1.01e-4)
            assert got["class_id"] == want["class_id"] and got["class_name"] == want["class_name"]
