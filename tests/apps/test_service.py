"""`inspector serve`: the pipeline, its faults and its HTTP API, against a real Mosquitto broker and a real
PostgreSQL server started here as subprocesses (on free ports, in temporary directories).

The tiny test package (the session fixture in tests/conftest.py) stands in for the real model: detection
quality does not matter here, only that every frame becomes exactly one record that reaches every sink.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import functools
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi import Request  # resolved at module level: FastAPI reads the annotation of a test's endpoint


from inspector.capture import CorruptFrame, Frame, FrameSource, Ledger, SourceEnded, SourceError
from inspector.service import ConfigError, Service, ServiceConfig, ServiceError, load_config
from inspector.service.frame_queue import FrameQueue
from inspector.service.records import ALARMS, RECORDS
from line_helpers import free_port
from line_helpers import wait_for as shared_wait_for

TOKEN = "test-token-0123456789"
SECRET = "hunter2-Secret"  # a password that must never be shown
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------- helpers

wait_for = functools.partial(shared_wait_for, interval=0.05)  # each condition asks the service: poll gently


def board_pairs(boards: Path) -> list[tuple[Path, Path]]:
    tests = sorted(boards.rglob("*_test.jpg"))
    return [(test, test.with_name(test.name.replace("_test", "_temp"))) for test in tests]


def fill_hot_folder(folder: Path, boards: Path, start: int, count: int) -> list[str]:
    """Copy ``count`` DeepPCB-named pairs into ``folder`` as <index>_test.jpg + <index>_temp.jpg (template
    first, old modification times kept: the hot folder takes them at once). Returns the tested files' names."""
    folder.mkdir(parents=True, exist_ok=True)
    pairs = board_pairs(boards)
    names = []
    for index in range(start, start + count):
        test, temp = pairs[index % len(pairs)]
        shutil.copy2(temp, folder / f"{index:05d}_temp.jpg")
        shutil.copy2(test, folder / f"{index:05d}_test.jpg")
        names.append(f"{index:05d}_test.jpg")
    return names


def make_config(tmp_path: Path, source, **values) -> ServiceConfig:
    values.setdefault("http", None)
    return ServiceConfig(source=str(source), data_dir=tmp_path / "data", token=TOKEN, **values)


def journal_rows(path: Path, sql: str, params=()):
    connection = sqlite3.connect(path, timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


class Mosquitto:
    """A real broker on a free port; stop() and start() again keep its port and persistence file."""

    def __init__(self, directory: Path):
        self.binary = shutil.which("mosquitto") or next(iter(glob.glob("/usr/sbin/mosquitto")), None)
        self.directory = directory
        self.port = free_port()
        self.process = None
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {directory}/"]
        if os.geteuid() == 0:
            lines.append("user root")  # keep root, so it can write its persistence file here
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=open(self.directory / "mosquitto.log", "ab"))
        wait_for(self._answers, 10, "mosquitto to listen")

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # saves its persistence (queued messages of persistent sessions)
            self.process.wait(timeout=10)
        self.process = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


