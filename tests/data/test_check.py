"""`data check`: the numbers it reports on the bundled real DeepPCB pairs, and how it lists problems."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data import DEEPPCB_CLASSES, check_dataset, format_report

REAL = BUNDLED_DEEPPCB


@pytest.fixture
def deeppcb_copy(tmp_path: Path) -> Path:
    root = tmp_path / "deeppcb"
    shutil.copytree(REAL, root)
    return root


def raw_boxes() -> np.ndarray:
    """All rows 'x1 y1 x2 y2 type' of the bundled annotation files, read without the reader under test."""
    return np.concatenate([np.loadtxt(path, ndmin=2) for path in sorted(REAL.glob("*/*_not/*.txt"))])


def test_check_report_numbers_on_the_bundled_pairs():
    report = check_dataset(REAL)

    assert report.format == "deeppcb"
    assert (report.num_images, report.num_boxes, report.images_without_labels) == (8, 56, 0)
    assert (report.templates_present, report.templates_missing) == (8, 0)
    assert report.class_counts == {"open": 7, "short": 7, "mousebite": 11, "spur": 11, "copper": 10, "pin-hole": 10}
    assert (report.n_errors, report.n_warnings) == (0, 0)

    rows = raw_boxes()
    widths, heights = rows[:, 2] - rows[:, 0], rows[:, 3] - rows[:, 1]
    shorter = np.minimum(widths, heights)
    for stats, values in ((report.box_width, widths), (report.box_height, heights), (report.box_shorter_side, shorter)):
        expected = [values.min(), *np.percentile(values, [5, 50, 95]), values.max()]
        assert [stats.min, stats.p5, stats.median, stats.p95, stats.max] == pytest.approx(expected)
    assert (report.box_shorter_side.min, report.box_shorter_side.max) == (21, 53)


def test_format_report_shows_the_numbers():
    text = format_report(check_dataset(REAL))
    lines = text.splitlines()
    assert lines[0].endswith("deeppcb_sample (deeppcb)")
    assert "images     8 (0 without labels)" in lines
    assert "boxes      56" in lines
    assert "templates  8 present, 0 missing" in lines
    assert "boxes per class (6 classes)" in lines
    assert "  mousebite       11" in lines
    assert [line.split()[0] for line in lines if line.startswith("  ") and line.split()[-1].isdigit()] == \
        list(DEEPPCB_CLASSES)
    assert "  shorter side    21.0    22.0    30.5    48.2    53.0" in lines
    assert lines[-3:] == ["errors: none", "", "warnings: none"]


def test_check_counts_problems_and_defect_free_images(deeppcb_copy: Path):
    (deeppcb_copy / "group77000/77000_not/77000000.txt").write_text("")  # a defect-free board: valid
    (deeppcb_copy / "group92000/92000/92000000_temp.jpg").unlink()
    with (deeppcb_copy / "group13000/13000_not/13000000.txt").open("a") as annotation:
        annotation.write("5 5 50 50 9\n")
    n_lines = len((deeppcb_copy / "group13000/13000_not/13000000.txt").read_text().splitlines())

    report = check_dataset(deeppcb_copy)
    assert (report.num_images, report.images_without_labels) == (8, 1)
    assert report.num_boxes == 56 - 5  # the emptied file held 5 boxes; the bad line adds none
    assert (report.templates_present, report.templates_missing) == (7, 1)
    assert (report.n_errors, report.n_warnings) == (1, 1)

    lines = format_report(report).splitlines()
    errors_at, warnings_at = lines.index("errors (1)"), lines.index("warnings (1)")
    assert errors_at < warnings_at
    assert lines[errors_at + 1] == \
        f"  error: group13000/13000_not/13000000.txt:{n_lines}: type: unknown class id 9 (expected 1..6)"
    assert lines[warnings_at + 1] == ("  warning: test.txt:2: template: group92000/92000/92000000_temp.jpg: "
                                      "file not found; sample loaded without template")


def test_check_decodes_images_unless_told_not_to(deeppcb_copy: Path):
    image = deeppcb_copy / "group20085/20085/20085000_test.jpg"
    image.write_bytes(image.read_bytes()[:1500])

    assert check_dataset(deeppcb_copy).n_errors == 1
    quick = check_dataset(deeppcb_copy, verify_images=False)
    assert quick.n_errors == 0 and quick.num_images == 8


def test_check_of_an_empty_dataset(deeppcb_copy: Path):
    (deeppcb_copy / "trainval.txt").write_text("")
    (deeppcb_copy / "test.txt").write_text("\n")
    report = check_dataset(deeppcb_copy)
    assert (report.num_images, report.num_boxes, report.box_width) == (0, 0, None)
    assert [str(p) for p in report.problems] == ["warning: test.txt: list file has no entries",
                                                 "warning: trainval.txt: list file has no entries"]
    text = format_report(report)
    assert "  width         (no boxes)" in text.splitlines()
    assert report.class_counts == {name: 0 for name in DEEPPCB_CLASSES}
