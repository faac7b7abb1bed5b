"""The command line writes no default of its own for an option that sets a config field: such an option is unset
(None) unless given, the config class holds the one default (and --help shows it from there), and a given option
still overrides it. Checked on the click parameters typer builds, so a new option that repeats a default fails."""
from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import inspector.cli
from inspector.cli import apps, compress, training
from inspector.cli.options import shown_default
from inspector.compression.distill_config import DistillConfig
from inspector.compression.pruning.config import PruneConfig
from inspector.compression.quantization.config import QuantizeConfig
from inspector.pipeline.config import PipelineConfig
from inspector.training.config import TrainConfig

TRAIN_FIELDS = {"format", "epochs", "batch_size", "input_size", "crop_size", "input_mode", "augment", "dihedral", "lr",
                "val_fraction", "split_seed", "seed", "eval_every", "max_steps_per_epoch", "init", "nms",
                "nms_threshold"}
# command, its config, the flags whose spelling differs from --field-name, the fields it sets by option, and those
# of them whose default is not the config's (distill's student sees the teacher's input: --help says so)
CONFIG_COMMANDS = [
    ("prune", PruneConfig, compress.PRUNE_FLAGS,
     {"criterion", "ratio", "target_flops_reduction", "max_drop", "scan_ratios", "scan_images", "channel_multiple",
      "format", "epochs", "lr", "batch_size", "seed", "max_steps_per_epoch"}),
    ("quantize", QuantizeConfig, compress.QUANTIZE_FLAGS,
     {"method", "format", "epochs", "lr", "batch_size", "crop_size", "calibration_images", "skip_layers",
      "sensitivity", "sensitivity_images", "skip_most_sensitive", "threads", "lite_x86_safe", "seed",
      "max_steps_per_epoch", "keep_epoch"}),
    ("train", TrainConfig, training.TRAIN_FLAGS,
     TRAIN_FIELDS | {"head", "copy_paste", "copy_paste_count", "copy_paste_balance", "aug_off_epochs"}),
    ("distill", TrainConfig, training.TRAIN_FLAGS, TRAIN_FIELDS | {"aug_off_epochs"},
     {"input_size", "crop_size", "input_mode", "nms", "nms_threshold"}),
    ("distill", DistillConfig, training.DISTILL_FLAGS,
     {"temperature", "alpha_start", "alpha_end", "confidence_threshold", "cls_weight", "obj_weight", "box_weight",
      "feature_weight", "feature_normalize", "schedule", "feature_method", "feature_temperature", "teacher_cache",
      "teacher_cache_dir", "teacher_cache_mb"}),
    ("pipeline", PipelineConfig, apps.PIPELINE_FLAGS,
     {"format", "teacher_arch", "student_arch", "head", "input_size", "input_mode", "teacher_run", "student_run",
      "distilled_run", "student_init", "teacher_init", "teacher_cache_dir", "teacher_epochs", "epochs", "crop_size", "qat_epochs", "prune_ratio",
      "prune_epochs", "distill", "nms", "nms_threshold",
      "package_name", "bench_against", "max_steps_per_epoch", "nproc", "ips"}),
]
REQUIRED = {"model", "data", "out", "arch", "teacher"}  # config fields with no default: the command must be given them


def _command(name: str):
    return typer.main.get_command(inspector.cli.app).commands[name]


def _field_options(name: str, config_class: type, flags: dict[str, str]) -> dict:
    """The command's options that set a field of CONFIG_CLASS, by field."""
    by_flag = {flag: field for field, flag in flags.items()}
    fields = {f.name for f in dataclasses.fields(config_class)}
    found = {}
    for param in _command(name).params:
        if param.param_type_name != "option":
            continue
        flag = param.opts[0]
        field = by_flag.get(flag, flag.removeprefix("--").replace("-", "_"))
        if field in fields and field not in REQUIRED:
            found[field] = param
    return found


def _expected_help_default(config_class: type, field: str, option) -> str | None:
    """How --help should show the field's default: as the option spells it (a switch by the name of its side);
    None when there is none to show."""
    spec = next(f for f in dataclasses.fields(config_class) if f.name == field)
    value = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
    if isinstance(value, bool) and option.secondary_opts:
        return (option.opts[0] if value else option.secondary_opts[0]).removeprefix("--")
    if value is None or value is False or len(value if isinstance(value, (list, tuple)) else [value]) == 0:
        return None
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


