"""INT8 quantization (inspector.compression.quantize and its steps in compression.quantization) on tiny detectors.

The models are untrained (mbv3-small at input 64): these tests check that quantization really
happens, that saved programs reload in Paddle Inference and Paddle Lite and agree with the
fake-quant model, and that mixed precision keeps exactly the named layers in FP32. Accuracy numbers
on real data are the job of ``inspector quantize`` itself.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.compression.quantization.calibrate import calibrate
from inspector.compression.quantization.layers import (
    convolutions,
    fuse_batch_norms,
    is_quantized,
    lite_x86_fp32_layers,
    quantizable_layer_names,
    quantize_model,
)
from inspector.compression.quantization.measure import InferenceModel
from inspector.compression.quantization.program import describe_program, layer_precisions, save_inference_model
from inspector.compression.quantization.sensitivity import layer_sensitivity
from inspector.data import Dataset, load_dataset
from inspector.data.loader import BatchLoader
from inspector.data.split import split_dataset
from inspector.data.structures import Sample
from inspector.data.synth import write_deeppcb
from inspector.models import ModelConfig, build_model
from inspector.models.inference_program import params_file, program_file
from inspector.training.checkpoint import save_checkpoint
from inspector.training.validate import predict_loader

INPUT = 64
SKIPPED = "head.predictions"  # a block: its three 1x1 prediction convolutions
SKIPPED_LAYERS = ["head.predictions.0", "head.predictions.1", "head.predictions.2"]


def tiny_detector(num_classes: int = 6, seed: int = 0):
    paddle.seed(seed)
    model = build_model(ModelConfig(arch="mbv3-small", num_classes=num_classes, input_size=INPUT,
                                    input_mode="image+template"))
    model.eval()
    return model


def random_images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 6, INPUT, INPUT), dtype=np.float32)


def decoded_outputs(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with paddle.no_grad():
        boxes, scores = model.decode(model(paddle.to_tensor(images)))
    return boxes.numpy(), scores.numpy()


def test_quantize_model_wraps_every_convolution_but_the_skipped_block():
    model = tiny_detector()
    names = quantizable_layer_names(model)
    quantize_model(model, skip_layers=[SKIPPED])
    assert is_quantized(model)
    assert quantizable_layer_names(model) == names  # the wrappers take the layers' places
    kinds = {name: type(conv).__name__ for name, conv in convolutions(model).items()}
    assert {name for name, kind in kinds.items() if kind == "Conv2D"} == set(SKIPPED_LAYERS)
    assert sum(kind == "QuantizedConv2D" for kind in kinds.values()) == len(names) - 3
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model)


def test_an_unknown_skip_layer_is_refused_with_the_names_that_exist():
    with pytest.raises(ValueError, match="'head.nonexistent' names no convolution.*backbone.stem.conv"):
        quantize_model(tiny_detector(), skip_layers=["head.nonexistent"])


def test_folding_batch_norms_keeps_the_function_and_removes_every_batch_norm():
    model = tiny_detector()
    for layer in model.sublayers():  # non-trivial statistics, as a trained model has
        if isinstance(layer, nn.BatchNorm2D):
            channels = layer._mean.shape[0]
            rng = np.random.default_rng(channels)
            layer._mean.set_value(rng.normal(0, 0.5, channels).astype("float32"))
            layer._variance.set_value(rng.uniform(0.2, 3.0, channels).astype("float32"))
            layer.weight.set_value(rng.normal(1, 0.5, channels).astype("float32"))  # negative gammas too
    images = random_images(2, seed=0)
    want = decoded_outputs(model, images)
    fuse_batch_norms(model)
    assert not any(isinstance(layer, nn.BatchNorm2D) for layer in model.sublayers())
    got = decoded_outputs(model, images)
    np.testing.assert_allclose(got[1], want[1], atol=1e-4)
    # boxes reach hundreds of pixels through exp(tw): folding reorders float sums, and on some CPUs one box in 2,000
    # moved 0.59 px at 342 (1.7e-3 relative); a wrong fold moves boxes by whole cells
    np.testing.assert_allclose(got[0], want[0], rtol=3e-3, atol=1e-2)


def test_calibration_sets_activation_scales_from_the_calibration_images_alone():
    model = quantize_model(tiny_detector())
    stem = convolutions(model)["backbone.stem.conv"]
    weight_before = stem.weight.numpy().copy()
    images = random_images(2, seed=1)
    images.reshape(-1)[[5, 5000, 40000]] = 50.0  # three outliers among 49,152 values in [0, 1)

    # Moving abs-max, one batch after a restart from zero: that batch's abs-max exactly (an average
    # that kept the layers' initial state would land between it and 1).
    assert calibrate(model, [images], percentile=None) == 2
    assert float(stem._fake_quant_input._scale) == pytest.approx(50.0, rel=1e-6)
    # The 99.99th percentile (the default) leaves the outliers out and keeps the resolution for the rest.
    calibrate(model, [images])
    assert float(stem._fake_quant_input._scale) == pytest.approx(np.percentile(np.abs(images), 99.99), rel=1e-3)
    assert float(stem._fake_quant_input._scale) < 1.0

    np.testing.assert_array_equal(stem.weight.numpy(), weight_before)
    assert not model.training and not stem._fake_quant_input.training


@pytest.fixture(scope="module")
def qat_saved(tmp_path_factory):
    """A calibrated fake-quant detector, its outputs, and its saved program. Mixed precision: the layers
    Paddle Lite's x86 INT8 kernels cannot run stay FP32, so the Lite test can run it on this machine."""
    model = tiny_detector()
    skipped = lite_x86_fp32_layers(model)
    quantize_model(model, skip_layers=skipped)
    calibrate(model, [random_images(4, seed=2), random_images(4, seed=3)])
    images = random_images(1, seed=4)
    reference = decoded_outputs(model, images)
    prefix = tmp_path_factory.mktemp("qat") / "model"
    save_inference_model(model, prefix, INPUT, in_channels=6)
    return model, images, reference, prefix, skipped


