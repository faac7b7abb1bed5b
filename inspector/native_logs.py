"""Quiet by default: the native libraries' own logging hidden unless ``inspector --verbose`` (or
``INSPECTOR_VERBOSE=1``). Standard library only, so that every layer may use it.

Two kinds of noise, two means:
- Paddle's glog lines (``I1204 ... analysis_predictor.cc ...``, ``New Executor is Running``) and Paddle Lite's
  read their level from the environment once, when the shared library loads: ``quiet_native_logs`` sets it
  before any command imports paddle (the ``inspector`` command line calls it first thing). Variables the user
  set are left as they are. Python warnings that paddle raises about itself (no ccache, its own deprecations)
  and its loggers' deprecation notices are dropped the same way; the project's own warnings and every error
  still show.
- The pass log Paddle Inference and oneDNN write straight to the process's stderr while a predictor is built
  (``--- Running IR pass``, ``---    quantized 70 fused_conv2d ops`` ... about 35 lines per INT8 predictor),
  which no setting turns off: ``pass_log_filtered`` drops exactly those lines from what is written to file
  descriptor 2 during the build and passes everything else on.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

VERBOSE_ENV = "INSPECTOR_VERBOSE"

QUIET_ENVIRONMENT = {
    "GLOG_minloglevel": "2",  # Paddle's glog: errors only (0 INFO, 1 WARNING, 2 ERROR)
    "GLOG_v": "0",  # no verbose (VLOG) detail from Paddle or Paddle Lite
}

# Warnings these modules raise about themselves, not about our data or models.
QUIET_WARNING_MODULES = (r"paddle(\..*)?$", r"_distutils_hack(\..*)?$")

# Paddle's own Python loggers that report paddle's deprecations ("The old way to load inference model is
# deprecated"): warnings and below are dropped, errors still show.
QUIET_PADDLE_LOGGERS = ("paddle.static.io", "paddle.static.pir_io")

# A pass-log line: optional colour codes, then "---" (Paddle's PrettyLog), or a glog INFO line.
_PASS_LOG_LINE = re.compile(rb"^(\x1b\[[0-9;]*m)*---|^I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]")
_FD2_LOCK = threading.RLock()  # one redirection of file descriptor 2 at a time


def verbose() -> bool:
    """Whether the native logs were asked for (``--verbose`` exports INSPECTOR_VERBOSE=1 to the children)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def quiet_native_logs(verbose_requested: bool) -> None:
    """Unless VERBOSE_REQUESTED, set the quiet defaults above; child processes (data-parallel ranks, the
    legacy-program exporter) inherit them. With it, INSPECTOR_VERBOSE=1 is exported so children are verbose too."""
    if verbose_requested:
        os.environ[VERBOSE_ENV] = "1"
        return
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for module in QUIET_WARNING_MODULES:
        warnings.filterwarnings("ignore", module=module)
    for name in QUIET_PADDLE_LOGGERS:  # a filter, not a level: paddle sets the level when it loads
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _ErrorsOnly) for existing in logger.filters):
            logger.addFilter(_ErrorsOnly())


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


@contextmanager
def pass_log_filtered() -> Iterator[None]:
    """Inside the block, what anything in this process writes to file descriptor 2 is held in a temporary file;
    afterwards it is written out without the pass-log lines. Nothing else is lost (another thread's log line
    arrives late, not never), an exception's text is printed as usual, and with ``verbose()`` nothing is held."""
    if verbose():
        yield
        return
    with _FD2_LOCK, tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = memoryview(b"".join(line for line in held if not _PASS_LOG_LINE.match(line)))
            while kept:
                kept = kept[os.write(2, kept):]
