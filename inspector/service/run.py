"""``inspector serve``: run the Service and its HTTP API until SIGTERM/SIGINT, then drain and exit 0.

The HTTP server (uvicorn) runs in a thread of its own on a socket bound here first, so a port already in
use is a clear start-up error; the main thread only waits for a signal and then stops everything in order.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from inspector.redaction import install_log_redaction
from inspector.service.config import ConfigError, ServiceConfig, load_config
from inspector.service.service import Service, ServiceError

log = logging.getLogger("inspector.service")


class HttpServer:
    """uvicorn in a background thread, serving ``app`` on an already bound socket."""

    def __init__(self, app, host: str, port: int, tls_cert: Path | None = None, tls_key: Path | None = None):
        """With ``tls_cert``/``tls_key`` the socket speaks TLS only: plain HTTP is not served at all."""
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as error:
            self.socket.close()
            raise ServiceError(f"http: cannot listen on {host}:{port} ({error.strerror or error})") from error
        self.socket.listen(64)
        self.host, self.port = host, self.socket.getsockname()[1]
        self.scheme = "https" if tls_cert is not None else "http"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=3,
                                ssl_certfile=None if tls_cert is None else str(tls_cert),
                                ssl_keyfile=None if tls_key is None else str(tls_key))
        if tls_cert is not None:
            try:
                config.load()  # reads the certificate and key now: a bad pair is a start-up error naming them
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
                self.socket.close()
                raise ServiceError(f"tls_cert/tls_key: cannot use {tls_cert} with {tls_key} ({error})") from error
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, name="http",
                                        daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        waited = 0.0
        while not self.server.started and self._thread.is_alive() and waited < timeout:
            threading.Event().wait(0.05)
            waited += 0.05
        if not self.server.started:
            raise ServiceError(f"http: the server on {self.host}:{self.port} did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.socket.close()


def serve(config_file: Path | None, overrides: dict[str, Any]) -> int:
    """The whole command: configuration, start-up checks, run until a signal. Returns the exit code."""
    install_log_redaction()  # every log line from here on, ours and the libraries', without secrets
    try:
        config = load_config(config_file, overrides)
    except ConfigError as error:
        log.error("%s", error)
        return 2
    return run_service(config)


def run_service(config: ServiceConfig) -> int:
    stop = threading.Event()
    received: list[str] = []

    def on_signal(number, _frame) -> None:
        received.append(signal.Signals(number).name)
        stop.set()

    # Handlers first: a SIGTERM that arrives while the model loads still leads to a clean exit.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    service = http = None
    try:
        try:
            service = Service(config)
            if config.http is not None:
                from inspector.service.api import create_app

                from inspector.service.auth import users_from_config

                try:
                    users = users_from_config(config)
                except ValueError as error:
                    raise ServiceError(str(error)) from error
                http = HttpServer(create_app(service, config.token, users=users), config.http_host, config.http_port,
                                  tls_cert=config.tls_cert, tls_key=config.tls_key)
            service.start()
            if http is not None:
                http.start()
                log.info("HTTP API on %s://%s:%d (OpenAPI: /openapi.json, with a token)", http.scheme, http.host,
                         http.port)
        except ServiceError as error:
            log.error("cannot start: %s", error)
            if service is not None:
                service.stop(drain=False)
            return 2
        print(f"inspector serve: line {config.line} running" +
              (f", {http.scheme.upper()} on {http.host}:{http.port}" if http else ""), flush=True)
        while not stop.wait(0.5):
            if not service.worker_alive:
                log.error("the inference worker stopped unexpectedly; exiting so the supervisor restarts it")
                service.stop(drain=False)
                return 1
        log.info("%s received: draining the queue", received[0])
        service.stop(drain=True)
        return 0
    finally:
        if http is not None:
            http.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