@pytest.mark.parametrize("row", CONFIG_COMMANDS, ids=[f"{c[0]}-{c[1].__name__}" for c in CONFIG_COMMANDS])
def test_config_options_are_unset_by_default_and_show_the_config_default(row):
    name, config_class, flags, expected, *rest = row
    default_elsewhere = rest[0] if rest else set()
    options = _field_options(name, config_class, flags)
    assert set(options) == expected  # every such option found (a renamed flag would hide one from this test)
    help_text = CliRunner().invoke(inspector.cli.app, [name, "--help"], env={"COLUMNS": "240"}).output
    for field, option in options.items():
        assert option.default is None, f"{name} {option.opts[0]}: default {option.default!r} repeats the config's"
        if field in default_elsewhere:
            continue
        shown = _expected_help_default(config_class, field, option)
        if shown is None:  # nothing to show (None, off, empty): an unset option shows no default either
            assert not isinstance(option.show_default, str), f"{name} {option.opts[0]}: {option.show_default!r}"
        else:
            assert option.show_default == shown, f"{name} {option.opts[0]}"
            assert f"[default: ({shown})]" in help_text, f"{name} --help: {option.opts[0]} {shown}"


class _Captured(Exception):
    """Raised by the stand-in for the work, carrying the config the command built."""

    def __init__(self, cfg) -> None:
        super().__init__("captured")
        self.cfg = cfg


def _capture(monkeypatch, module: str, function: str) -> None:
    """Replace ``inspector.compression.<module>.<function>`` by one that raises with the config it is given
    (a stand-in module: the test is about the command line, so it loads neither paddle nor the technique)."""
    def stand_in(cfg, *args, **kwargs):
        raise _Captured(cfg)

    fake = types.ModuleType(f"inspector.compression.{module}")
    setattr(fake, function, stand_in)
    monkeypatch.setitem(sys.modules, fake.__name__, fake)


def _config_from(args: list[str]):
    result = CliRunner().invoke(inspector.cli.app, args)
    assert isinstance(result.exception, _Captured), result.output
    return result.exception.cfg


def test_prune_unset_options_take_the_config_defaults_and_given_ones_override(monkeypatch, tmp_path: Path):
    _capture(monkeypatch, "prune", "prune")
    base = ["prune", "--model", "run", "--data", "boards", "--out", str(tmp_path / "p")]
    assert _config_from(base + ["--ratio", "0.5"]) == PruneConfig(model="run", data="boards",
                                                                   out=str(tmp_path / "p"), ratio=0.5)
    cfg = _config_from(base + [
        "--auto-ratio", "--criterion", "fpgm", "--target-flops", "0.4", "--max-drop", "0.05", "--scan-ratios",
        "0.3,0.6", "--scan-images", "16", "--channel-multiple", "4", "--format", "voc", "--epochs", "2", "--lr",
        "0.001", "--batch", "3", "--seed", "7", "--max-steps", "5"])
    assert cfg == PruneConfig(model="run", data="boards", out=str(tmp_path / "p"), criterion="fpgm", ratio=None,
                              target_flops_reduction=0.4, max_drop=0.05, scan_ratios=(0.3, 0.6), scan_images=16,
                              channel_multiple=4, format="voc", epochs=2, lr=0.001, batch_size=3, seed=7,
                              max_steps_per_epoch=5)


def test_quantize_unset_options_take_the_config_defaults_and_given_ones_override(monkeypatch, tmp_path: Path):
    _capture(monkeypatch, "quantize", "quantize")
    base = ["quantize", "--model", "run", "--data", "boards", "--out", str(tmp_path / "q")]
    assert _config_from(base) == QuantizeConfig(model="run", data="boards", out=str(tmp_path / "q"))
    cfg = _config_from(base + [
        "--method", "ptq", "--format", "coco", "--epochs", "0", "--lr", "0.002", "--batch", "2", "--crop-size", "0",
        "--calibration-images", "9", "--skip-layers", "head.predictions, stem", "--sensitivity",
        "--sensitivity-images", "4", "--skip-most-sensitive", "1", "--threads", "2", "--lite-x86-safe", "--seed", "5",
        "--max-steps", "1", "--keep-epoch", "last"])
    assert cfg == QuantizeConfig(model="run", data="boards", out=str(tmp_path / "q"), method="ptq", format="coco",
                                 epochs=0, lr=0.002, batch_size=2, crop_size=0, calibration_images=9,
                                 skip_layers=["head.predictions", "stem"], sensitivity=True, sensitivity_images=4,
                                 skip_most_sensitive=1, threads=2, lite_x86_safe=True, seed=5, max_steps_per_epoch=1,
                                 keep_epoch="last")


