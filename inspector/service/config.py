"""The service's configuration: a YAML file, then ``INSPECTOR_*`` environment variables, then command-line options.

Each later layer overrides the earlier ones field by field (12-factor: a unit file or container sets the
environment, the YAML file holds the site's defaults). Everything is validated once, at start-up, and an
error names the field, where its value came from and what was expected.

    source: /srv/line1/incoming      # INSPECTOR_SOURCE
    line: line1                      # INSPECTOR_LINE
    token: change-me-please          # INSPECTOR_TOKEN (bearer token of the HTTP API)
"""
from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from inspector.redaction import redact
from inspector.service.serial_codes import CODE_FORMATS, DEFAULT_CODE_FORMATS, parse_code_formats

ENV_PREFIX = "INSPECTOR_"
log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """The configuration is unusable; the message names the field (or file) and what was expected."""


class UserSpec(BaseModel):
    """One user of the HTTP API (roles: inspector/service/auth.py); only the token's hash is configured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
    role: Literal["operator", "engineer", "admin"]
    token_sha256: str = Field(pattern=r"^sha256:[0-9a-f]{64}$",
                              description="python -m inspector.service.auth makes a token and this hash")


class ServiceConfig(BaseModel):
    """Every setting of ``inspector serve``; the field name is also the YAML key and ``INSPECTOR_<NAME>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # what to inspect and with what
    source: str = Field(description="camera index (0), video file, rtsp/http(s) URL, hot-folder directory, or demo")
    model: Optional[Path] = Field(None, description="model package directory (default: the shipped package)")
    template: Optional[Path] = Field(None, description="golden template image for sources whose frames carry none")
    align: bool = Field(False, description="register each frame to its template before detection")
    score_threshold: Optional[float] = Field(None, ge=0.0, le=1.0, description="default: the package's")
    backend: Literal["lite", "paddle"] = "lite"
    threads: int = Field(1, ge=1, le=64, description="inference threads of the one detector")
    fps: Optional[float] = Field(None, gt=0, description="pace of video files and the demo (default: their own)")
    line: str = Field("line1", description="production line name, used in MQTT topics and every record")

    # hot folder: what one file may cost (a file over a limit gets one ERROR record naming it)
    max_image_pixels: int = Field(50_000_000, ge=1, description="pixel budget per image, read from its header "
                                  "before decoding")
    max_file_bytes: int = Field(200_000_000, ge=1, description="larger files are refused before they are read")
    incomplete_file_timeout_s: float = Field(60.0, gt=0, description="a file that stays incomplete (no end "
                                             "marker) this long is recorded as truncated")

    # where results go
    data_dir: Path = Field(Path("inspector-data"), description="records database (SQLite), spool, hot-folder ledger")
    db: Optional[str] = Field(None, description="postgresql://user:pass@host:port/db; default: SQLite in data_dir")
    mqtt: Optional[str] = Field(None, description="mqtt://[user:pass@]host[:port]; default: no publishing")
    mqtt_client_id: Optional[str] = Field(None, description="default: inspector-<line>")
    mqtt_ca: Optional[Path] = Field(None, description="mqtts://: CA certificate(s) (PEM) the broker's is checked "
                                    "against (default: the system's)")
    mqtt_cert: Optional[Path] = Field(None, description="mqtts://: client certificate (PEM), with mqtt_key")
    mqtt_key: Optional[Path] = Field(None, description="mqtts://: private key of mqtt_cert (PEM)")
    evidence: Optional[Path] = Field(None, description="directory for annotated JPEGs of NG frames")
    evidence_max_files: int = Field(1000, ge=1)
    evidence_max_bytes: int = Field(1_000_000_000, ge=1_000_000)
    spool_keep_hours: float = Field(24.0, ge=0, description="PostgreSQL mode: keep delivered records locally this long")
    records_keep_days: Optional[float] = Field(None, ge=0, description="SQLite mode: delete records older than "
                                               "this once every sink has them (default: keep)")
    records_max_bytes: Optional[int] = Field(None, ge=1_000_000, description="SQLite mode: delete the oldest "
                                             "delivered records while the database holds more (default: no limit)")

    # HTTP API
    http: Optional[str] = Field("127.0.0.1:8080", description="HOST:PORT of the HTTP API; empty: no HTTP")
    token: Optional[str] = Field(None, min_length=16, description="bearer token of an admin (set-ups without users)")
    users: Optional[list[UserSpec]] = Field(None, description="users with roles: name, role, token_sha256")
    users_file: Optional[Path] = Field(None, description="YAML file with users: (name, role, token_sha256)")
    tls_cert: Optional[Path] = Field(None, description="PEM certificate (chain): serve HTTPS only")
    tls_key: Optional[Path] = Field(None, description="PEM private key of tls_cert")

    # the pipeline and its alarms
    # Small on purpose: for a live source every waiting frame adds one inference time of latency.
    queue_size: int = Field(2, ge=1, le=10_000, description="frames waiting for inference")
    ng_streak_alarm: int = Field(5, ge=1, description="alarm after this many NG boards in a row")
    spool_alarm: int = Field(500, ge=1, description="alarm when this many records wait for a sink")
    reconnect_initial_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0, description="SIGTERM: longest wait for the queue to drain")

    # PLC handshake (inspector/service/plc/; deploy/plc/README.md): either one puts the line in trigger mode
    opcua: Optional[str] = Field(None, description="opc.tcp://HOST:PORT of the OPC UA server for the PLC")
    opcua_cert: Optional[Path] = Field(None, description="the station's X.509 certificate (PEM or DER): the OPC UA "
                                       "server then offers Basic256Sha256 Sign and SignAndEncrypt only")
    opcua_key: Optional[Path] = Field(None, description="the private key of opcua_cert (PEM or DER, unencrypted)")
    opcua_allow_unsecured: bool = Field(False, description="with opcua_cert: also accept clients with security "
                                        "policy None (a PLC that cannot encrypt yet)")
    opcua_trusted_clients: Optional[Path] = Field(None, description="with opcua_cert: directory of the client "
                                                  "certificates (PEM or DER, one per file) let in over a secure "
                                                  "channel, read at start-up; unset: any (commissioning only)")
    modbus: Optional[str] = Field(None, description="HOST:PORT of the Modbus TCP server for the PLC")
    capture_timeout_s: float = Field(2.0, gt=0, description="trigger mode: no frame this long -> ERROR part")
    ack_timeout_s: float = Field(10.0, gt=0, description="trigger mode: no PLC Ack this long -> alarm, READY")
    result_timeout_s: float = Field(30.0, gt=0, description="trigger mode: no verdict this long -> ERROR to the PLC")
    recipes: Optional[Path] = Field(None, description="directory of recipe files (inspector recipe ...)")
    recipe: Optional[str] = Field(None, description="recipe to start with (default: the last active one)")
    read_serial_code: bool = Field(False, description="read the board's serial from a code in the frame "
                                   "(serial_code_formats) when the PLC gives no PartId (records' part_id)")
    serial_code_formats: tuple[str, ...] = Field(
        DEFAULT_CODE_FORMATS, description="with read_serial_code or recipe_by_part_id: the codes a serial is read "
        "from, in priority order (the first format found wins; within it the largest code): some of "
        f"{', '.join(CODE_FORMATS)}; a list, or comma-separated in INSPECTOR_SERIAL_CODE_FORMATS")
    recipe_by_part_id: bool = Field(False, description="judge each part with the recipe whose part_id_pattern "
                                    "matches its id (PLC PartId, else the serial code read from the frame); no "
                                    "match or several: the active recipe stays, alarm")

    # verification queue (inspector/review_queue.py, inspector/service/review_feed.py; GET /review)
    review: bool = Field(False, description="queue NG boards, boards with a detection near the threshold and "
                         "boards with unknown-change flags for review (data_dir/review.sqlite3, /review)")
    review_near_band: float = Field(0.15, ge=0.0, le=0.5, description="a detection this close to the score "
                                    "threshold (above or below) makes the board uncertain: queued first")
    review_near_band_per_class: dict[str, float] = Field(
        default_factory=dict, description="per class (its name -> band, 0 to 0.5): a band of its own instead of "
        "review_near_band, e.g. a wider one for a class the line misses; a class the model lacks is refused")
    review_picture_max_age_days: Optional[float] = Field(
        90.0, gt=0, description="reviewed boards' pictures are deleted this many days after their last decision "
        "(none: kept)")
    review_picture_max_gb: Optional[float] = Field(
        10.0, gt=0, description="above this size of queue pictures, the longest-decided reviewed boards' go first "
        "(none: no limit)")
    review_picture_hard_cap_gb: Optional[float] = Field(
        20.0, gt=0, description="only above this size do boards still pending review lose their pictures, the "
        "least instructive first (they leave the queue as expired); at least review_picture_max_gb")
    review_unknown_changes: bool = Field(False, description="flag where a board differs from its golden template "
                                         "and no detection explains it (a few OpenCV passes per frame)")
    review_max_pending: int = Field(5000, ge=1, description="boards waiting for review; further ones are skipped "
                                    "(counted in inspector_review_skipped_total)")
    review_export: Optional[Path] = Field(None, description="POST /review/export writes the reviewed boards here "
                                          "as Pascal VOC (default: data_dir/review-export)")

    @field_validator("opcua")
    @classmethod
    def _opcua_endpoint(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "opc.tcp" or not parts.hostname or parts.port is None:
                raise ValueError("expected opc.tcp://HOST:PORT, e.g. opc.tcp://0.0.0.0:4840")
        return value

    @field_validator("modbus")
    @classmethod
    def _modbus_host_port(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("expected HOST:PORT, e.g. 0.0.0.0:502 or 127.0.0.1:5020")
        return value

    @field_validator("serial_code_formats", mode="before")
    @classmethod
    def _known_code_formats(cls, value: Any) -> tuple[str, ...]:
        return parse_code_formats(value)  # ValueError naming the bad name and the known ones

    @field_validator("line")
    @classmethod
    def _line_is_a_topic_level(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError("expected 1-64 letters, digits, '_', '.', '-' (it becomes an MQTT topic level)")
        return value

    @field_validator("db")
    @classmethod
    def _db_is_postgresql(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("expected a postgresql://user:password@host:port/database URL (or nothing for SQLite)")
        return value

    @field_validator("mqtt")
    @classmethod
    def _mqtt_url(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
            raise ValueError("expected mqtt://[user:password@]host[:port], or mqtts:// for TLS")
        try:
            parts.port
        except ValueError as error:
            raise ValueError(f"bad port: {error}") from None
        return value

    @field_validator("http")
    @classmethod
    def _http_host_port(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080 or 0.0.0.0:8080")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "ServiceConfig":
        if self.http is not None and self.token is None and not self.users and self.users_file is None:
            raise ValueError("token: the HTTP API needs a bearer token of at least 16 characters "
                             "(set token: in the file or INSPECTOR_TOKEN) or users (users: / users_file:); "
                             "or switch HTTP off with an empty http")
        if self.users_file is not None and not self.users_file.is_file():
            raise ValueError(f"users_file: {self.users_file} is not a file")
        tls_files = [name for name in ("mqtt_ca", "mqtt_cert", "mqtt_key") if getattr(self, name) is not None]
        if tls_files and (self.mqtt is None or urlsplit(self.mqtt).scheme not in ("mqtts", "ssl")):
            raise ValueError(f"{tls_files[0]}: only for a TLS broker URL (mqtts://host:8883)")
        if (self.mqtt_cert is None) != (self.mqtt_key is None):
            raise ValueError("mqtt_cert and mqtt_key: give both (client certificate) or neither")
        for name in tls_files:
            if not getattr(self, name).is_file():
                raise ValueError(f"{name}: {getattr(self, name)} is not a file")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both (HTTPS) or neither (HTTP)")
        for name in ("tls_cert", "tls_key"):
            if getattr(self, name) is not None and not getattr(self, name).is_file():
                raise ValueError(f"{name}: {getattr(self, name)} is not a file")
        if self.review_picture_max_gb is not None and self.review_picture_hard_cap_gb is not None \
                and self.review_picture_hard_cap_gb < self.review_picture_max_gb:
            raise ValueError(f"review_picture_hard_cap_gb: at least review_picture_max_gb "
                             f"({self.review_picture_max_gb}) expected, got {self.review_picture_hard_cap_gb}: "
                             "boards pending review would lose their pictures before reviewed ones")
        bad_bands = {name: band for name, band in self.review_near_band_per_class.items() if not 0.0 <= band <= 0.5}
        if bad_bands:
            name, band = next(iter(bad_bands.items()))
            raise ValueError(f"review_near_band_per_class.{name}: a band from 0 to 0.5 expected, got {band}")
        if (self.opcua_cert is None) != (self.opcua_key is None):
            raise ValueError("opcua_cert and opcua_key: give both (secured OPC UA) or neither")
        for name in ("opcua_cert", "opcua_key"):
            if getattr(self, name) is not None and not getattr(self, name).is_file():
                raise ValueError(f"{name}: {getattr(self, name)} is not a file")
        if self.opcua_cert is not None and self.opcua is None:
            raise ValueError("opcua_cert: only with an OPC UA server (opcua: opc.tcp://HOST:PORT)")
        if self.opcua_allow_unsecured and self.opcua_cert is None:
            raise ValueError("opcua_allow_unsecured: only with opcua_cert/opcua_key (without them the OPC UA server "
                             "is unsecured anyway)")
        if self.opcua_trusted_clients is not None and self.opcua_cert is None:
            raise ValueError("opcua_trusted_clients: only with opcua_cert/opcua_key (client certificates are only "
                             "exchanged on a secure channel)")
        if self.opcua_trusted_clients is not None and not self.opcua_trusted_clients.is_dir():
            raise ValueError(f"opcua_trusted_clients: {self.opcua_trusted_clients} is not a directory")
        if self.recipe_by_part_id and self.recipes is None:
            raise ValueError("recipe_by_part_id: needs recipes: (the directory of the recipes with a part_id_pattern)")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        if self.template is not None and not self.template.is_file():
            raise ValueError(f"template: {self.template} is not a file")
        return self

    # ------------------------------------------------------------------ derived

    @property
    def http_host(self) -> str:
        return self.http.rpartition(":")[0].strip("[]") if self.http else ""

    @property
    def http_port(self) -> int:
        return int(self.http.rpartition(":")[2]) if self.http else 0

    @property
    def records_path(self) -> Path:
        return self.data_dir / "records.sqlite3"

    @property
    def source_state_dir(self) -> Path:
        return self.data_dir / "source"


FIELDS = tuple(ServiceConfig.model_fields)


def load_config(file: Path | None = None, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> ServiceConfig:
    """File (YAML), then ``INSPECTOR_*`` variables of ``environ`` (default os.environ), then ``overrides``
    (command-line options; None values are ignored). Raises ConfigError naming the field and its origin."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if file is not None:
        for key, value in _read_file(file).items():
            values[key], origin[key] = value, f"{file}"
    environ = os.environ if environ is None else environ
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX):].lower()
        if key not in FIELDS:
            _unknown_variable(name, key)
            continue
        values[key], origin[key] = (None if value == "" else value), f"environment {name}"
    for key, value in (overrides or {}).items():
        if value is not None:
            values[key], origin[key] = value, "command line"
    if values.get("http") == "":
        values["http"] = None
    try:
        return ServiceConfig(**values)
    except ValidationError as error:
        raise ConfigError(_describe(error, origin)) from None


def _unknown_variable(name: str, key: str) -> None:
    """An ``INSPECTOR_*`` variable that is no setting: refused when it looks like a misspelt one (a typo
    such as INSPECTOR_MQTTT would otherwise silently leave MQTT off), else a warning (other tools, such as
    the GUI's INSPECTOR_GUI_CONFIG, share the prefix)."""
    close = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.8)
    if close:
        raise ConfigError(f"environment {name}: no such setting; did you mean {ENV_PREFIX}{close[0].upper()}?")
    log.warning("environment %s: not a setting of inspector serve, ignored", name)


def _suggestion(key: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _read_file(file: Path) -> dict[str, Any]:
    try:
        text = Path(file).read_text()
    except OSError as error:
        raise ConfigError(f"config file {file}: cannot read ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {file}: not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file}: expected a mapping of setting: value, got {type(data).__name__}")
    unknown = sorted(str(key) for key in data if key not in FIELDS)
    if unknown:
        raise ConfigError(f"config file {file}: unknown setting(s) "
                          f"{', '.join(key + _suggestion(key) for key in unknown)}; known: {', '.join(FIELDS)}")
    return data


def _describe(error: ValidationError, origin: dict[str, str]) -> str:
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or None
        message = problem["msg"].removeprefix("Value error, ")
        if field is None:  # a check across fields: its message starts with the field's name
            lines.append(f"config: {message}")
            continue
        if problem["type"] == "missing":
            lines.append(f"config field '{field}': required; set {field}: in the config file, "
                         f"{ENV_PREFIX}{field.upper()} or --{field.replace('_', '-')}")
            continue
        where = origin.get(field.split(".")[0], "default")
        shown = "" if field == "token" else redact(f" (got {problem.get('input')!r})")  # never echo a secret
        lines.append(f"config field '{field}' from {where}: {message}{shown}")
    return "\n".join(lines)