class Postgres:
    """A real PostgreSQL server (initdb + postgres) on a free port in a temporary directory.

    PostgreSQL refuses to run as root: as root the server runs as the 'postgres' system user (created by
    the postgresql package), in a directory made under /tmp that it owns."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        found = shutil.which("postgres") or (bins[-1] if bins else None)
        self.bin = Path(os.path.realpath(found)).parent if found else None
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                self.user = None
        self.directory = Path(tempfile.mkdtemp(prefix="inspector-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.process = None
        self.url_options = ""  # e.g. "?sslmode=verify-full&sslrootcert=..." once the server takes TLS only

    def missing(self) -> str | None:
        if self.bin is None or not (self.bin / "initdb").exists():
            return "PostgreSQL binaries (initdb, postgres) not installed: `make sysdeps` installs them"
        if os.geteuid() == 0 and self.user is None:
            return "running as root, and there is no 'postgres' user to run the server as"
        return None

    def _as_user(self) -> dict:
        return {} if self.user is None else {"user": self.user.pw_uid, "group": self.user.pw_gid}

    def init(self) -> None:
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "inspector",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, **self._as_user())

    def start(self, *settings: str) -> None:
        """``settings``: more ``name=value`` server settings (each passed as -c)."""
        self.process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", *(arg for s in settings for arg in ("-c", s))],
            stdout=subprocess.DEVNULL, stderr=open(self.directory / "postgres.log", "ab"), **self._as_user())
        wait_for(self._answers, 30, "PostgreSQL to accept connections", interval=0.1)

    def _answers(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url + self.url_options, connect_timeout=1).close()
            return True
        except psycopg.Error:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnects clients at once
            self.process.wait(timeout=30)
        self.process = None

    def rows(self, sql: str, params=()):
        import psycopg

        with psycopg.connect(self.url) as connection:
            return connection.execute(sql, params).fetchall()

    def count(self) -> int:
        """Rows of the service's table; 0 before the service has created it."""
        import psycopg

        try:
            return self.rows("SELECT count(*) FROM inspection_records")[0][0]
        except psycopg.errors.UndefinedTable:
            return 0

    @property
    def url(self) -> str:
        return f"postgresql://inspector@127.0.0.1:{self.port}/postgres"

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Subscriber:
    """An MQTT client collecting every message of ``inspector/<line>/#`` (persistent session, QoS 1)."""

    def __init__(self, port: int, line: str, client_id: str):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict | str]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = lambda client, *_: client.subscribe(f"inspector/{line}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the test subscriber could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        payload = message.payload.decode()
        self.messages.append((message.topic, json.loads(payload) if payload.startswith("{") else payload))

    def payloads(self, suffix: str) -> list[dict]:
        return [payload for topic, payload in list(self.messages) if topic.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class FlakyCamera(FrameSource):
    """A camera that can be unplugged and plugged back, and can send one garbage frame (the hardware part
    of a camera test); ReconnectingSource and the service around it are the real ones."""

    kind = "camera"
    droppable = True

    def __init__(self, image: np.ndarray, template: np.ndarray, fps: float = 25.0, spec: str = "flaky-cam"):
        self.spec = spec
        self.image, self.template, self.period = image, template, 1.0 / fps
        self.unplugged = threading.Event()
        self.corrupt_next = threading.Event()
        self.open_attempts = 0
        self._open = False
        self._sequence = 0

    def open(self) -> None:
        self.open_attempts += 1
        if self.unplugged.is_set():
            raise SourceError("camera flaky-cam: cannot open (no such device)")
        self._open = True

    def read(self) -> Frame | None:
        if not self._open:
            raise SourceError("camera flaky-cam: not open")
        if self.unplugged.is_set():
            raise SourceError(f"camera {self.spec}: read failed (device unplugged)")
        if self.corrupt_next.is_set():
            self.corrupt_next.clear()
            raise CorruptFrame("camera flaky-cam: frame could not be decoded")
        time.sleep(self.period)
        self._sequence += 1
        return Frame(image=self.image, frame_id=f"flaky-cam:{self._sequence}", sequence=self._sequence,
                     source=self.spec, captured_at=time.time(), captured_monotonic=time.monotonic(),
                     template=self.template)

    def close(self) -> None:
        self._open = False


class BurstSource(FrameSource):
    """Delivers ``count`` frames as fast as it can, then ends: inference must fall behind."""

    kind = "video"
    droppable = True

    def __init__(self, image: np.ndarray, template: np.ndarray, count: int):
        self.spec, self.image, self.template, self.count = "burst", image, template, count
        self.produced = 0

    def open(self) -> None:
        pass

    def read(self) -> Frame | None:
        if self.produced == self.count:
            raise SourceEnded("burst: ended")
        self.produced += 1
        return Frame(image=self.image, frame_id=f"burst:{self.produced}", sequence=self.produced, source=self.spec,
                     captured_at=time.time(), captured_monotonic=time.monotonic(), template=self.template)

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tiny(tiny_package):
    return tiny_package  # tests/conftest.py: trained and exported once per session


@pytest.fixture(scope="module")
def board(tiny) -> tuple[np.ndarray, np.ndarray]:
    test, temp = board_pairs(tiny.data)[0]
    return cv2.imread(str(test)), cv2.imread(str(temp))


@pytest.fixture()
def broker(tmp_path):
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    if mosquitto.binary is None:
        pytest.skip("mosquitto not installed: `make sysdeps` installs it")
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture()
def postgres():
    server = Postgres()
    reason = server.missing()
    if reason:
        shutil.rmtree(server.directory, ignore_errors=True)
        pytest.skip(reason)
    server.init()
    server.start()
    yield server
    server.remove()


def metric(service: Service, name: str, **labels) -> float:
    value = service.metrics.registry.get_sample_value(name, {"line": service.line, **labels})
    return 0.0 if value is None else value


# ----------------------------------------------------------------------------------------------- configuration

def test_config_layers_file_then_environment_then_command_line(tmp_path):
    file = tmp_path / "inspector.yaml"
    file.write_text(f"source: demo\nline: file-line\nqueue_size: 4\ntoken: {TOKEN}\nhttp: 127.0.0.1:9000\n")
    config = load_config(file, {"line": "cli-line"}, environ={"INSPECTOR_QUEUE_SIZE": "16",
                                                              "INSPECTOR_LINE": "env-line", "INSPECTOR_OTHER": "x"})
    assert (config.line, config.queue_size, config.http_port, config.source) == ("cli-line", 16, 9000, "demo")
    assert load_config(file, environ={"INSPECTOR_HTTP": ""}).http is None  # empty: no HTTP


def test_unknown_inspector_variables_a_typo_is_refused_with_a_suggestion_others_warned(tmp_path, caplog):
    file = tmp_path / "inspector.yaml"
    file.write_text("source: demo\nhttp: ''\n")
    with pytest.raises(ConfigError, match="environment INSPECTOR_MQTTT: no such setting; did you mean INSPECTOR_MQTT"):
        load_config(file, environ={"INSPECTOR_MQTTT": "mqtt://broker"})
    assert load_config(file, environ={"INSPECTOR_GUI_CONFIG": "/x.json"}).source == "demo"  # another tool's
    assert "INSPECTOR_GUI_CONFIG: not a setting of inspector serve, ignored" in caplog.text
    file.write_text("source: demo\nhttp: ''\nevidense: /srv/evidence\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) evidense \(did you mean evidence\?\)"):
        load_config(file, environ={})


@pytest.mark.parametrize("text, environ, expected", [
    ("line: a\n", {}, "config field 'source': required; set source: in the config file, INSPECTOR_SOURCE"),
    ("source: demo\nline: 'bad line/#'\nhttp: ''\n", {}, "config field 'line' from"),
    ("source: demo\nqueue_sise: 3\n", {}, "unknown setting(s) queue_sise"),
    ("source: demo\nhttp: ''\n", {"INSPECTOR_QUEUE_SIZE": "many"}, "'queue_size' from environment INSPECTOR_QUEUE_SIZE"),
    ("source: demo\nhttp: ''\ndb: mysql://x/y\n", {}, "config field 'db'"),
    ("source: demo\nhttp: ''\nmqtt: mqtt://:1883\n", {}, "config field 'mqtt'"),
    ("source: demo\n", {}, "token: the HTTP API needs a bearer token"),
    ("source: demo\nhttp: ''\ntemplate: /no/such/golden.jpg\n", {}, "template: /no/such/golden.jpg is not a file"),
    ("- source\n", {}, "expected a mapping"),
])
def test_bad_configuration_names_the_field(tmp_path, text, environ, expected):
    file = tmp_path / "inspector.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(file, environ=environ)
    assert expected in str(error.value)


def test_bad_model_package_is_a_clear_start_up_error(tmp_path, tiny, caplog):
    from inspector.service.run import serve

    broken = tmp_path / "broken-package"
    shutil.copytree(tiny.package, broken)
    (broken / "model_x86.nb").write_bytes(b"not a model")
    base = {"source": "demo", "http": "", "data_dir": tmp_path / "data"}
    assert serve(None, {**base, "model": tmp_path / "no-such-package"}) == 2
    assert "model" in caplog.text and "no-such-package" in caplog.text
    caplog.clear()
    assert serve(None, {**base, "model": broken}) == 2
    assert "model_x86.nb" in caplog.text


def test_a_camera_source_without_template_is_refused_for_a_template_model(tmp_path, tiny, board):
    camera = FlakyCamera(*board)
    camera.template = None
    with pytest.raises(ServiceError, match="template: the model .* compares each frame with its golden template"):
        Service(make_config(tmp_path, "flaky", model=tiny.package), source=camera)


# ----------------------------------------------------------------------------------------------- the pipeline

def test_queue_drops_the_oldest_for_live_sources_and_waits_for_hot_folders():
    queue = FrameQueue(3)
    frames = [object() for _ in range(5)]
    dropped = [queue.put_dropping_oldest(frame) for frame in frames]
    assert dropped == [None, None, None, frames[0], frames[1]]
    assert [queue.get(0) for _ in range(3)] == frames[2:]
    stop = threading.Event()
    for frame in frames[:3]:
        assert queue.put_waiting(frame, stop)
    waiting = threading.Thread(target=lambda: queue.put_waiting(frames[3], stop))
    waiting.start()
    time.sleep(0.3)
    assert waiting.is_alive() and len(queue) == 3  # back-pressure, nothing dropped
    assert queue.get(0) is frames[0]
    waiting.join(timeout=5)
    assert [queue.get(0) for _ in range(3)] == frames[1:4]


def test_inference_falling_behind_drops_frames_and_counts_every_one(tmp_path, tiny, board, running):
    burst = BurstSource(*board, count=60)
    service = Service(make_config(tmp_path, "burst", model=tiny.package, queue_size=2), source=burst)
    running.append(service)
    service.start()
    wait_for(lambda: service.source_ended and len(service.queue) == 0 and service.journal.count()
             + metric(service, "inspector_frames_dropped_total") == 60, 60, "the burst to be inspected or dropped")
    recorded = [int(row[0].split(":")[1]) for row in journal_rows(service.config.records_path,
                                                                   "SELECT frame_id FROM records ORDER BY seq")]
    assert metric(service, "inspector_frames_dropped_total") > 0
    assert recorded == sorted(recorded) and recorded[-1] == 60  # the newest frames survive, in order


def test_hot_folder_every_file_once_with_evidence_and_api(tmp_path, tiny, running):
    from fastapi.testclient import TestClient

    from inspector.service.api import create_app

    folder = tmp_path / "incoming"
    names = fill_hot_folder(folder, tiny.data, 0, 12)
    (folder / "99999_test.jpg").write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")  # a corrupt scan
    (folder / "99999_temp.jpg").write_bytes((folder / "00000_temp.jpg").read_bytes())
    config = make_config(tmp_path, folder, model=tiny.package, score_threshold=0.0, evidence=tmp_path / "evidence",
                         evidence_max_files=3, queue_size=2)
    service = Service(config)
    running.append(service)
    service.start()
    wait_for(lambda: service.journal.count() == 13, 60, "13 records")
    rows = journal_rows(config.records_path, "SELECT frame_file, verdict, evidence, error FROM records ORDER BY seq")
    assert sorted(row[0] for row in rows) == sorted(names + ["99999_test.jpg"])
    judged = [row for row in rows if row[0] != "99999_test.jpg"]
    assert {row[1] for row in judged} == {"NG"}  # score threshold 0: every box counts
    corrupt = next(row for row in rows if row[0] == "99999_test.jpg")
    assert corrupt[1] == "ERROR" and "not a readable image" in corrupt[3]
    evidence = sorted(p.name for p in (tmp_path / "evidence").iterdir())
    assert evidence == sorted(row[2] for row in judged)[-3:]  # retention: the newest 3 NG frames are kept

    client = TestClient(create_app(service, TOKEN))
    assert client.get("/openapi.json").status_code == 401  # the schema, like everything but /health, needs the token
    assert client.get("/docs").status_code == client.get("/redoc").status_code == 404  # not served at all
    for path in client.get("/openapi.json", headers=AUTH).json()["paths"]:
        expected = 200 if path == "/health" else 401
        assert client.get(path).status_code == expected, path
        assert client.get(path, headers={"Authorization": "Bearer wrong-token-000000"}).status_code == expected
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["ready"] and health["camera"]["kind"] == "folder"
    page = client.get("/results", params={"limit": 5, "offset": 5}, headers=AUTH).json()
    assert page["total"] == 13 and len(page["items"]) == 5
    assert client.get("/results", params={"verdict": "ERROR"}, headers=AUTH).json()["total"] == 1
    assert client.get("/results", params={"verdikt": "NG"}, headers=AUTH).status_code == 422  # no silent typo
    twice = client.get("/results", params=[("part_id", "A1"), ("part_id", "B2")], headers=AUTH)  # not "the last"
    assert twice.status_code == 422 and "'part_id' given 2 times" in twice.text
    assert client.get("/results", params={"since": "1700000000"}, headers=AUTH).status_code == 422  # ISO 8601 only
    for endpoint in ("/results", "/stats"):  # years 0 and 10000 in UTC: refused with a message, not a 500
        for bound, moment in (("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:30:00-01:00")):
            answer = client.get(endpoint, params={bound: moment}, headers=AUTH)
            assert answer.status_code == 422 and "out of range" in answer.text, (endpoint, bound, answer.text)
        assert client.get(endpoint, params={"since": "0001-01-01T02:00:00+01:00"}, headers=AUTH).status_code == 200
    assert client.get("/results", params={"since": "2000-01-01T00:00:00Z", "until": "2000-01-02T00:00:00"},
                      headers=AUTH).json()["total"] == 0
    stats = client.get("/stats", headers=AUTH).json()
    assert (stats["total"], stats["ng"], stats["error"], stats["yield"]) == (13, 12, 1, 0.0)
    assert sum(stats["defects_per_class"].values()) == sum(len(i["defects"]) for i in
                                                           client.get("/results", headers=AUTH).json()["items"])
    image = client.get("/frames/latest.jpg", headers=AUTH)
    assert image.headers["content-type"] == "image/jpeg" and cv2.imdecode(
        np.frombuffer(image.content, np.uint8), cv2.IMREAD_COLOR).shape == (160, 160, 3)
    metrics = client.get("/metrics", headers=AUTH).text
    assert 'inspector_frames_total{line="line1",verdict="NG"} 12.0' in metrics
    assert "inspector_latency_seconds_bucket" in metrics and "inspector_camera_reconnects_total" in metrics


def test_unwritable_evidence_is_refused_at_start_and_alarmed_counted_and_degraded_mid_run(tmp_path, tiny, running):
    folder = tmp_path / "incoming"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # unwritable even for root, which ignores permission bits
    with pytest.raises(ServiceError, match="evidence: cannot write into .*a-file/evidence"):
        Service(make_config(tmp_path, folder, model=tiny.package, evidence=blocker / "evidence"))

    evidence = tmp_path / "evidence"
    fill_hot_folder(folder, tiny.data, 0, 2)
    config = make_config(tmp_path, folder, model=tiny.package, score_threshold=0.0, evidence=evidence)
    service = Service(config)  # score threshold 0: every board is NG and wants its evidence image
    running.append(service)
    service.start()
    wait_for(lambda: service.journal.count() == 2 and service.health()["status"] == "ok", 60, "2 records")
    shutil.rmtree(evidence)
    evidence.write_text("the directory was replaced by a file")  # e.g. a share that went read-only
    fill_hot_folder(folder, tiny.data, 2, 2)
    wait_for(lambda: service.journal.count() == 4, 60, "2 records while evidence cannot be written")
    health = service.health()
    assert health["status"] == "degraded" and health["evidence"]["ok"] is False
    assert str(evidence) in health["evidence"]["last_error"]
    assert metric(service, "inspector_evidence_failures_total") == 2
    assert [a.kind for a in service.recent_alarms].count("evidence_error") == 1  # once, not per board
    rows = journal_rows(config.records_path, "SELECT verdict, evidence FROM records ORDER BY seq")
    assert [verdict for verdict, _ in rows] == ["NG"] * 4 and [e is None for _, e in rows] == [False, False, True, True]

    evidence.unlink()
    evidence.mkdir()
    fill_hot_folder(folder, tiny.data, 4, 1)
    wait_for(lambda: service.journal.count() == 5, 60, "the record after the directory is back")
    health = service.health()
    assert health["status"] == "ok" and health["evidence"]["ok"] and len(list(evidence.iterdir())) == 1
    assert [a.kind for a in service.recent_alarms if a.kind.startswith("evidence")] == ["evidence_error",
                                                                                          "evidence_restored"]


def test_roles_are_enforced_on_every_endpoint_and_changes_are_audited(tmp_path, tiny, running):
    from fastapi import Depends
    from fastapi.testclient import TestClient

    from inspector.service.api import create_app
    from inspector.service.audit import AuditLog
    from inspector.service.auth import User, hash_token

    tokens = {role: f"{role}-token-0123456789abcdef" for role in ("operator", "engineer", "admin")}
    users_file = tmp_path / "users.yaml"
    users_file.write_text("users:\n" + "".join(f"  - {{name: {role[:3]}1, role: {role}, token_sha256: "
                                                  f"'{hash_token(token)}'}}\n" for role, token in tokens.items()))
    folder = tmp_path / "incoming"
    fill_hot_folder(folder, tiny.data, 0, 1)
    config = make_config(tmp_path, folder, model=tiny.package, users_file=users_file, score_threshold=0.3)
    service = Service(config)
    running.append(service)
    service.start()
    wait_for(lambda: service.journal.count() == 1, 60, "1 record")
    from inspector.service.auth import users_from_config

    app = create_app(service, users=users_from_config(config))  # no legacy token: the three users only
    threshold = {"value": 0.3}

    def set_threshold(request: Request, change: dict):  # what a settings endpoint does: says what it replaces
        request.state.audit_old, request.state.audit_target = threshold["value"], "score_threshold"
        threshold["value"] = change["value"]
        return threshold

    app.add_api_route("/settings/threshold", set_threshold, methods=["POST"],
                      dependencies=[Depends(app.state.authorized)])
    client = TestClient(app)
    as_role = {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}
    paths = client.get("/openapi.json", headers=as_role["operator"]).json()["paths"]
    assert {"/results", "/stats", "/metrics", "/audit", "/settings/threshold"} <= set(paths)
    for path, operations in paths.items():
        for method in operations:
            anonymous = client.request(method, path, json={})
            assert anonymous.status_code == (200 if path == "/health" else 401), (method, path)
    for path in ("/results", "/stats", "/metrics", "/frames/latest.jpg"):
        assert client.get(path, headers=as_role["operator"]).status_code == 200, path
    denied = client.post("/settings/threshold", json={"value": 0.5}, headers=as_role["operator"])
    assert denied.status_code == 403 and "needs the engineer role; ope1 is operator" in denied.text
    assert client.get("/audit", headers=as_role["engineer"]).status_code == 403
    assert client.post("/settings/threshold", json={"value": 0.5}, headers=as_role["engineer"]).status_code == 200

    entries = client.get("/audit", headers=as_role["admin"]).json()["items"]
    change = next(entry for entry in entries if entry["target"] == "score_threshold")
    assert (change["who"], change["role"], change["old"], change["outcome"]) == ("eng1", "engineer", "0.3", "200")
    assert json.loads(change["new"]) == {"value": 0.5} and change["action"] == "POST /settings/threshold"
    refused = [entry for entry in entries if entry["who"] == "ope1"]
    assert refused and refused[0]["outcome"] == "403"  # an attempt that was refused is on record too
    exported = client.get("/audit", params={"format": "csv"}, headers=as_role["admin"])
    assert exported.headers["content-type"].startswith("text/csv") and "eng1,engineer" in exported.text
    assert client.get("/results", headers={"Authorization": "Bearer not-a-user-token-000"}).status_code == 401

    # Durable: another handle on the file reads the entries; a setting changed between starts is recorded.
    audit = AuditLog(tmp_path / "data" / "audit.sqlite3")
    assert audit.entries()[0] == len(entries)
    audit.compare_settings({**service._audited_settings(), "score_threshold": 0.45})
    who, target, old, new = (lambda e: (e.who, e.target, e.old, e.new))(audit.entries(1)[1][0])
    assert (who, target, old, new) == ("configuration", "score_threshold", "0.3", "0.45")
    assert User("x", "engineer", hash_token("y" * 16)).may("operator") and not \
        User("x", "engineer", hash_token("y" * 16)).may("admin")


def test_a_dead_detector_process_is_replaced_and_inspection_goes_on(tmp_path, tiny, running):
    folder = tmp_path / "incoming"
    fill_hot_folder(folder, tiny.data, 0, 3)
    service = Service(make_config(tmp_path, folder, model=tiny.package))
    running.append(service)
    service.start()
    wait_for(lambda: service.journal.count() == 3, 60, "the first 3 records")
    first = service.detector.pid
    os.kill(first, signal.SIGKILL)  # what a crash inside the inference engine looks like from here
    # Dead before the next board comes: kill() only sends the signal, and a board arriving while the process
    # is still dying meets it mid-frame (an ERROR record; that case is the detector_crashed alarm's).
    wait_for(lambda: not service.detector._process.is_alive(), 10, "the killed detector process to be gone")
    fill_hot_folder(folder, tiny.data, 3, 3)
    wait_for(lambda: service.journal.count() == 6, 60, "3 more records after the crash")
    assert service.detector.pid != first and service.detector.restarts == 1 and service.worker_alive
    verdicts = journal_rows(service.config.records_path, "SELECT verdict FROM records")
    assert all(verdict in ("OK", "NG") for (verdict,) in verdicts)


def test_camera_unplugged_degrades_health_raises_alarms_and_recovers(tmp_path, tiny, board, broker, running):
    subscriber = Subscriber(broker.port, "cam-line", "test-camera")
    # Credentials in the camera's URL (user:password@ and ?password=) never reach /health, alarms or records.
    camera = FlakyCamera(*board, spec=f"rtsp://admin:{SECRET}@10.0.0.7/ch1?password={SECRET}&token={SECRET}")
    config = make_config(tmp_path, "flaky", model=tiny.package, line="cam-line", mqtt=broker.url,
                         reconnect_initial_s=0.1, reconnect_max_s=0.4)
    service = Service(config, source=camera)
    running.append(service)
    service.start()
    wait_for(lambda: service.health()["status"] == "ok" and service.journal.count() >= 3, 30, "frames to flow")

    camera.corrupt_next.set()
    wait_for(lambda: metric(service, "inspector_frames_corrupt_total") == 1, 10, "the corrupt frame to be counted")
    camera.unplugged.set()
    health = wait_for(lambda: (h := service.health())["status"] == "degraded" and h, 10, "degraded health")
    assert health["camera"]["state"] == "reconnecting" and "unplugged" in health["camera"]["last_error"]
    assert "rtsp://admin:***@10.0.0.7/ch1?password=***&token=***" in health["camera"]["last_error"]
    assert SECRET not in json.dumps(health)
    assert not health["ready"] and service.worker_alive
    alarm = wait_for(lambda: [a for a in subscriber.payloads("/alarm") if a["kind"] == "camera_down"], 15,
                     "the camera_down alarm on MQTT")[0]
    assert alarm["kind"] == "camera_down" and alarm["level"] == "critical" and alarm["line"] == "cam-line"
    attempts = camera.open_attempts
    wait_for(lambda: camera.open_attempts >= attempts + 2, 10, "two more failed re-open attempts with back-off")
    count_while_down = service.journal.count()

    camera.unplugged.clear()
    wait_for(lambda: service.health()["status"] == "ok", 10, "health to recover")
    wait_for(lambda: service.journal.count() > count_while_down + 2, 10, "frames to flow again")
    assert metric(service, "inspector_camera_reconnects_total") == 1 and service.source.reconnects == 1
    kinds = wait_for(lambda: [a["kind"] for a in subscriber.payloads("/alarm") if a["kind"].startswith("camera")]
                     == ["camera_down", "camera_restored"] and True, 15, "camera_restored on MQTT")
    assert kinds
    results = subscriber.payloads("/result")
    assert results and all(r["line"] == "cam-line" and r["verdict"] in ("OK", "NG") for r in results)
    assert SECRET not in json.dumps(subscriber.messages)
    records = journal_rows(config.records_path, "SELECT source FROM records LIMIT 1")
    assert records and SECRET not in records[0][0] and "***" in records[0][0]
    subscriber.close()


def test_a_source_whose_reads_fail_shows_as_stalled_in_health_and_recovers(tmp_path, tiny, board, running):
    camera = FlakyCamera(*board)
    broken = threading.Event()
    read = camera.read
    camera.read = lambda: (_ for _ in ()).throw(UnicodeEncodeError("utf-8", "x", 0, 1, "a bug")) \
        if broken.is_set() else read()
    service = Service(make_config(tmp_path, "flaky", model=tiny.package), source=camera)
    running.append(service)
    service.start()
    wait_for(lambda: service.health()["status"] == "ok", 30, "frames to flow")
    broken.set()
    health = wait_for(lambda: (h := service.health())["camera"]["state"] == "stalled" and h, 10, "a stalled source")
    assert health["status"] == "degraded" and not health["ready"] and "UnicodeEncodeError" in \
        health["camera"]["last_error"]
    assert "source_stalled" in [alarm["kind"] for alarm in health["recent_alarms"]]
    broken.clear()
    wait_for(lambda: service.health()["status"] == "ok", 10, "health to recover")
    assert [a.kind for a in service.recent_alarms if a.kind.startswith("source_")] == ["source_stalled",
                                                                                      "source_restored"]


def _journal_record(captured_at: float, error: str | None = None):
    from inspector.service.records import Record, new_record_id

    return Record(record_id=new_record_id(), line="l", source="s", frame_id="f", frame_file=None, file_version=None,
                  captured_at=captured_at, verdict="ERROR" if error else "OK", defects=[], model_name="m",
                  package_id="p", latency_ms=1.0, error=error)


@pytest.mark.slow
def test_sqlite_retention_by_age_and_size_deletes_only_what_every_sink_has(tmp_path):
    from inspector.service.records import Journal

    journal = Journal(tmp_path / "records.sqlite3")
    day = 24 * 3600.0
    old = [journal.append(_journal_record(time.time() - 10 * day)).seq for _ in range(6)]
    new = [journal.append(_journal_record(time.time())).seq for _ in range(2)]
    for sink in ("mqtt", "postgresql"):
        journal.start_cursor(sink, RECORDS)
    journal.advance("mqtt", RECORDS, old[-1])
    journal.advance("postgresql", RECORDS, old[3])  # two old records still wait for this sink
    assert journal.retain(["mqtt", "postgresql"], older_than=time.time() - 7 * day) == 4
    left = [row[0] for row in journal_rows(journal.path, "SELECT seq FROM records ORDER BY seq")]
    assert left == old[4:] + new
    assert journal.retain([], older_than=time.time() - 7 * day) == 2  # no sinks: the store itself decides

    padding = "x" * 2000
    seqs = [journal.append(_journal_record(time.time(), error=padding)).seq for _ in range(1500)]
    journal.advance("mqtt", RECORDS, seqs[-1])
    journal.advance("postgresql", RECORDS, seqs[999])  # the last 500 wait for PostgreSQL
    assert journal.used_bytes() > 5_000_000  # about 4 KB a record
    deleted = journal.retain(["mqtt", "postgresql"], max_bytes=2_500_000)
    assert journal.used_bytes() <= 2_500_000 and 0 < deleted < 1000 + len(new)  # stopped once under the limit
    remaining = [row[0] for row in journal_rows(journal.path, "SELECT seq FROM records ORDER BY seq")]
    assert remaining[-500:] == seqs[-500:] and remaining == sorted(remaining)  # the oldest went first
    assert journal.retain(["mqtt", "postgresql"], max_bytes=1_000_000) > 0  # what waits is kept, over the limit
    assert [row[0] for row in journal_rows(journal.path, "SELECT seq FROM records ORDER BY seq")] == seqs[-500:]


def test_retention_in_the_service_waits_for_the_broker(tmp_path, tiny, broker, running):
    folder = tmp_path / "incoming"
    broker.stop()
    fill_hot_folder(folder, tiny.data, 0, 3)
    service = Service(make_config(tmp_path, folder, model=tiny.package, mqtt=broker.url, records_keep_days=0))
    running.append(service)
    service.start()
    wait_for(lambda: service.journal.count() == 3, 60, "3 records")
    assert service.apply_retention() == 0 and service.journal.count() == 3  # nothing delivered: nothing deleted
    broker.start()
    wait_for(lambda: service.journal.backlog("mqtt", RECORDS) == 0, 30, "the records on MQTT")
    assert service.apply_retention() == 3 and service.journal.count() == 0


def test_database_and_broker_down_then_back_deliver_every_record_in_order(tmp_path, tiny, broker, postgres, running):
    from fastapi.testclient import TestClient

    from inspector.service.api import create_app

    subscriber = Subscriber(broker.port, "spool-line", "test-spool")
    folder = tmp_path / "incoming"
    fill_hot_folder(folder, tiny.data, 0, 5)
    # A query-string password (trust authentication ignores it): never in the 503 body nor in /health.
    config = make_config(tmp_path, folder, model=tiny.package, line="spool-line", db=f"{postgres.url}?password={SECRET}",
                         mqtt=broker.url)
    service = Service(config)
    running.append(service)
    service.start()
    wait_for(lambda: postgres.count() == 5, 30, "5 rows in PostgreSQL")
    wait_for(lambda: len(subscriber.payloads("/result")) == 5, 30, "5 results on MQTT")

    postgres.stop()
    broker.stop()
    fill_hot_folder(folder, tiny.data, 5, 20)
    wait_for(lambda: service.journal.count() == 25, 60, "25 records in the journal")
    backlogs = {"postgresql/records": 20, "mqtt/records": 20}
    wait_for(lambda: (h := service.health())["status"] == "degraded" and all(s["up"] is False for s in h["sinks"])
             and {s["name"]: s["backlog"] for s in h["sinks"] if "records" in s["name"]} == backlogs, 30,
             "both sinks down, 20 records spooled for each")
    client = TestClient(create_app(service, TOKEN))
    unavailable = client.get("/results", headers=AUTH)
    assert unavailable.status_code == 503  # the store is down; the API says so, without its password
    assert "password=***" in unavailable.json()["detail"] and SECRET not in unavailable.text
    assert SECRET not in client.get("/health").text

    postgres.start()
    broker.start()
    wait_for(lambda: postgres.count() == 25, 60, "25 rows in PostgreSQL")
    journal = [row[0] for row in journal_rows(config.records_path, "SELECT record_id FROM records ORDER BY seq")]
    stored = postgres.rows("SELECT record_id, seq FROM inspection_records ORDER BY id")
    assert [row[0] for row in stored] == journal  # every record, once, in the order they were made
    assert [row[1] for row in stored] == list(range(1, 26))
    wait_for(lambda: [r["record_id"] for r in _first_seen(subscriber.payloads("/result"))] == journal, 60,
             "all 25 results on MQTT, in order")
    # Raised while the broker was down, spooled, delivered. Alarms are their own stream: each sink's
    # "restored" is raised (and so delivered) a moment after its first batch gets through, so wait for both
    # of them by name; /health's backlog is read from the journal, so it is 0 only once they are delivered.
    def alarms_of(kind: str) -> set[str]:
        return {alarm["detail"].get("sink") for alarm in subscriber.payloads("/alarm") if alarm["kind"] == kind}

    wait_for(lambda: alarms_of("sink_down") and {"postgresql/records", "mqtt/records"} <= alarms_of("sink_restored"),
             30, "sink_down and both sink_restored alarms on MQTT")
    wait_for(lambda: all(s["backlog"] == 0 and s["up"] for s in service.health()["sinks"]), 30, "empty spool")
    assert client.get("/results", params={"limit": 1000}, headers=AUTH).json()["total"] == 25
    stats = client.get("/stats", headers=AUTH).json()  # from PostgreSQL now
    verdicts = journal_rows(config.records_path, "SELECT verdict, count(*) FROM records GROUP BY verdict")
    assert stats["total"] == 25 and sum(hour["total"] for hour in stats["hours"]) == 25
    assert (stats["ok"], stats["ng"], stats["error"]) == tuple(dict(verdicts).get(v, 0) for v in ("OK", "NG", "ERROR"))
    assert service.journal.backlog("mqtt", ALARMS) == 0 and service.journal.backlog("postgresql", RECORDS) == 0
    subscriber.close()


def _first_seen(payloads: list[dict]) -> list[dict]:
    """MQTT QoS 1 is at least once: after a broker restart a message may come twice; keep the first of each."""
    seen, unique = set(), []
    for payload in payloads:
        if payload["record_id"] not in seen:
            seen.add(payload["record_id"])
            unique.append(payload)
    return unique


# ----------------------------------------------------------------------------------------------- the real process

def _serve(tmp_path: Path, folder: Path, tiny, log_name: str, *arguments: str, **environ: str) -> subprocess.Popen:
    env = {**os.environ, "INSPECTOR_TOKEN": TOKEN, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **environ}
    return subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "serve", "--source", str(folder), "--model", str(tiny.package),
         "--data-dir", str(tmp_path / "data"), "--http", "127.0.0.1:0", "--line", "crash-line", *arguments],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / log_name, "wb"), text=True)


