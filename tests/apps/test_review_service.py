"""The line feeds the verification queue (``review: true``): boards come in through the hot folder, the NG,
uncertain and unknown-change ones appear in GET /review (roles enforced), an operator decides one over the
API, an engineer exports, and the export loads as training data beside the base set.

The tiny test package (tests/conftest.py) scores every box about 0.036, so the score threshold and band
decide which case a board is: threshold 0 with a narrow band makes every board a confident NG; threshold
0.1 with band 0.1 makes every board OK but uncertain (its boxes 0.064 below the threshold); threshold 0.5
leaves no box, and only the synthetic board whose defect differs from its template (an image fact, not a
score) carries an unknown-change flag. Each expectation is checked against the runtime run directly.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import cv2
import pytest

from inspector.data import load_dataset
from inspector.review_queue import rank
from inspector.service import Service, ServiceConfig, ServiceError
from inspector.service.auth import hash_token, users_from_config
from line_helpers import wait_for

TOKENS = {role: f"{role}-token-0123456789abcdef" for role in ("operator", "engineer", "admin")}
AS_ROLE = {role: {"Authorization": f"Bearer {token}"} for role, token in TOKENS.items()}


def board_pairs(boards: Path) -> list[tuple[Path, Path]]:
    tests = sorted(boards.rglob("*_test.jpg"))
    return [(test, test.with_name(test.name.replace("_test", "_temp"))) for test in tests]


def fill_hot_folder(folder: Path, boards: Path) -> list[str]:
    """Every board pair into ``folder`` (template first, old modification times: taken at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    for test, temp in board_pairs(boards):
        shutil.copy2(temp, folder / temp.name)
        shutil.copy2(test, folder / test.name)
    return [test.name for test, _ in board_pairs(boards)]


def start_service(tmp_path: Path, tiny, running: list, **settings) -> Service:
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users:\n" + "".join(f"  - {{name: {role[:3]}1, role: {role}, token_sha256: "
                                                  f"'{hash_token(token)}'}}\n" for role, token in TOKENS.items()))
    folder = tmp_path / "incoming"
    names = fill_hot_folder(folder, tiny.data)
    config = ServiceConfig(source=str(folder), data_dir=tmp_path / "data", model=tiny.package, http=None,
                           users_file=users_file, review=True, **settings)
    service = Service(config)
    running.append(service)
    service.start()
    wait_for(lambda: service.journal.count() == len(names), 120, f"{len(names)} records")
    assert service.review.wait_idle(60, boards=len(names)), "the review writer did not finish"
    return service


def expected_reasons(tiny, threshold: float, band: float, changes: bool) -> dict[str, str | None]:
    """What the queue should hold per board, from the runtime run directly (same package, same engine)."""
    from inspector.runtime import Detector

    detector = Detector.load(tiny.package)
    reasons = {}
    for test, temp in board_pairs(tiny.data):
        found = detector.detect(cv2.imread(str(test)), cv2.imread(str(temp)),
                                score_threshold=max(0.0, threshold - band), unknown_changes=changes)
        detections = [{"score": float(s)} for s in found.scores]
        flags = [c.to_dict() for c in (found.unknown_changes or [])]
        place = rank(detections, flags, threshold, band)
        reasons[test.stem] = None if place is None else {0: "near_threshold", 1: "unknown_change", 2: "ng"}[place[0]]
    return reasons


@pytest.mark.parametrize("threshold, band, changes, reason, verdict", [
    (0.0, 0.01, False, "ng", "NG"),  # confident NG boards
    (0.1, 0.1, False, "near_threshold", "OK"),  # OK, but boxes barely below the threshold: uncertain
    (0.5, 0.15, True, "unknown_change", "OK"),  # nothing detected; one board differs from its template
])
def test_the_line_queues_ng_uncertain_and_unknown_change_boards(tmp_path, tiny_package, running, threshold, band,
                                                                changes, reason, verdict):
    service = start_service(tmp_path, tiny_package, running, score_threshold=threshold, review_near_band=band,
                            review_unknown_changes=changes)
    expected = expected_reasons(tiny_package, threshold, band, changes)
    assert reason in expected.values()  # the case this row is about does happen
    records = {r.frame_file: r for r in service.journal.query(line=service.line, limit=100).items}
    assert {r.verdict for r in records.values()} == {verdict}
    if verdict == "OK":  # the lowered detection threshold of the review never reaches the record
        assert all(not r.defects for r in records.values())
    queued = {Path(item.source).stem: item for item in service.review.queue.pending(limit=100)}
    assert {name: item.reason for name, item in queued.items()} == \
        {name: why for name, why in expected.items() if why is not None}
    for name, item in queued.items():
        # Its own copy of the frame and template (the hot folder's files may go), named by the record.
        assert Path(item.image_path).parent == service.config.data_dir / "review-images"
        original = next(tiny_package.data.rglob(f"{name}.jpg"))
        assert Path(item.image_path).read_bytes() == original.read_bytes()  # the scanner's file, as it was
        assert item.template_path and Path(item.template_path).is_file()
        assert item.model.startswith(service.model_name) and item.score_threshold == threshold
        if reason == "unknown_change":
            assert item.unknown_changes and not item.detections
    assert service.review.enqueued._value.get() == len(queued)


def test_review_api_roles_decision_export_and_training_data(tmp_path, tiny_package, running):
    from fastapi.testclient import TestClient

    from inspector.service.api import create_app

    service = start_service(tmp_path, tiny_package, running, score_threshold=0.0, review_near_band=0.01)
    client = TestClient(create_app(service, users=users_from_config(service.config)))
    assert client.get("/review").status_code == 401
    assert client.get("/review", headers={"Authorization": "Bearer not-a-user-token-000"}).status_code == 401
    page = client.get("/review", headers=AS_ROLE["operator"]).json()
    assert page["counts"]["pending"] == {"ng": len(board_pairs(tiny_package.data))}
    item = page["items"][0]
    picture = client.get(f"/review/items/{item['id']}/image", headers=AS_ROLE["operator"])
    original = Path(service.config.source) / item["source"]
    assert picture.headers["content-type"] == "image/jpeg" and picture.content == original.read_bytes()

    count = len(item["detections"])
    first = item["detections"][0]
    decision = {"verdicts": [{"index": 0, "verdict": "confirm", "class_name": "spur"}] +
                            [{"index": i, "verdict": "reject"} for i in range(1, count)],
                "added": [{"box": [10, 12, 30, 40], "class_name": "short"}], "note": "one spur, one missed short"}
    assert client.post(f"/review/items/{item['id']}/decision", json=decision).status_code == 401
    bad = client.post(f"/review/items/{item['id']}/decision", headers=AS_ROLE["operator"],
                      json={**decision, "verdicts": decision["verdicts"][:-1]})
    assert bad.status_code == 400 and f"no verdict for detection(s) [{count - 1}]" in bad.text
    decided = client.post(f"/review/items/{item['id']}/decision", json=decision, headers=AS_ROLE["operator"])
    assert decided.status_code == 200 and decided.json()["decided_by"] == "ope1"  # the token's user, not a field
    after = client.get("/review", headers=AS_ROLE["operator"]).json()
    assert after["counts"]["reviewed"] == 1 and item["id"] not in [i["id"] for i in after["items"]]
    # Paged by the last board read: the decided board still marks its place, so no board is skipped.
    ids = [i["id"] for i in page["items"]]
    assert len(ids) >= 3
    first_page = client.get(f"/review?limit=1&after={item['id']}", headers=AS_ROLE["operator"]).json()
    assert [i["id"] for i in first_page["items"]] == ids[1:2] and first_page["next_after"] == ids[1]
    second = client.get(f"/review?limit=1&after={first_page['next_after']}", headers=AS_ROLE["operator"]).json()
    assert [i["id"] for i in second["items"]] == ids[2:3]
    unknown = client.get("/review?after=999999", headers=AS_ROLE["operator"])
    assert unknown.status_code == 404 and "pending boards after item 999999: no such item" in unknown.text

    denied = client.post("/review/export", headers=AS_ROLE["operator"])
    assert denied.status_code == 403 and "needs the engineer role" in denied.text
    exported = client.post("/review/export", headers=AS_ROLE["engineer"])
    assert exported.status_code == 200 and exported.json()["boards"] == 1
    folder = Path(exported.json()["folder"])
    assert folder == service.config.data_dir / "review-export"

    # The decision and the refused attempt are on the audit trail, with who.
    audit = [(e.who, e.action, e.outcome) for e in service.audit.entries(100)[1]]
    assert ("ope1", f"POST /review/items/{item['id']}/decision", "200") in audit
    assert ("ope1", "POST /review/export", "403") in audit

    reviewed = load_dataset(folder)
    assert len(reviewed) == 1 and reviewed.has_templates
    sample = reviewed.samples[0]
    names = sorted(reviewed.class_names[c] for c in sample.classes)
    assert names == ["short", "spur"]
    boxes = {reviewed.class_names[c]: box.tolist() for c, box in zip(sample.classes, sample.boxes)}
    assert boxes["short"] == [10, 12, 30, 40]
    assert boxes["spur"] == pytest.approx(first["box"], abs=1.0)
    # `inspector train --data BASE --data EXPORT --weight ...` reads both as one dataset (one class list).
    both = load_dataset([{"path": str(tiny_package.data), "weight": 1}, {"path": str(folder), "weight": 3}])
    assert len(both) == len(load_dataset(tiny_package.data)) + 1

    # The same from a shell (a station without the API), reading the queue while the service runs.
    from typer.testing import CliRunner

    from inspector.cli import app

    runner = CliRunner()
    queue_file = str(service.config.data_dir / "review.sqlite3")
    listed = runner.invoke(app, ["review", "list", "--queue", queue_file, "--limit", "2"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)["counts"] == after["counts"] and len(json.loads(listed.output)["items"]) == 2
    shell_export = runner.invoke(app, ["review", "export", str(tmp_path / "from-shell"), "--queue", queue_file])
    assert shell_export.exit_code == 0 and "1 reviewed board(s)" in shell_export.output
    again = load_dataset(tmp_path / "from-shell")
    assert again.samples[0].boxes.tolist() == sample.boxes.tolist()
    missing = runner.invoke(app, ["review", "export", str(tmp_path / "x"), "--queue", str(tmp_path / "nope.sqlite3")])
    assert missing.exit_code == 2 and "nope.sqlite3: no such file" in missing.output


def test_a_class_band_of_its_own_widens_the_review_for_that_class(tmp_path, tiny_package, running):
    """review_near_band_per_class: with a narrow global band no board is uncertain; a wide band for every
    class of the model queues exactly the boards the wide band finds (the runtime's own detections)."""
    from inspector.export.manifest import read_manifest

    classes = read_manifest(tiny_package.package).class_names
    narrow, wide = expected_reasons(tiny_package, 0.1, 0.01, False), expected_reasons(tiny_package, 0.1, 0.1, False)
    assert narrow != wide and "near_threshold" in wide.values()  # the two bands make a difference here
    service = start_service(tmp_path, tiny_package, running, score_threshold=0.1, review_near_band=0.01,
                            review_near_band_per_class={name: 0.1 for name in classes})
    queued = {Path(item.source).stem: item.reason for item in service.review.queue.pending(limit=100)}
    assert queued == {name: why for name, why in wide.items() if why is not None}


def test_a_class_band_the_model_lacks_or_out_of_range_is_refused_by_name(tmp_path, tiny_package):
    folder = tmp_path / "incoming"
    folder.mkdir()
    settings = dict(source=str(folder), data_dir=tmp_path / "data", model=tiny_package.package, http=None,
                    review=True)
    with pytest.raises(ServiceError, match="review_near_band_per_class.*solder-ball"):
        Service(ServiceConfig(**settings, review_near_band_per_class={"solder-ball": 0.2}))
    with pytest.raises(ValueError, match="review_near_band_per_class.spur: a band from 0 to 0.5 expected, got 0.7"):
        ServiceConfig(**settings, review_near_band_per_class={"spur": 0.7})
    with pytest.raises(ValueError, match="review_picture_hard_cap_gb: at least review_picture_max_gb"):
        ServiceConfig(**settings, review_picture_max_gb=5, review_picture_hard_cap_gb=2)


def test_review_off_by_default_and_an_unusable_queue_is_a_start_up_error(tmp_path, tiny_package):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "review.sqlite3").write_text("not a database")
    config = ServiceConfig(source=str(folder), data_dir=tmp_path / "data", model=tiny_package.package, http=None,
                           review=True)
    with pytest.raises(ServiceError, match="review: the verification queue in .*data cannot be used"):
        Service(config)
    assert ServiceConfig(source=str(folder), http=None).review is False


def test_a_failing_queue_write_is_counted_and_logged_and_the_line_goes_on(tmp_path, tiny_package, running, caplog):
    service = start_service(tmp_path, tiny_package, running, score_threshold=0.0, review_near_band=0.01)
    boards = len(board_pairs(tiny_package.data))
    assert service.review.enqueued._value.get() == boards
    images = service.review.images
    shutil.rmtree(images)
    images.write_text("the image folder was replaced by a file")  # e.g. a share gone read-only
    folder = Path(service.config.source)
    for test, temp in board_pairs(tiny_package.data)[:2]:
        shutil.copy2(temp, folder / f"again-{temp.name}")
        shutil.copy2(test, folder / f"again-{test.name}")
    assert service.review.wait_idle(120, boards=boards + 2), "2 more boards were not offered"
    assert service.review.failures._value.get() == 2 and service.review.enqueued._value.get() == boards
    assert "not written into the verification queue" in caplog.text
    # A board is spooled for review before its record commits (so no crash falls between the two): await it.
    wait_for(lambda: service.journal.count() == boards + 2, 120, f"{boards + 2} records")
    assert service.health()["ready"] and service.worker_alive
    with sqlite3.connect(service.config.records_path) as db:
        assert db.execute("SELECT COUNT(*) FROM records WHERE verdict = 'NG'").fetchone()[0] == boards + 2


def test_a_recipes_ignore_regions_hold_nothing_to_review(tmp_path, tiny_package, running):
    import yaml

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "left-ignored.yaml").write_text(yaml.safe_dump({
        "name": "left-ignored", "version": "1", "model": str(tiny_package.package), "score_threshold": 0.0,
        "ignore_regions": [[0, 0, 80, 10000]]}))
    service = start_service(tmp_path, tiny_package, running, recipes=recipes, recipe="left-ignored",
                            review_near_band=0.01)
    queued = service.review.queue.pending(limit=100)
    assert len(queued) == len(board_pairs(tiny_package.data))  # every board still has boxes right of x = 80
    centres = [(d["box"][0] + d["box"][2]) / 2 for item in queued for d in item.detections]
    assert centres and min(centres) > 80
    records = service.journal.query(line=service.line, limit=100).items
    assert all((d["box"][0] + d["box"][2]) / 2 > 80 for r in records for d in r.defects)
    assert {item.model.split(" ")[0] for item in queued} == {service.model_name}


