"""The PLC handshake (inspector/service/plc/) driven by a real asyncua client, against the shipped model.

- 100 triggered parts through a running `inspector serve --opcua` (a subprocess on the demo boards): each
  gives exactly one record with the PLC's PartId and the verdict the PLC saw (NG: every demo board has
  labeled defects);
- in-process services on a hot folder: OK on a golden board, Ack clears ResultValid, a missing Ack times
  out, a trigger while busy or before the Ack is refused, an empty folder gives an ERROR part on the capture
  timeout. No sleeps as synchronisation: every wait is for a condition the client reads.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("asyncua.sync")

from inspector.service import Service, ServiceConfig  # noqa: E402
from line_helpers import Plc, drop_board, drop_coded_board, free_port, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def records(data_dir: Path) -> list[sqlite3.Row]:
    connection = sqlite3.connect(data_dir / "records.sqlite3")
    connection.row_factory = sqlite3.Row
    try:
        return connection.execute("SELECT * FROM records ORDER BY seq").fetchall()
    finally:
        connection.close()


# ------------------------------------------------------------------------------ a running `inspector serve`

@pytest.mark.slow
def test_100_triggered_parts_through_inspector_serve(tmp_path):
    port = free_port()
    data_dir = tmp_path / "data"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "serve", "--source", "demo", "--http", "", "--data-dir", str(data_dir),
         "--opcua", f"opc.tcp://127.0.0.1:{port}", "--line", "line1"],
        cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for text in process.stdout:
            if "running" in text:
                break
        else:
            pytest.fail(f"inspector serve exited with {process.wait()} before it ran")
        plc = Plc(f"opc.tcp://127.0.0.1:{port}")
        seen = {}
        try:
            for number in range(100):
                part_id = f"SN-{number:05d}"
                seen[part_id] = plc.inspect(part_id)
            assert plc.read("TriggersRejected") == 0
        finally:
            plc.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    rows = records(data_dir)
    assert [row["part_id"] for row in rows] == list(seen)  # exactly one record per part, in order
    for row in rows:
        verdict, count = seen[row["part_id"]]
        assert row["verdict"] == verdict == "NG"  # every demo board has labeled defects
        assert row["n_defects"] == count > 0
        assert row["error"] is None


# ------------------------------------------------------------------------------ in-process, hot folder

@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """One service on a hot folder with short timeouts, and a PLC client on it."""
    root = tmp_path_factory.mktemp("plc")
    folder = root / "incoming"
    folder.mkdir()
    port = free_port()
    config = ServiceConfig(source=str(folder), data_dir=root / "data", http=None, line="line1",
                           opcua=f"opc.tcp://127.0.0.1:{port}", capture_timeout_s=1.0, ack_timeout_s=3.0)
    service = Service(config)
    service.start()
    plc = Plc(f"opc.tcp://127.0.0.1:{port}")
    try:
        yield service, plc, folder
    finally:
        plc.close()
        service.stop()


def alarms_of(service, kind: str) -> list:
    return [alarm for alarm in service.recent_alarms if alarm.kind == kind]


@pytest.mark.slow
def test_golden_board_is_ok_and_ack_clears_result(line):
    service, plc, folder = line
    drop_board(folder, "golden1", golden=True)
    assert plc.inspect("GOLD-1") == ("OK", 0)
    drop_board(folder, "defective1")
    verdict, count = plc.inspect("BAD-1")
    assert verdict == "NG" and count > 0
    page = service.journal.query(part_id="GOLD-1")
    assert page.total == 1 and page.items[0].verdict == "OK" and page.items[0].frame_file == "golden1_test.jpg"
    assert page.items[0].package_id == service.package_id


@pytest.mark.slow
def test_trigger_while_busy_is_refused_and_the_part_goes_on(line):
    service, plc, folder = line
    rejected = plc.read("TriggersRejected")
    before = service.journal.count()
    plc.trigger("FIRST")  # no file yet: the station stays Busy waiting for the part's frame
    plc.wait("Busy", True)
    plc.trigger("SECOND")
    plc.wait("TriggersRejected", rejected + 1)
    assert plc.read("Trigger") is False  # the command was read and cleared
    assert plc.read("Busy") is True
    drop_board(folder, "busy1", golden=True)
    plc.wait("ResultValid", True)
    assert (plc.read("ResultPartId"), plc.read("Verdict")) == ("FIRST", "OK")
    # A trigger before the Ack is refused too: the result has not been taken yet.
    plc.trigger("THIRD")
    plc.wait("TriggersRejected", rejected + 2)
    assert plc.read("ResultValid") is True and plc.read("ResultPartId") == "FIRST"
    plc.write("Ack", True)
    plc.wait("Ready", True)
    assert service.journal.count() == before + 1
    assert service.journal.query(part_id="SECOND").total == 0
    wait_for(lambda: len(alarms_of(service, "plc_trigger_rejected")) >= 2, 5, "two plc_trigger_rejected alarms")


@pytest.mark.slow
def test_capture_timeout_gives_an_error_part_and_an_alarm(line):
    service, plc, folder = line
    started = time.monotonic()
    verdict, count = plc.inspect("NOFRAME-1")
    waited = time.monotonic() - started
    assert (verdict, count) == ("ERROR", 0)
    assert 1.0 <= waited < 10.0
    record = service.journal.query(part_id="NOFRAME-1").items[0]
    assert record.verdict == "ERROR" and record.error.startswith("CaptureTimeout")
    assert alarms_of(service, "capture_timeout")
    # The station works on: the next board is judged normally.
    drop_board(folder, "after_timeout", golden=True)
    assert plc.inspect("AFTER-1") == ("OK", 0)


@pytest.mark.slow
def test_missing_ack_times_out_and_the_station_is_ready_again(line):
    service, plc, folder = line
    drop_board(folder, "noack1", golden=True)
    plc.inspect("NOACK-1", ack=False)
    result_seen = time.monotonic()
    plc.wait("ResultValid", False, timeout=30)  # cleared by the service, not by an Ack
    assert time.monotonic() - result_seen >= 2.0  # ack_timeout_s=3 counted from ResultValid
    assert plc.read("Ready") is True
    wait_for(lambda: alarms_of(service, "plc_ack_missing"), 5, "the plc_ack_missing alarm")
    assert "NOACK-1" in plc.read("LastAlarm")
    drop_board(folder, "noack2", golden=True)
    assert plc.inspect("NOACK-2") == ("OK", 0)


@pytest.mark.slow
def test_heartbeat_counts(line):
    _, plc, _ = line
    first = plc.read("Heartbeat")
    plc.wait("Heartbeat", first + 2, timeout=10)


# ------------------------------------------------------------------------------ Modbus TCP

@pytest.mark.slow
def test_modbus_handshake_with_a_pymodbus_client(tmp_path):
    from pymodbus.client import ModbusTcpClient

    from inspector.service.plc.modbus import registers_to_text, text_to_registers

    port = free_port()
    config = ServiceConfig(source="demo", data_dir=tmp_path / "data", http=None, line="line1",
                           modbus=f"127.0.0.1:{port}")
    service = Service(config)
    service.start()
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
    assert client.connect()

    def inputs():
        return client.read_discrete_inputs(0, count=3).bits[:3]  # Busy, ResultValid, Ready

    try:
        assert inputs() == [False, False, True]
        seen = {}
        for number in range(10):
            part_id = f"MB-{number:04d}"
            assert not client.write_registers(0, text_to_registers(part_id, 16)).isError()
            assert not client.write_coil(0, True).isError()
            wait_for(lambda: inputs()[1], 30, "ResultValid")
            registers = client.read_input_registers(0, count=46).registers
            assert registers_to_text(registers[6:22]) == part_id
            seen[part_id] = ({1: "OK", 2: "NG", 3: "ERROR"}[registers[0]], registers[1])
            if number == 0:  # a trigger before the Ack is refused and counted
                client.write_coil(0, True)
                wait_for(lambda: client.read_input_registers(4, count=1).registers[0] == 1, 10, "TriggersRejected")
                assert client.read_coils(0, count=1).bits[0] is False  # the command coil was cleared
            client.write_coil(1, True)
            wait_for(lambda: inputs() == [False, False, True], 10, "Ready after the Ack")
        heartbeat = client.read_input_registers(2, count=2).registers
        wait_for(lambda: client.read_input_registers(2, count=2).registers != heartbeat, 5, "the heartbeat")
    finally:
        client.close()
        service.stop()
    page = service.journal.query(limit=100)
    by_part = {record.part_id: record for record in page.items}
    assert page.total == 10 and set(by_part) == set(seen)
    for part_id, (verdict, count) in seen.items():
        assert by_part[part_id].verdict == verdict == "NG" and len(by_part[part_id].defects) == count


@pytest.mark.slow
def test_results_by_part_id_over_http(line):
    from fastapi.testclient import TestClient

    from inspector.service.api import create_app

    service, plc, folder = line
    drop_board(folder, "trace1")
    verdict, count = plc.inspect("TRACE-0001")
    token = "plc-test-token-0123456789"
    with TestClient(create_app(service, token)) as http:
        answer = http.get("/results", params={"part_id": "TRACE-0001"}, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert page["total"] == 1
        item = page["items"][0]
        assert (item["part_id"], item["verdict"], len(item["defects"])) == ("TRACE-0001", verdict, count)
        assert item["package_id"] == service.package_id and item["model_name"] == service.model_name
        assert http.get("/results", params={"part_id": "NO-SUCH-BOARD"},
                        headers={"Authorization": f"Bearer {token}"}).json()["total"] == 0


@pytest.mark.slow
def test_serial_read_from_a_code_without_a_plc(tmp_path):
    """Data Matrix (most PCB serials) and QR codes by the default serial_code_formats; no code: no part id."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    drop_coded_board(folder, "qr", "SN-QR-0042")
    drop_coded_board(folder, "dm", "SN-DM-0043", code_format="DataMatrix")
    drop_board(folder, "plain")
    service = Service(ServiceConfig(source=str(folder), data_dir=tmp_path / "data", http=None,
                                    read_serial_code=True))
    service.start()
    try:
        wait_for(lambda: service.journal.count() == 3, 60, "three records", interval=0.05)
    finally:
        service.stop()
    by_file = {record.frame_file: record for record in service.journal.query().items}
    assert by_file["qr_test.png"].part_id == "SN-QR-0042"
    assert by_file["dm_test.png"].part_id == "SN-DM-0043"
    assert by_file["plain_test.jpg"].part_id is None
    assert service.journal.query(part_id="SN-DM-0043").total == 1