def _records(tmp_path: Path) -> list[tuple[str, str]]:
    path = tmp_path / "data" / "records.sqlite3"
    if not path.exists():
        return []
    try:
        return journal_rows(path, "SELECT record_id, frame_file FROM records ORDER BY seq")
    except sqlite3.OperationalError:  # the schema is not created yet
        return []


def test_kill_9_then_restart_loses_nothing_and_inspects_each_file_once_then_sigterm_drains(tmp_path, tiny):
    import httpx

    folder = tmp_path / "incoming"
    names = fill_hot_folder(folder, tiny.data, 0, 150)
    process = _serve(tmp_path, folder, tiny, "serve-1.log")
    try:
        wait_for(lambda: len(_records(tmp_path)) >= 20 or process.poll() is not None, 120, "the first records")
        assert process.poll() is None, (tmp_path / "serve-1.log").read_text()
        process.kill()  # SIGKILL, mid-run
        process.wait(timeout=10)
        committed = _records(tmp_path)
        assert 20 <= len(committed) < 150, "the kill came too late to prove anything"

        process = _serve(tmp_path, folder, tiny, "serve-2.log")
        port = int(process.stdout.readline().rsplit(":", 1)[1])  # "... running, HTTP on 127.0.0.1:PORT"
        wait_for(lambda: len(_records(tmp_path)) >= 150, 120, "every file to be inspected after the restart")
        after = _records(tmp_path)
        assert set(committed) <= set(after)  # every record committed before the kill is still there
        files = [file for _, file in after]
        assert sorted(files) == sorted(names)  # every file, exactly once
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["line"] == "crash-line" and health["status"] == "ok"

        # SIGTERM while files are still queued: the queue drains, the process exits 0, and every record
        # matches an acknowledged file (nothing recorded but unacknowledged, nothing acknowledged unrecorded).
        more = fill_hot_folder(folder, tiny.data, 150, 60)
        wait_for(lambda: len(_records(tmp_path)) >= 155, 60, "the next files to flow")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "serve-2.log").read_text()
        recorded = {file for _, file in _records(tmp_path)}
        ledger = Ledger(tmp_path / "data" / "source" / "hotfolder-ledger.sqlite3")
        done = {name for name, _, _, status, _ in ledger.entries() if status == "done"}
        ledger.close()
        assert recorded == done

        process = _serve(tmp_path, folder, tiny, "serve-3.log")
        process.stdout.readline()
        wait_for(lambda: len(_records(tmp_path)) >= 210, 120, "the rest after the second restart")
        files = [file for _, file in _records(tmp_path)]
        assert sorted(files) == sorted(names + more)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_kill_9_in_trigger_mode_then_restart_every_judged_part_recorded_once(tmp_path, tiny):
    """The same guarantee with a PLC attached (OPC UA): kill -9 while a triggered part is in progress, restart,
    the PLC goes on (re-triggering the part whose verdict it never saw). Every record committed before the kill
    is kept, every board file is recorded exactly once, and every verdict the PLC saw is a record with its
    PartId (committed before ResultValid)."""
    pytest.importorskip("asyncua.sync")
    from line_helpers import Plc

    folder = tmp_path / "incoming"
    names = fill_hot_folder(folder, tiny.data, 0, 40)
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"

    def start(log_name: str) -> subprocess.Popen:
        started = _serve(tmp_path, folder, tiny, log_name, "--opcua", endpoint)
        assert "running" in started.stdout.readline(), (tmp_path / log_name).read_text()
        return started

    def recorded() -> list[tuple[str, str, str, str]]:
        return journal_rows(tmp_path / "data" / "records.sqlite3",
                            "SELECT record_id, frame_file, part_id, verdict FROM records ORDER BY seq")

    seen: dict[str, str] = {}  # PartId -> the verdict the PLC read
    process = start("serve-1.log")
    try:
        plc = Plc(endpoint, line="crash-line")
        for number in range(15):
            seen[f"P-{number:04d}"] = plc.inspect(f"P-{number:04d}")[0]
        plc.trigger("P-0015")  # and the station dies while that part is captured, judged or committed
        process.kill()
        process.wait(timeout=10)
        try:
            plc.close()
        except Exception:  # the server is gone mid-session
            pass
        committed = recorded()
        assert 15 <= len(committed) <= 16 and process.returncode == -signal.SIGKILL

        process = start("serve-2.log")
        plc = Plc(endpoint, line="crash-line")
        try:
            for number in range(15, 15 + len(names) - len(committed)):  # the PLC re-triggers P-0015 first
                seen[f"P-{number:04d}"] = plc.inspect(f"P-{number:04d}")[0]
        finally:
            plc.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, (tmp_path / "serve-2.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    after = recorded()
    assert set(committed) <= set(after)  # nothing committed before the kill is lost
    assert sorted(file for _, file, _, _ in after) == sorted(names)  # every board exactly once
    by_part: dict[str, list[str]] = {}
    for _, _, part_id, verdict in after:
        by_part.setdefault(part_id, []).append(verdict)
    for part_id, verdict in seen.items():  # each verdict the PLC saw is the last record with that PartId
        assert by_part[part_id][-1] == verdict and verdict in ("OK", "NG")
    # Only the part killed mid-way may have a second record: judged before the kill, its verdict never shown.
    assert {part for part, verdicts in by_part.items() if len(verdicts) > 1} <= {"P-0015"}
    assert set(by_part) == set(seen)


def _png_declaring(width: int, height: int) -> bytes:
    """A valid little PNG whose header declares ``width`` x ``height`` RGB pixels (a few rows of data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * (1 + 3 * width) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def _peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of ``pid``, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def test_hostile_files_among_good_boards_one_error_record_each_service_stays_up(tmp_path, tiny):
    """A hot folder with 20 good boards and the files that used to kill or stall the service: a PNG pair
    declaring 20000 x 20000 pixels, a 200 MiB file with no end, a JPEG cut short, a name that is not UTF-8,
    a symbolic link out of the folder and a TIFF written in chunks. Every good board gets its record, each
    bad file one ERROR record naming the limit or rule, the odd name and the slow TIFF one judged record
    each; the process stays up (peak memory measured), and after a restart nothing is inspected again."""
    import httpx

    folder = tmp_path / "incoming"
    good = fill_hot_folder(folder, tiny.data, 0, 10)
    test_jpg, temp_jpg = (path.read_bytes() for path in board_pairs(tiny.data)[0])
    old = time.time() - 3600  # hostile files first in line, settled at once (and the cut one abandoned)

    def drop(name: str | bytes, data: bytes, *, mtime: float | None = old) -> None:
        path = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else name.encode())
        with open(path, "wb") as handle:
            handle.write(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))

    drop("huge_test.png", _png_declaring(20000, 20000))
    drop("huge_temp.png", _png_declaring(20000, 20000))
    drop("big_test.jpg", test_jpg[:2000])
    with open(folder / "big_test.jpg", "r+b") as handle:
        handle.truncate(200 * 2**20)  # 200 MiB, no end marker (sparse: costs no disk)
    os.utime(folder / "big_test.jpg", (old, old))
    drop("cut_test.jpg", test_jpg[: len(test_jpg) * 2 // 3])
    drop("cut_temp.jpg", temp_jpg)
    drop(b"\xffodd_test.jpg", test_jpg)
    drop(b"\xffodd_temp.jpg", temp_jpg)
    outside = tmp_path / "elsewhere_test.jpg"
    outside.write_bytes(test_jpg)
    (folder / "link_test.jpg").symlink_to(outside)
    drop("link_temp.jpg", temp_jpg)
    drop("slow_temp.jpg", temp_jpg)
    ok, tiff = cv2.imencode(".tiff", cv2.imdecode(np.frombuffer(test_jpg, np.uint8), cv2.IMREAD_COLOR))
    tiff = tiff.tobytes()

    # 30 s: a chunk of the slow TIFF looks settled (modified 2 s ago) long before it could be abandoned.
    process = _serve(tmp_path, folder, tiny, "serve-hostile.log", INSPECTOR_INCOMPLETE_FILE_TIMEOUT_S="30")
    try:
        port = int(process.stdout.readline().rsplit(":", 1)[1])
        wait_for(lambda: len(_records(tmp_path)) >= 15 or process.poll() is not None, 120, "the first records")
        assert process.poll() is None, (tmp_path / "serve-hostile.log").read_text()
        # The TIFF in three chunks, each already "unchanged for 2 s" when the folder is next listed; a good
        # board dropped after each chunk and recorded proves the folder was listed with the chunk in it.
        for index, end in enumerate((len(tiff) // 4, len(tiff) // 2, len(tiff) - 10, len(tiff))):
            with open(folder / "slow_test.tif", "ab") as handle:
                handle.write(tiff[(0, len(tiff) // 4, len(tiff) // 2, len(tiff) - 10)[index]:end])
            os.utime(folder / "slow_test.tif", (time.time() - 2, time.time() - 2))
            good += fill_hot_folder(folder, tiny.data, 10 + index, 1)
            wait_for(lambda: good[-1] in {file for _, file in _records(tmp_path)}, 60, f"{good[-1]}'s record")
        good += fill_hot_folder(folder, tiny.data, 14, 6)
        wait_for(lambda: len(_records(tmp_path)) >= 26 or process.poll() is not None, 120, "26 records")
        assert process.poll() is None, (tmp_path / "serve-hostile.log").read_text()
        rows = journal_rows(tmp_path / "data" / "records.sqlite3", "SELECT frame_file, verdict, error FROM records")
        by_file = {file: (verdict, error) for file, verdict, error in rows}
        assert len(rows) == len(by_file) == 26, rows  # one record per file, none twice
        assert len(good) == 20 and all(by_file[name][0] in ("OK", "NG") for name in good)
        for name, verdict in (("\\xffodd_test.jpg", "judged"), ("slow_test.tif", "judged")):
            assert by_file[name][0] in ("OK", "NG"), (name, by_file[name])
        expected_errors = {"huge_test.png": "over the limit max_image_pixels=50000000",
                           "big_test.jpg": "over the limit max_file_bytes=200000000",
                           "cut_test.jpg": "truncated image",
                           "link_test.jpg": "outside the hot folder"}
        for name, message in expected_errors.items():
            assert by_file[name][0] == "ERROR" and message in by_file[name][1], (name, by_file[name])
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["status"] == "ok" and health["camera"]["state"] == "connected", health
        peak_mb = max([_peak_rss_mb(process.pid)] + [_peak_rss_mb(child) for child in _children(process.pid)])
        print(f"peak RSS of the service (largest of its processes): {peak_mb:.0f} MB")
        assert peak_mb < 1000

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        process = _serve(tmp_path, folder, tiny, "serve-hostile-2.log", INSPECTOR_INCOMPLETE_FILE_TIMEOUT_S="30")
        port = int(process.stdout.readline().rsplit(":", 1)[1])
        good += fill_hot_folder(folder, tiny.data, 20, 1)
        wait_for(lambda: len(_records(tmp_path)) >= 27 or process.poll() is not None, 120, "the board after the restart")
        assert [file for _, file in _records(tmp_path)][26:] == [good[-1]]  # the bad files are not tried again
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_serve_command_reports_bad_configuration_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "inspector.cli", "serve", "--source", "demo", "--line", "no/slash",
                             "--db", f"mysql://inspector:{SECRET}@db/x?password={SECRET}"],
                            cwd=REPO, env={**os.environ, "INSPECTOR_TOKEN": TOKEN}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "config field 'line' from command line" in result.stderr
    assert "config field 'db'" in result.stderr and "mysql://inspector:***@db/x?password=***" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def make_pki(directory: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    files: dict[str, Path] = {}

    def save(name: str, certificate, key) -> None:
        files[name] = directory / f"{name}.pem"
        files[name].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        files[f"{name}_key"] = directory / f"{name}.key"
        files[f"{name}_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))

    def issue(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False):
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        elif not ca:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        if ca:
            builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                            critical=True)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "inspector test CA")])
    save("ca", issue("inspector test CA", ca_key, ca_name, ca_key, ca=True), ca_key)
    for name, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        save(name, issue(f"inspector test {name}", key, ca_name, ca_key, server=server), key)
    return files


def test_postgresql_over_tls_only_with_sslmode_verify_full(tmp_path, tiny, postgres, running):
    """A PostgreSQL server that takes TLS connections only (pg_hba: hostssl): the service stores its records
    with sslmode=verify-full against the test CA; /health shows the URL without secrets."""
    import psycopg

    pki = make_pki(tmp_path / "pki")
    postgres.stop()
    for name in ("server", "server_key"):
        target = postgres.directory / pki[name].name
        shutil.copy(pki[name], target)
        target.chmod(0o600)
        if postgres.user is not None:
            os.chown(target, postgres.user.pw_uid, postgres.user.pw_gid)
    (postgres.data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    tls = f"?sslmode=verify-full&sslrootcert={pki['ca']}"
    postgres.url_options = tls
    postgres.start("ssl=on", f"ssl_cert_file={postgres.directory / 'server.pem'}",
                   f"ssl_key_file={postgres.directory / 'server.key'}")
    with pytest.raises(psycopg.OperationalError):  # plain connections are refused
        psycopg.connect(postgres.url + "?sslmode=disable", connect_timeout=5).close()

    folder = tmp_path / "incoming"
    fill_hot_folder(folder, tiny.data, 0, 2)
    url = postgres.url.replace("127.0.0.1", "localhost") + tls + f"&password={SECRET}"
    service = Service(make_config(tmp_path, folder, model=tiny.package, db=url))
    running.append(service)
    service.start()

    def stored() -> int:
        with psycopg.connect(postgres.url + tls) as connection:
            try:
                return connection.execute("SELECT count(*) FROM inspection_records").fetchone()[0]
            except psycopg.errors.UndefinedTable:
                return 0

    wait_for(lambda: stored() == 2, 60, "2 records in PostgreSQL over TLS")
    with psycopg.connect(postgres.url + tls) as connection:
        assert connection.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]
    health = service.health()
    assert all(sink["up"] for sink in health["sinks"]) and SECRET not in json.dumps(health)


def test_tls_https_only_api_and_mqtts_with_a_client_certificate(tmp_path, tiny, broker, running):
    """HTTPS with a certificate made here (plain HTTP gets no answer on that port); records published over
    mqtts:// to a real Mosquitto that requires a client certificate signed by the test CA."""
    import ssl

    import httpx
    import paho.mqtt.client as mqtt

    from inspector.service.api import create_app
    from inspector.service.run import HttpServer

    pki = make_pki(tmp_path / "pki")
    broker.stop()
    tls_port = free_port()
    broker.config.write_text(broker.config.read_text().replace(
        f"listener {broker.port} 127.0.0.1", f"listener {tls_port} 127.0.0.1\ncafile {pki['ca']}\n"
        f"certfile {pki['server']}\nkeyfile {pki['server_key']}\nrequire_certificate true\ntls_version tlsv1.2"))
    broker.port = tls_port
    broker.start()

    received: list[dict] = []
    subscribed = threading.Event()
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-tls")
    subscriber.tls_set(ca_certs=str(pki["ca"]), certfile=str(pki["client"]), keyfile=str(pki["client_key"]))
    subscriber.on_connect = lambda client, *_: client.subscribe("inspector/tls-line/result", qos=1)
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscriber.on_message = lambda client, userdata, message: received.append(json.loads(message.payload))
    subscriber.connect("127.0.0.1", tls_port)
    subscriber.loop_start()
    assert subscribed.wait(10), "the TLS subscriber could not subscribe"

    with pytest.raises(ConfigError, match="mqtt_ca: only for a TLS broker URL"):
        load_config(None, {"source": "demo", "http": "", "mqtt": f"mqtt://127.0.0.1:{tls_port}",
                           "mqtt_ca": pki["ca"]}, environ={})
    folder = tmp_path / "incoming"
    names = fill_hot_folder(folder, tiny.data, 0, 3)
    config = make_config(tmp_path, folder, model=tiny.package, line="tls-line", mqtt=f"mqtts://localhost:{tls_port}",
                         mqtt_ca=pki["ca"], mqtt_cert=pki["client"], mqtt_key=pki["client_key"])
    service = Service(config)
    running.append(service)
    service.start()
    wait_for(lambda: sorted(r["frame_file"] for r in received) == sorted(names), 60, "3 results over mqtts://")

    http = HttpServer(create_app(service, TOKEN), "127.0.0.1", 0, tls_cert=pki["server"], tls_key=pki["server_key"])
    http.start()
    try:
        trusted = ssl.create_default_context(cafile=str(pki["ca"]))
        answer = httpx.get(f"https://127.0.0.1:{http.port}/results", headers=AUTH, verify=trusted)
        assert answer.status_code == 200 and answer.json()["total"] == 3
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the same port: no HTTP answer at all
            httpx.get(f"http://127.0.0.1:{http.port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # and the certificate is checked by clients
            httpx.get(f"https://127.0.0.1:{http.port}/health", timeout=5)
    finally:
        http.stop()
        subscriber.disconnect()
        subscriber.loop_stop()


# ----------------------------------------------------------------------------------------------- OpenAPI

@pytest.fixture(scope="module")
def api_schema(tiny, tmp_path_factory):
    import schemathesis

    from inspector.service.api import create_app

    base = tmp_path_factory.mktemp("openapi")
    folder = base / "incoming"
    fill_hot_folder(folder, tiny.data, 0, 4)
    service = Service(make_config(base, folder, model=tiny.package))
    service.start()
    wait_for(lambda: service.journal.count() == 4, 60, "4 records to serve")
    # The token through schemathesis' own auth settings (not as a fixed header), so that its negative
    # cases can leave the header out or spoil it and expect a 401.
    config = schemathesis.config.SchemathesisConfig.from_dict({"auth": {"openapi": {"HTTPBearer": {"bearer": TOKEN}}}})
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(service, TOKEN), config=config, headers=AUTH)
    service.stop()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_conforms_to_its_openapi_spec(api_schema, mode):
    """Requests generated from the spec (valid ones, then invalid ones) for every operation: no server error;
    status codes, content types and bodies as the spec says; authentication enforced where it says so."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    @given(case=api_schema.as_strategy(generation_mode=GenerationMode(mode)))
    # derandomize: the same examples every run, so CI cannot pass one day and fail the next on luck (a random
    # seed once found repeated query parameters accepted; tested above now). Explore with a seed by hand.
    @settings(max_examples=120, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate()

    check()
