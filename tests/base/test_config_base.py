"""``inspector.config_base``: the one base of the plain config dataclasses (typo suggestions, checks beside the
field with the origin of a bad value named, save/load round trip), and the configs built on it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from inspector.config_base import ConfigBase, ConfigError, setting, unknown_keys_message


@dataclass
class Example(ConfigBase):
    KIND = "example option"
    SOURCE = "example config"

    out: str
    epochs: int = setting(30, at_least=1)
    crop_size: int | None = setting(256, above=0, multiple_of=32, note="the largest stride")
    lr: float = setting(2e-3, above=0.0)
    alpha: float = setting(0.7, at_least=0.0, at_most=1.0)
    method: str = setting("qat", choices=("qat", "ptq"))
    targets: list[str] = setting(default_factory=lambda: ["x86", "arm"], choices=("x86", "arm"), non_empty=True)
    augment: bool = True

    def _check(self) -> None:
        if self.method == "ptq" and self.epochs > 1:
            raise self._invalid(None, "ptq fine-tunes nothing: epochs must be 1")


def test_an_unknown_key_is_refused_with_the_nearest_valid_name_and_the_file():
    with pytest.raises(ConfigError, match=r"^runs/x/train_config.json: unknown example option 'epoch'; "
                                          r"did you mean 'epochs'\?$"):
        Example.from_dict({"out": "o", "epoch": 3}, source="runs/x/train_config.json")
    # several: each with its suggestion; one without any lists the valid names
    with pytest.raises(ConfigError) as error:
        Example.from_dict({"out": "o", "epoch": 3, "zzzz": 1}, source="a.json")
    assert str(error.value) == ("a.json: unknown example options 'epoch' (did you mean 'epochs'?), 'zzzz'; expected "
                                "some of alpha, augment, crop_size, epochs, lr, method, out, targets")
    assert unknown_keys_message(["temprature"], ["temperature", "teacher"], "d.json") == \
        "d.json: unknown option 'temprature'; did you mean 'temperature'?"


@pytest.mark.parametrize("values, message", [
    ({"epochs": 0}, "epochs: expected at least 1, got 0"),
    ({"crop_size": 100}, "crop_size: 100 is not a multiple of 32 (the largest stride)"),
    ({"crop_size": -32}, "crop_size: expected more than 0, got -32 (the largest stride)"),
    ({"alpha": 1.5}, "alpha: expected a value in [0.0, 1.0], got 1.5"),
    ({"method": "int4"}, "method: expected one of ('qat', 'ptq'), got 'int4'"),
    ({"targets": ["x86", "mips"]}, "targets: expected some of ('x86', 'arm'), got ['x86', 'mips']"),
    ({"targets": []}, "targets: expected at least one value, got []"),
    ({"epochs": "ten"}, "epochs: expected int, got 'ten'"),
    ({"epochs": True}, "epochs: expected int, got True"),
    ({"augment": "yes"}, "augment: expected bool, got 'yes'"),
    ({"crop_size": 25.6}, "crop_size: expected int or null, got 25.6"),
    ({"targets": "x86"}, "targets: expected a list of str, got 'x86'"),
])
def test_a_bad_value_names_the_field_what_was_expected_and_its_origin(values, message):
    with pytest.raises(ConfigError) as built:  # in code: the field
        Example(out="o", **values)
    assert str(built.value) == message
    field_name = next(iter(values))
    with pytest.raises(ConfigError) as from_file:  # from a file: the file and the field
        Example.from_dict({"out": "o", **values}, source="configs/x.yaml")
    assert str(from_file.value) == f"configs/x.yaml: {message}"
    flag = "--" + field_name.replace("_", "-")
    with pytest.raises(ConfigError) as from_flag:  # from the command line: the flag
        Example.from_dict({"out": "o", **values}, source="command line", origins={field_name: flag})
    assert str(from_flag.value) == f"{flag}: {message.split(': ', 1)[1]}"
    assert from_flag.value.field == field_name


def test_rules_over_several_fields_and_missing_required_ones_name_the_source():
    with pytest.raises(ConfigError, match=r"^p.json: ptq fine-tunes nothing: epochs must be 1$"):
        Example.from_dict({"out": "o", "method": "ptq", "epochs": 3}, source="p.json")
    with pytest.raises(ConfigError, match=r"^p.json: out missing$"):
        Example.from_dict({"epochs": 3}, source="p.json")
    with pytest.raises(ConfigError, match=r"^p.json: expected a mapping of options"):
        Example.from_dict(["epochs"], source="p.json")


def test_numbers_widen_where_exact_and_save_load_round_trips(tmp_path):
    config = Example(out="o", lr=1, crop_size=None, targets=("arm",))  # int for float, None allowed, tuple for list
    path = tmp_path / "example.json"
    config.save(path)
    assert json.loads(path.read_text())["targets"] == ["arm"]
    loaded = Example.load(path)
    assert loaded == Example(out="o", lr=1, crop_size=None, targets=["arm"])
    assert Example.load(path).to_dict() == json.loads(path.read_text())
    path.write_text('{"out": "o", "epochs": 0}')
    with pytest.raises(ConfigError, match=f"^{path}: epochs: expected at least 1, got 0$"):
        Example.load(path)
    path.write_text("{")
    with pytest.raises(ConfigError, match=f"^{path}: not valid JSON"):
        Example.load(path)


class OwnError(Exception):
    pass


@dataclass
class WithOwnError(ConfigBase):
    ERROR = OwnError
    size: int = setting(32, multiple_of=32)
    names: list[str] = field(default_factory=list)


def test_a_config_raises_its_own_error_type():
    with pytest.raises(OwnError, match="^c.yaml: size: 33 is not a multiple of 32$"):
        WithOwnError.from_dict({"size": 33}, source="c.yaml")
    with pytest.raises(OwnError, match="^c.yaml: unknown option 'sise'; did you mean 'size'\\?$"):
        WithOwnError.from_dict({"sise": 32}, source="c.yaml")


# --------------------------------------------------------------------------- the configs built on the base


def _configs():
    from inspector.compression.distill import DistillConfig
    from inspector.compression.prune import PruneConfig
    from inspector.compression.quantize import QuantizeConfig
    from inspector.models.config import ModelConfig
    from inspector.pipeline.config import PipelineConfig
    from inspector.training.config import TrainConfig

    return [TrainConfig(arch="mbv3-small", data="d", out="o"), DistillConfig(teacher="t"),
            PruneConfig(model="m", data="d", out="o"), QuantizeConfig(model="m", data="d", out="o"),
            PipelineConfig(data="d", out="o"), ModelConfig(arch="mbv3-small", head="gfl")]


def test_every_config_saves_and_loads_unchanged_and_names_its_file_on_a_typo(tmp_path):
    for config in _configs():
        assert isinstance(config, ConfigBase)
        path = tmp_path / f"{type(config).__name__}.json"
        config.save(path)
        assert type(config).load(path) == config
        values = json.loads(path.read_text())
        name = next(key for key in values if key not in ("data", "out", "model", "teacher", "arch"))
        values[name[:-1]] = values.pop(name)  # a typo: the last letter dropped
        path.write_text(json.dumps(values))
        with pytest.raises(Exception, match=f"^{path}: unknown .*'{name[:-1]}'; did you mean '{name}'\\?$"):
            type(config).load(path)


def test_a_run_saved_before_a_field_existed_loads_with_its_default(tmp_path):
    from inspector.training.config import TrainConfig

    old = TrainConfig(arch="mbv3-small", data="d", out="o").to_dict()
    del old["aug_off_epochs"], old["copy_paste"]
    (tmp_path / "train_config.json").write_text(json.dumps(old))
    loaded = TrainConfig.load(tmp_path / "train_config.json")
    assert loaded.aug_off_epochs == 0 and loaded.copy_paste == 0.0


@pytest.mark.parametrize("command, message", [
    (["train", "--arch", "mbv3-small", "--crop-size", "100"],
     "error: --crop-size: 100 is not a multiple of 32 (the detector's largest stride)"),
    (["train", "--arch", "mbv3-small", "--lr", "0"], "error: --lr: expected more than 0.0, got 0.0"),
    (["pipeline", "--epochs", "2", "--crop-size", "100"], "error: --crop-size: 100 is not a multiple of 32"),
])
def test_a_bad_command_line_value_names_its_flag(tmp_path, command, message):
    from typer.testing import CliRunner

    from inspector.cli import app

    result = CliRunner().invoke(app, [*command, "--data", str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_preset_value_is_named_with_the_preset_file(tmp_path):
    from inspector.pipeline.config import PipelineConfig, PipelineError, read_preset

    preset = tmp_path / "pipeline-x.yaml"
    preset.write_text("epochs: 0\n")
    with pytest.raises(PipelineError, match=f"^{preset}: epochs: expected at least 1, got 0$"):
        PipelineConfig.from_dict({**read_preset(preset), "data": "d", "out": "o"}, source=str(preset),
                                 origins={"data": "--data", "out": "--out"})


@dataclass
class WithMapping(ConfigBase):
    thresholds: dict[str, float] = field(default_factory=dict)


def test_a_mapping_field_checks_its_keys_and_values():
    assert WithMapping(thresholds={"short": 0.3, "open": 1}).thresholds["open"] == 1
    with pytest.raises(ConfigError, match=r"^thresholds: expected a mapping of str to float, got \{'short': 'high'\}$"):
        WithMapping(thresholds={"short": "high"})
