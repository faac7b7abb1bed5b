"""Secrets out of text: the one function every log line, error, /health field and record goes through.

Settings carry credentials inside URLs: ``postgresql://user:password@host/db``,
``rtsp://cam/stream?user=admin&password=...``, ``postgresql://host/db?password=...&sslkey=...``. Anything
shown to a person or sent off the box (log lines, error messages, the unauthenticated ``/health``, records
and alarms on MQTT) passes through ``redact``, which replaces

- the password of ``scheme://user:password@host`` (the user name stays: it says which account), and
- the value of every ``name=value`` (and JSON/YAML ``"name": value``) whose name says it is a credential (password, passwd, pwd, pass,
  token, secret, key, apikey, auth, signature, sig, credential(s), session ...), in a query string or a
  libpq-style ``key=value`` connection string,

with ``***``. It errs on the side of hiding: ``monkey=1`` loses its value too.
"""
from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):(?P<secret>[^/\s'\"]*)@")  # to the last @
_CREDENTIAL_NAMES = r"[\w.-]*(?:pass|pwd|token|secret|key|auth|sig|credential|session|cookie)[\w.-]*"
_KEY_VALUE = re.compile(rf"(?P<name>(?<![\w.-]){_CREDENTIAL_NAMES})\s*(?P<eq>=|%3[dD])\s*"
                        r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^&;\s'\",)]+)", re.IGNORECASE)
# JSON or YAML style: "password": "...", 'token': '...', api_key: xyz
_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)  # an Authorization value
# Stricter names here (whole words, joined by _ or -), so a traceback's "KeyError: 'x'" keeps its text.
_CREDENTIAL_WORD = (r"(?:[A-Za-z0-9]+[_-])*(?:password|passwd|pwd|pass|token|secret|api_?key|key|auth|authorization|"
                    r"credentials?|session|cookie|signature|sig)(?:[_-][A-Za-z0-9]+)*")
_KEY_COLON = re.compile(rf"(?P<name>(?P<q>[\"']?)(?<![\w.-]){_CREDENTIAL_WORD}(?P=q))\s*:\s*"
                        r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^,}\]\s]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL passwords and credential-named ``name=value`` values replaced by ``***``."""
    if not isinstance(text, str) or not any(mark in text for mark in ("=", "@", ":", "%3")):
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@" if m["secret"] != MASK else m[0], text)
    text = _KEY_VALUE.sub(lambda m: f"{m['name']}{m['eq']}{MASK}", text)
    text = _SCHEME_CREDENTIAL.sub(lambda m: f"{m[1]} {MASK}", text)
    return _KEY_COLON.sub(lambda m: f"{m['name']}: {_quoted(m['value'])}", text)


def _quoted(value: str) -> str:
    return f'"{MASK}"' if value.startswith('"') else f"'{MASK}'" if value.startswith("'") else MASK


def redact_all(value: Any) -> Any:
    """``redact`` applied to every string inside dicts, lists and tuples (a /health body, an alarm's detail)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_all(item) for item in value)
    return value


class RedactingFilter(logging.Filter):
    """A handler filter: the formatted message (arguments filled in) and any exception text, redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put a RedactingFilter on every handler of ``logger`` (default: the root logger), once each."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(existing, RedactingFilter) for existing in handler.filters):
            handler.addFilter(RedactingFilter())
