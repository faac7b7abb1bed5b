"""The headless production-line service (``inspector serve``).

Modules, top-down: ``config`` (file + INSPECTOR_* environment, validated), ``records`` (Record, the local
SQLite journal that is also the spool), ``postgres`` (the shared PostgreSQL store), ``frame_queue``,
``evidence``, ``metrics``, ``mqtt``, ``delivery`` (journal -> sink, in order), ``service`` (life cycle and
capture of the pipeline; ``inspection``: judging and committing frames, ``parts``: PLC trigger mode and
traceability, ``serial_codes``: a board's serial from a code in the frame, the GUI's too, ``status``: alarms,
monitor, health), ``api`` (FastAPI), ``run`` (the command: HTTP server, signals, drain).

It uses ``inspector.capture`` for frames and ``inspector.runtime`` for the model, nothing else of the project.
"""
from inspector.service.config import ConfigError, ServiceConfig, load_config
from inspector.service.postgres import PostgresStore
from inspector.service.records import Alarm, Journal, Record
from inspector.service.service import Service, ServiceError

__all__ = ["Alarm", "ConfigError", "Journal", "PostgresStore", "Record", "Service", "ServiceConfig", "ServiceError",
           "load_config"]
