"""The train/val split: deterministic, order-independent, fixed once written, portable."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

from inspector.data.split import split_dataset
from inspector.data.structures import DataError, Dataset, Sample

RELATIVE_PATHS = [f"group{i % 4}/{i % 4}/{1000 + i}_test.jpg" for i in range(50)]


def make_dataset(root: Path, relative_paths: list[str] = RELATIVE_PATHS) -> Dataset:
    # The split never opens images, so the files need not exist.
    samples = [Sample(root / p, [[0, 0, 10, 10]], [0], source=str(root / p)) for p in relative_paths]
    return Dataset(samples, ["open"], root, "deeppcb")


def keys(dataset: Dataset) -> list[str]:
    return [s.key for s in dataset.samples]


def test_split_sizes_and_partition(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    train, val = split_dataset(dataset, val_fraction=0.2, seed=0)
    assert (len(train), len(val)) == (40, 10)
    assert set(keys(train)).isdisjoint(keys(val))
    assert set(keys(train)) | set(keys(val)) == set(keys(dataset))
    assert train.class_names == val.class_names == ["open"] and train.root == dataset.root


def test_split_ignores_sample_order_but_follows_the_seed(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path)
    shuffled_paths = list(RELATIVE_PATHS)
    random.Random(7).shuffle(shuffled_paths)
    shuffled = make_dataset(tmp_path, shuffled_paths)

    _, val = split_dataset(dataset, seed=3)
    _, val_shuffled = split_dataset(shuffled, seed=3)
    _, val_other_seed = split_dataset(dataset, seed=4)

    assert set(keys(val)) == set(keys(val_shuffled))
    assert set(keys(val)) != set(keys(val_other_seed))


def test_small_dataset_keeps_both_sides(tmp_path: Path) -> None:
    train, val = split_dataset(make_dataset(tmp_path, RELATIVE_PATHS[:3]), val_fraction=0.1)
    assert (len(train), len(val)) == (2, 1)
    train, val = split_dataset(make_dataset(tmp_path, RELATIVE_PATHS[:3]), val_fraction=0.0)
    assert (len(train), len(val)) == (3, 0)


def test_split_file_is_written_with_relative_keys_and_read_back(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "data")
    split_file = tmp_path / "runs" / "split.json"
    train, val = split_dataset(dataset, val_fraction=0.2, seed=5, split_file=split_file)

    content = json.loads(split_file.read_text())
    assert content["seed"] == 5 and content["val_fraction"] == 0.2
    assert set(content["val"]) == {Path(k).relative_to(tmp_path / "data").as_posix() for k in keys(val)}
    assert len(content["train"]) == 40
    assert [p.name for p in split_file.parent.iterdir()] == ["split.json"]  # no temp file left behind

    # Read back as-is, even when asked for another seed (with a warning saying so).
    with pytest.warns(UserWarning, match="using the stored split"):
        train_again, val_again = split_dataset(dataset, val_fraction=0.3, seed=99, split_file=split_file)
    assert keys(train_again) == keys(train) and keys(val_again) == keys(val)


def test_split_file_survives_moving_the_data(tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    _, val = split_dataset(make_dataset(tmp_path / "old"), split_file=split_file)
    written = split_file.read_text()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same data, same arguments: nothing to warn about
        train_moved, val_moved = split_dataset(make_dataset(tmp_path / "new"), split_file=split_file)

    assert split_file.read_text() == written
    assert [k.replace("/new/", "/old/") for k in keys(val_moved)] == keys(val)
    assert all("/new/" in k for k in keys(train_moved) + keys(val_moved))


def test_split_file_with_keys_missing_from_the_dataset(tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    split_dataset(make_dataset(tmp_path), split_file=split_file)
    smaller = make_dataset(tmp_path, RELATIVE_PATHS[1:])

    with pytest.raises(DataError) as error:
        split_dataset(smaller, split_file=split_file)
    assert str(split_file) in str(error.value)
    assert RELATIVE_PATHS[0] in str(error.value)


def test_new_samples_go_to_train_with_a_warning(tmp_path: Path) -> None:
    split_file = tmp_path / "split.json"
    split_dataset(make_dataset(tmp_path), split_file=split_file)
    grown = make_dataset(tmp_path, RELATIVE_PATHS + ["group9/9/new_test.jpg"])

    with pytest.warns(UserWarning, match="1 samples not in this split file go to train"):
        train, val = split_dataset(grown, split_file=split_file)
    assert (tmp_path / "group9/9/new_test.jpg").as_posix() in keys(train)
    assert (len(train), len(val)) == (41, 10)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("not json", "not a readable split file"),
        ('["a.jpg"]', "expected a JSON object"),
        ('{"train": "a.jpg", "val": []}', "field 'train'"),
        ('{"train": ["group0/0/1000_test.jpg"], "val": ["group0/0/1000_test.jpg"]}', "in both train and val"),
    ],
)
def test_malformed_split_file_names_the_file(tmp_path: Path, content: str, expected: str) -> None:
    split_file = tmp_path / "split.json"
    split_file.write_text(content)
    with pytest.raises(DataError, match=expected) as error:
        split_dataset(make_dataset(tmp_path), split_file=split_file)
    assert str(split_file) in str(error.value)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        split_dataset(make_dataset(tmp_path), val_fraction=1.0)
    with pytest.raises(DataError, match="no samples"):
        split_dataset(make_dataset(tmp_path, []))
