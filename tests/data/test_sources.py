"""Several training sources: one class list (refused with the names), a fixed split per source, weights,
and `inspector train --data A --data B --weight ...` end to end on a tiny schedule."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.data import DEEPPCB_CLASSES, DataError, load_dataset
from inspector.data.split import split_dataset
from inspector.data.synth import write_deeppcb
from inspector.review_queue import ReviewQueue


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    base = tmp_path_factory.mktemp("sources")
    first = write_deeppcb(base / "base", n=10, seed=1, size=160)
    second = write_deeppcb(base / "second", n=6, seed=2, size=160)
    # A reviewed folder (VOC) holding two classes only, as the verification queue exports it.
    sample = load_dataset(second).samples[0]
    queue = ReviewQueue(base / "queue.db")
    item = queue.offer(sample.image_path, [{"box": [10, 10, 30, 30], "score": 0.9, "class_name": "spur"}], 0.5,
                       list(DEEPPCB_CLASSES), template_path=sample.template_path)
    queue.decide(item, "ann", [{"index": 0, "verdict": "confirm"}], added=[{"box": [40, 40, 60, 60],
                                                                           "class_name": "short"}])
    reviewed = base / "reviewed"
    queue.export_voc(reviewed)
    return first, second, reviewed


def test_one_class_list_and_a_subset_takes_the_first_sources_ids(sources):
    first, _, reviewed = sources
    data = load_dataset([str(first), str(reviewed)])
    assert data.class_names == list(DEEPPCB_CLASSES)
    (voc,) = [s for s in data.samples if "review" in s.image_path.name]
    assert sorted(voc.classes.tolist()) == sorted([DEEPPCB_CLASSES.index("spur"), DEEPPCB_CLASSES.index("short")])


def test_disagreeing_class_lists_are_refused_with_the_names(sources, tmp_path):
    first, _, reviewed = sources
    foreign = tmp_path / "foreign"
    for folder in ("Annotations", "JPEGImages", "templates"):
        for file in (reviewed / folder).glob("*"):
            (foreign / folder).mkdir(parents=True, exist_ok=True)
            (foreign / folder / file.name).write_bytes(file.read_bytes())
    xml = next((foreign / "Annotations").glob("*.xml"))
    tree = ET.parse(xml)
    tree.getroot().find("object/name").text = "scratch"
    tree.write(xml)
    with pytest.raises(DataError, match=r"foreign: its classes .*scratch.* disagree with those of .*not in the first: "
                                        r"\['scratch'\]"):
        load_dataset([str(first), str(foreign)])
    with pytest.raises(DataError, match=r"data\[1\].*weight"):
        load_dataset([str(first), {"path": str(reviewed), "weight": 0}])


def test_fixed_split_per_source_and_weights(sources, tmp_path):
    first, second, _ = sources
    spec = [{"path": str(first), "weight": 1}, {"path": str(second), "weight": 2.5}]
    train, val = split_dataset(load_dataset(spec), 0.2, 0, tmp_path / "split.json")
    assert (tmp_path / "split.json").is_file() and (tmp_path / "split-1.json").is_file()
    base_alone = split_dataset(load_dataset(str(first)), 0.2, 0, tmp_path / "split.json")  # same file, same split
    assert {s.key for s in base_alone[1].samples} <= {s.key for s in val.samples}
    second_split = json.loads((tmp_path / "split-1.json").read_text())
    n_second_train = len(second_split["train"])
    from_second = [s for s in train.samples if s.key.startswith(str(second))]
    assert len(from_second) == round(2.5 * n_second_train)  # two whole copies and half the boards once more
    assert len({s.key for s in val.samples}) == len(val.samples)  # validation boards are never repeated
    # Read back, not redrawn: a different seed keeps the stored split.
    with pytest.warns(UserWarning, match="using the stored split"):
        _, val_again = split_dataset(load_dataset(spec), 0.2, 7, tmp_path / "split.json")
    assert [s.key for s in val_again.samples] == [s.key for s in val.samples]


@pytest.mark.slow
def test_train_on_two_sources_from_the_cli(sources, tmp_path):
    first, _, reviewed = sources
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--data", str(first), "--data", str(reviewed),
                                      "--weight", "1", "--weight", "3", "--out", str(out), "--epochs", "1",
                                      "--batch", "2", "--input-size", "64", "--crop-size", "0", "--max-steps", "2",
                                      "--val-fraction", "0.25"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["data"] == [{"path": str(first), "weight": 1.0}, {"path": str(reviewed), "weight": 3.0}]
    assert (out / "split.json").is_file() and (out / "split-1.json").is_file() and (out / "best").is_dir()
    bad = CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--data", str(first), "--data", str(reviewed),
                                   "--weight", "1", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--weight given 1 times for 2 --data sources" in bad.output


@pytest.mark.slow
def test_distill_and_pipeline_take_several_sources(sources, tmp_path, monkeypatch):
    """The CLI hands the sources and weights on (the runs themselves are the trainer's, tested above)."""
    import inspector.compression.distill as distill_module
    import inspector.pipeline as pipeline_module

    first, _, reviewed = sources
    teacher = tmp_path / "teacher"
    CliRunner().invoke(app, ["train", "--arch", "mbv3-small", "--data", str(first), "--out", str(teacher), "--epochs",
                             "1", "--batch", "2", "--input-size", "64", "--crop-size", "0", "--max-steps", "1"],
                       catch_exceptions=False)
    seen = {}
    monkeypatch.setattr(distill_module, "distill", lambda cfg, config: seen.setdefault("distill", cfg.data) and "run")
    result = CliRunner().invoke(app, ["distill", "--teacher", str(teacher), "--student-arch", "mbv3-small",
                                      "--data", str(first), "--data", str(reviewed), "--weight", "1", "--weight", "2",
                                      "--out", str(tmp_path / "student")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["distill"] == [{"path": str(first), "weight": 1.0}, {"path": str(reviewed), "weight": 2.0}]

    monkeypatch.setattr(pipeline_module, "run_pipeline",
                        lambda config, *a, **k: (seen.setdefault("pipeline", config.data), tmp_path / "pipe")[1])
    result = CliRunner().invoke(app, ["pipeline", "--data", str(first), "--data", str(reviewed), "--out",
                                      str(tmp_path / "pipe")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen["pipeline"] == [{"path": str(first), "weight": 1.0}, {"path": str(reviewed), "weight": 1.0}]
