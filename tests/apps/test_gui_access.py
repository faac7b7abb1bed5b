"""Engineer access and the audit trail of the operator window: PINs stored and checked only as hashes,
operators refused engineer actions with a clear message, a bounded unlock that can be ended at once, and
every threshold, recipe and model change written to the service's audit trail (who, when, old -> new)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gui.access import (
    LOCKOUT_S,
    MAX_FAILURES,
    AccessDenied,
    EngineerAccess,
    engineers_problem,
    hash_pin,
    main as access_main,
    verify_secret,
)
from gui.settings import load_settings
from inspector.service.audit import AuditLog
from inspector.service.auth import hash_token
from test_gui import ENGINEER, PIN, WAIT_MS, BoardSource, engineer_hash, open_window, shipped_model, unlock  # noqa: F401
from test_gui_recipes import recipes, write_recipe  # noqa: F401 - fixture


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_pins_are_salted_scrypt_hashes_and_service_token_hashes_work_too():
    first, second = hash_pin("2468"), hash_pin("2468")
    assert first != second and first.startswith("scrypt:") and "2468" not in first  # salted
    assert verify_secret("2468", first) and not verify_secret("2469", first)
    token = "a-random-token-of-some-length"
    assert verify_secret(token, hash_token(token)) and not verify_secret("guess", hash_token(token))
    with pytest.raises(ValueError, match="at least 4"):
        hash_pin("12")
    assert engineers_problem({"anna": first, "ops": hash_token(token)}) is None
    assert "engineers: bob" in engineers_problem({"bob": "2468"})  # a PIN in clear is refused, by name


def test_unlock_is_bounded_can_be_locked_and_guessing_is_slowed():
    clock = Clock()
    access = EngineerAccess({"anna": hash_pin("2468")}, unlock_s=600, clock=clock)
    assert not access.unlocked
    with pytest.raises(AccessDenied, match="wrong name or PIN"):
        access.unlock("anna", "1111")
    with pytest.raises(AccessDenied, match="wrong name or PIN"):
        access.unlock("nobody", "2468")
    assert access.unlock("anna", "2468") == "anna" and access.unlocked
    clock.now += 599
    assert access.unlocked and access.remaining_s() == pytest.approx(1)
    clock.now += 2
    assert not access.unlocked and access.engineer is None  # time is up
    access.unlock("anna", "2468")
    access.lock()
    assert not access.unlocked
    for _ in range(MAX_FAILURES - 1):
        with pytest.raises(AccessDenied):
            access.unlock("anna", "0000")
    with pytest.raises(AccessDenied, match="refused for"):
        access.unlock("anna", "0000")
    with pytest.raises(AccessDenied, match="too many wrong PINs"):
        access.unlock("anna", "2468")  # even the right PIN, until the lockout ends
    clock.now += LOCKOUT_S
    assert access.unlock("anna", "2468") == "anna"
    with pytest.raises(AccessDenied, match="no engineer PIN is set"):
        EngineerAccess({}, 600, clock).unlock("anna", "2468")


def test_set_pin_command_stores_only_the_hash(tmp_path, monkeypatch, capsys):
    config = tmp_path / "gui.json"
    answers = iter(["975310", "975310"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert access_main(["lena", "--config", str(config)]) == 0
    stored = load_settings(config)[0].engineers["lena"]
    assert verify_secret("975310", stored) and "975310" not in config.read_text()
    answers = iter(["1234", "4321"])
    assert access_main(["lena", "--config", str(config)]) == 2  # the two differ: nothing changed
    assert load_settings(config)[0].engineers["lena"] == stored


def audit_entries(window) -> list:
    """The window's audit trail, oldest first, read the way the service's /audit reads it."""
    log = AuditLog(window.settings.audit_db)
    try:
        return list(reversed(log.entries(limit=500)[1]))
    finally:
        log.close()


def test_operators_are_refused_engineer_actions_and_engineer_changes_are_audited(
        qtbot, open_window, recipes, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[0], fps=10.0))
    window.set_recipes_folder(str(recipes))
    qtbot.waitUntil(lambda: window.model is not None and window.current is not None, timeout=WAIT_MS)
    assert window.access_label.text().startswith("Operator")
    assert not window.threshold_panel.isEnabled() and not window.template_action.isEnabled()

    # locked: thresholds, recipe, model, review save are refused, nothing changes
    before = window.inference.options
    window.threshold_panel.global_box.setValue(0.9)
    assert window.inference.options is before and window.thresholds.global_threshold != 0.9
    assert window.threshold_panel.global_box.value() == pytest.approx(before.thresholds.global_threshold, abs=5e-3)
    assert "an engineer must log in" in window.message_banner.text()
    assert not window.select_recipe("board-a") and window.recipe is None
    window.select_model(str(tmp_path))
    assert window.save_review() is None

    # a wrong PIN: refused with a clear message, recorded without the PIN
    assert not window.unlock_engineer(ENGINEER, "1357")
    assert "Engineer login refused: wrong name or PIN" in window.message_banner.text()
    assert not window.access.unlocked

    unlock(window)
    assert window.threshold_panel.isEnabled() and window.access_label.text().startswith(f"Engineer: {ENGINEER}")
    old_thresholds = window.thresholds.to_dict()
    window.threshold_panel.global_box.setValue(0.7)
    window.threshold_panel.global_box.setValue(0.8)  # one burst of changes: one entry once it settles
    qtbot.waitUntil(lambda: any(e.action == "change thresholds" for e in audit_entries(window)), timeout=WAIT_MS)
    assert window.select_recipe("board-a")
    qtbot.waitUntil(lambda: any(e.action == "select recipe" for e in audit_entries(window)), timeout=WAIT_MS)

    window.lock_engineer()
    assert not window.access.unlocked and not window.threshold_panel.isEnabled()
    window.threshold_panel.global_box.setValue(0.2)
    assert window.thresholds.global_threshold == 0.3  # board-a's, unchanged while locked
    window.close()

    entries = audit_entries(window)
    by_action = {}
    for entry in entries:
        by_action.setdefault(entry.action, []).append(entry)
    refused_login, login = by_action["engineer login"]
    assert refused_login.who == ENGINEER and refused_login.outcome.startswith("refused: wrong name or PIN")
    assert login.outcome.startswith("for 15 min") and login.role == "engineer"
    (thresholds,) = by_action["change thresholds"]
    assert thresholds.who == ENGINEER and thresholds.role == "engineer" and thresholds.at > 0
    assert json.loads(thresholds.old) == old_thresholds and json.loads(thresholds.new)["global"] == 0.8
    (recipe,) = by_action["select recipe"]
    assert (recipe.who, recipe.old, recipe.new, recipe.outcome) == (ENGINEER, None, "board-a version 3", "switched")
    assert by_action["engineer logout"][0].who == ENGINEER
    assert "change thresholds" not in [e.action for e in entries[entries.index(by_action["engineer logout"][0]):]]
    # the service's export reads them; the PIN is nowhere: not in the trail, the settings or the log
    exported = AuditLog(window.settings.audit_db)
    try:
        assert "board-a version 3" in exported.export_csv()
    finally:
        exported.close()
    for text in (Path(window.settings.audit_db).read_bytes().decode("latin-1"), window.config_path.read_text(),
                 caplog.text):
        assert PIN not in text and "1357" not in text


def test_a_model_change_is_audited_and_an_unlock_ends_by_itself(qtbot, open_window, shipped_model, tmp_path):
    import shutil

    other = tmp_path / "other-package"
    shutil.copytree(shipped_model, other)
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[0], fps=10.0))
    qtbot.waitUntil(lambda: window.model is not None, timeout=WAIT_MS)
    clock = Clock()
    window.access.clock = clock
    unlock(window)
    window.select_model(str(other))
    qtbot.waitUntil(lambda: Path(window.model.path).resolve() == other.resolve(), timeout=WAIT_MS)
    (entry,) = [e for e in audit_entries(window) if e.action == "select model"]
    assert entry.who == ENGINEER and entry.old.startswith(str(shipped_model)) and entry.new.startswith(str(other))
    assert entry.outcome == "loaded"

    clock.now += window.settings.engineer_unlock_minutes * 60 + 1  # the session's time is up
    qtbot.waitUntil(lambda: window.access_label.text().startswith("Operator"), timeout=WAIT_MS)
    assert not window.threshold_panel.isEnabled()
    window.select_model(str(shipped_model))
    assert "an engineer must log in" in window.message_banner.text()


def test_no_engineer_login_without_a_writable_audit_trail(qtbot, open_window, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audit trail's folder should be")
    window = open_window("fake-camera", source_factory=lambda spec: BoardSource(boards=[0], fps=10.0))
    window.settings.audit_db = str(blocker / "audit.sqlite3")
    assert not window.unlock_engineer(ENGINEER, PIN)
    text = window.message_banner.text()
    assert "Engineer login refused" in text and str(blocker / "audit.sqlite3") in text and "audit_db" in text
    assert not window.access.unlocked and not window.threshold_panel.isEnabled()

    window.settings.audit_db = str(tmp_path / "new" / "folder" / "audit.sqlite3")  # created when missing
    unlock(window)
    assert [e.action for e in audit_entries(window)] == ["engineer login"]
