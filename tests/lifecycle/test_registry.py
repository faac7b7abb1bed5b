"""Model registry: register, the promotion gate on a golden set (refusal with numbers, --force recorded),
rollback, and an index that never loses a record."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inspector.cli import app
from inspector.registry import DEFAULT_TOLERANCE, CurrentModelWatch, GoldenSet, Registry, RegistryError, compare
from inspector.runtime.package import DEFAULT_PACKAGE

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "inspector/assets/deeppcb_demo"


def _copy_package(target: Path, name: str, score_threshold: float | None = None) -> Path:
    shutil.copytree(DEFAULT_PACKAGE.resolve(), target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["name"] = name
    if score_threshold is not None:  # same network, far stricter threshold: it misses most defects
        manifest["postprocess"]["score_threshold"] = score_threshold
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return target


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    if not DEFAULT_PACKAGE.exists():
        pytest.skip("no shipped model package in this checkout")
    base = tmp_path_factory.mktemp("packages")
    return _copy_package(base / "good", "good"), _copy_package(base / "worse", "worse", score_threshold=0.97)


def _run(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.mark.slow
def test_gate_refuses_a_worse_model_with_the_numbers_force_is_recorded_and_rollback_restores(tmp_path, packages):
    good, worse = packages
    registry = str(tmp_path / "registry")
    out = _run("models", "register", str(good), "--registry", registry, "--by", "alice")
    assert out.exit_code == 0, out.output
    assert "registered good-1" in out.output
    out = _run("models", "promote", "good-1", "--registry", registry)
    assert out.exit_code == 2 and "no golden set" in out.output  # the gate needs its boards first
    assert _run("models", "golden", str(GOLDEN), "--registry", registry).exit_code == 0
    out = _run("models", "promote", "good-1", "--registry", registry, "--by", "alice")
    assert out.exit_code == 0, out.output
    assert Registry(registry).current()["id"] == "good-1"

    assert _run("models", "register", str(worse), "--registry", registry, "--by", "bob").exit_code == 0
    out = _run("models", "promote", "worse-1", "--registry", registry, "--by", "bob")
    assert out.exit_code == 1
    assert "refused" in out.output and "worse-1 not promoted" in out.output
    assert "f1_at_threshold" in out.output and "vs current" in out.output and "recall[" in out.output
    index = Registry(registry).read()
    refused = index["events"][-1]
    assert refused["action"] == "refused" and refused["by"] == "bob" and not refused["forced"]
    f1 = next(f for f in refused["failures"] if f["metric"] == "f1_at_threshold")
    assert f1["difference"] == pytest.approx(f1["candidate"] - f1["current"]) and f1["difference"] < -0.05
    assert f"{f1['difference']:+.4f}" in out.output
    # The same network with a stricter threshold ranks its detections alike: the official AP (every detection down
    # to the evaluation's low score) is the same on every draw of the golden boards.
    assert refused["official_ap_difference"] == {
        "difference": 0.0, "interval": {"low": 0.0, "high": 0.0, "confidence": 0.95, "resamples": 1000}}
    assert "official AP +0.00 pt against the current model, 95% interval +0.00 to +0.00 pt (paired" in out.output
    assert sorted(p.name for p in (tmp_path / "registry" / "evaluations").iterdir()) == [
        f"{model}@{index['golden']['fingerprint']}.npz" for model in ("good-1", "worse-1")]
    assert Registry(registry).current()["id"] == "good-1"  # nothing changed on the line

    out = _run("models", "promote", "worse-1", "--registry", registry, "--force", "--reason", "trial", "--by", "bob")
    assert out.exit_code == 0, out.output
    assert "FORCED" in out.output
    forced = Registry(registry).read()["events"][-1]
    assert forced["action"] == "promote" and forced["forced"] and forced["reason"] == "trial" and forced["failures"]
    assert Registry(registry).current()["id"] == "worse-1"

    out = _run("models", "rollback", "--registry", registry, "--by", "carol")
    assert out.exit_code == 0 and "from worse-1 to good-1" in out.output
    reg = Registry(registry)
    assert reg.current()["id"] == "good-1"
    assert (reg.current_package() / "manifest.json").is_file()
    actions = [e["action"] for e in reg.read()["events"]]
    assert actions == ["register", "golden", "promote", "register", "refused", "promote", "rollback"]
    out = _run("models", "rollback", "--registry", registry)
    assert out.exit_code == 2 and "only model promoted" in out.output
    listing = _run("models", "list", "--registry", registry).output
    assert "* good-1" in listing and "worse-1" in listing and "FORCED" in listing


def test_register_verifies_the_package_and_refuses_duplicates(tmp_path, packages):
    good, _ = packages
    reg = Registry(tmp_path / "registry")
    entry = reg.register(good, by="alice")
    assert entry["registered_by"] == "alice" and entry["class_names"] and entry["package_id"]
    assert (reg.package_path(entry) / "manifest.json").is_file() and not entry["referenced"]
    with pytest.raises(RegistryError, match="already registered as good-1"):
        reg.register(good)
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    with open(broken / "model_x86.nb", "r+b") as stream:
        stream.seek(100)
        stream.write(b"\x00\x01\x02\x03")
    with pytest.raises(RegistryError, match="sha256"):
        reg.register(broken, name="broken")
    with pytest.raises(RegistryError, match="name"):
        reg.register(good, name="bad name!")
    assert list(reg.read()["models"]) == ["good-1"]
    (tmp_path / "registry" / "registry.json").write_text("{not json")
    with pytest.raises(RegistryError, match="registry.json: not a readable registry index"):
        reg.read()


def test_gate_tolerance_and_class_recall():
    current = {"official_ap": 0.80, "official_f": 0.85, "f1_at_threshold": 0.84,
               "class_recall": {"open": 0.9, "spur": 0.8}}
    within = {"official_ap": 0.795, "official_f": 0.85, "f1_at_threshold": 0.86,
              "class_recall": {"open": 0.88, "spur": 0.9}}
    assert compare(within, current, DEFAULT_TOLERANCE) == []
    worse_spur = {**within, "class_recall": {"open": 0.95, "spur": 0.70}}
    (failure,) = compare(worse_spur, current, DEFAULT_TOLERANCE)
    assert failure["metric"] == "recall[spur]" and failure["difference"] == pytest.approx(-0.10)


def test_golden_set_change_is_detected(tmp_path, packages):
    boards = tmp_path / "boards"
    shutil.copytree(GOLDEN, boards)
    reg = Registry(tmp_path / "registry", evaluator=lambda path, golden: pytest.fail("must not evaluate"))
    reg.set_golden(GoldenSet(str(boards)))
    entry = reg.register(packages[0], reference=True)
    assert entry["referenced"] and Path(entry["path"]).is_absolute()
    label = next(boards.rglob("*_not/*.txt"))
    label.write_text(label.read_text().splitlines()[0] + "\n")  # one board relabeled
    with pytest.raises(RegistryError, match="golden set changed"):
        reg.promote(entry["id"])


def test_a_line_follows_promotion_and_rollback_between_parts(tmp_path, packages):
    """What the service and the GUI ask between two parts; no evaluation here (a stand-in evaluator)."""
    scores = {"good": 0.9, "worse": 0.5}

    def evaluator(path, golden):
        value = scores[json.loads((Path(path) / "manifest.json").read_text())["name"]]
        return {"official_ap": value, "official_f": value, "f1_at_threshold": value, "class_recall": {"open": value}}

    reg = Registry(tmp_path / "registry", evaluator=evaluator)
    reg.set_golden(GoldenSet(str(GOLDEN)))
    watch = CurrentModelWatch(reg)
    assert watch.changed() is None  # nothing promoted yet
    good = reg.register(packages[0], reference=True)["id"]
    reg.promote(good)
    model_id, path = watch.changed()
    assert model_id == good and (path / "manifest.json").is_file()
    assert watch.changed() is not None  # not accepted (say it failed to load): offered again
    watch.accept(good)
    assert watch.changed() is None
    worse = reg.register(packages[1], reference=True)["id"]
    assert watch.changed() is None  # registering changes nothing on the line
    reg.promote(worse, force=True)
    assert watch.changed()[0] == worse
    watch.accept(worse)
    reg.rollback()
    assert watch.changed()[0] == good


def _distinct_package(target: Path, name: str) -> Path:
    """The shipped network under another package identity (one more listed file), so a swap is visible."""
    import hashlib

    _copy_package(target, name)
    notes = target / "NOTES.txt"
    notes.write_text(f"{name}: the shipped weights, registered as another model for the test\n")
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["NOTES.txt"] = {"sha256": hashlib.sha256(notes.read_bytes()).hexdigest(),
                                      "bytes": notes.stat().st_size}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return target


@pytest.mark.slow
def test_the_service_follows_promotion_and_rollback_between_parts_with_no_lost_record(tmp_path):
    """A recipe whose model is registry:DIR: the running service switches on promote and back on rollback."""
    if not DEFAULT_PACKAGE.exists():
        pytest.skip("no shipped model package in this checkout")
    from line_helpers import drop_board, wait_for

    from inspector.service import Service, ServiceConfig

    first = _distinct_package(tmp_path / "pkg-first", "first")
    second = _distinct_package(tmp_path / "pkg-second", "second")
    reg = Registry(tmp_path / "registry")
    reg.set_golden(GoldenSet(str(GOLDEN)))
    reg.promote(reg.register(first)["id"])
    second_id = reg.register(second)["id"]
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "line.yaml").write_text('name: line\nversion: "1"\nmodel: registry:../registry\n')
    folder = tmp_path / "incoming"
    folder.mkdir()
    service = Service(ServiceConfig(source=str(folder), data_dir=tmp_path / "data", http=None, line="line1",
                                    recipes=recipes, recipe="line"))
    service.start()

    def judged(name: str, count: int):
        drop_board(folder, name)
        return wait_for(lambda: (lambda items: items if len(items) >= count else None)(
            service.journal.query(limit=50).items), 60, f"record of {name}")

    try:
        assert service.model_name == "first"
        assert service.recipes.follow_registry() is None  # nothing changed
        judged("b1", 1)
        reg.promote(second_id)  # equal on the golden set: within the tolerance
        wait_for(lambda: service.model_name == "second", 30, "the service's monitor to switch to the promoted model")
        judged("b2", 2)
        reg.rollback(by="carol")
        wait_for(lambda: service.model_name == "first", 30, "the service's monitor to switch back on rollback")
        judged("b3", 3)
        assert service.recipes.follow_registry() is None  # handled once
    finally:
        service.stop()
    records = {Path(r.frame_file).stem.split("_")[0]: r for r in service.journal.query(limit=50).items}
    assert {name: r.model_name for name, r in records.items()} == {"b1": "first", "b2": "second", "b3": "first"}
    assert records["b2"].package_id != records["b1"].package_id == records["b3"].package_id
