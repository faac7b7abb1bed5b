"""The way back from the GPU machine, without torch: a run written by the torch twin (Paddle-named float16
parts, its metadata) becomes an ordinary run here whose Paddle model reproduces the twin's outputs.

The fixture (tests/tools/fixtures/twin_run, made by make_twin_fixture.py with the torch twin) holds a probe
input and the twin's outputs on it; an import that loaded a tensor under the wrong name, transposed one or
kept a BatchNorm statistic at its initial value would not reproduce them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "twin_run"
DEMO = Path(__file__).resolve().parents[2] / "inspector" / "assets" / "deeppcb_demo"


@pytest.fixture()
def split_file(tmp_path) -> Path:
    from inspector.data import load_dataset
    from inspector.data.split import split_dataset

    path = tmp_path / "split.json"
    split_dataset(load_dataset(DEMO), 0.5, 0, path)
    return path


def test_an_imported_twin_run_is_an_ordinary_run_whose_model_reproduces_the_twin(tmp_path, split_file):
    import paddle

    from inspector.training.checkpoint import load_checkpoint
    from inspector.training.config import TrainConfig
    from tools.torch_twin.import_run import import_run

    run = import_run(FIXTURE, FIXTURE, tmp_path / "run", str(DEMO), split_file, note="fixture")
    checkpoint = load_checkpoint(run)
    assert checkpoint.model_config.arch == "mbv3-small-x0.25" and checkpoint.model_config.head == "gfl"
    assert checkpoint.info["epoch"] == 2 and checkpoint.info["metrics"]["official_ap"] == 0.5
    assert checkpoint.info["provenance"]["finished"] is True
    config = TrainConfig.load(run / "train_config.json")
    assert (config.data, config.out, config.epochs, config.input_mode) == (str(DEMO), str(run), 2, "gray-diff-s2d")
    assert json.loads((run / "split.json").read_text()) == json.loads(split_file.read_text())
    assert [row["epoch"] for row in json.loads((run / "metrics.json").read_text())] == [1, 2]
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch")

    model = checkpoint.build()
    with np.load(FIXTURE / "probe.npz") as probe:
        outputs = model(paddle.to_tensor(probe["input"]))
        for index, output in enumerate(outputs):
            np.testing.assert_allclose(output.numpy(), probe[f"output{index}"], rtol=1e-4, atol=1e-4)


def test_weights_that_do_not_fit_the_model_are_refused_naming_the_parameter(tmp_path, split_file):
    from tools.torch_twin.import_run import import_run

    device_run = tmp_path / "device_run"
    shutil.copytree(FIXTURE, device_run)
    with np.load(device_run / "best.part0.npz") as part:
        arrays = {k: part[k] for k in part.files}
    dropped = sorted(arrays)[0]
    del arrays[dropped]
    np.savez(device_run / "best.part0.npz", **arrays)
    with pytest.raises(ValueError, match=f"missing .*{dropped}"):
        import_run(device_run, device_run, tmp_path / "run", str(DEMO), split_file)
    assert not (tmp_path / "run" / "best").exists()  # nothing half-made is left to be mistaken for a run