def test_result_timeout_answers_error_and_a_late_verdict_is_not_shown():
    """A detector that hangs: the PLC gets ERROR after result_timeout_s; the late verdict stays off the PLC."""
    from inspector.service.plc import Handshake, HandshakeTimings

    requests, alarms, seen = [], [], []
    handshake = Handshake(requests.append, lambda kind, level, message, **detail: alarms.append(kind),
                          HandshakeTimings(ack_timeout_s=30.0, result_timeout_s=0.3))
    handshake.add_listener(seen.append)
    handshake.start()
    try:
        assert handshake.trigger("HANG-1") is True
        wait_for(lambda: handshake.outputs.result_valid, 10, "the result timeout")
        assert (handshake.outputs.verdict, handshake.outputs.part_id) == ("ERROR", "HANG-1")
        wait_for(lambda: "plc_result_timeout" in alarms, 5, "the alarm")
        assert handshake.result(requests[0], "OK", 0) is False  # too late: the PLC keeps ERROR
        assert handshake.outputs.verdict == "ERROR"
        handshake.ack()
        assert handshake.outputs.ready and not handshake.outputs.result_valid
        # Every snapshot a front end got had the verdict in place before ResultValid rose.
        assert all(snapshot.verdict for snapshot in seen if snapshot.result_valid)
    finally:
        handshake.stop()


