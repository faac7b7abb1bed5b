"""Publishing to an MQTT broker (paho-mqtt): records on ``inspector/<line>/result``, alarms on
``inspector/<line>/alarm``, and the service's own retained ``inspector/<line>/status`` (``online``, or
``offline`` as the broker's last will when the service dies without saying goodbye).

Messages go out with QoS 1 and count as delivered only when the broker acknowledged them (PUBACK).
Delivery is at least once: after a broker or network failure a message may arrive twice; every record and
alarm carries its ``record_id`` / ``seq`` so consumers can drop repeats.
"""
from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt

from inspector.service.records import Alarm, Record

log = logging.getLogger(__name__)
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
TLS_SCHEMES = ("mqtts", "ssl")


class BrokerUnavailable(RuntimeError):
    """The broker is not connected or did not acknowledge in time (the messages stay in the spool)."""


def topics(line: str) -> dict[str, str]:
    return {"result": f"inspector/{line}/result", "alarm": f"inspector/{line}/alarm",
            "status": f"inspector/{line}/status"}


class MqttPublisher:
    """One connection to the broker, kept up by paho's own network thread (reconnects with back-off)."""

    def __init__(self, url: str, line: str, client_id: str | None = None, ack_timeout: float = 10.0, *,
                 ca: Path | None = None, cert: Path | None = None, key: Path | None = None):
        """``mqtts://`` connects over TLS: the broker's certificate is checked against ``ca`` (default: the
        system's CAs) and its host name; ``cert``/``key`` is the client certificate a broker may require."""
        parts = urlsplit(url)
        self.tls = parts.scheme in TLS_SCHEMES
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (DEFAULT_TLS_PORT if self.tls else DEFAULT_PORT)
        self.topics = topics(line)
        self.ack_timeout = ack_timeout
        self.connected = threading.Event()
        self.last_error = ""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"inspector-{line}",
                                  clean_session=True)
        if self.tls:
            self.client.tls_set(ca_certs=None if ca is None else str(ca), certfile=None if cert is None else str(cert),
                                keyfile=None if key is None else str(key), cert_reqs=ssl.CERT_REQUIRED,
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if parts.username:
            self.client.username_pw_set(unquote(parts.username), unquote(parts.password or "") or None)
        self.client.will_set(self.topics["status"], "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=5)  # a line broker is near: retry often
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        # connect_async: the service starts even when the broker is down; paho keeps trying.
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        if self.connected.is_set():
            info = self.client.publish(self.topics["status"], "offline", qos=1, retain=True)
            info.wait_for_publish(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker {self.host}:{self.port} refused the connection: {reason_code}"
            log.warning(self.last_error)
            return
        self.connected.set()
        self.last_error = ""
        client.publish(self.topics["status"], "online", qos=1, retain=True)
        log.info("MQTT connected to %s:%d", self.host, self.port)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected.is_set():
            log.warning("MQTT disconnected from %s:%d (%s)", self.host, self.port, reason_code)
        self.connected.clear()
        self.last_error = f"broker {self.host}:{self.port} disconnected: {reason_code}"

    def publish(self, items: list[Record] | list[Alarm]) -> None:
        """Publish ``items`` in order and wait for every PUBACK; BrokerUnavailable when any is missing."""
        if not self.connected.is_set():
            # Do not hand messages to paho while it is disconnected: it would queue them and resend them
            # out of step with the spool's own retry.
            raise BrokerUnavailable(self.last_error or f"broker {self.host}:{self.port}: not connected")
        pending = []
        for item in items:
            topic = self.topics["result"] if isinstance(item, Record) else self.topics["alarm"]
            info = self.client.publish(topic, item.to_json(), qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise BrokerUnavailable(f"broker {self.host}:{self.port}: publish failed ({mqtt.error_string(info.rc)})")
            pending.append(info)
        for info in pending:
            try:
                info.wait_for_publish(timeout=self.ack_timeout)
            except RuntimeError as error:  # paho: the connection went away while waiting
                raise BrokerUnavailable(f"broker {self.host}:{self.port}: {error}") from error
            if not info.is_published():
                raise BrokerUnavailable(f"broker {self.host}:{self.port}: no acknowledgement within "
                                        f"{self.ack_timeout:.0f} s")
