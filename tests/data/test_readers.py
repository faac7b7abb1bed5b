"""The DeepPCB, Pascal VOC and COCO readers on real DeepPCB pairs and on deliberately broken files.

The VOC and COCO files are written by these tests (from the same real images), so the readers are
checked against annotations whose content is known exactly.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.data.bundled import BUNDLED_DEEPPCB
from inspector.data import DEEPPCB_CLASSES, DataError, Dataset, detect_format, load_dataset

REAL = BUNDLED_DEEPPCB
SAMPLE_A = "group20085/20085/20085000"  # stems of two real pairs used throughout
SAMPLE_B = "group77000/77000/77000000"


@pytest.fixture
def deeppcb_copy(tmp_path: Path) -> Path:
    """A writable copy of the bundled DeepPCB pairs."""
    root = tmp_path / "deeppcb"
    shutil.copytree(REAL, root)
    return root


def messages(dataset: Dataset) -> list[str]:
    return [str(problem) for problem in dataset.problems]


def by_name(dataset: Dataset) -> dict[str, object]:
    return {sample.image_path.name: sample for sample in dataset.samples}


# --- DeepPCB --------------------------------------------------------------------------------------


def test_deeppcb_reads_both_list_files_of_the_real_pairs():
    dataset = load_dataset(REAL)

    assert dataset.format == "deeppcb"
    assert dataset.class_names == list(DEEPPCB_CLASSES)
    assert len(dataset) == 8 and dataset.num_boxes == 56
    assert dataset.problems == []
    assert dataset.has_templates and all(s.template_path.name.endswith("_temp.jpg") for s in dataset.samples)
    # This real file has no trailing newline: its last line must still be read.
    sample = by_name(dataset)["20085003_test.jpg"]
    assert sample.source == "group20085/20085_not/20085003.txt"
    assert sample.image_path == REAL.absolute() / "group20085/20085/20085003_test.jpg"
    np.testing.assert_array_equal(sample.boxes[0], [475, 408, 504, 441])
    np.testing.assert_array_equal(sample.boxes[-1], [108, 345, 135, 378])
    assert sample.classes.tolist() == [0, 3, 1, 2, 5, 0, 3, 4]  # file types 1 4 2 3 6 1 4 5


def test_deeppcb_single_list_file_reads_only_that_list():
    assert len(load_dataset(REAL / "trainval.txt")) == 6
    test_split = load_dataset(REAL / "test.txt")
    assert sorted(s.image_path.name for s in test_split.samples) == ["77000000_test.jpg", "92000000_test.jpg"]


def test_deeppcb_without_list_files_discovers_the_pairs(deeppcb_copy: Path):
    (deeppcb_copy / "trainval.txt").unlink()
    (deeppcb_copy / "test.txt").unlink()
    discovered = load_dataset(deeppcb_copy)
    listed = load_dataset(REAL)
    assert discovered.format == "deeppcb"
    assert {Path(s.key).relative_to(deeppcb_copy.absolute()) for s in discovered.samples} == \
        {Path(s.key).relative_to(REAL.absolute()) for s in listed.samples}
    assert discovered.num_boxes == 56 and discovered.has_templates

    (deeppcb_copy / f"{SAMPLE_B.replace('77000/77000', '77000/77000_not')}.txt").unlink()
    rediscovered = load_dataset(deeppcb_copy)
    assert len(rediscovered) == 7
    assert messages(rediscovered) == [
        f"error: {SAMPLE_B}_test.jpg: no annotation file group77000/77000_not/77000000.txt; sample skipped"]


def test_deeppcb_commas_and_missing_trailing_newline_parse(deeppcb_copy: Path):
    annotation = deeppcb_copy / "group20085/20085_not/20085000.txt"
    annotation.write_text("10,20,40,60,1\n 100, 120 ,150,  160 , 6,\n\n\n300 300 340 350 3")
    sample = by_name(load_dataset(deeppcb_copy))["20085000_test.jpg"]
    np.testing.assert_array_equal(sample.boxes, [[10, 20, 40, 60], [100, 120, 150, 160], [300, 300, 340, 350]])
    assert sample.classes.tolist() == [0, 5, 2]


def test_deeppcb_bad_annotation_lines_are_reported_and_the_rest_loads(deeppcb_copy: Path):
    name = "group20085/20085_not/20085000.txt"
    (deeppcb_copy / name).write_text(
        "10 10 40 40 1\n"  # 1 valid
        "40 10 12 40 2\n"  # 2 x2 <= x1
        "10 10 40 40 7\n"  # 3 unknown type
        "10 abc 40 40 1\n"  # 4 not a number
        "10 10 40 1\n"  # 5 four fields
        "10 10 40 40 1\n"  # 6 same box as line 1
        "\n"  # 7 blank: ignored
        "600 600 700 630 3\n"  # 8 outside the 640x640 image
        "10 50 40 30 4\n"  # 9 y2 <= y1
        "1 1 5 5 2.5\n"  # 10 fractional type
        "nan 1 5 5 1\n"  # 11 not finite
        "100,100,150,160,6"  # 12 valid, commas, no newline
    )
    dataset = load_dataset(deeppcb_copy)

    assert messages(dataset) == [
        f"error: {name}:2: x2: 12 <= x1 40 (expected x2 > x1)",
        f"error: {name}:3: type: unknown class id 7 (expected 1..6)",
        f"error: {name}:4: y1: 'abc' is not a number",
        f"error: {name}:5: expected 5 fields 'x1 y1 x2 y2 type', found 4",
        f"warning: {name}:6: duplicate box (same as line 1); loaded once",
        f"error: {name}:8: x2: 700 is outside the 640x640 image (expected 0..640)",
        f"error: {name}:9: y2: 30 <= y1 50 (expected y2 > y1)",
        f"error: {name}:10: type: '2.5' is not an integer class id (expected 1..6)",
        f"error: {name}:11: x1: 'nan' is not a finite number",
    ]
    sample = by_name(dataset)["20085000_test.jpg"]
    np.testing.assert_array_equal(sample.boxes, [[10, 10, 40, 40], [100, 100, 150, 160]])
    assert sample.classes.tolist() == [0, 5]
    assert len(dataset) == 8 and dataset.num_boxes == 56 - 6 + 2  # the other seven samples are untouched


def test_deeppcb_list_problems_name_the_list_line(deeppcb_copy: Path):
    (deeppcb_copy / "trainval.txt").write_text(
        f"{SAMPLE_A}.jpg group20085/20085_not/20085000.txt\n"
        f"{SAMPLE_A}.jpg group20085/20085_not/20085000.txt\n"
        "group1/1/1.jpg group1/1_not/1.txt\n"
        "group1/1/1.jpg group1/1_not/1.txt extra\n"
        "group1/1/1.png group1/1_not/1.txt\n"
    )
    (deeppcb_copy / "test.txt").write_text(
        f"{SAMPLE_A}.jpg group20085/20085_not/20085000.txt\n"
        f"{SAMPLE_B}.jpg group77000/77000_not/77000000.txt\n"
    )
    (deeppcb_copy / f"{SAMPLE_A}_temp.jpg").unlink()
    (deeppcb_copy / f"{SAMPLE_B}_test.jpg").unlink()
    dataset = load_dataset(deeppcb_copy)

    assert messages(dataset) == [
        "warning: test.txt:1: duplicate entry (first at trainval.txt:1); loaded once",
        f"error: test.txt:2: image: {SAMPLE_B}_test.jpg: file not found; sample skipped",
        f"warning: trainval.txt:1: template: {SAMPLE_A}_temp.jpg: file not found; sample loaded without template",
        "warning: trainval.txt:2: duplicate entry (first at trainval.txt:1); loaded once",
        "error: trainval.txt:3: annotation: group1/1_not/1.txt: file not found; sample skipped",
        "error: trainval.txt:4: expected 2 fields '<group>/<id>/<stem>.jpg <group>/<id>_not/<stem>.txt', found 3",
        "error: trainval.txt:5: image: 'group1/1/1.png' does not end in .jpg (expected <group>/<id>/<stem>.jpg)",
    ]
    assert len(dataset) == 1
    assert dataset[0].template_path is None and len(dataset[0]) == 6


def test_deeppcb_same_image_with_two_annotation_files_is_loaded_once(deeppcb_copy: Path):
    other = deeppcb_copy / "group20085/20085_not/other.txt"
    other.write_text("1 1 9 9 1\n")
    (deeppcb_copy / "test.txt").write_text(f"{SAMPLE_A}.jpg group20085/20085_not/other.txt\n")
    dataset = load_dataset(deeppcb_copy)
    assert messages(dataset) == [
        f"error: group20085/20085_not/other.txt: image: {SAMPLE_A}_test.jpg is already loaded from "
        "group20085/20085_not/20085000.txt; this entry skipped"]
    assert len(dataset) == 6 and len(by_name(dataset)["20085000_test.jpg"]) == 6


def test_deeppcb_truncated_image_is_found_only_when_verifying(deeppcb_copy: Path):
    image = deeppcb_copy / f"{SAMPLE_A}_test.jpg"
    image.write_bytes(image.read_bytes()[:1500])  # header intact, pixel data cut: an interrupted copy

    assert len(load_dataset(deeppcb_copy)) == 8  # header-only check: the size is still readable
    verified = load_dataset(deeppcb_copy, verify_images=True)
    assert len(verified) == 7
    [problem] = verified.problems
    assert str(problem).startswith(
        f"error: trainval.txt:1: image: {SAMPLE_A}_test.jpg: corrupt image data (image file is truncated")
    assert str(problem).endswith("; sample skipped")


def test_deeppcb_unreadable_image_and_bad_template(deeppcb_copy: Path):
    (deeppcb_copy / f"{SAMPLE_A}_test.jpg").write_bytes(b"this is not a jpeg")
    cv2.imwrite(str(deeppcb_copy / f"{SAMPLE_B}_temp.jpg"), np.zeros((320, 320, 3), np.uint8))
    dataset = load_dataset(deeppcb_copy)
    assert messages(dataset) == [
        f"error: test.txt:1: template: {SAMPLE_B}_temp.jpg is 320x320 but the image is 640x640; "
        "sample loaded without template",
        f"error: trainval.txt:1: image: {SAMPLE_A}_test.jpg: not a readable image; sample skipped",
    ]
    assert len(dataset) == 7 and by_name(dataset)["77000000_test.jpg"].template_path is None


def test_deeppcb_refuses_other_class_names():
    assert load_dataset(REAL, class_names=list(DEEPPCB_CLASSES)).class_names == list(DEEPPCB_CLASSES)
    with pytest.raises(DataError, match="DeepPCB classes are fixed"):
        load_dataset(REAL, class_names=["defect"])


# --- Pascal VOC -----------------------------------------------------------------------------------


def voc_xml(filename: str, objects: list[tuple[str, tuple]], size=(640, 640), template: str | None = None) -> str:
    parts = [f"<annotation><folder>JPEGImages</folder><filename>{filename}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    if template:
        parts.append(f"<template>{template}</template>")
    for name, (x1, y1, x2, y2) in objects:
        parts.append(f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
                     f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    return "\n".join(parts + ["</annotation>\n"])


def write_voc(dataset: Dataset, out: Path, beside_images: bool = False) -> Path:
    """Write ``dataset`` as VOC: Annotations/ + JPEGImages/, or the XMLs beside the images."""
    xml_dir, image_dir = (out, out) if beside_images else (out / "Annotations", out / "JPEGImages")
    xml_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    for sample in dataset.samples:
        shutil.copy(sample.image_path, image_dir)
        shutil.copy(sample.template_path, image_dir)
        objects = [(dataset.class_names[c], tuple(int(v) for v in box)) for box, c in zip(sample.boxes, sample.classes)]
        xml = voc_xml(sample.image_path.name, objects, template=sample.template_path.name)
        (xml_dir / f"{sample.image_path.stem}.xml").write_text(xml)
    return out


def assert_same_samples(loaded: Dataset, reference: Dataset) -> None:
    expected = by_name(reference)
    assert sorted(by_name(loaded)) == sorted(expected)
    for name, sample in by_name(loaded).items():
        np.testing.assert_array_equal(sample.boxes, expected[name].boxes)
        np.testing.assert_array_equal(sample.classes, expected[name].classes)
        assert sample.template_path.name == expected[name].template_path.name
        assert sample.template_path.is_file()


@pytest.mark.parametrize("beside_images", [False, True])
def test_voc_round_trip_of_the_real_pairs(tmp_path: Path, beside_images: bool):
    reference = load_dataset(REAL)
    voc_dir = write_voc(reference, tmp_path / "voc", beside_images)

    loaded = load_dataset(voc_dir)
    assert loaded.format == "voc" and loaded.problems == []
    assert loaded.class_names == list(DEEPPCB_CLASSES)  # every name is a DeepPCB class: DeepPCB order
    assert_same_samples(loaded, reference)
    assert all(s.width == 640 and s.height == 640 for s in loaded.samples)
    assert loaded[0].source.endswith(".xml")


def test_voc_class_names_sorted_or_given(tmp_path: Path):
    out = tmp_path / "voc"
    write_voc(Dataset([], [], out, "voc"), out)  # just the folders
    shutil.copy(REAL / f"{SAMPLE_A}_test.jpg", out / "JPEGImages" / "a.jpg")
    objects = [("scratch", (1, 1, 9, 9)), ("dent", (20, 20, 30, 30))]
    (out / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", objects))

    automatic = load_dataset(out)
    assert automatic.class_names == ["dent", "scratch"] and automatic[0].classes.tolist() == [1, 0]

    given = load_dataset(out, class_names=["scratch", "open"])
    assert given.class_names == ["scratch", "open"] and given[0].classes.tolist() == [0]
    assert messages(given) == ["error: Annotations/a.xml: object[2].name: unknown class 'dent' "
                               "(expected one of: scratch, open)"]


def test_voc_bad_files_are_reported_by_element(tmp_path: Path):
    out = tmp_path / "voc"
    (out / "Annotations").mkdir(parents=True)
    (out / "JPEGImages").mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(REAL / f"{SAMPLE_A}_test.jpg", out / "JPEGImages" / name)
    (out / "Annotations" / "a.xml").write_text(voc_xml("a.jpg", [
        ("short", (10, 10, 40, 40)),
        ("open", (40, 10, 12, 40)),
        ("", (1, 1, 5, 5)),
        ("spur", (1, "abc", 5, 5)),
        ("spur", (1, 1, 700, 5)),
        ("short", (10, 10, 40, 40)),
    ]))
    # An object without <bndbox>, spliced in as the 7th object.
    text = (out / "Annotations" / "a.xml").read_text()
    no_bndbox = "<object><name>copper</name></object></annotation>"
    (out / "Annotations" / "a.xml").write_text(text.replace("</annotation>", no_bndbox))
    (out / "Annotations" / "b.xml").write_text(voc_xml("b.jpg", [("open", (1, 1, 5, 5))], size=(320, 320)))
    (out / "Annotations" / "c.xml").write_text("<annotation><filename>c.jpg</filename>\n<object>\n</annotation>")
    (out / "Annotations" / "d.xml").write_text(voc_xml("missing.jpg", [("open", (1, 1, 5, 5))]))
    (out / "Annotations" / "e.xml").write_text(voc_xml("c.jpg", [], template="a_temp.jpg"))

    dataset = load_dataset(out)
    found = messages(dataset)
    assert found[:7] == [
        "error: Annotations/a.xml: object[3].name: missing class name",
        "error: Annotations/a.xml: object[4].ymin: 'abc' is not a number",
        "error: Annotations/a.xml: object[7].bndbox: missing <bndbox>",
        "error: Annotations/a.xml: object[2].xmax: 12 <= xmin 40 (expected xmax > xmin)",
        "error: Annotations/a.xml: object[5].xmax: 700 is outside the 640x640 image (expected 0..640)",
        "warning: Annotations/a.xml: object[6]: duplicate box (same as object[1]); loaded once",
        "error: Annotations/b.xml: size: annotation says 320x320 but JPEGImages/b.jpg is 640x640; sample skipped",
    ]
    assert found[7].startswith("error: Annotations/c.xml:3: not well-formed XML (mismatched tag")
    assert found[8:] == [
        "error: Annotations/d.xml: filename: JPEGImages/missing.jpg: file not found; sample skipped",
        "warning: Annotations/e.xml: template: JPEGImages/a_temp.jpg: file not found; sample loaded without template",
    ]
    assert sorted(s.image_path.name for s in dataset.samples) == ["a.jpg", "c.jpg"]
    a = by_name(dataset)["a.jpg"]
    np.testing.assert_array_equal(a.boxes, [[10, 10, 40, 40]])
    assert dataset.class_names[a.classes[0]] == "short"


# --- COCO -----------------------------------------------------------------------------------------


def coco_from(dataset: Dataset) -> dict:
    """COCO dict of ``dataset`` with category ids 1..6 and image ids 1..N (as other tools write them)."""
    images, annotations = [], []
    for image_id, sample in enumerate(dataset.samples, start=1):
        images.append({"id": image_id, "file_name": sample.image_path.name, "width": 640, "height": 640,
                       "template_file_name": sample.template_path.name})
        for (x1, y1, x2, y2), c in zip(sample.boxes.tolist(), sample.classes.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": c + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    # Listed out of order on purpose: ids, not list positions, decide the class order.
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(dataset.class_names)][::-1]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(dataset: Dataset, out: Path) -> Path:
    (out / "annotations").mkdir(parents=True)
    (out / "images").mkdir()
    for sample in dataset.samples:
        shutil.copy(sample.image_path, out / "images")
        shutil.copy(sample.template_path, out / "images")
    json_path = out / "annotations" / "instances.json"
    json_path.write_text(json.dumps(coco_from(dataset)))
    return json_path


def test_coco_round_trip_of_the_real_pairs(tmp_path: Path):
    reference = load_dataset(REAL)
    json_path = write_coco(reference, tmp_path / "coco")

    for path in (tmp_path / "coco", json_path):
        loaded = load_dataset(path)
        assert loaded.format == "coco" and loaded.problems == []
        assert loaded.class_names == list(DEEPPCB_CLASSES)
        assert loaded.root == (tmp_path / "coco").absolute()  # annotations/ + images/ layout: its parent
        assert_same_samples(loaded, reference)


def test_coco_json_beside_the_images(tmp_path: Path):
    out = tmp_path / "flat"
    out.mkdir()
    shutil.copy(REAL / f"{SAMPLE_A}_test.jpg", out / "a.jpg")
    content = {"images": [{"id": 7, "file_name": "a.jpg"}], "categories": [{"id": 3, "name": "dent"}],
               "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 20, 5.5, 6]}]}
    (out / "labels.json").write_text(json.dumps(content))
    dataset = load_dataset(out)
    assert dataset.class_names == ["dent"] and dataset[0].template_path is None
    np.testing.assert_allclose(dataset[0].boxes, [[10, 20, 15.5, 26]])


def test_coco_bad_entries_are_reported_by_json_path(tmp_path: Path):
    json_path = write_coco(load_dataset(REAL / "test.txt"), tmp_path / "coco")
    content = json.loads(json_path.read_text())
    good = content["annotations"][0]
    content["images"] += [dict(content["images"][0], file_name="other.jpg"),  # duplicate id 1
                          {"id": 3, "file_name": "nope.jpg"}]
    content["annotations"] = [
        good,
        dict(good, bbox=[1, 1, 5, 5]),  # duplicate annotation id
        dict(good, id=101, image_id=99),
        dict(good, id=102, category_id=9),
        dict(good, id=103, bbox=[10, 10, 0, 5]),
        dict(good, id=104, bbox=[10, "abc", 5, 5]),
        dict(good, id=105, bbox=[600, 10, 100, 5]),
        dict(good, id=106, bbox=[1, 2, 3]),
        dict(good, id=107),  # the same box as annotations[0]
        dict(good, id=108, bbox=[300, 300, 20, 30], category_id=6),
    ]
    json_path.write_text(json.dumps(content))
    dataset = load_dataset(tmp_path / "coco")

    where = "annotations/instances.json"
    assert messages(dataset) == [
        f"error: {where}: images[2].id: duplicate image id 1 (first at images[0]); entry skipped",
        f"error: {where}: annotations[1].id: duplicate annotation id 1 (first at annotations[0]); entry skipped",
        f"error: {where}: annotations[2].image_id: unknown image id 99",
        f"error: {where}: annotations[3].category_id: unknown category id 9 (expected one of 1, 2, 3, 4, 5, 6)",
        f"error: {where}: annotations[4].bbox.w: 0 is not positive (expected w > 0)",
        f"error: {where}: annotations[5].bbox.y: 'abc' is not a number",
        f"error: {where}: annotations[7].bbox: expected [x, y, w, h], found [1, 2, 3]",
        f"error: {where}: annotations[6].bbox.x+w: 700 is outside the 640x640 image (expected 0..640)",
        f"warning: {where}: annotations[8]: duplicate box (same as annotations[0]); loaded once",
        f"error: {where}: images[3].file_name: 'nope.jpg' not found (looked in annotations/, "
        "annotations/images/, images/); sample skipped",
    ]
    assert len(dataset) == 2
    first = dataset[0]
    np.testing.assert_array_equal(first.boxes, [good["bbox"][:2] + [good["bbox"][0] + good["bbox"][2],
                                                                   good["bbox"][1] + good["bbox"][3]],
                                                [300, 300, 320, 330]])
    assert first.classes.tolist() == [good["category_id"] - 1, 5]


def test_coco_categories_matched_to_given_class_names(tmp_path: Path):
    json_path = write_coco(load_dataset(REAL / "test.txt"), tmp_path / "coco")
    dataset = load_dataset(json_path, class_names=["short", "open"])
    assert dataset.class_names == ["short", "open"]
    counts = dataset.class_counts()
    assert counts == {"short": 2, "open": 2}  # the two real samples hold 2 opens and 2 shorts
    assert "error: annotations/instances.json: categories[3].name: 'mousebite' is not one of the class names " \
           "(short, open); its 4 annotations are skipped" in messages(dataset)


def test_coco_broken_json_raises_with_the_line(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"bad\.json:2: not valid JSON"):
        load_dataset(bad)
    bad.write_text('{"images": []}')
    with pytest.raises(DataError, match=r"bad\.json: annotations: missing or not a list"):
        load_dataset(bad)


# --- format detection -----------------------------------------------------------------------------


def test_detect_format_of_each_layout(tmp_path: Path):
    reference = load_dataset(REAL)
    json_path = write_coco(reference, tmp_path / "coco")
    write_voc(reference, tmp_path / "voc")
    assert detect_format(REAL) == "deeppcb"
    assert detect_format(REAL / "test.txt") == "deeppcb"
    assert detect_format(tmp_path / "voc") == "voc"
    assert detect_format(tmp_path / "coco") == "coco"
    assert detect_format(json_path) == "coco"


def test_detect_format_ignores_json_that_is_not_coco(deeppcb_copy: Path):
    (deeppcb_copy / "split.json").write_text(json.dumps({"seed": 0, "train": [], "val": []}))
    assert detect_format(deeppcb_copy) == "deeppcb"


def test_ambiguous_directory_needs_the_format_override(deeppcb_copy: Path):
    (deeppcb_copy / "labels.json").write_text(json.dumps(coco_from(load_dataset(REAL / "test.txt"))))
    with pytest.raises(DataError, match=r"several formats \(deeppcb, coco\).*format="):
        load_dataset(deeppcb_copy)
    assert len(load_dataset(deeppcb_copy, format="deeppcb")) == 8


def test_format_override_and_unknown_data(tmp_path: Path):
    with pytest.raises(DataError, match=r"deeppcb_sample: no Pascal VOC files: expected Annotations/\*\.xml or \*\.xml"):
        load_dataset(REAL, format="voc")
    with pytest.raises(DataError, match=r"unknown format 'yolo' \(expected one of deeppcb, voc, coco\)"):
        load_dataset(REAL, format="yolo")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as raised:
        load_dataset(tmp_path / "empty")
    assert str(raised.value).startswith(f"{tmp_path / 'empty'}: no labeled data found; looked for DeepPCB list "
                                        "files (trainval.txt, test.txt)")
    assert "Pascal VOC" in str(raised.value) and "COCO" in str(raised.value)
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(tmp_path / "absent")