@pytest.mark.slow
def test_a_file_recorded_before_a_kill_takes_no_part_after_the_restart(tmp_path):
    """kill -9 between a part's commit and its file's acknowledgement: after the restart that file comes back
    from the hot folder. It was judged: it is acknowledged without a second record, and the next trigger's
    part takes the next file (it must not swallow the trigger and leave the PLC waiting for its verdict)."""
    from inspector.capture import Ledger
    from inspector.service.records import Journal, Record, new_record_id

    folder = tmp_path / "incoming"
    folder.mkdir()
    drop_board(folder, "a_judged")  # older: read first
    drop_board(folder, "b_next", golden=True)
    judged = folder / "a_judged_test.jpg"
    journal = Journal(tmp_path / "data" / "records.sqlite3")  # what the killed run had committed
    journal.append(Record(record_id=new_record_id(), line="line1", source=str(folder), frame_id=str(judged),
                          frame_file=judged.name, file_version=f"{judged.stat().st_size}:{judged.stat().st_mtime_ns}",
                          captured_at=time.time() - 5, verdict="NG", defects=[], model_name="m", package_id="p",
                          latency_ms=30.0, part_id="BEFORE-KILL"))
    journal.close()
    port = free_port()
    service = Service(ServiceConfig(source=str(folder), data_dir=tmp_path / "data", http=None, line="line1",
                                    opcua=f"opc.tcp://127.0.0.1:{port}", capture_timeout_s=5.0))
    service.start()
    plc = Plc(f"opc.tcp://127.0.0.1:{port}")
    try:
        assert plc.inspect("AFTER-RESTART") == ("OK", 0)  # b_next is the golden board
    finally:
        plc.close()
        service.stop()
    rows = [(row["part_id"], row["frame_file"], row["verdict"]) for row in records(tmp_path / "data")]
    assert rows == [("BEFORE-KILL", "a_judged_test.jpg", "NG"), ("AFTER-RESTART", "b_next_test.jpg", "OK")]
    ledger = Ledger(tmp_path / "data" / "source" / "hotfolder-ledger.sqlite3")
    try:
        done = {name for name, _, _, status, _ in ledger.entries() if status == "done"}
    finally:
        ledger.close()
    assert done == {"a_judged_test.jpg", "b_next_test.jpg"}
