"""`inspector train` / `inspector eval` on tiny synthetic runs: learning, exact resume, checkpoints, CLI."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import paddle
import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.data.synth import write_deeppcb
from inspector.training import trainer as trainer_module
from inspector.training.checkpoint import load_checkpoint
from inspector.training.config import TrainConfig
from inspector.training.trainer import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return write_deeppcb(tmp_path_factory.mktemp("synth") / "boards", n=12, seed=3, size=160)


def tiny_config(data: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(arch="mbv3-small", data=str(data), out=str(out), epochs=2, batch_size=4, input_size=128,
                  crop_size=None, input_mode="image+template", lr=3e-3, warmup_epochs=0.0, val_fraction=0.25,
                  workers=0, seed=1)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_lowers_the_loss_and_writes_a_complete_run(synth_data, tmp_path):
    out = train(tiny_config(synth_data, tmp_path / "run", epochs=14, batch_size=3, lr=8e-3, augment=False))
    history = json.loads((out / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 15))
    assert history[-1]["train_loss"] < 0.6 * history[0]["train_loss"], [r["train_loss"] for r in history]
    for key in ("map50", "map50_95", "f1_iou033", "train_img_per_s"):
        assert key in history[-1]
    csv_header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "map50_95" in csv_header and "train_loss_iou" in csv_header
    for name in ("loss.png", "map.png", "pr_curves.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    split = json.loads((out / "split.json").read_text())
    assert len(split["val"]) == 3 and len(split["train"]) == 9
    assert (out / "best" / "model.pdparams").is_file() and (out / "last" / "state.pdparams").is_file()


def test_resume_after_interrupt_matches_an_uninterrupted_run(synth_data, tmp_path, monkeypatch):
    straight = train(tiny_config(synth_data, tmp_path / "straight"))

    real_epoch = trainer_module._train_one_epoch

    def interrupted_in_epoch_two(model, optimizer, schedule, ema, loader, epoch, *args):
        if epoch == 1:
            raise KeyboardInterrupt  # as Ctrl-C would, in the middle of the second epoch
        return real_epoch(model, optimizer, schedule, ema, loader, epoch, *args)

    monkeypatch.setattr(trainer_module, "_train_one_epoch", interrupted_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(synth_data, tmp_path / "resumed"))
    assert load_checkpoint(tmp_path / "resumed" / "last").info["epoch"] == 1  # usable checkpoint left behind
    monkeypatch.setattr(trainer_module, "_train_one_epoch", real_epoch)

    # The interrupted run is moved before it continues (e.g. copied to another machine): it resumes where it is.
    shutil.move(tmp_path / "resumed", tmp_path / "moved")
    resumed = train(tiny_config(synth_data, tmp_path / "moved"), resume=True)
    assert not (tmp_path / "resumed").exists()
    assert json.loads((resumed / "train_config.json").read_text())["out"] == str(tmp_path / "moved")
    a = paddle.load(str(straight / "last" / "model.pdparams"))
    b = paddle.load(str(resumed / "last" / "model.pdparams"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert len(json.loads((resumed / "metrics.json").read_text())) == 2


def test_new_run_refuses_to_overwrite_an_existing_one(synth_data, tmp_path):
    train(tiny_config(synth_data, tmp_path / "run", epochs=1))
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_config(synth_data, tmp_path / "run", epochs=1))


def test_init_starts_from_a_trained_run_and_refuses_one_that_does_not_fit(synth_data, tmp_path):
    first = train(tiny_config(synth_data, tmp_path / "first", epochs=1))
    start = paddle.load(str(first / "best" / "model.pdparams"))
    # One step at a negligible learning rate: the weights stay where they started, so they show where that was.
    tuned = train(tiny_config(synth_data, tmp_path / "tuned", epochs=1, lr=1e-12, max_steps_per_epoch=1,
                              init=str(first)))
    fresh = train(tiny_config(synth_data, tmp_path / "fresh", epochs=1, lr=1e-12, max_steps_per_epoch=1, seed=2))
    tuned_weights = paddle.load(str(tuned / "last" / "model.pdparams"))
    fresh_weights = paddle.load(str(fresh / "last" / "model.pdparams"))
    convolutions = [name for name in start if name.endswith(".weight") and start[name].ndim == 4]
    assert convolutions
    for name in convolutions:
        np.testing.assert_allclose(tuned_weights[name].numpy(), start[name].numpy(), atol=1e-6, err_msg=name)
    assert any(not np.allclose(fresh_weights[name].numpy(), start[name].numpy(), atol=1e-3) for name in convolutions)
    assert load_checkpoint(tuned).model_config == load_checkpoint(first).model_config  # its anchors, not refitted

    with pytest.raises(ValueError, match=r"--init .*arch 'mbv3-small' \(init\) vs 'ppyolo-r18'"):
        train(tiny_config(synth_data, tmp_path / "other-arch", arch="ppyolo-r18", init=str(first)))
    with pytest.raises(ValueError, match=r"input_size 128 \(init\) vs 96"):
        train(tiny_config(synth_data, tmp_path / "other-size", input_size=96, init=str(first)))


def test_init_with_another_head_keeps_the_backbone_and_neck_and_starts_the_head_afresh(synth_data, tmp_path):
    first = train(tiny_config(synth_data, tmp_path / "yolo", epochs=1))  # the yolo head, as models/default
    start = paddle.load(str(first / "best" / "model.pdparams"))
    tuned = train(tiny_config(synth_data, tmp_path / "gfl", epochs=1, lr=1e-12, max_steps_per_epoch=1, head="gfl",
                              init=str(first)))
    weights = paddle.load(str(tuned / "last" / "model.pdparams"))
    assert load_checkpoint(tuned).model_config.head == "gfl"
    body = [name for name in weights if not name.startswith("head.") and name.endswith(".weight")]
    assert body and all(name in start for name in body)
    for name in body:
        np.testing.assert_allclose(weights[name].numpy(), start[name].numpy(), atol=1e-6, err_msg=name)
    head = [name for name in weights if name.startswith("head.predictions") and name.endswith(".weight")]
    assert head and all(start[name].shape != weights[name].shape for name in head)  # a fresh gfl head


def test_checkpoint_round_trip_reproduces_predictions(synth_data, tmp_path):
    out = train(tiny_config(synth_data, tmp_path / "run", epochs=1))
    checkpoint = load_checkpoint(out)  # a run directory resolves to best/
    assert checkpoint.path.name == "best"
    assert checkpoint.class_names == ["open", "short", "mousebite", "spur", "copper", "pin-hole"]
    assert checkpoint.model_config.input_mode == "image+template" and checkpoint.model_config.input_size == 128
    images = paddle.to_tensor(np.random.default_rng(0).random((1, 6, 128, 128), dtype=np.float32))
    first = [o.numpy() for o in checkpoint.build()(images)]
    second = [o.numpy() for o in load_checkpoint(out / "best").build()(images)]
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)


def test_cli_train_then_eval_writes_the_json_contract(synth_data, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--arch", "mbv3-small", "--data", str(synth_data), "--out", str(run),
                                 "--epochs", "1", "--batch", "4", "--input-size", "128", "--crop-size", "0",
                                 "--val-fraction", "0.25"])
    assert result.exit_code == 0, result.output
    report = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", str(synth_data), "--model", str(run), "--split", "val",
                                 "--json", str(report)])
    assert result.exit_code == 0, result.output
    summary = json.loads(report.read_text())
    for key in ("map50", "map50_95", "precision", "recall", "f1_iou033", "score_threshold", "per_class",
                "n_images", "model", "backend"):
        assert key in summary
    assert summary["n_images"] == 3  # the run's validation split of 12 boards
    assert set(summary["per_class"]) <= {"open", "short", "mousebite", "spur", "copper", "pin-hole"}


def test_a_run_is_validated_chosen_and_evaluated_with_its_recipes_nms(synth_data, tmp_path):
    """`train --nms hard`: per-class NMS decides the run's validation (so its best checkpoint), and `inspector eval`
    of the run judges it the same way, not with the product's default across classes."""
    from inspector.data import load_dataset
    from inspector.data.loader import BatchLoader
    from inspector.data.split import load_split
    from inspector.evaluation import EVAL_THRESHOLDS
    from inspector.training.validate import validate

    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--data", str(synth_data), "--out", str(run),
                                      "--epochs", "1", "--batch", "4", "--input-size", "128", "--crop-size", "0",
                                      "--val-fraction", "0.25", "--nms", "hard", "--nms-threshold", "0.5"])
    assert result.exit_code == 0, result.output
    checkpoint = load_checkpoint(run)
    assert (checkpoint.info["train_config"]["nms"], checkpoint.info["train_config"]["nms_threshold"]) == ("hard", 0.5)
    recorded = checkpoint.info["metrics"]
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(synth_data), "--model", str(run), "--split", "val",
                                      "--json", str(report)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(report.read_text())
    for key in ("map50", "map50_95", "official_ap"):
        assert evaluated[key] == pytest.approx(recorded[key]), key

    # The default NMS scores the same checkpoint differently: the recipe's is what decided the numbers above.
    _, val_set = load_split(load_dataset(str(synth_data)), run / "split.json")
    loader = BatchLoader(val_set, 4, 128, "image+template", train=False, workers=0)
    across_classes = validate(checkpoint.build(), loader, checkpoint.class_names, progress=False,
                              thresholds=EVAL_THRESHOLDS)
    assert EVAL_THRESHOLDS.nms == "agnostic"
    assert across_classes.map50_95 != pytest.approx(recorded["map50_95"])


def test_cli_rejects_sizes_that_are_not_multiples_of_32(synth_data, tmp_path):
    result = CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--data", str(synth_data), "--out",
                                      str(tmp_path / "x"), "--input-size", "300"])
    assert result.exit_code == 2
    assert "--input-size: 300 is not a multiple of 32" in result.output
