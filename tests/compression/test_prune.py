"""Structured channel pruning: group sizes and parameter counts, exactness against masking, criteria,
checkpoints of pruned models, the sensitivity-based choice, and `inspector prune` end to end."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import paddle
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.compression.pruning.channels import channels_to_keep, kept_channel_count, prune_model, pruned_shapes
from inspector.compression.pruning.groups import channel_groups
from inspector.compression.pruning.sensitivity import choose_ratios, sensitivity_scan
from inspector.compression.pruning.size import measure
from inspector.data.synth import write_deeppcb
from inspector.models import ModelConfig, build_model, count_parameters
from inspector.models.layers import SPP, ConvBNAct, CoordConv
from inspector.training.checkpoint import PRUNED_SHAPES, load_checkpoint, save_checkpoint

SIZE = 64


def tiny_model(arch: str) -> paddle.nn.Layer:
    """A detector at input 64 whose BatchNorms have non-trivial statistics, so that every channel matters."""
    paddle.seed(0)
    model = build_model(ModelConfig(arch=arch, num_classes=6, input_size=SIZE, input_mode="image+template"))
    rng = np.random.default_rng(0)
    ranges = {"weight": (0.5, 1.5), "bias": (-0.2, 0.2), "_mean": (-0.2, 0.2), "_variance": (0.5, 2.0)}
    with paddle.no_grad():
        for name, param in model.named_parameters():
            if ".bn." in name:
                low, high = ranges[name.rsplit(".", 1)[1]]
                param.set_value(rng.uniform(low, high, param.shape).astype("float32"))
    model.eval()
    return model


@pytest.fixture(scope="module")
def student() -> paddle.nn.Layer:
    return tiny_model("mbv3-small")


def images(size: int = SIZE, batch: int = 2) -> paddle.Tensor:
    return paddle.to_tensor(np.random.default_rng(1).normal(0, 1, (batch, 6, size, size)).astype("float32"))


def outputs(model: paddle.nn.Layer, x: paddle.Tensor) -> list[np.ndarray]:
    with paddle.no_grad():
        return [o.numpy() for o in model(x)]


def test_uniform_ratio_shrinks_every_group_to_the_rounded_count_and_keeps_the_output_layout(student):
    model = copy.deepcopy(student)
    sizes = {group.name: group.size for group in channel_groups(model)}
    report = prune_model(model, {name: 0.5 for name in sizes}, "l1", channel_multiple=8)

    after = {group.name: group.size for group in channel_groups(model)}
    assert after.keys() == sizes.keys()
    for name, size in sizes.items():
        assert after[name] == kept_channel_count(size, 0.5, 8), name
        assert after[name] % 8 == 0 and after[name] <= size
    assert {r.name: r.kept for r in report} == after
    assert after["backbone.blocks.9.expanded"] == 288 and after["neck.out_stride8"] == 48
    assert count_parameters(model) < 0.35 * count_parameters(student)
    for size in (64, 96, 160):  # any multiple of 32, as the runtime feeds it
        x = images(size, batch=1)
        assert [o.shape for o in outputs(model, x)] == [o.shape for o in outputs(student, x)]


def test_pruning_one_expansion_removes_exactly_its_parameters(student):
    model = copy.deepcopy(student)
    prune_model(model, {"backbone.blocks.9.expanded": 0.5})  # 576 expanded channels -> 288
    # Per channel: the expand conv's 96 inputs and its BN (4 values), the 5x5 depthwise filter and its BN,
    # the SE reduce conv's input (144 squeezed channels), the SE expand conv's output (144 + bias), and
    # the projection's input from it (96 outputs).
    per_channel = 96 + 4 + 25 + 4 + 144 + 145 + 96
    assert count_parameters(student) - count_parameters(model) == 288 * per_channel


def _conv_weight(layer) -> paddle.Tensor:
    layer = _innermost(layer)
    return layer.conv.weight if isinstance(layer, ConvBNAct) else layer.weight


def _innermost(layer):
    if isinstance(layer, CoordConv):
        return layer.conv
    if isinstance(layer, SPP):
        return layer.fuse
    return layer


@pytest.mark.parametrize("arch, criterion", [("mbv3-small", "l1"), ("mbv3-small", "fpgm"), ("ppyolo-r18", "fpgm")])
def test_pruned_model_computes_exactly_what_the_original_computes_with_those_channels_zeroed(arch, criterion,
                                                                                            student):
    """The oracle for the channel groups: zero the removed channels wherever they are written (BN scale
    and shift, or a plain conv's filter and bias) in the unpruned model. If a group missed a layer that
    reads or writes its channels, or read them at the wrong offset, the outputs would differ or the
    pruned model would not run."""
    model = copy.deepcopy(student) if arch == "mbv3-small" else tiny_model(arch)
    masked = copy.deepcopy(model)
    layers = dict(masked.named_sublayers())
    with paddle.no_grad():
        for group in channel_groups(masked):
            keep = channels_to_keep(_conv_weight(layers[group.producers[0]]).numpy(), 0.5, criterion)
            removed = np.setdiff1d(np.arange(group.size), keep)
            for path in group.producers:
                layer = _innermost(layers[path])
                for param in ([layer.bn.weight, layer.bn.bias] if isinstance(layer, ConvBNAct)
                              else [layer.weight, layer.bias]):
                    value = param.numpy()
                    value[removed] = 0.0
                    param.set_value(value)
    x = images()
    expected = outputs(masked, x)
    prune_model(model, {group.name: 0.5 for group in channel_groups(model)}, criterion)
    assert count_parameters(model) < 0.6 * count_parameters(masked)
    for got, want in zip(outputs(model, x), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_ratio_zero_changes_nothing(student):
    model = copy.deepcopy(student)
    report = prune_model(model, {group.name: 0.0 for group in channel_groups(model)}, "fpgm")
    assert all(r.kept == r.channels for r in report)
    before, after = student.state_dict(), model.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        np.testing.assert_array_equal(before[name].numpy(), after[name].numpy(), err_msg=name)
    assert pruned_shapes(model) == {}
    x = images()
    for got, want in zip(outputs(model, x), outputs(student, x)):
        np.testing.assert_array_equal(got, want)


def test_l1_and_fpgm_remove_different_filters_of_a_crafted_conv(student):
    # Three large, nearly identical filters and one small, different one. L1 drops the small one;
    # FPGM drops filter 0, the geometric median of the cluster, which its neighbours can replace.
    weight = np.array([[3.0, 0.0], [3.0, 0.2], [3.0, -0.2], [0.0, 1.0]], np.float32).reshape(4, 2, 1, 1)
    assert channels_to_keep(weight, 0.25, "l1", channel_multiple=1).tolist() == [0, 1, 2]
    assert channels_to_keep(weight, 0.25, "fpgm", channel_multiple=1).tolist() == [1, 2, 3]

    # prune_model keeps exactly the filters the criterion ranks highest, and the criteria differ there.
    expand = "backbone.blocks.9.body.0.conv.weight"
    original = student.state_dict()[expand].numpy()
    kept = {}
    for criterion in ("l1", "fpgm"):
        model = copy.deepcopy(student)
        prune_model(model, {"backbone.blocks.9.expanded": 0.5}, criterion)
        kept[criterion] = channels_to_keep(original, 0.5, criterion)
        np.testing.assert_array_equal(model.state_dict()[expand].numpy(), original[kept[criterion]])
    assert set(kept["l1"]) != set(kept["fpgm"])


def test_pruned_checkpoint_rebuilds_with_identical_outputs(student, tmp_path):
    model = copy.deepcopy(student)
    prune_model(model, {group.name: 0.4 for group in channel_groups(model)}, "fpgm")
    names = ["open", "short", "mousebite", "spur", "copper", "pin-hole"]
    save_checkpoint(tmp_path / "best", model.state_dict(), model.cfg, names, {PRUNED_SHAPES: pruned_shapes(model)})

    rebuilt = load_checkpoint(tmp_path).build()
    assert count_parameters(rebuilt) == count_parameters(model)
    assert measure(rebuilt) == measure(model)
    x = images(96)
    for got, want in zip(outputs(rebuilt, x), outputs(model, x)):
        np.testing.assert_array_equal(got, want)
    with paddle.no_grad():
        features = rebuilt.features(x)
    assert rebuilt.neck.out_channels == [f.shape[1] for f in features] == [56, 56, 56]

    # Without the shapes the weights do not fit; that must be an error, not random weights.
    save_checkpoint(tmp_path / "broken", model.state_dict(), model.cfg, names, {})
    with pytest.raises(ValueError, match="model.pdparams: .* has shape"):
        load_checkpoint(tmp_path / "broken").build()


@pytest.mark.slow
def test_sensitivity_scan_and_choice_spare_the_sensitive_groups(student):
    model = copy.deepcopy(student)
    full = {group.name: group.size for group in channel_groups(model)}

    def score(candidate) -> float:
        # A stand-in for mAP: shrinking the neck costs 0.1, anything else 0.001.
        shrunk = [g.name for g in channel_groups(candidate) if g.size < full[g.name]]
        return 1.0 - sum(0.1 if name.startswith("neck.") else 0.001 for name in shrunk)

    baseline, scan = sensitivity_scan(model, score, ratios=(0.5,), progress=False)
    assert baseline == 1.0 and scan.keys() == full.keys()
    assert scan["neck.out_stride8"]["drops"][0.5] == pytest.approx(0.1)
    assert scan["backbone.blocks.9.expanded"]["drops"][0.5] == pytest.approx(0.001)
    assert scan["backbone.blocks.0.se"]["drops"][0.5] == 0.0  # 8 channels: rounds to no change
    for name, value in student.state_dict().items():  # the scan leaves the model as it was
        np.testing.assert_array_equal(model.state_dict()[name].numpy(), value.numpy(), err_msg=name)

    choice = choose_ratios(model, scan, target_flops_reduction=0.2, max_drop=0.01)
    assert choice.target_reached and choice.tolerance == pytest.approx(0.001)
    assert choice.ratios and not any(name.startswith("neck.") for name in choice.ratios)
    pruned = copy.deepcopy(model)
    prune_model(pruned, choice.ratios)
    assert 1 - measure(pruned).flops / measure(model).flops == pytest.approx(choice.flops_reduction)
    assert choice.flops_reduction >= 0.2

    unreachable = choose_ratios(model, scan, target_flops_reduction=0.95, max_drop=0.01)
    assert not unreachable.target_reached and unreachable.tolerance == 0.01


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> tuple[Path, Path]:
    """Synthetic boards and a briefly trained student run on them."""
    root = tmp_path_factory.mktemp("prune")
    data = write_deeppcb(root / "boards", n=8, seed=5, size=160)
    run = root / "student"
    result = CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--data", str(data), "--out", str(run),
                                      "--epochs", "1", "--batch", "2", "--input-size", str(SIZE), "--crop-size", "0",
                                      "--val-fraction", "0.25", "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    return data, run


@pytest.mark.slow
def test_cli_prune_writes_a_run_whose_checkpoints_are_the_pruned_model(source_run, tmp_path):
    data, source = source_run
    out = tmp_path / "pruned"
    result = CliRunner().invoke(app, ["prune", "--model", str(source), "--data", str(data), "--out", str(out),
                                      "--criterion", "fpgm", "--ratio", "0.5", "--epochs", "1", "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "parameters" in result.output and "FLOPs" in result.output

    report = json.loads((out / "pruning.json").read_text())
    assert report["mode"] == "uniform" and report["criterion"] == "fpgm"
    assert report["pruned"]["params"] < 0.35 * report["before"]["params"]
    assert report["pruned"]["flops"] < 0.5 * report["before"]["flops"]
    assert report["fine_tuned"]["epoch"] == 1 and "map50_95" in report["fine_tuned"]
    assert (out / "split.json").read_text() == (source / "split.json").read_text()
    for checkpoint in ("best", "last"):
        model = load_checkpoint(out / checkpoint).build()
        assert count_parameters(model) == report["pruned"]["params"]
        assert measure(model).flops == report["pruned"]["flops"]
    assert (out / "metrics.csv").is_file() and (out / "last" / "state.pdparams").is_file()

    again = CliRunner().invoke(app, ["prune", "--model", str(source), "--data", str(data), "--out", str(out),
                                     "--ratio", "0.5"])
    assert again.exit_code == 2 and "already holds a run" in again.output
    neither = CliRunner().invoke(app, ["prune", "--model", str(source), "--data", str(data), "--out",
                                       str(tmp_path / "x")])
    assert neither.exit_code == 2 and "exactly one of --ratio R and --auto-ratio" in neither.output


@pytest.mark.slow
def test_cli_auto_ratio_scans_every_group_and_meets_the_flops_target(source_run, tmp_path):
    data, source = source_run
    out = tmp_path / "auto"
    result = CliRunner().invoke(app, ["prune", "--model", str(source), "--data", str(data), "--out", str(out),
                                      "--auto-ratio", "--target-flops", "0.3", "--max-drop", "1.0",
                                      "--scan-ratios", "0.5", "--scan-images", "2", "--epochs", "1",
                                      "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    scan = json.loads((out / "sensitivity.json").read_text())
    model = load_checkpoint(out).build()
    assert scan["images"] == 2 and scan["metric"] == "map50_95"
    assert set(scan["groups"]) == {group.name for group in channel_groups(model)}
    assert scan["target_reached"] and scan["flops_reduction"] >= 0.3
    report = json.loads((out / "pruning.json").read_text())
    assert report["mode"] == "sensitivity"
    assert 1 - report["pruned"]["flops"] / report["before"]["flops"] == pytest.approx(scan["flops_reduction"])