def test_the_writer_copies_an_unchanged_file_and_writes_the_judged_pixels_otherwise(tmp_path):
    import numpy as np
    from prometheus_client import CollectorRegistry

    from inspector.service.review_feed import ReviewFeed

    feed = ReviewFeed(tmp_path / "data", CollectorRegistry(), "line1", near_band=0.15, max_pending=2)
    try:
        image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
        template = np.zeros_like(image)
        scan = tmp_path / "board_test.jpg"
        scan.write_bytes(cv2.imencode(".jpg", image)[1].tobytes())
        stat = scan.stat()
        version = f"{stat.st_size}:{stat.st_mtime_ns}"
        near = [{"box": [1, 2, 10, 12], "score": 0.45, "class_name": "open"}]
        common = dict(template=template, unknown_changes=[], score_threshold=0.5, class_names=["open", "short"],
                      model="m (p)")
        assert feed.offer("r1", "board_test.jpg", image, detections=near, file=scan, file_version=version, **common)
        assert feed.offer("r2", "board_test.jpg", image, detections=near, file=scan, file_version="1:2", **common)
        confident_ok = [{"box": [1, 2, 10, 12], "score": 0.2, "class_name": "open"}]
        assert not feed.offer("r3", "x", image, detections=confident_ok, **common)  # nothing to learn
        assert feed.offer("r4", "x", image, detections=near, **common)  # over max_pending: skipped
        assert feed.wait_idle(30, boards=4)
        first, second = sorted(feed.queue.pending(), key=lambda item: item.id)
        assert Path(first.image_path).name == "r1.jpg" and Path(first.image_path).read_bytes() == scan.read_bytes()
        assert Path(second.image_path).name == "r2.png"  # not the version judged: the judged pixels, lossless
        assert np.array_equal(cv2.imread(second.image_path), image)
        assert first.template_path == second.template_path  # one copy per distinct template
        assert (feed.enqueued._value.get(), feed.skipped._value.get(), feed.failures._value.get()) == (2, 1, 0)
        assert feed.offer("r5", "x", image, detections=near, template=template, unknown_changes=[],
                          score_threshold="not a number", class_names=["open"], model="m") is False
        assert feed.failures._value.get() == 1  # refused and counted, never raised into the line
    finally:
        feed.close()