def test_train_unset_options_take_the_config_defaults_and_given_ones_override(monkeypatch, tmp_path: Path):
    fake = types.ModuleType("inspector.training.trainer")
    fake.train = lambda cfg, resume=False: (_ for _ in ()).throw(_Captured(cfg))
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    out = str(tmp_path / "t")
    base = ["train", "--arch", "mbv3-small", "--data", "boards", "--out", out]
    assert _config_from(base) == TrainConfig(arch="mbv3-small", data="boards", out=out)
    assert _config_from(base + ["--crop-size", "0"]).crop_size is None  # 0: whole images, not the default 256
    cfg = _config_from(base + [
        "--format", "voc", "--epochs", "3", "--batch", "4", "--input-size", "640", "--crop-size", "320", "--input-mode",
        "gray-diff-s2d", "--head", "gfl", "--no-augment", "--dihedral", "--copy-paste", "0.5", "--copy-paste-count",
        "3", "--copy-paste-balance", "--aug-off-epochs", "1", "--lr", "0.01", "--val-fraction", "0.3", "--split-seed",
        "4", "--seed", "9", "--eval-every", "2", "--max-steps", "6", "--nms", "hard", "--nms-threshold", "0.5"])
    assert cfg == TrainConfig(arch="mbv3-small", data="boards", out=out, format="voc", epochs=3, batch_size=4,
                              input_size=640, crop_size=320, input_mode="gray-diff-s2d", head="gfl", augment=False,
                              dihedral=True, copy_paste=0.5, copy_paste_count=3, copy_paste_balance=True,
                              aug_off_epochs=1, lr=0.01, val_fraction=0.3, split_seed=4, seed=9, eval_every=2,
                              max_steps_per_epoch=6, nms="hard", nms_threshold=0.5)
    result = CliRunner().invoke(inspector.cli.app, base + ["--nms-threshold", "0"])
    assert result.exit_code == 2 and "--nms-threshold: expected a value in (0.0, 1.0], got 0.0" in result.output, \
        result.output


def test_distill_unset_options_take_the_config_defaults_and_given_ones_override(monkeypatch, tmp_path: Path):
    """The student's settings default to TrainConfig's (its input to the teacher's), the loss's to DistillConfig's."""
    teacher_model = types.SimpleNamespace(input_size=416, input_mode="gray-diff-s2d", head="gfl")
    checkpoints = types.ModuleType("inspector.training.checkpoint")
    checkpoints.load_checkpoint = lambda path: types.SimpleNamespace(
        model_config=teacher_model, info={"train_config": {"crop_size": 320, "nms": "hard", "nms_threshold": 0.45}})
    distill_module = types.ModuleType("inspector.compression.distill")
    distill_module.distill = lambda cfg, config: (_ for _ in ()).throw(_Captured((cfg, config)))
    for fake in (checkpoints, distill_module):
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
    out = str(tmp_path / "d")
    base = ["distill", "--teacher", "teacher-run", "--student-arch", "mbv3-small", "--data", "boards", "--out", out]
    student, config = _config_from(base)
    # The student is judged by the teacher's NMS unless told otherwise.
    assert student == TrainConfig(arch="mbv3-small", data="boards", out=out, input_size=416, crop_size=320,
                                  input_mode="gray-diff-s2d", head="gfl", nms="hard", nms_threshold=0.45)
    assert config == DistillConfig(teacher="teacher-run")
    student, config = _config_from(base + [
        "--epochs", "5", "--batch", "2", "--crop-size", "0", "--no-augment", "--lr", "0.005", "--seed", "3",
        "--dihedral", "--temperature", "4", "--alpha-start", "0.9", "--alpha-end", "0.1", "--confidence", "0.6",
        "--cls-weight", "2", "--obj-weight", "0.5", "--box-weight", "3", "--feature-weight", "0",
        "--no-feature-normalize", "--schedule", "cosine", "--feature-method", "cwd", "--feature-temperature", "2",
        "--teacher-cache", "--teacher-cache-mb", "64", "--teacher-cache-dir", "runs/cache", "--nms", "agnostic",
        "--nms-threshold", "0.3"])
    assert student == TrainConfig(arch="mbv3-small", data="boards", out=out, input_size=416, crop_size=None,
                                  input_mode="gray-diff-s2d", head="gfl", epochs=5, batch_size=2, augment=False,
                                  lr=0.005, seed=3, dihedral=True, nms="agnostic", nms_threshold=0.3)
    assert config == DistillConfig(teacher="teacher-run", temperature=4.0, alpha_start=0.9, alpha_end=0.1,
                                   confidence_threshold=0.6, cls_weight=2.0, obj_weight=0.5, box_weight=3.0,
                                   feature_weight=0.0, feature_normalize=False, schedule="cosine",
                                   feature_method="cwd", feature_temperature=2.0, teacher_cache=True,
                                   teacher_cache_mb=64, teacher_cache_dir="runs/cache")
    result = CliRunner().invoke(inspector.cli.app, base + ["--schedule", "cosinus"])
    assert result.exit_code == 2 and "--schedule" in result.output and "cosine" in result.output, result.output


