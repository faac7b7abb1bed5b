"""Recipes (inspector/service/recipes.py): validation with file and field named, per-class thresholds and
ignore regions, selection by the PLC (OPC UA method) and HTTP between parts only, refusal of a bad recipe
with the previous one kept, the active recipe surviving a restart, and `inspector recipe`."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from inspector.capture import DEMO_DIR
from inspector.service.recipes import RecipeError, load_recipe
from line_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "default"
CLASSES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")


def write(directory: Path, file_name: str, **fields) -> Path:
    data = {"name": file_name, "version": "1", "model": os.path.relpath(MODEL, directory), **fields}
    path = directory / f"{file_name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_valid_recipe_loads(tmp_path):
    template = sorted(DEMO_DIR.rglob("*_temp.jpg"))[0]
    shutil.copy(template, tmp_path / "golden.jpg")
    recipe = load_recipe(write(tmp_path, "board-a", version=3, template="golden.jpg",
                               thresholds={"open": 0.5}, ignore_regions=[[0, 0, 40, 640]],
                               camera={"exposure_us": 8000}, trigger="hardware"))
    assert (recipe.name, recipe.version) == ("board-a", "3")
    assert recipe.template is not None and recipe.template.shape[2] == 3
    assert set(recipe.class_names) >= {"open", "short"}
    assert recipe.spec.camera.exposure_us == 8000 and recipe.spec.trigger == "hardware"


@pytest.mark.parametrize("fields, expected", [
    ({"thresholds": {"scratch": 0.5}}, "field 'thresholds': unknown class(es) scratch"),
    ({"thresholds": {"open": 1.5}}, "field 'thresholds'"),
    ({"ignore_regions": [[10, 10, 5, 20]]}, "field 'ignore_regions'"),
    ({"model": "no/such/package"}, "field 'model'"),
    ({"template": "missing.png"}, "field 'template'"),
    ({"trigger": "sometimes"}, "field 'trigger'"),
    ({"exposure": 5}, "field 'exposure'"),  # a misspelt key is an error, not a silent default
    ({"name": "other"}, "field 'name': 'other' differs from the file name"),
    ({"part_id_pattern": "SN-(["}, "field 'part_id_pattern': expected a regular expression"),
])
def test_validation_errors_name_file_and_field(tmp_path, fields, expected):
    path = write(tmp_path, "bad", **fields)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_thresholds_and_ignore_regions_filter_detections(tmp_path):
    from inspector.runtime.detector import Detections, Timing

    recipe = load_recipe(write(tmp_path, "filters", score_threshold=0.3, thresholds={"open": 0.6},
                               ignore_regions=[[0, 0, 100, 100]]))
    timing = Timing(**{name: 0.0 for name in Timing.__dataclass_fields__})
    detections = Detections(
        boxes=np.array([[10, 10, 20, 20], [200, 200, 220, 220], [300, 300, 310, 310], [400, 400, 410, 410]],
                       dtype=np.float32),
        scores=np.array([0.9, 0.5, 0.7, 0.2], dtype=np.float32), class_ids=np.array([1, 0, 0, 1]),
        class_names=["short", "open", "open", "short"], image_size=(640, 640), timing=timing)
    kept = recipe.keep(detections)
    # short@0.9 inside the ignored region, open@0.5 below open's 0.6, short@0.2 below the default 0.3
    assert kept.class_names == ["open"] and kept.scores.tolist() == pytest.approx([0.7])
    assert recipe.lowest_threshold() == 0.3


# ------------------------------------------------------------------------------ in the service, PLC and HTTP

@pytest.mark.slow
def test_recipe_switch_by_plc_and_http_between_parts_and_after_restart(tmp_path):
    from fastapi.testclient import TestClient

    from inspector.service import Service, ServiceConfig
    from inspector.service.api import create_app
    from inspector.service.auth import LEGACY_TOKEN_USER
    from line_helpers import Plc, drop_board, recipe_audit, wait_for

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "board-a")
    write(recipes, "board-b", version="2", ignore_regions=[[0, 0, 10000, 10000]])  # nothing counts: OK
    write(recipes, "broken", thresholds={"scratch": 0.5})
    folder = tmp_path / "incoming"
    folder.mkdir()
    port = free_port()
    config = ServiceConfig(source=str(folder), data_dir=tmp_path / "data", http=None, line="line1",
                           opcua=f"opc.tcp://127.0.0.1:{port}", recipes=recipes, recipe="board-a")
    service = Service(config)
    service.start()
    plc = Plc(f"opc.tcp://127.0.0.1:{port}")
    method = plc.line.get_child(f"{plc._index}:SelectRecipe")
    try:
        assert (plc.read("Recipe"), plc.read("RecipeVersion")) == ("board-a", "1")
        drop_board(folder, "p1")
        assert plc.inspect("P1")[0] == "NG"

        assert plc.line.call_method(method, "board-b") is True
        plc.wait("Recipe", "board-b")
        drop_board(folder, "p2")
        assert plc.inspect("P2") == ("OK", 0)  # the same defective board, every defect in the ignored region

        # A recipe that fails validation is refused with the reason; board-b stays.
        assert plc.line.call_method(method, "broken") is False
        assert plc.read("RecipeStatus").startswith("refused:") and "scratch" in plc.read("RecipeStatus")
        assert plc.read("Recipe") == "board-b"
        wait_for(lambda: any(a.kind == "recipe_refused" for a in service.recent_alarms), 5, "recipe_refused")

        # Mid-part: accepted but pending; the part in progress is judged with board-b, the switch follows the Ack.
        plc.trigger("P3")
        plc.wait("Busy", True)
        assert plc.line.call_method(method, "board-a") is True
        assert plc.read("RecipeStatus") == "pending" and plc.read("Recipe") == "board-b"
        drop_board(folder, "p3")
        plc.wait("ResultValid", True)
        assert plc.read("Verdict") == "OK" and plc.read("Recipe") == "board-b"
        plc.write("Ack", True)
        plc.wait("Recipe", "board-a")
        assert plc.read("RecipeStatus") == "accepted"

        # For PLCs that cannot call methods: writing a name into RecipeRequest asks for it.
        plc.write("RecipeRequest", "board-b")
        plc.wait("Recipe", "board-b")

        token = "recipe-test-token-0123456789"
        headers = {"Authorization": f"Bearer {token}"}
        with TestClient(create_app(service, token)) as http:
            refused = http.post("/recipe", json={"name": "broken"}, headers=headers)
            assert refused.status_code == 409 and "scratch" in refused.json()["detail"]
            assert http.post("/recipe", json={"name": "board-a"}, headers=headers).status_code == 200
            state = http.get("/recipe", headers=headers).json()
            assert state["active"]["name"] == "board-a" and set(state["available"]) == {"board-a", "board-b", "broken"}

            # Every request is in the audit trail: who (the PLC and its address, the HTTP user), old -> new.
            opcua = f"PLC over OPC UA from {plc.local_address()}"
            entries = [(e["who"], e["role"], e["old"], e["new"], e["outcome"]) for e in recipe_audit(http, headers)]
            assert entries[:6] == [
                ("configuration", None, None, "board-a version 1", "switched at start-up"),
                (opcua, "plc", "board-a version 1", "board-b version 2", "switched"),
                (opcua, "plc", "board-b version 2", "broken", entries[2][4]),
                (opcua, "plc", "board-b version 2", "board-a version 1", "pending: applied after the current part"),
                (opcua, "plc", "board-b version 2", "board-a version 1", "switched after the part in progress"),
                (opcua, "plc", "board-a version 1", "board-b version 2", "switched"),
            ]
            assert entries[2][4].startswith("refused: ") and "scratch" in entries[2][4]
            assert entries[6][:4] == (LEGACY_TOKEN_USER, "admin", "board-b version 2", "broken")
            assert entries[6][4].startswith("refused: ")
            assert entries[7:] == [(LEGACY_TOKEN_USER, "admin", "board-b version 2", "board-a version 1", "switched")]
            # The HTTP requests are recorded once (by the recipe manager), not a second time by the middleware.
            assert not [e for e in http.get("/audit", headers=headers).json()["items"] if e["action"] == "POST /recipe"]
    finally:
        plc.close()
        service.stop()
    by_part = {r.part_id: r for r in service.journal.query(limit=10).items}
    assert (by_part["P1"].recipe, by_part["P1"].recipe_version) == ("board-a", "1")
    assert (by_part["P2"].recipe, by_part["P2"].recipe_version) == ("board-b", "2")
    assert by_part["P3"].recipe == "board-b"

    # Restart without naming a recipe: the last active one (board-a, chosen over HTTP) comes back.
    restarted = Service(ServiceConfig(source=str(folder), data_dir=tmp_path / "data", http=None, line="line1",
                                      recipes=recipes))
    try:
        assert (restarted.recipe_name, restarted.recipe_version) == ("board-a", "1")
    finally:
        restarted.detector.close()


@pytest.mark.slow
def test_recipe_cli(tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}

    def inspector(*arguments):
        return subprocess.run([sys.executable, "-m", "inspector.cli", "recipe", *arguments, "--dir", str(tmp_path)],
                              cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)

    model = os.path.relpath(MODEL, tmp_path)
    created = inspector("create", "board-c", "--model", model, "--threshold", "open=0.4", "--ignore", "0,0,50,50",
                        "--part-id-pattern", "PCB-C-[0-9]{6}")
    assert created.returncode == 0, created.stderr
    written = yaml.safe_load((tmp_path / "board-c.yaml").read_text())
    assert written["thresholds"] == {"open": 0.4} and written["part_id_pattern"] == "PCB-C-[0-9]{6}"
    assert (written["trigger"], written["description"]) == ("software", "")  # not given: the recipe file's defaults
    bad_pattern = inspector("create", "board-e", "--model", model, "--part-id-pattern", "PCB-(")
    assert bad_pattern.returncode != 0 and "part_id_pattern" in bad_pattern.stderr
    assert not (tmp_path / "board-e.yaml").exists()
    refused = inspector("create", "board-d", "--model", model, "--threshold", "scratch=0.4")
    assert refused.returncode != 0 and "scratch" in refused.stderr and not (tmp_path / "board-d.yaml").exists()
    write(tmp_path, "broken", thresholds={"open": 7})
    listed = inspector("list")
    assert "board-c" in listed.stdout and "broken" in listed.stdout and "INVALID" in listed.stdout
    assert inspector("validate", "board-c").returncode == 0
    checked = inspector("validate")
    assert checked.returncode == 1 and "broken.yaml: field 'thresholds'" in checked.stderr
    shown = inspector("show", "board-c")
    assert shown.returncode == 0 and '"version": "1"' in shown.stdout


def test_recipe_load_over_modbus(tmp_path):
    from fastapi.testclient import TestClient
    from pymodbus.client import ModbusTcpClient

    from inspector.service import Service, ServiceConfig
    from inspector.service.api import create_app
    from inspector.service.plc.modbus import registers_to_text, text_to_registers
    from line_helpers import recipe_audit, wait_for

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    write(recipes, "board-a")
    write(recipes, "board-b", version="7")
    write(recipes, "broken", thresholds={"scratch": 0.5})
    port = free_port()
    service = Service(ServiceConfig(source="demo", data_dir=tmp_path / "data", http=None, line="line1",
                                    modbus=f"127.0.0.1:{port}", recipes=recipes, recipe="board-a"))
    service.start()
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    assert client.connect()

    def status():
        registers = client.read_input_registers(0, count=46).registers
        return registers[5], registers_to_text(registers[22:38]), registers_to_text(registers[38:46])

    try:
        assert status() == (0, "board-a", "1")
        client.write_registers(16, text_to_registers("board-b", 16))
        client.write_coil(2, True)
        wait_for(lambda: status() == (1, "board-b", "7"), 30, "board-b accepted")
        client.write_registers(16, text_to_registers("broken", 16))
        client.write_coil(2, True)
        wait_for(lambda: status()[0] == 2, 30, "broken refused")
        assert status()[1:] == ("board-b", "7")
        assert service.recipes.last_refusal and "scratch" in service.recipes.last_refusal

        host, local_port = client.socket.getsockname()[:2]
        who = f"PLC over Modbus TCP from {host}:{local_port}"
        headers = {"Authorization": "Bearer modbus-audit-token-0123456789"}
        with TestClient(create_app(service, "modbus-audit-token-0123456789")) as http:
            entries = wait_for(lambda: recipe_audit(http, headers)[1:] or None, 10, "the Modbus requests audited")
        assert [(e["who"], e["role"], e["old"], e["new"]) for e in entries] == [
            (who, "plc", "board-a version 1", "board-b version 7"), (who, "plc", "board-b version 7", "broken")]
        assert entries[0]["outcome"] == "switched" and entries[1]["outcome"].startswith("refused: ")
        assert "scratch" in entries[1]["outcome"] and entries[1]["at"] >= entries[0]["at"]
    finally:
        client.close()
        service.stop()


# ------------------------------------------------------------------------------ the recipe chosen by part id

def test_recipe_by_part_id_needs_a_recipes_directory(tmp_path):
    from pydantic import ValidationError

    from inspector.service import ServiceConfig

    with pytest.raises(ValidationError, match="recipe_by_part_id: needs recipes:"):
        ServiceConfig(source="demo", http=None, data_dir=tmp_path, recipe_by_part_id=True)


def pattern_recipes(directory: Path) -> None:
    """board-a for A-nnnn; board-b (every defect ignored: OK) for B-nnnn; board-b9 overlaps board-b on B-9nnn."""
    directory.mkdir()
    write(directory, "board-a", part_id_pattern="A-[0-9]{4}")
    write(directory, "board-b", version="2", ignore_regions=[[0, 0, 10000, 10000]], part_id_pattern="B-[0-9]{4}")
    write(directory, "board-b9", part_id_pattern="B-9[0-9]{3}")
    write(directory, "no-pattern")


@pytest.mark.slow
def test_recipe_chosen_by_the_plc_part_id_before_the_part_is_judged(tmp_path):
    from fastapi.testclient import TestClient

    from inspector.service import Service, ServiceConfig
    from inspector.service.api import create_app
    from line_helpers import Plc, drop_board, recipe_audit

    recipes = tmp_path / "recipes"
    pattern_recipes(recipes)
    folder = tmp_path / "incoming"
    folder.mkdir()
    port = free_port()
    service = Service(ServiceConfig(source=str(folder), data_dir=tmp_path / "data", http=None, line="line1",
                                    opcua=f"opc.tcp://127.0.0.1:{port}", recipes=recipes, recipe="board-a",
                                    recipe_by_part_id=True))
    service.start()
    plc = Plc(f"opc.tcp://127.0.0.1:{port}")
    seen = {}
    try:
        for number, part_id in enumerate(["B-0001", "A-0001", "X-1", "B-9001", "B-0002"]):
            drop_board(folder, f"p{number}")  # the same defective board every time
            seen[part_id] = (plc.inspect(part_id), plc.read("Recipe"))
        kinds = [alarm.kind for alarm in service.recent_alarms]
        headers = {"Authorization": "Bearer part-id-test-token-0123456789"}
        with TestClient(create_app(service, "part-id-test-token-0123456789")) as http:
            audited = [(e["who"], e["old"], e["new"], e["outcome"]) for e in recipe_audit(http, headers)]
    finally:
        plc.close()
        service.stop()
    # The match decides before judging: B-0001 is OK under board-b; no match / two matches keep board-a.
    assert seen["B-0001"] == (("OK", 0), "board-b")
    assert seen["A-0001"][0][0] == "NG" and seen["A-0001"][1] == "board-a"
    assert seen["X-1"][0][0] == "NG" and seen["X-1"][1] == "board-a"
    assert seen["B-9001"][0][0] == "NG" and seen["B-9001"][1] == "board-a"
    assert seen["B-0002"] == (("OK", 0), "board-b")
    assert kinds.count("recipe_no_match") == 1 and kinds.count("recipe_ambiguous") == 1
    ambiguous = next(a for a in service.recent_alarms if a.kind == "recipe_ambiguous")
    assert "board-b, board-b9" in ambiguous.message and ambiguous.detail["part_id"] == "B-9001"
    by_part = {r.part_id: r for r in service.journal.query(limit=10).items}
    assert {part: (r.recipe, r.recipe_version) for part, r in by_part.items()} == {
        "B-0001": ("board-b", "2"), "A-0001": ("board-a", "1"), "X-1": ("board-a", "1"),
        "B-9001": ("board-a", "1"), "B-0002": ("board-b", "2")}
    who = "part id {} (PartId from the PLC) matching its part_id_pattern"
    assert audited[1:] == [
        (who.format("B-0001"), "board-a version 1", "board-b version 2", "switched"),
        (who.format("A-0001"), "board-b version 2", "board-a version 1", "switched"),
        (who.format("B-0002"), "board-a version 1", "board-b version 2", "switched")]


@pytest.mark.slow
def test_recipe_chosen_by_the_code_read_from_the_board(tmp_path):
    from inspector.service import Service, ServiceConfig
    from line_helpers import drop_board, drop_coded_board, wait_for

    recipes = tmp_path / "recipes"
    pattern_recipes(recipes)
    folder = tmp_path / "incoming"
    folder.mkdir()
    drop_coded_board(folder, "first", "B-0042", age_s=120)
    drop_board(folder, "second")  # no code: no id, board-b stays
    service = Service(ServiceConfig(source=str(folder), data_dir=tmp_path / "data", http=None, recipes=recipes,
                                    recipe="board-a", recipe_by_part_id=True))
    service.start()
    try:
        wait_for(lambda: service.journal.count() == 2, 60, "two records", interval=0.05)
    finally:
        service.stop()
    by_file = {r.frame_file: r for r in service.journal.query().items}
    coded, plain = by_file["first_test.png"], by_file["second_test.jpg"]
    assert (coded.part_id, coded.recipe, coded.verdict) == ("B-0042", "board-b", "OK")
    assert (plain.part_id, plain.recipe, plain.verdict) == (None, "board-b", "OK")  # board-b ignores every defect
    no_match = [alarm for alarm in service.recent_alarms if alarm.kind == "recipe_no_match"]
    assert len(no_match) == 1 and "no id" in no_match[0].message