@pytest.mark.slow
def test_qat_model_saves_an_int8_program_that_reloads_and_matches_the_fake_quant_model(qat_saved):
    model, images, (want_boxes, want_scores), prefix, skipped = qat_saved
    # Saving left the dygraph model as it was.
    np.testing.assert_array_equal(decoded_outputs(model, images)[1], want_scores)

    summary = describe_program(program_file(prefix))
    assert summary.op_counts.get("quantize_linear", 0) > 0 and summary.op_counts.get("dequantize_linear", 0) > 0
    precisions = layer_precisions(model, summary)
    assert {name for name, p in precisions.items() if p == "fp32"} == set(skipped)
    assert sum(p == "int8" for p in precisions.values()) == len(precisions) - len(skipped) > 40
    # INT8 storage: the weights file is far smaller than 4 bytes per parameter.
    float_bytes = 4 * sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    assert params_file(prefix).stat().st_size < 0.5 * float_bytes

    for onednn_int8 in (False, True):  # FP32 kernels on the quantized graph, then oneDNN's INT8 kernels
        engine = InferenceModel(prefix, onednn_int8=onednn_int8, threads=1)
        assert engine.runtime.precision == ("int8" if onednn_int8 else "int8-simulated"), engine.runtime
        if onednn_int8:
            assert engine.runtime.int8_convolutions == len(precisions) - len(skipped)
        boxes, scores = engine(images)
        assert boxes.shape == want_boxes.shape and scores.shape == want_scores.shape
        # The exported graph also quantizes each convolution's output (PaddleSlim's output scales),
        # which the fake-quant model only observes: close, not equal.
        np.testing.assert_allclose(scores, want_scores, atol=0.02)
        np.testing.assert_allclose(boxes, want_boxes, atol=0.02 * INPUT)