def test_a_bad_option_value_is_named_by_its_flag(monkeypatch, tmp_path: Path):
    _capture(monkeypatch, "prune", "prune")
    result = CliRunner().invoke(inspector.cli.app, ["prune", "--model", "run", "--data", "boards", "--out",
                                                    str(tmp_path / "p"), "--auto-ratio", "--target-flops", "1.5"])
    assert result.exit_code == 2
    assert "--target-flops: expected a value in (0.0, 1.0), got 1.5" in result.output


def test_the_shown_default_is_read_from_dataclass_and_pydantic_configs():
    from inspector.service.config import ServiceConfig

    assert shown_default(PruneConfig, "scan_ratios") == "0.25,0.5,0.75"  # as --scan-ratios takes it
    assert shown_default(PruneConfig, "ratio") is False  # None: nothing to show
    assert shown_default(QuantizeConfig, "skip_layers") is False  # an empty list from a default factory
    assert shown_default(QuantizeConfig, "lr") == "0.0001"
    assert shown_default(ServiceConfig, "backend") == "lite"
    assert shown_default(ServiceConfig, "threads") == "1"
    with pytest.raises(ValueError, match="PruneConfig has no field 'epoch'"):
        shown_default(PruneConfig, "epoch")
    with pytest.raises(ValueError, match="ServiceConfig.source has no default"):
        shown_default(ServiceConfig, "source")
    with pytest.raises(ValueError, match="PruneConfig.model has no default"):
        shown_default(PruneConfig, "model")


def test_serve_reads_serial_codes_when_told_and_refuses_an_unknown_format_by_name(monkeypatch):
    """--read-serial-code and --serial-code-formats set the service's fields (unset: the config's defaults), and
    the formats' --help names the config's default list."""
    from inspector.service import run
    from inspector.service.config import ConfigError, load_config
    from inspector.service.serial_codes import DEFAULT_CODE_FORMATS

    given: list[dict] = []
    monkeypatch.setattr(run, "serve", lambda config, overrides: given.append(overrides) or 0)
    runner = CliRunner()
    no_api = {"http": "", "source": "demo"}  # else the service config asks for the API's token and a source
    assert runner.invoke(inspector.cli.app, ["serve", "--source", "demo"]).exit_code == 0
    defaults = load_config(None, {**given[-1], **no_api}, environ={})
    assert (defaults.read_serial_code, defaults.serial_code_formats) == (False, DEFAULT_CODE_FORMATS)
    assert runner.invoke(inspector.cli.app, ["serve", "--read-serial-code", "--serial-code-formats",
                                             "code128, Data Matrix"]).exit_code == 0
    told = load_config(None, {**given[-1], **no_api}, environ={})
    assert (told.read_serial_code, told.serial_code_formats) == (True, ("code128", "datamatrix"))
    assert runner.invoke(inspector.cli.app, ["serve", "--no-read-serial-code"]).exit_code == 0
    assert load_config(None, {**given[-1], **no_api}, environ={"INSPECTOR_READ_SERIAL_CODE": "1"}).read_serial_code \
        is False
    assert runner.invoke(inspector.cli.app, ["serve", "--serial-code-formats", "datamatrix,ean99"]).exit_code == 0
    with pytest.raises(ConfigError, match="serial_code_formats.*command line.*ean99"):
        load_config(None, {**given[-1], **no_api}, environ={})
    option = next(p for p in _command("serve").params if p.name == "serial_code_formats")
    assert f"default: {','.join(DEFAULT_CODE_FORMATS)}" in option.help
