"""Paddle inference model -> Paddle Lite ``.nb`` (naive buffer), with the converter's output checked.

The conversion runs ``paddle_lite_opt`` (Paddle Lite's own converter, installed with ``paddlelite``)
in a child process so its log can be read. That log matters: Lite 2.13 cannot parse some operator
attributes (e.g. those of ``assign_value``, which ``paddle.to_tensor`` constants in a traced graph
produce); it then prints "Can't parse message ..." and still reports success, writing a ``.nb``
that is missing the operator's data. Such a model must never be packaged, so any error line in the
log fails the conversion.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from inspector.export.legacy_program import ExportError

LITE_TARGETS = ("x86", "arm")
_SUCCESS_LINE = "successfully"  # "2. Model is optimized and saved into X.nb successfully"
# Lines that mean the converter lost or rejected part of the model, even when it exits with 0.
_ERROR_MARKERS = ("Can't parse message", "Check failed", "[F ", "[E ", "Error", "ERROR", "not supported", "nsupported op")


class ConversionError(ExportError):
    """``paddle_lite_opt`` failed or reported a problem; the message quotes its log."""


def converter_path() -> Path:
    """The ``paddle_lite_opt`` of this environment (beside the Python that runs us), else on PATH."""
    beside = Path(sys.executable).with_name("paddle_lite_opt")
    if beside.is_file():
        return beside
    found = shutil.which("paddle_lite_opt")
    if found is None:
        raise ConversionError("paddle_lite_opt not found (it comes with `pip install paddlelite==2.13rc0`)")
    return Path(found)


def convert_to_lite(model_file: Path, params_file: Path, target: str, out_file: Path) -> str:
    """Write ``out_file`` (must end in ``.nb``) for Lite ``target`` (``x86`` | ``arm``); returns the log."""
    if target not in LITE_TARGETS:
        raise ConversionError(f"unknown Paddle Lite target {target!r}; expected one of {LITE_TARGETS}")
    out_file = Path(out_file)
    if out_file.suffix != ".nb":
        raise ConversionError(f"{out_file}: a Paddle Lite model file name must end in .nb")
    out_file.unlink(missing_ok=True)
    command = [str(converter_path()), f"--model_file={model_file}", f"--param_file={params_file}",
               f"--valid_targets={target}", "--optimize_out_type=naive_buffer",
               f"--optimize_out={out_file.with_suffix('')}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as error:
        raise ConversionError(f"paddle_lite_opt ({target}) gave no answer in 900 s") from error
    log = (result.stdout + result.stderr).strip()
    check_converter_output(log, result.returncode, out_file, target)
    return log


def check_converter_output(log: str, returncode: int, out_file: Path, target: str) -> None:
    """Raise ConversionError unless the converter exited cleanly, said so, logged no error and wrote the file."""
    problems = [line for line in log.splitlines() if any(marker in line for marker in _ERROR_MARKERS)]
    if returncode != 0:
        problems.insert(0, f"exit code {returncode}")
    if _SUCCESS_LINE not in log:
        problems.append("the converter never reported success")
    if not out_file.is_file() or out_file.stat().st_size == 0:
        problems.append(f"{out_file} was not written")
    if problems:
        shown = "\n  ".join(problems[:10])
        raise ConversionError(
            f"Paddle Lite conversion for {target} failed; the .nb would be incomplete or wrong:\n  {shown}\n"
            "(an operator Lite cannot read, such as assign_value from a paddle.to_tensor constant in the "
            "graph, shows up as \"Can't parse message\"; build such constants from shapes or parameters)"
        )
