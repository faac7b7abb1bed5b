"""The scripted closed loop (benchmarks/review_loop.py) on synthetic boards with a tiny schedule: a held-out
board group is queued, the top boards reviewed by the ground truth, fine-tuned on base + reviewed, gated
and measured before/after. Proves the wiring; the real run (DeepPCB, long schedules) is the script's."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from inspector.data import load_dataset
from inspector.data.synth import write_deeppcb
from inspector.registry import Registry

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_review_loop_end_to_end_on_synthetic_boards(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import review_loop

    data = write_deeppcb(tmp_path / "boards", n=124, seed=5, size=160, test_fraction=0.0)  # groups 00000 and 00001
    out = tmp_path / "loop"
    report = review_loop.run_loop(data, "group00001", out, epochs=2, finetune_epochs=1, top=10, input_size=64,
                                  crop_size=None, batch=4, max_steps=4, log=lambda line: None)

    assert report["queue"]["boards"] == 24
    reviewed = report["reviewed"]["boards"]
    assert 1 <= reviewed <= 10
    # The reviewed boards are exported with their true labels, templates included.
    exported = load_dataset(out / "reviewed")
    assert len(exported) == reviewed and exported.has_templates
    truth = {s.image_path.stem: s for s in load_dataset(data).samples}
    for sample in exported.samples:
        original = truth[sample.image_path.stem.split("_", 1)[1]]
        assert sorted(sample.classes.tolist()) == sorted(original.classes.tolist())
    # The base model never saw the group; the fine-tuning kept the base split (golden boards unseen).
    base_split = json.loads((out / "base_run" / "split.json").read_text())
    assert not any(key.startswith("group00001") for key in base_split["train"] + base_split["val"])
    assert json.loads((out / "finetune_run" / "split.json").read_text()) == base_split
    config = json.loads((out / "finetune_run" / "train_config.json").read_text())
    assert [source["path"] for source in config["data"]] == [str(out / "base_data"), str(out / "reviewed")]
    # Both models went through the registry; the gate decided and it is on record.
    index = Registry(out / "registry").read()
    assert [e["action"] for e in index["events"]][:3] == ["golden", "register", "promote"]
    assert index["events"][-1]["action"] in ("promote", "refused") and index["events"][-1]["model"] == "finetuned-1"
    assert report["current_model"] == ("finetuned-1" if report["promotion"]["promoted"] else "base-1")
    # Recall before and after on the group's boards nobody reviewed.
    assert report["remaining_boards"] == 24 - reviewed
    for side in ("before", "after"):
        assert 0.0 <= report[side]["recall"] <= 1.0 and report[side]["n_images"] == 24 - reviewed
    assert report["wall_s"]["total"] > 0
    assert json.loads((out / "report.json").read_text())["remaining_boards"] == 24 - reviewed
