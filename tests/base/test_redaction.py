"""inspector.redaction: the one function that keeps credentials out of logs, errors, /health and records."""
from __future__ import annotations

import io
import logging

import pytest

from inspector.redaction import RedactingFilter, redact, redact_all

SECRET = "hunter2-Secret"


@pytest.mark.parametrize("text, shown", [
    (f"postgresql://inspector:{SECRET}@db:5432/inspection", "postgresql://inspector:***@db:5432/inspection"),
    (f"postgresql://db/x?sslmode=verify-full&password={SECRET}&application_name=a",
     "postgresql://db/x?sslmode=verify-full&password=***&application_name=a"),
    (f"rtsp://cam/stream?user=admin&pwd={SECRET}", "rtsp://cam/stream?user=admin&pwd=***"),
    (f"http://cam/snap?access_token={SECRET}&api_key={SECRET}", "http://cam/snap?access_token=***&api_key=***"),
    (f"mqtts://line1:{SECRET}@broker:8883", "mqtts://line1:***@broker:8883"),
    (f"cannot open rtsp://admin:{SECRET}@10.0.0.7/ch1 (timeout)", "cannot open rtsp://admin:***@10.0.0.7/ch1 (timeout)"),
    (f"host=db password='{SECRET} x' dbname=q", "host=db password=*** dbname=q"),
    (f"mqtt://u:p@ss{SECRET}@broker/x", "mqtt://u:***@broker/x"),  # an unescaped @ in the password
    (f"x?Token%3D{SECRET}", "x?Token%3D***"),
    (f'{{"name": "ops", "token": "{SECRET}", "role": "admin"}}', '{"name": "ops", "token": "***", "role": "admin"}'),
    (f"api_key: {SECRET}", "api_key: ***"),
    (f"Authorization: Bearer {SECRET}", "Authorization: *** ***"),
    ("KeyError: 'line'", "KeyError: 'line'"),  # a traceback stays readable
    ("rtsp://cam/stream?channel=1", "rtsp://cam/stream?channel=1"),  # nothing secret: unchanged
    ("user@example.com sslmode=require", "user@example.com sslmode=require"),
])
def test_redact_hides_url_passwords_and_credential_parameters(text, shown):
    assert redact(text) == shown
    assert redact(redact(text)) == shown  # idempotent: safe to apply at every layer


def test_redact_all_walks_nested_values_and_keeps_other_types():
    value = {"camera": {"source": f"rtsp://a:{SECRET}@c/s", "reconnects": 3},
             "sinks": [{"last_error": f"PostgreSQL postgresql://h/db?password={SECRET}: refused", "up": False}]}
    cleaned = redact_all(value)
    assert SECRET not in repr(cleaned)
    assert cleaned["camera"]["reconnects"] == 3 and cleaned["sinks"][0]["up"] is False


def test_log_filter_redacts_the_formatted_message_and_the_traceback():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("connecting to %s", f"mqtt://line:{SECRET}@broker")
        try:
            raise ConnectionError(f"postgresql://inspector:{SECRET}@db/x refused")
        except ConnectionError:
            logger.exception("store down")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "mqtt://line:***@broker" in text and "ConnectionError" in text and SECRET not in text
