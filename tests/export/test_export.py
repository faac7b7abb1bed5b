"""`inspector export`: the package it writes, and the refusal of corrupt, truncated or edited packages."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.data import DEEPPCB_CLASSES
from inspector.export import ConversionError, ExportError, PackageError, export_package, read_manifest
from inspector.export.legacy_program import ProgramInfo, describe_inference_model
from inspector.export.lite import check_converter_output, convert_to_lite
from inspector.export.manifest import sha256_file
from inspector.runtime import Detector

@pytest.fixture(scope="module")
def tiny(tiny_package):
    return tiny_package  # tests/conftest.py: trained and exported once per session


@pytest.fixture
def package_copy(tiny, tmp_path) -> Path:
    """A private copy of the package that a test may damage."""
    return Path(shutil.copytree(tiny.package, tmp_path / "package"))


@pytest.mark.slow
def test_export_writes_a_complete_self_describing_package(tiny):
    manifest = read_manifest(tiny.package)
    names = sorted(p.name for p in tiny.package.iterdir())
    assert names == ["manifest.json", "model.pdiparams", "model.pdmodel", "model_arm.nb", "model_x86.nb", "split.json"]
    assert not tiny.package.with_name("package.partial").exists()

    assert manifest.format_version == 1 and manifest.name == "package"
    assert manifest.class_names == list(DEEPPCB_CLASSES)
    assert (manifest.input.size, manifest.input.mode, manifest.input.channels) == \
        (tiny.input_size, "image+template", 6)
    assert (manifest.input.layout, manifest.input.color, manifest.input.letterbox_pad_value) == ("NCHW", "RGB", 0)
    assert manifest.input.scale == pytest.approx(1 / 255)
    assert manifest.precision == "fp32"
    assert manifest.targets == {"paddle": ["model.pdmodel", "model.pdiparams"], "lite-x86": ["model_x86.nb"],
                                "lite-arm": ["model_arm.nb"]}
    k = manifest.outputs["boxes"]["shape"][1]
    assert manifest.outputs["boxes"]["shape"] == [1, k, 4] and manifest.outputs["scores"]["shape"] == [1, k, 6]
    assert manifest.outputs["nms_in_graph"] is False
    assert manifest.model["arch"] == "mbv3-small"
    # The IoU-aware score (factor 0.5) is a sqrt: Paddle Lite 2.13's ARM pow kernel races on 2+ threads.
    ops = describe_inference_model(tiny.package / "model").op_types
    assert "sqrt" in ops and "pow" not in ops
    assert manifest.provenance["operators"] == [op for op in ops if op not in ("feed", "fetch")]  # for ARM users

    for name in names[1:]:  # every file but the manifest itself
        entry = manifest.files[name]
        assert entry.sha256 == sha256_file(tiny.package / name) and entry.bytes == (tiny.package / name).stat().st_size

    checkpoint = json.loads((tiny.run / "best" / "checkpoint.json").read_text())
    assert manifest.postprocess.score_threshold == pytest.approx(checkpoint["metrics"]["score_threshold"])
    # The product's NMS (inspector.models.nms.DEFAULT_NMS), which the checkpoint's validation used too.
    assert (manifest.postprocess.nms, manifest.postprocess.nms_threshold) == ("agnostic", 0.33)
    provenance = manifest.provenance
    assert provenance["source_kind"] == "checkpoint" and provenance["checkpoint"] == str((tiny.run / "best").resolve())
    assert provenance["data"] == str(tiny.data) and provenance["train_config"]["arch"] == "mbv3-small"
    assert provenance["split"] == "split.json"
    assert (tiny.package / "split.json").read_bytes() == (tiny.run / "split.json").read_bytes()
    assert len(provenance["git_commit"]) == 40 and isinstance(provenance["git_dirty"], bool)
    assert provenance["versions"]["paddlelite"] == "2.13rc0"
    assert manifest.metrics is None  # nothing was measured: no --eval-data


def _set(path: Path, update) -> None:
    data = json.loads((path / "manifest.json").read_text())
    update(data)
    (path / "manifest.json").write_text(json.dumps(data))


def _flip_byte(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "corrupted nb": (lambda p: _flip_byte(p / "model_x86.nb"), r"model_x86.nb: sha256 differs"),
    "corrupted params": (lambda p: _flip_byte(p / "model.pdiparams"), r"model.pdiparams: sha256 differs"),
    "truncated params": (lambda p: _truncate(p / "model.pdiparams"), r"model.pdiparams: \d+ bytes, the manifest says \d+ \(truncated"),
    "missing file": (lambda p: (p / "model_x86.nb").unlink(), r"file model_x86.nb listed in manifest.json is missing"),
    "missing manifest": (lambda p: (p / "manifest.json").unlink(), r"not a model package \(manifest.json missing\)"),
    "manifest not json": (lambda p: (p / "manifest.json").write_text('{"name": "x",'), r"not valid JSON at line 1"),
    "edited input size": (lambda p: _set(p, lambda d: d["input"].update(size="big")),
                          r"field 'input.size' is 'big'; expected an integer"),
    "edited channels": (lambda p: _set(p, lambda d: d["input"].update(channels=3)),
                        r"field 'input.channels': input mode 'image\+template' needs 6, the manifest says 3"),
    "dropped field": (lambda p: _set(p, lambda d: d.pop("precision")), r"field 'precision' is missing"),
    "class names mismatch": (lambda p: _set(p, lambda d: d["class_names"].pop()),
                             r"field 'outputs.scores.shape'.*6 scores per box, but 5 class names"),
    "edited sha": (lambda p: _set(p, lambda d: d["files"]["model.pdmodel"].update(sha256="0" * 64)),
                   r"model.pdmodel: sha256 differs"),
    "newer format": (lambda p: _set(p, lambda d: d.update(format_version=99)), r"reads up to version 1"),
    "bad target precision": (lambda p: _set(p, lambda d: d.update(target_precision={"lite-x86": "int4"})),
                             r"field 'target_precision': expected an object of offered target -> one of"),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("backend", ["lite", "paddle"])
def test_a_damaged_package_is_refused_with_its_message(package_copy, damage, backend):
    """Every listed file is checked whichever backend loads: a package is shipped and trusted as a whole."""
    apply, message = DAMAGES[damage]
    apply(package_copy)
    with pytest.raises(PackageError, match=message):
        Detector.load(package_copy, backend=backend)


@pytest.mark.slow
def test_a_package_without_the_requested_target_is_refused(package_copy):
    def drop_x86(data):
        del data["targets"]["lite-x86"], data["files"]["model_x86.nb"]

    _set(package_copy, drop_x86)
    (package_copy / "model_x86.nb").unlink()
    with pytest.raises(PackageError, match=r"has no lite-x86 model \(it offers: paddle, lite-arm\)"):
        Detector.load(package_copy, backend="lite")
    assert Detector.load(package_copy, backend="paddle").info.target == "paddle"  # the rest is intact


def test_export_never_overwrites(tmp_path):
    out = tmp_path / "models" / "x"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_package(tmp_path, out)
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("option, value, message", [
    ("--nms", "soft", "Invalid value for '--nms'"),
    ("--nms-threshold", "0", r"--nms-threshold: 0.0 is not an IoU; expected a number in \(0, 1\]"),
])
def test_export_refuses_an_unknown_nms_before_writing_anything(tmp_path, option, value, message):
    out = tmp_path / "models" / "x"
    result = CliRunner().invoke(app, ["export", "--model", str(tmp_path), "--out", str(out), option, value])
    assert result.exit_code == 2 and re.search(message, result.output), result.output
    assert not out.exists() and not out.with_name("x.partial").exists()
    with pytest.raises(ExportError, match=r"--nms: 'soft' is not an NMS method; expected one of hard, agnostic"):
        export_package(tmp_path, out, nms="soft")  # the library call names the option too


@pytest.mark.slow
def test_a_package_runs_the_nms_its_model_was_trained_to_be_judged_by_unless_told_otherwise(tiny, tmp_path):
    """A run trained with `--nms hard` chose its best checkpoint under per-class NMS: its package runs that by
    default, `--nms` still decides, and a hand-edited recipe is refused naming its file before anything is written."""
    checkpoint_dir = Path(shutil.copytree(tiny.run / "best", tmp_path / "run" / "best"))
    info = json.loads((checkpoint_dir / "checkpoint.json").read_text())
    info["train_config"].update(nms="hard", nms_threshold=0.5)
    (checkpoint_dir / "checkpoint.json").write_text(json.dumps(info))

    default = tmp_path / "models" / "default-nms"
    result = CliRunner().invoke(app, ["export", "--model", str(checkpoint_dir), "--out", str(default), "--targets",
                                      "x86"])
    assert result.exit_code == 0, result.output
    assert (read_manifest(default).postprocess.nms, read_manifest(default).postprocess.nms_threshold) == ("hard", 0.5)
    told = export_package(checkpoint_dir, tmp_path / "models" / "told", targets=("x86",), progress=lambda line: None,
                          nms="agnostic")
    assert (read_manifest(told).postprocess.nms, read_manifest(told).postprocess.nms_threshold) == ("agnostic", 0.5)

    info["train_config"]["nms_threshold"] = 5
    (checkpoint_dir / "checkpoint.json").write_text(json.dumps(info))
    out = tmp_path / "models" / "bad"
    with pytest.raises(ExportError, match=r"best/checkpoint.json: train_config.nms_threshold 5 is not an IoU"):
        export_package(checkpoint_dir, out, targets=("x86",))
    assert not out.exists() and not out.with_name("bad.partial").exists()


def test_export_rejects_what_is_not_a_model(tmp_path):
    with pytest.raises(ExportError, match="not a training run or checkpoint"):
        export_package(tmp_path, tmp_path / "out")
    (tmp_path / "model.pdmodel").write_bytes(b"x")
    with pytest.raises(ExportError, match=r"model.pdiparams: missing"):
        export_package(tmp_path, tmp_path / "out")
    (tmp_path / "model.pdiparams").write_bytes(b"x")
    with pytest.raises(ExportError, match="no checkpoint describing it"):
        export_package(tmp_path, tmp_path / "out")


def test_precision_follows_the_operators_of_the_graph():
    plain = ProgramInfo("images", [1, 3, 64, 64], [[1, 9, 4], [1, 9, 2]], ["conv2d", "sigmoid"])
    quantized = ProgramInfo("images", [1, 3, 64, 64], [[1, 9, 4], [1, 9, 2]],
                            ["conv2d", "dequantize_linear", "quantize_linear"])
    assert plain.precision == "fp32" and quantized.precision == "int8"


def test_converter_log_with_an_unreadable_operator_fails_the_export(tmp_path):
    nb = tmp_path / "model.nb"
    nb.write_bytes(b"\0" * 100)
    ok = "Loading topology data from m.pdmodel\n1. Model is successfully loaded!\n2. Model is optimized and saved into model.nb successfully"
    check_converter_output(ok, 0, nb, "x86")  # a clean run passes
    # What Lite 2.13 prints for assign_value, while still reporting success (see test below, real run).
    bad = ("[libprotobuf ERROR message_lite.cc:119] Can't parse message of type \"paddle.framework.proto.ProgramDesc\" "
           "because it is missing required fields: blocks[0].ops[4].attrs[7].type\n" + ok)
    with pytest.raises(ConversionError, match="Can't parse message"):
        check_converter_output(bad, 0, nb, "x86")
    with pytest.raises(ConversionError, match="exit code 1"):
        check_converter_output(ok, 1, nb, "arm")
    nb.unlink()
    with pytest.raises(ConversionError, match="was not written"):
        check_converter_output(ok, 0, nb, "x86")


ASSIGN_VALUE_PROGRAM = textwrap.dedent(
    """
    import sys
    import paddle

    class WithConstant(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 1)

        def forward(self, x):  # paddle.to_tensor in the graph becomes an assign_value operator
            return self.conv(x) * paddle.to_tensor([1.0, 2.0, 3.0, 4.0]).reshape([1, 4, 1, 1])

    model = WithConstant()
    model.eval()
    spec = [paddle.static.InputSpec([1, 3, 8, 8], "float32", "x")]
    paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), sys.argv[1])
    """
)


@pytest.mark.slow
def test_real_converter_on_an_assign_value_graph_is_caught(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(ASSIGN_VALUE_PROGRAM)
    env = dict(os.environ, FLAGS_enable_pir_api="0", OMP_NUM_THREADS="1", GLOG_minloglevel="2")
    saved = subprocess.run([sys.executable, str(script), str(tmp_path / "model")], env=env, capture_output=True,
                           text=True, timeout=300)
    assert saved.returncode == 0, saved.stderr[-2000:]
    with pytest.raises(ConversionError, match="Can't parse message"):
        convert_to_lite(tmp_path / "model.pdmodel", tmp_path / "model.pdiparams", "x86", tmp_path / "model.nb")


@pytest.mark.slow
def test_an_inference_model_directory_exports_with_metrics_measured_through_the_package(tiny, tmp_path):
    """The route an INT8 model from quantization takes: a saved NAME.pdmodel beside its run's checkpoint;
    and `--eval-data`, whose numbers come from running the finished package."""
    inference_dir = tmp_path / "run" / "inference"
    shutil.copytree(tiny.run / "best", tmp_path / "run" / "best")
    inference_dir.mkdir()
    shutil.copyfile(tiny.package / "model.pdmodel", inference_dir / "student.pdmodel")
    shutil.copyfile(tiny.package / "model.pdiparams", inference_dir / "student.pdiparams")
    out = tmp_path / "models" / "student"
    result = CliRunner().invoke(app, ["export", "--model", str(inference_dir), "--out", str(out), "--targets", "x86",
                                      "--eval-data", str(tiny.data), "--eval-split", "all", "--nms", "hard",
                                      "--nms-threshold", "0.5"])
    assert result.exit_code == 0, result.output
    assert "loaded through the runtime: Paddle Lite" in result.output

    manifest = read_manifest(out)
    assert (manifest.postprocess.nms, manifest.postprocess.nms_threshold) == ("hard", 0.5)  # what users run
    assert manifest.provenance["source_kind"] == "inference-model"
    assert manifest.provenance["checkpoint"] == str((tmp_path / "run" / "best").resolve())
    assert set(manifest.targets) == {"paddle", "lite-x86"} and manifest.precision == "fp32"
    assert manifest.files["model.pdmodel"].sha256 == sha256_file(tiny.package / "model.pdmodel")
    assert manifest.class_names == list(DEEPPCB_CLASSES) and manifest.input.size == tiny.input_size
    metrics = manifest.metrics
    assert metrics["n_images"] == 8 and (metrics["backend"], metrics["precision_ran"]) == ("lite", "fp32")
    assert set(metrics["per_class"]) == set(DEEPPCB_CLASSES)
    if metrics["score_threshold"] is not None:  # the measured F-best threshold becomes the default
        assert manifest.postprocess.score_threshold == pytest.approx(metrics["score_threshold"])
    Detector.load(out)  # recording metrics kept the package valid