@pytest.mark.slow
def test_paddle_lite_converts_the_int8_model_and_its_predictor_runs_it(qat_saved, tmp_path):
    from paddlelite.lite import MobileConfig, Opt, create_paddle_predictor

    model, images, (want_boxes, want_scores), prefix, _ = qat_saved
    float_bytes = 4 * sum(int(np.prod(p.shape)) for p in model.parameters() if not p.stop_gradient)
    for target in ("x86", "arm"):
        opt = Opt()
        opt.set_model_file(str(program_file(prefix)))
        opt.set_param_file(str(params_file(prefix)))
        opt.set_valid_places(target)
        opt.set_model_type("naive_buffer")
        opt.set_optimize_out(str(tmp_path / target))
        opt.run()
        assert 0 < (tmp_path / f"{target}.nb").stat().st_size < 0.6 * float_bytes  # INT8 weights kept
    config = MobileConfig()
    config.set_model_from_file(str(tmp_path / "x86.nb"))
    predictor = create_paddle_predictor(config)
    predictor.get_input(0).from_numpy(images)
    predictor.run()
    boxes, scores = predictor.get_output(0).numpy(), predictor.get_output(1).numpy()
    assert boxes.shape == want_boxes.shape and scores.shape == want_scores.shape
    np.testing.assert_allclose(scores, want_scores, atol=0.02)
    np.testing.assert_allclose(boxes, want_boxes, atol=0.02 * INPUT)


def test_sensitivity_ranks_a_layer_with_a_broken_scale_first(tmp_path):
    data = write_deeppcb(tmp_path / "boards", n=3, seed=5, size=160)
    fp32 = fuse_batch_norms(tiny_detector())
    loader = BatchLoader(load_dataset(data), 3, INPUT, "image+template", workers=0)
    # Ground truth = the FP32 model's own confident detections, so FP32 scores mAP 1 and any change to
    # its outputs costs mAP (an untrained model detects nothing real).
    detections = predict_loader(fp32, loader, progress=False)
    samples = [Sample(s.image_path, detections[s.key].boxes[:5], detections[s.key].classes[:5], s.template_path)
               for s in loader.dataset.samples]
    loader = BatchLoader(Dataset(samples, loader.dataset.class_names, data, "deeppcb"), 3, INPUT,
                         "image+template", workers=0)
    quantized = quantize_model(tiny_detector())
    calibrate(quantized, (batch.images for batch in loader))
    broken = "backbone.blocks.1.body.0.conv"
    convolutions(quantized)[broken]._fake_quant_input._scale.set_value(paddle.to_tensor([1e-3]))
    names = [broken, "backbone.blocks.8.body.3.conv", "head.blocks.2.pointwise.conv"]
    before = decoded_outputs(fp32, loader_images(loader))

    report = layer_sensitivity(fp32, quantized, loader, loader.dataset.class_names, layer_names=names,
                               progress=False)
    assert report.fp32["map50"] > 0.8  # (not exactly 1: coincident boxes and clipped borders)
    assert [layer.name for layer in report.layers][0] == broken
    assert report.layers[0].drop_map50_95 > max(layer.drop_map50_95 for layer in report.layers[1:])
    assert report.most_sensitive(1) == [broken]
    np.testing.assert_array_equal(decoded_outputs(fp32, loader_images(loader))[1], before[1])  # given back
    report.save(tmp_path / "sensitivity.json")
    assert json.loads((tmp_path / "sensitivity.json").read_text())["layers"][0]["name"] == broken


def loader_images(loader: BatchLoader) -> np.ndarray:
    return np.concatenate([batch.images for batch in loader])


def tiny_fp32_run(tmp_path):
    """Six synthetic boards and an untrained detector saved as the training run ``tmp_path/fp32-run`` (its best/
    checkpoint and its split), the source ``inspector quantize`` reads."""
    data = write_deeppcb(tmp_path / "boards", n=6, seed=3, size=160)
    dataset = load_dataset(data)
    split_dataset(dataset, 0.34, 0, tmp_path / "fp32-run" / "split.json")
    model = tiny_detector(num_classes=len(dataset.class_names))
    save_checkpoint(tmp_path / "fp32-run" / "best", model.state_dict(), model.cfg, dataset.class_names,
                    {"epoch": 1, "train_config": {"crop_size": None}})
    return data, dataset, model


@pytest.mark.slow
@pytest.mark.parametrize("method", ["qat", "ptq"])
def test_quantize_command_writes_a_run_that_export_can_read(tmp_path, method):
    data, dataset, model = tiny_fp32_run(tmp_path)
    out = tmp_path / "int8-run"
    result = CliRunner().invoke(app, [
        "quantize", "--model", str(tmp_path / "fp32-run"), "--data", str(data), "--method", method,
        "--out", str(out), "--epochs", "1", "--max-steps", "1", "--batch", "2", "--calibration-images", "2",
        "--skip-layers", "head.predictions.1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "drop (INT8 model) on 2 validation images" in result.output

    metrics = json.loads((out / "metrics.json").read_text())
    for name in ("fp32", "int8", "int8_onednn"):
        assert {"map50", "map50_95", "f1_iou033", "runtime", "model_bytes"} <= set(metrics[name])
    assert [metrics[name]["runtime"]["precision"] for name in ("fp32", "int8", "int8_onednn")] == \
        ["fp32", "int8-simulated", "int8"]
    assert metrics["drop"]["map50"] == pytest.approx(metrics["fp32"]["map50"] - metrics["int8"]["map50"])
    assert metrics["int8"]["model_bytes"] < 0.5 * metrics["fp32"]["model_bytes"]
    assert metrics["method"] == method and len(metrics["qat_history"]) == (1 if method == "qat" else 0)
    for key in ("drop", "drop_onednn"):  # each drop with its paired interval over the validation boards
        interval = metrics[key]["official_ap_interval"]
        assert interval["resamples"] == 1000 and interval["low"] <= interval["high"]
    assert "official AP drop: 95% interval" in result.output
    config = json.loads((out / "quant_config.json").read_text())
    assert [name for name, p in config["layers"].items() if p == "fp32"] == ["head.predictions.1"]
    assert (out / "split.json").read_text() == (tmp_path / "fp32-run" / "split.json").read_text()
    # The FP32 reference keeps its BatchNorms (the engines fuse them into the convolutions; a folded bias is
    # saved as reshape2 + elementwise_add that Lite x86 leaves unfused); the INT8 graph has them folded.
    batch_norms = sum(isinstance(layer, nn.BatchNorm2D) for layer in model.sublayers())
    assert batch_norms > 0
    assert describe_program(program_file(out / "fp32" / "model")).op_counts.get("batch_norm") == batch_norms
    assert "batch_norm" not in describe_program(program_file(out / "model")).op_counts

    from inspector.export.package import resolve_source

    source = resolve_source(out)  # what `inspector export --model RUN` sees: the INT8 model, described
    assert source.kind == "inference-model" and source.inference_prefix == out / "model"
    assert source.class_names == dataset.class_names and source.model_config == model.cfg
    # Quantized without --lite-x86-safe: its depthwise convolutions are INT8, which Lite's x86 INT8 kernels
    # crash on, so converting the INT8 graph for x86 is refused before anything is written.
    from inspector.export.legacy_program import ExportError
    from inspector.export.package import export_package

    with pytest.raises(ExportError, match="--lite-x86-safe"):
        export_package(out, tmp_path / "package", targets=("x86",), x86_int8=True)
    assert not (tmp_path / "package").exists() and not (tmp_path / "package.partial").exists()

    again = CliRunner().invoke(app, ["quantize", "--model", str(tmp_path / "fp32-run"), "--data", str(data),
                                     "--out", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output


@pytest.mark.slow
def test_qat_weights_follow_the_thread_count_asked_for_not_the_environment(tmp_path):
    """QAT's weights differ bit for bit between 1 and 2 CPU threads (the backward pass's reductions are split by
    thread), so the count is pinned and recorded: ``--threads 2`` under OMP_NUM_THREADS=1 gives what a shell
    of 2 threads gives, and quant_config.json says which count ran."""
    data, _, _ = tiny_fp32_run(tmp_path)

    def run(name: str, environment_threads: int, *threads: str) -> tuple[bytes, int]:
        out = tmp_path / name
        result = subprocess.run(
            [sys.executable, "-m", "inspector.cli", "quantize", "--model", str(tmp_path / "fp32-run"), "--data",
             str(data), "--method", "qat", "--out", str(out), "--epochs", "2", "--max-steps", "3", "--batch", "2",
             "--calibration-images", "2", "--keep-epoch", "last", *threads],
            env={**os.environ, "OMP_NUM_THREADS": str(environment_threads)}, capture_output=True, text=True,
            timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        recorded = json.loads((out / "quant_config.json").read_text())["config"]["threads"]
        return params_file(out / "model").read_bytes(), recorded

    pinned, pinned_threads = run("pinned", 1, "--threads", "2")
    from_shell, shell_threads = run("from-shell", 2)
    one_thread, one_threads = run("one-thread", 2, "--threads", "1")
    assert (pinned_threads, shell_threads, one_threads) == (2, 2, 1)
    assert pinned == from_shell
    assert one_thread != pinned  # what makes pinning matter


@pytest.mark.slow
def test_qat_saves_the_epoch_whose_int8_graph_scored_best_on_validation_through_onednn(tmp_path, monkeypatch):
    """keep_epoch "best": each epoch's saved graph is scored through oneDNN INT8 and the best one's files are
    what the run ships, not the last epoch's. (An untrained detector scores 0 everywhere, so the scores of the
    epochs' graphs are set here; the files scored are the real ones.)"""
    import inspector.compression.quantize as quantize_module

    data, _, _ = tiny_fp32_run(tmp_path)
    scripted = iter([0.2, 0.5, 0.4])
    scored: list[bytes] = []
    real_evaluate = quantize_module._evaluate_saved

    def evaluate(prefix, onednn_int8, *args, **kwargs):
        result, detections = real_evaluate(prefix, onednn_int8, *args, **kwargs)
        if "qat-epochs" in str(prefix):
            assert onednn_int8  # epochs are chosen on what x86 runs
            scored.append(params_file(prefix).read_bytes())
            result["official_ap"] = next(scripted)
        return result, detections

    monkeypatch.setattr(quantize_module, "_evaluate_saved", evaluate)
    out = tmp_path / "int8-run"
    result = CliRunner().invoke(app, [
        "quantize", "--model", str(tmp_path / "fp32-run"), "--data", str(data), "--method", "qat",
        "--out", str(out), "--epochs", "3", "--max-steps", "1", "--batch", "2", "--calibration-images", "2",
        "--lr", "0.01", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "QAT epochs, oneDNN INT8 official AP on validation: 1: 0.2000  2: 0.5000  3: 0.4000; kept epoch 2" \
        in result.output

    assert len(scored) == 3 and len(set(scored)) == 3  # the weights moved every epoch
    assert params_file(out / "model").read_bytes() == scored[1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["qat_kept_epoch"] == 2
    assert [row["val_onednn_official_ap"] for row in metrics["qat_history"]] == [0.2, 0.5, 0.4]
    assert sorted(path.name for path in out.iterdir()) == [
        "checkpoint.json", "fp32", "metrics.json", "model.pdiparams", "model.pdmodel", "quant_config.json",
        "quantize.log", "split.json"]  # the epochs' graphs are gone

    last = tmp_path / "int8-last"
    result = CliRunner().invoke(app, [
        "quantize", "--model", str(tmp_path / "fp32-run"), "--data", str(data), "--method", "qat",
        "--out", str(last), "--epochs", "3", "--max-steps", "1", "--batch", "2", "--calibration-images", "2",
        "--lr", "0.01", "--threads", "1", "--keep-epoch", "last"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((last / "metrics.json").read_text())
    assert metrics["qat_kept_epoch"] == 3 and len(metrics["qat_history"]) == 3
    assert not any("val_onednn_official_ap" in row for row in metrics["qat_history"])  # nothing scored
    assert "QAT epochs" not in result.output
